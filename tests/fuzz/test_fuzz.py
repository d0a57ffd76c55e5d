"""The fuzz suite: each op family's properties (properties.py) run in a child process, so
that a crash (a segfault in a kernel) fails that family's test with its reproducer instead
of killing the whole test session.

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


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family(family, tmp_path):
    profile = settings.get_current_profile_name()
    trace = tmp_path / "last-case.txt"
    env = dict(os.environ, DCN_FUZZ_TRACE=str(trace))
    timeout = 600 if profile == "ci" else None
    proc = subprocess.run([sys.executable, CHILD, family, profile], capture_output=True,
                          text=True, env=env, timeout=timeout)
    print(proc.stdout[-4000:])        # the examples and seconds of each property (pytest -s)
    if proc.returncode == 0:
        return
    died = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else "a property failed"
    last = trace.read_text() if trace.exists() else "(no case was started)"
    pytest.fail(f"{family}: {died} (exit status {proc.returncode})\n"
                f"--- the case it was running ---\n{last}\n"
                f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}",
                pytrace=False)
