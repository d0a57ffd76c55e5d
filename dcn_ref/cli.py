"""The command line: ``dcn-ref <command>`` (also ``python -m dcn_ref``).

Exit status: 0 on success, 1 when a check fails, 2 on bad arguments or unusable input
(with a one-line reason on stderr).
"""
import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _gradcheck(args):
    if args.target == "cuda":
        from .targets import backend
        try:
            backend("cuda").check_available()
        except ValueError as exc:
            print(f"dcn-ref gradcheck: {exc}", file=sys.stderr)
            return 2
    from .gradcheck import check_all, format_table
    rows = check_all(target=args.target, tol=args.tol)
    print(f"Gradient check, target {args.target}, float64, centred differences "
          f"(pass: max rel. error <= {args.tol:g})")
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)} of {len(rows)} gradients pass")
    return 1 if failed else 0


def build_parser():
    parser = _Parser(prog="dcn-ref", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    commands.required = True
    gc = commands.add_parser("gradcheck", help="check every op's gradients against finite differences")
    gc.add_argument("--target", choices=["cpu", "cuda"], default="cpu")
    gc.add_argument("--tol", type=float, default=1e-6, help="largest relative error that passes")
    gc.set_defaults(run=_gradcheck)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
