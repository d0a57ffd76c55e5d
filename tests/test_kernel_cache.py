"""The CPU kernels' cache on disk cannot go stale: a kernel compiled into the cache is
compiled afresh once a file it depends on (here the maths in ``sampling.py``) changes.

The package is copied into a temporary folder and run there in fresh processes, as a
student who edits the tutorials' maths would run it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dcn_ref

# bilinear interpolation of [[1, 2], [3, 4]] at (y, x) = (0.25, 0.5): the rows give 1.5 and
# 3.5 at x = 0.5, and a quarter of the way down, 1.5 + 0.25 * 2 = 2.0
SAMPLE = """
import numpy as np
from dcn_ref import ops
image = np.array([[[1.0, 2.0], [3.0, 4.0]]])
print(ops.bilinear_sample(image, np.array([[[0.25, 0.5]]]))[0, 0])
"""


def run_copy(root):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, "-c", SAMPLE], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.split()[-1])


def test_editing_sampling_py_recompiles_the_cached_kernel(tmp_path):
    package = tmp_path / "dcn_ref"
    shutil.copytree(Path(dcn_ref.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__", "mnist_files"))
    assert run_copy(tmp_path) == 2.0
    assert list((package / "cpu" / "__pycache__").glob("*.nbi")), "nothing was cached"

    # every corner's weight doubled: the same point now reads 4.0
    sampling = package / "sampling.py"
    source = sampling.read_text()
    line = "    return Corner(cell.y0 + down, cell.x0 + right, wy * wx, sy * wx, wy * sx)\n"
    assert source.count(line) == 1
    sampling.write_text(source.replace(line, line.replace("wy * wx,", "2.0 * wy * wx,")))
    assert run_copy(tmp_path) == 4.0
