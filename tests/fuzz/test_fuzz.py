"""The fuzz suite: each op family's properties (properties.py) run in a child process, so
that a crash (a segfault in a kernel) fails that family's test with its reproducer instead
of killing the whole test session; the PyTorch bridge's properties (bridge.py) run in one
child for all the families it offers.

    python -m pytest tests/fuzz                               # the CI profile (default)
    python -m pytest tests/fuzz --hypothesis-profile=long     # thousands of examples
"""
import os
import subprocess
import sys

import pytest
from hypothesis import settings

from families import FAMILIES

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")


def run_child(command, trace, timeout):
    """Run ``command`` with $DCN_FUZZ_TRACE = ``trace``; return None when it exits 0, else a
    report: how it ended, the case it was running (the trace file), its output."""
    env = dict(os.environ, DCN_FUZZ_TRACE=str(trace))
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    print(proc.stdout[-4000:])        # the examples and seconds of each property (pytest -s)
    if proc.returncode == 0:
        return None
    died = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else "a property failed"
    last = trace.read_text() if trace.exists() else "(no case was started)"
    return (f"{died} (exit status {proc.returncode})\n--- the case it was running ---\n{last}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family(family, tmp_path):
    profile = settings.get_current_profile_name()
    report = run_child([sys.executable, CHILD, family, profile], tmp_path / "last-case.txt",
                       timeout=600 if profile == "ci" else None)
    if report:
        pytest.fail(f"{family}: {report}", pytrace=False)


def test_bridge(tmp_path):
    profile = settings.get_current_profile_name()
    report = run_child([sys.executable, CHILD, "bridge", profile], tmp_path / "last-case.txt",
                       timeout=600 if profile == "ci" else None)
    if report:
        pytest.fail(f"bridge: {report}", pytrace=False)


def test_a_crashing_child_is_reported_with_its_case(tmp_path):
    # a stand-in for a kernel's wild write: the child records its case, then segfaults
    script = tmp_path / "crash.py"
    script.write_text(
        "import ctypes, faulthandler, os\n"
        "faulthandler.enable()\n"
        "open(os.environ['DCN_FUZZ_TRACE'], 'w').write('crash valid:\\ndict(image=...)')\n"
        "ctypes.string_at(0)\n")
    report = run_child([sys.executable, str(script)], tmp_path / "last-case.txt", timeout=60)
    assert report.startswith("killed by signal 11 (exit status -11)"), report
    assert "crash valid:\ndict(image=...)" in report and "Segmentation fault" in report
