"""The command line: ``dcn-ref <command>`` (also ``python -m dcn_ref``).

Exit status: 0 on success, 1 when a check fails, 2 on bad arguments or unusable input
(with a one-line reason on stderr).
"""
import argparse
import math
import sys

from . import __version__
from .conformance import command as conformance

# The experiment's arms, for --help without importing the experiment (and Numba); a test
# checks them against dcn_ref.experiment.ARMS and DEFAULT_ARMS.
EXPERIMENT_ARMS = ("cnn", "cnn_scaled", "cnn_scaled_match_dcn", "cnn_scaled_match_offset",
                   "deform_offset", "deform_dcn", "deform_offset_all", "deform_dcn_all",
                   "deform_dcnv3")
EXPERIMENT_DEFAULT_ARMS = ("cnn", "cnn_scaled", "deform_dcn_all")
MAX_REPEAT = 1000           # bench --repeat
MAX_TIMEOUT = 3600.0        # download-mnist --timeout, seconds


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _gradcheck(args):
    if not (math.isfinite(args.tol) and args.tol > 0):
        print(f"dcn-ref gradcheck: --tol: expected a positive finite number, got {args.tol!r}",
              file=sys.stderr)
        return 2
    if args.target == "cuda":
        from .targets import backend
        try:
            backend("cuda").check_available()
        except ValueError as exc:
            print(f"dcn-ref gradcheck: {exc}", file=sys.stderr)
            return 2
    from .gradcheck import format_row, table_header
    from .gradcheck_cases import iter_checks
    print(f"Gradient check, target {args.target}, float64, centred differences "
          f"(pass: max rel. error <= {args.tol:g})")
    print(table_header(), flush=True)
    rows = []
    for row in iter_checks(target=args.target, tol=args.tol):   # each row as soon as it is done
        print(format_row(row), flush=True)
        rows.append(row)
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)} of {len(rows)} gradients pass")
    return 1 if failed else 0


