"""Every tutorial runs as a script, in its own process, with DCN_REF_FAST=1, and writes the
figures it saves (non-empty PNG files) into the folder named by DCN_REF_FIGURES."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def saved_figures(path):
    """The names passed to save_figure(fig, "<name>") in a tutorial's source."""
    return re.findall(r"save_figure\(\s*\w+\s*,\s*\"([^\"]+)\"\s*\)", path.read_text())


def test_tutorials_are_found():
    assert [p.name[:2] for p in TUTORIALS][:5] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_saves_its_figures(path, tmp_path):
    if "cuda" in path.stem and importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("needs numba-cuda (pip install -e '.[cuda]')")
    names = saved_figures(path)
    assert names, f"{path.name} saves no figure with save_figure(fig, \"name\")"
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, DCN_REF_FAST="1", DCN_REF_FIGURES=str(tmp_path), PYTHONPATH=pythonpath,
               # The tutorials' arrays are tiny: Numba's thread pool only adds synchronisation,
               # which costs milliseconds a call when the cores are busy with other work.
               NUMBA_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(path)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"{path.name} exited with {result.returncode}\n"
                                    f"--- stdout (end)\n{result.stdout[-3000:]}\n"
                                    f"--- stderr (end)\n{result.stderr[-3000:]}")
    for name in names:
        png = tmp_path / f"{name}.png"
        assert png.is_file(), f"{path.name} did not write {png.name}; found {sorted(os.listdir(tmp_path))}"
        data = png.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), f"{png.name} is not a PNG image"


def test_save_figure_defaults_to_figures_beside_the_script(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text("from dcn_ref.plotting import plt, save_figure\n"
                      "fig, ax = plt.subplots()\nax.plot([0, 1])\nsave_figure(fig, 'demo')\n")
    env = {k: v for k, v in os.environ.items() if k != "DCN_REF_FIGURES"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    subprocess.run([sys.executable, str(script)], env=env, cwd=ROOT, check=True, timeout=120,
                   capture_output=True)
    assert (tmp_path / "figures" / "demo.png").read_bytes().startswith(PNG_SIGNATURE)
