"""MkDocs hooks (named in mkdocs.yml): the environment the tutorials run in during the build.

The build executes every tutorial as a notebook in a Jupyter kernel, a child process that
inherits this environment. A value already set in the shell wins.
"""
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_scratch = []


def on_startup(command, dirty):
    os.environ.setdefault("DCN_REF_FAST", "1")       # the tutorials' small sizes, same code
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # tiny arrays: a thread pool only waits
    if not os.environ.get("DCN_REF_FIGURES"):
        # the PNG copies of the figures go to a scratch folder, not into tutorials/figures/
        _scratch.append(tempfile.mkdtemp(prefix="dcn_ref_figures_"))
        os.environ["DCN_REF_FIGURES"] = _scratch[-1]
    # the kernel imports the dcn_ref of this checkout, installed or not
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def on_shutdown():
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)
