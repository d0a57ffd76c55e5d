"""Figures for the tutorials: shown inline in a notebook, saved as PNG files from a script.

    from dcn_ref.plotting import plt, save_figure
    fig, ax = plt.subplots()
    ...
    save_figure(fig, "01_sampled_grid")

Run as a script (``python tutorials/01_bilinear_sampling.py``), ``save_figure`` writes
``<name>.png`` into the folder named by the environment variable ``DCN_REF_FIGURES``, else
into ``figures/`` beside the script (``tutorials/figures/``). Inside a Jupyter kernel the figure is shown inline instead and
nothing is written. Importing this module leaves matplotlib's backend alone (matplotlib
picks one itself: inline in a notebook, Agg where there is no display; set ``MPLBACKEND``
to choose another).
"""
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt

IN_NOTEBOOK = "ipykernel" in sys.modules


def figure_dir():
    """The folder figures are saved to: $DCN_REF_FIGURES, else figures/ beside the script."""
    if os.environ.get("DCN_REF_FIGURES"):
        return Path(os.environ["DCN_REF_FIGURES"])
    script = getattr(sys.modules["__main__"], "__file__", None)
    return (Path(script).resolve().parent if script else Path.cwd()) / "figures"


def save_figure(fig, name):
    """Show ``fig`` inline (notebook) or save it as ``<name>.png`` (script).

    Returns the path written, or None in a notebook.
    """
    if IN_NOTEBOOK:
        plt.show()
        return None
    folder = figure_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"figure saved: {path}")
    return path
