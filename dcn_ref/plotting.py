"""Figures for the tutorials: saved as PNG files, and shown inline in a notebook.

    from dcn_ref.plotting import plt, save_figure
    fig, ax = plt.subplots()
    ...
    save_figure(fig, "01_sampled_grid")

``save_figure`` writes ``<name>.png`` into the folder named by the environment variable
``DCN_REF_FIGURES``, else into ``figures/`` beside the script (``tutorials/figures/``).
Inside a Jupyter kernel (a tutorial opened as a notebook, or the documentation build,
which executes every tutorial as one) it also shows the figure inline, in the cell that
drew it.

The module leaves matplotlib's backend alone: a script run without a display gets
matplotlib's own choice (Agg, which draws to files), a notebook keeps its inline backend.
"""
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt

__all__ = ["plt", "save_figure", "figure_dir", "in_notebook"]


def in_notebook():
    """True inside a Jupyter kernel, where figures can be shown inline."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def figure_dir():
    """The folder figures are saved to: $DCN_REF_FIGURES, else figures/ beside the script."""
    if os.environ.get("DCN_REF_FIGURES"):
        return Path(os.environ["DCN_REF_FIGURES"])
    script = getattr(sys.modules["__main__"], "__file__", None)
    if script is None or in_notebook():  # a kernel's __main__ is not the notebook
        return Path.cwd() / "figures"
    return Path(script).resolve().parent / "figures"


def save_figure(fig, name):
    """Save ``fig`` as ``<name>.png`` in ``figure_dir()``; in a notebook also show it inline.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; it is closed afterwards, so a notebook shows it exactly once.
    name : str
        File name without the ``.png`` suffix.

    Returns
    -------
    pathlib.Path or None
        The file written; None in a notebook, so that a cell ending in ``save_figure(...)``
        shows the figure and not the path.
    """
    folder = figure_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if in_notebook():
        from IPython.display import Image, display
        display(Image(filename=str(path)))  # the saved PNG, whatever the kernel's backend
        plt.close(fig)
        return None
    print(f"figure saved: {path}")
    plt.close(fig)
    return path
