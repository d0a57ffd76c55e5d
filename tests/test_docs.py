"""The documentation site builds with warnings as errors, and every tutorial, executed as a
notebook during the build (DCN_REF_FAST=1), shows each of its figures inline.

The build runs the tutorials top to bottom in a Jupyter kernel, so a tutorial whose own
check (an ``assert``) fails, or that raises, fails the build and this test; the last test
shows that with a one-cell notebook that fails an assert under the same settings.
"""
import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INLINE_PNG = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')


def mkdocs_config():
    # mkdocs.yml holds no custom tags; the hooks and plugins are plain names
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def build(config_file, site_dir, cwd):
    """Run ``mkdocs build --strict``; the CompletedProcess, its output without colour codes."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                             "-f", str(config_file), "-d", str(site_dir)],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    result.stdout, result.stderr = ANSI_ESCAPE.sub("", result.stdout), ANSI_ESCAPE.sub("", result.stderr)
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", site_dir, ROOT)
    assert result.returncode == 0, (f"mkdocs build --strict failed ({result.returncode})\n"
                                    f"--- stdout (end)\n{result.stdout[-4000:]}\n"
                                    f"--- stderr (end)\n{result.stderr[-6000:]}")
    return site_dir


def saved_figures(path):
    """The names passed to save_figure(fig, "<name>") in a tutorial's source."""
    return re.findall(r"save_figure\(\s*\w+\s*,\s*\"([^\"]+)\"\s*\)", path.read_text())


def nav_paths(nav):
    for entry in nav:
        value = entry if isinstance(entry, str) else next(iter(entry.values()))
        if isinstance(value, list):
            yield from nav_paths(value)
        else:
            yield value


def test_every_tutorial_and_page_is_in_the_navigation():
    listed = set(nav_paths(mkdocs_config()["nav"]))
    assert TUTORIALS, "no tutorials found"
    for path in TUTORIALS:
        assert f"tutorials/{path.name}" in listed, f"{path.name} is missing from the nav of mkdocs.yml"
    for page in (ROOT / "docs").rglob("*.md"):
        rel = page.relative_to(ROOT / "docs").as_posix()
        if not rel.startswith("tutorials/"):
            assert rel in listed, f"docs/{rel} is missing from the nav of mkdocs.yml"


def test_nothing_links_outside_the_repository():
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        text = page.read_text()
        assert "../shared" not in text and "SPEC.md" not in text, f"{page} links outside the repository"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_page_shows_its_figures_inline(site, path):
    html = (site / "tutorials" / path.stem / "index.html").read_text()
    names = saved_figures(path)
    assert names, f"{path.name} saves no figure with save_figure(fig, \"name\")"
    images = [base64.b64decode(data) for data in INLINE_PNG.findall(html)]
    assert len(images) >= len(names), (f"{path.name} saves {len(names)} figures {names}, but its "
                                       f"page shows {len(images)} inline PNG images")
    for image in images:
        assert image.startswith(PNG_SIGNATURE) and len(image) > 1000, "an inline image is not a PNG"
    assert "Traceback" not in html and "AssertionError" not in html


def test_api_reference_is_generated_from_the_docstrings(site):
    html = (site / "api" / "ops" / "index.html").read_text()
    for name in ["bilinear_sample", "conv2d_backward", "deform_conv2d", "deform_roi_pool",
                 "offset_sample_backward", "im2col"]:
        assert re.search(rf'id="dcn_ref\.ops\.(\w+\.)?{name}"', html), f"no API entry for {name}"
    # numpydoc sections are rendered as sections, not as raw text
    assert "Parameters:" in html and "----------" not in html


def test_a_failing_assert_in_a_tutorial_fails_the_build(tmp_path):
    config = mkdocs_config()
    plugin = next(p["mkdocs-jupyter"] for p in config["plugins"]
                  if isinstance(p, dict) and "mkdocs-jupyter" in p)
    docs = tmp_path / "docs"
    (docs / "tutorials").mkdir(parents=True)
    (docs / "index.md").write_text("# scratch\n")
    (docs / "tutorials" / "01_fails.py").write_text(
        "# %%\nvalue = 1 + 1\n\n# %%\nassert value == 3, 'the tutorial checks its numbers'\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump({
        "site_name": "scratch", "docs_dir": "docs", "strict": True,
        "plugins": [{"mkdocs-jupyter": plugin}],
        "nav": ["index.md", "tutorials/01_fails.py"]}))
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert result.returncode != 0
    assert "the tutorial checks its numbers" in result.stdout + result.stderr


# The pages whose ```python examples are run as written (each block on its own, in one
# process, in a scratch folder; the CUDA example in Numba's simulator).
EXAMPLE_PAGES = ["README.md", "docs/index.md", "docs/ops.md", "docs/layers.md", "docs/cuda.md",
                 *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "conventions").glob("*.md"))]

RUN_BLOCKS = """
import re, sys, pathlib
for page in sys.argv[1:]:
    blocks = re.findall(r"```python\\n(.*?)```", pathlib.Path(page).read_text(), re.S)
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page}, example {i + 1}", "exec"), {"__name__": "__example__"})
        print("ran", page, i + 1)
"""


def test_the_examples_in_the_pages_run(tmp_path):
    pages = [str(ROOT / p) for p in EXAMPLE_PAGES]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", RUN_BLOCKS, *pages], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ran = result.stdout.count("ran ")
    assert ran >= 8, f"expected the examples of {EXAMPLE_PAGES}, ran {ran}:\n{result.stdout}"
