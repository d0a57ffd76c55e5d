"""``dcn-ref conformance --against NAME [--json] [--nonfinite]``: the command line of
``dcn_ref.conformance`` (wired into ``dcn_ref.cli``)."""
import json
import sys


def add_parser(commands):
    """Add the ``conformance`` command to the subparsers of ``dcn-ref``."""
    parser = commands.add_parser(
        "conformance", help="check another deform_conv2d against the reference, case by case",
        description="Run a catalogue of contract cases (border bands, integer coordinates, far "
                    "outside, groups, offset groups, kernels, strides, dilations, masks, empty "
                    "batches; float32 and float64) against another implementation of "
                    "deform_conv2d and compare it with dcn_ref's. Prints one row per case; where "
                    "it departs, names the rule that reproduces its numbers. Exit status 0 when "
                    "every case agrees, 1 when one does not, 2 on bad arguments.")
    parser.add_argument("--against", required=True, metavar="NAME",
                        help="torchvision, torchvision:cuda, onnxruntime, openvino, "
                             "openvino:pad=false, or MODULE:FUNCTION (torchvision's signature, "
                             "torch tensors in and out)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--nonfinite", action="store_true",
                        help="add the cases with NaN and inf offsets and NaN masks (their "
                             "rules differ between libraries on purpose)")
    parser.set_defaults(run=main)
    return parser


def main(args):
    from . import PeerError, run

    def progress(row):                       # the table's rows as they come, on a terminal
        if not args.json and sys.stdout.isatty():
            print(f"  {row.case} ({row.dtype}): {row.status}", file=sys.stderr, flush=True)

    try:
        report = run(args.against, nonfinite=args.nonfinite, progress=progress)
    except PeerError as exc:
        print(f"dcn-ref conformance: --against: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndcn-ref conformance: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report.to_json(), indent=1) if args.json else report.table())
    return 0 if report.ok else 1