def _experiment(args):
    from pathlib import Path
    from .experiment import Config, ExperimentError, checkpoint, run
    config = Config.quick(args.seed) if args.quick else Config(seed=args.seed)
    models = args.models.split(",") if args.models is not None else EXPERIMENT_DEFAULT_ARMS
    try:
        run(config, args.out, data_dir=args.data, resume=args.resume,
            progress=not args.no_progress and sys.stderr.isatty(),
            models=models,
            seeds=args.seeds, keep_checkpoints=args.keep_checkpoints)
    except ExperimentError as exc:
        print(f"dcn-ref experiment: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        if checkpoint.any_in(Path(args.out) / "checkpoints"):
            print(f"\ndcn-ref experiment: interrupted; the finished epochs are saved in "
                  f"{args.out}/checkpoints, continue with --resume", file=sys.stderr)
        else:
            print("\ndcn-ref experiment: interrupted before the first epoch was saved; "
                  "nothing to resume", file=sys.stderr)
        return 130
    return 0


def _download(args):
    from pathlib import Path
    from .data import DataError, download
    if not 0 < args.timeout <= MAX_TIMEOUT:
        print(f"dcn-ref download-mnist: --timeout: expected a number of seconds above 0 and at "
              f"most {MAX_TIMEOUT:g}, got {args.timeout}", file=sys.stderr)
        return 2
    if args.url is not None and (problem := download.url_problem(args.url)):
        print(f"dcn-ref download-mnist: --url: {problem} ({args.url!r})", file=sys.stderr)
        return 2
    folder = Path(args.dir)
    if not args.dir.strip():
        print("dcn-ref download-mnist: dir: expected a folder, got an empty path", file=sys.stderr)
        return 2
    if folder.exists() and not folder.is_dir():
        print(f"dcn-ref download-mnist: dir: {folder} is a file, expected a folder",
              file=sys.stderr)
        return 2
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"dcn-ref download-mnist: dir: cannot create the folder {folder} "
              f"({exc.strerror or type(exc).__name__})", file=sys.stderr)
        return 2
    shown = {}

    def progress(name, done, total):          # one line per file, rewritten in place
        if sys.stderr.isatty():
            of = f" of {total / 2**20:.1f}" if total else ""
            print(f"\r{name}: {done / 2**20:.1f}{of} MiB", end="", file=sys.stderr)
            shown[name] = True

    try:
        paths = download.download_mnist(args.dir, base_url=args.url or download.MNIST_URL,
                                        files=download.MNIST_MD5,
                                        timeout=args.timeout, progress=progress)
    except DataError as exc:
        print(f"{chr(10) if shown else ''}dcn-ref download-mnist: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:                       # the folder cannot be written
        print(f"{chr(10) if shown else ''}dcn-ref download-mnist: dir: cannot write into "
              f"{folder} ({exc.strerror or type(exc).__name__})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndcn-ref download-mnist: interrupted; the verified files stay in {args.dir}, "
              f"no partial file is left", file=sys.stderr)
        return 130
    if shown:
        print(file=sys.stderr)
    for path in paths:
        print(path)
    print(f"{len(paths)} verified files in {args.dir}; use them with "
          f"dcn-ref experiment scaled-mnist --data {args.dir}")
    return 0


def _bench(args):
    import numba
    from . import bench
    if args.threads is not None:
        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            print(f"dcn-ref bench: --threads: expected 1..{numba.config.NUMBA_NUM_THREADS} "
                  f"(NUMBA_NUM_THREADS), got {args.threads}", file=sys.stderr)
            return 2
        numba.set_num_threads(args.threads)
    shapes = list(args.shapes)
    unknown = [s for s in shapes if s not in bench.SHAPES]
    if unknown or not shapes:
        print(f"dcn-ref bench: --shapes: expected letters from {''.join(bench.SHAPES)}, "
              f"got {args.shapes!r}", file=sys.stderr)
        return 2
    if not 1 <= args.repeat <= MAX_REPEAT:
        print(f"dcn-ref bench: --repeat: expected an int from 1 to {MAX_REPEAT}, got "
              f"{args.repeat}", file=sys.stderr)
        return 2
    if args.realistic:
        from .bench import realistic as bench_realistic
        bench_realistic.run(shapes, rounds=args.repeat)
        return 0
    bench.run(shapes, repeat=args.repeat, models=not args.no_models, memory=not args.no_memory)
    return 0


def _shapes_help():
    """The bench shapes, one a line, for ``dcn-ref bench --help``."""
    from .bench.shapes import SHAPES
    lines = [f"  ({name}) {shape.describe()}" for name, shape in SHAPES.items()]
    return ("the shapes, of deform_conv2d in float32: N images of C channels, H x W ->\n"
            "C_out channels; k3: 3x3 kernel, s2: stride 2, p1: padding 1, mask: a DCNv2 mask\n"
            + "\n".join(lines))


def build_parser():
    # argparse prints help as plain text: no Markdown or reST markup in these strings
    parser = _Parser(prog="dcn-ref", description="dcn_ref's commands (also python -m dcn_ref).")
    parser.add_argument("--version", action="version", version=f"dcn-ref {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    gc = commands.add_parser("gradcheck", help="check every op's gradients against finite differences")
    gc.add_argument("--target", choices=["cpu", "cuda"], default="cpu")
    gc.add_argument("--tol", type=float, default=1e-6, help="largest relative error that passes")
    gc.set_defaults(run=_gradcheck)
    ex = commands.add_parser("experiment", help="run an experiment end to end")
    ex.add_argument("name", choices=["scaled-mnist"], help="the experiment")
    ex.add_argument("--quick", action="store_true",
                    help="a small version of the whole pipeline (a few minutes)")
    ex.add_argument("--data", metavar="DIR", default=None,
                    help="a folder of standard MNIST IDX files (default: the digits shipped "
                         "with dcn_ref: 5,000 training and the 10,000 official test digits)")
    ex.add_argument("--out", metavar="DIR", default="results/scaled-mnist",
                    help="where checkpoints, results and figures go (default: %(default)s)")
    ex.add_argument("--seed", type=_int, default=0,
                    help="the (first) seed, 0 to 4294967295 (default: 0)")
    ex.add_argument("--seeds", type=_int, default=1, metavar="N",
                    help="run every arm with N seeds (1 to 1000): --seed, --seed + 1, ...; "
                         "the table shows mean ± std (default: 1)")
    ex.add_argument("--models", default=None, metavar="ARMS",
                    help=f"comma-separated arms to train, from {', '.join(EXPERIMENT_ARMS)}; "
                         f"or 'all' (default: {','.join(EXPERIMENT_DEFAULT_ARMS)}; cnn always "
                         f"trains)")
    ex.add_argument("--keep-checkpoints", choices=["last", "all"], default="last",
                    help="keep the checkpoint of each stage's last epoch only (default) or "
                         "of every epoch")
    ex.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its newest usable checkpoints")
    ex.add_argument("--no-progress", action="store_true", help="one line per epoch, no bars")
    ex.set_defaults(run=_experiment)
    dl = commands.add_parser("download-mnist",
                             help="fetch the full MNIST (60,000 training digits), md5-verified")
    dl.add_argument("dir", help="the folder to fill (created if missing)")
    dl.add_argument("--url", default=None, help="where the files are (default: the MNIST mirror "
                                                "in dcn_ref.data.MNIST_URL)")
    dl.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for the connection and each read, at most 3600 "
                         "(default: %(default)s)")
    dl.set_defaults(run=_download)
    be = commands.add_parser("bench", help="timings of the ops and models, as ratios",
                             epilog=_shapes_help(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    be.add_argument("--repeat", type=int, default=7,
                    help="timed calls a figure (median), 1 to 1000 (default: %(default)s)")
    be.add_argument("--shapes", default="abcd",
                    help="which of the shapes a, b, c, d (listed below; default: abcd)")
    be.add_argument("--threads", type=int, default=None,
                    help="Numba threads (default: NUMBA_NUM_THREADS, all cores), which run the "
                         "sampling kernels and the GEMMs alike")
    be.add_argument("--realistic", action="store_true",
                    help="as a user's script runs: torch and torchvision imported, their calls "
                         "and ours interleaved round by round; our figures alone and interleaved")
    be.add_argument("--no-models", action="store_true", help="skip the models")
    be.add_argument("--no-memory", action="store_true", help="skip the peak-memory figures")
    be.set_defaults(run=_bench)
    conformance.add_parser(commands)
    return parser


def _int(text):
    """argparse type: a decimal int (the command checks its range, naming the option)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None


def main(argv=None):
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.error("expected a command: gradcheck, experiment, download-mnist, bench or "
                     "conformance (dcn-ref --help lists them)")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
