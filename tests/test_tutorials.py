"""The tutorials' figure helper, run as a script. (Every tutorial is executed as a notebook,
top to bottom with its asserts, by the documentation build: see tests/test_docs.py.)"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_script(script, cwd, **env_changes):
    env = {k: v for k, v in os.environ.items() if k != "DCN_REF_FIGURES"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(env_changes)
    return subprocess.run([sys.executable, str(script)], env=env, cwd=cwd, check=True, timeout=120,
                          capture_output=True, text=True)


def test_save_figure_defaults_to_figures_beside_the_script(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text("from dcn_ref.plotting import plt, save_figure\n"
                      "fig, ax = plt.subplots()\nax.plot([0, 1])\nsave_figure(fig, 'demo')\n")
    run_script(script, ROOT)
    assert (tmp_path / "figures" / "demo.png").read_bytes().startswith(PNG_SIGNATURE)


def test_save_figure_writes_into_dcn_ref_figures_and_leaves_the_backend_alone(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text("import matplotlib\n"
                      "import dcn_ref.plotting, dcn_ref.experiment.figures\n"
                      "print(matplotlib.rcParams['backend'])\n"
                      "from dcn_ref.plotting import plt, save_figure\n"
                      "fig, ax = plt.subplots()\nax.plot([0, 1])\nsave_figure(fig, 'demo')\n")
    out = tmp_path / "out"
    # a backend chosen by the caller stays chosen: importing the library switches nothing
    result = run_script(script, tmp_path, DCN_REF_FIGURES=str(out), MPLBACKEND="svg")
    assert result.stdout.splitlines()[0] == "svg"
    data = (out / "demo.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_each_tutorial_opens_with_its_title_as_its_one_first_level_heading():
    """Jupyter and the site show Markdown cells, not a module docstring: the title is the
    first cell, a "# Tutorial NN: ..." heading, and the sections are "## " headings below."""
    for path in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py")):
        lines = path.read_text().splitlines()
        assert lines[0] == "# %% [markdown]", path.name
        assert lines[1].startswith(f"# # Tutorial {path.name[:2]}: "), path.name
        first_level = [line for line in lines if line.startswith("# # ")]
        assert first_level == [lines[1]], (path.name, first_level)
        assert any(line.startswith("# ## ") for line in lines), path.name
