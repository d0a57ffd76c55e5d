"""Run the fuzz properties of one op family in this process: the child of tests/fuzz/test_fuzz.py.

    python tests/fuzz/child.py FAMILY [PROFILE]
    python tests/fuzz/child.py bridge [PROFILE]     # the PyTorch bridge's properties

Exits 0 when every property holds, 1 when one fails (Hypothesis prints the smallest
falsifying example); a crash kills only this process, and the parent reports the case it
was running (written to $DCN_FUZZ_TRACE before each example). Prints one line per property:
its examples and seconds.
"""
import faulthandler
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), os.path.dirname(HERE), HERE]

import dcn_ref  # noqa: E402,F401  (first, as in tests/conftest.py)
from hypothesis import settings  # noqa: E402

import fuzz_profiles  # noqa: E402,F401  (registers the profiles)
from families import FAMILIES  # noqa: E402
from properties import COUNTS, tests_for  # noqa: E402


def suites(name):
    """[(family name, its tests)]: one family, or with "bridge" every family the PyTorch
    bridge offers, with the bridge's properties (one process: torch is imported once)."""
    if name == "bridge":
        import bridge
        return [(family, bridge.tests_for(FAMILIES[family])) for family in bridge.BRIDGE]
    return [(name, tests_for(FAMILIES[name]))]


def main(argv):
    settings.load_profile(argv[1] if len(argv) > 1 else "ci")
    faulthandler.enable()          # a segfault prints the Python stack before the process dies
    failed = 0
    for name, tests in suites(argv[0]):
        for kind, test in tests.items():
            COUNTS.clear()
            start = time.perf_counter()
            try:
                test()
            except Exception:      # the property's failure, with Hypothesis's report above it
                traceback.print_exc()
                failed += 1
                status = "FAILED"
            else:
                status = "ok"
            print(f"{name} {kind}: {COUNTS[kind]} examples, {time.perf_counter() - start:.1f} s, "
                  f"{status}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
