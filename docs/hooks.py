"""MkDocs hooks (named in mkdocs.yml): the environment the tutorials run in during the build.

The build executes every tutorial as a notebook in a Jupyter kernel, a child process that
inherits this environment. A value already set in the shell wins.
"""
import json
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
        os.environ["DCN_REF_FIGURES"] = _scratch_folder("dcn_ref_figures_")
    # the kernel imports the dcn_ref of this checkout, installed or not
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    _encrypt_kernel_transport()


def on_shutdown():
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)


def _scratch_folder(prefix):
    _scratch.append(tempfile.mkdtemp(prefix=prefix))
    return _scratch[-1]


def _encrypt_kernel_transport():
    """Have the kernel manager give each tutorial's kernel CurveZMQ keys.

    ipykernel logs a WARNING for every kernel that talks plain TCP. Where the installed
    jupyter_client can provision keys (``KernelManager.transport_encryption``) and ZeroMQ
    has CurveZMQ, a Jupyter config folder added to JUPYTER_CONFIG_PATH for this build
    turns it on; mkdocs-jupyter's nbconvert reads it. The user's own config is untouched.
    """
    try:
        import zmq
        from jupyter_client.manager import KernelManager
    except ImportError:
        return
    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return
    folder = _scratch_folder("dcn_ref_jupyter_config_")
    config = {"KernelManager": {"transport_encryption": "auto"}}
    Path(folder, "jupyter_nbconvert_config.json").write_text(json.dumps(config))
    paths = [folder] + [p for p in os.environ.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths)
