"""The documentation site builds as the README builds it, without a warning, works opened
from disk, and every tutorial, executed as a notebook during the build (DCN_REF_FAST=1),
shows its title and each of its figures inline.

The build is the README's docs command (``mkdocs build``: strict by mkdocs.yml), run once
for the whole module, writing into a scratch folder instead of ``site/``; its output is
read as the user reads it, nothing filtered. The build runs the tutorials top to bottom in
a Jupyter kernel, so a tutorial whose own check (an ``assert``) fails, or that raises,
fails the build and this test; the last test shows that with a one-cell notebook that
fails an assert under the same settings.
"""
import base64
import html.parser
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INLINE_PNG = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')
WARNING_LINE = re.compile(r"\bWARNING\b")


def mkdocs_config():
    # mkdocs.yml holds no custom tags; the hooks and plugins are plain names
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def readme_docs_command():
    """The arguments of ``mkdocs`` in the README's docs command (``.venv/bin/mkdocs ...``)."""
    commands = re.findall(r"^    (.*\.venv/bin/mkdocs .*)$", (ROOT / "README.md").read_text(), re.M)
    assert len(commands) == 1, f"expected one docs command in the README, got {commands}"
    return commands[0].split(".venv/bin/mkdocs ", 1)[1].split()


def build(args, cwd):
    """Run ``mkdocs <args>``; the CompletedProcess, its output without colour codes."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=1500)
    result.stdout, result.stderr = ANSI_ESCAPE.sub("", result.stdout), ANSI_ESCAPE.sub("", result.stderr)
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The README's docs command, into a scratch folder: (site folder, CompletedProcess)."""
    site_dir = tmp_path_factory.mktemp("site")
    return site_dir, build([*readme_docs_command(), "--site-dir", str(site_dir)], ROOT)


@pytest.fixture(scope="module")
def site(built):
    site_dir, result = built
    assert result.returncode == 0, (f"mkdocs build failed ({result.returncode})\n"
                                    f"--- stdout (end)\n{result.stdout[-4000:]}\n"
                                    f"--- stderr (end)\n{result.stderr[-6000:]}")
    return site_dir


def test_the_readme_docs_command_builds_without_a_warning(built):
    _, result = built
    assert readme_docs_command() == ["build"], "the README should build with the site's config"
    assert mkdocs_config()["strict"] is True
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if WARNING_LINE.search(line)]
    assert result.returncode == 0 and not warnings, "\n".join(warnings) or result.stderr[-4000:]


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
def test_tutorial_page_shows_its_title_and_figures_inline(site, path):
    html = (site / "tutorials" / f"{path.stem}.html").read_text()
    headings = re.findall(r"<h1[^>]*>(.*?)</h1>", html, re.S)
    number = path.name[:2]
    assert len(headings) == 1 and re.sub(r"<[^>]+>", "", headings[0]).startswith(
        f"Tutorial {number}: "), headings
    names = saved_figures(path)
    assert names, f"{path.name} saves no figure with save_figure(fig, \"name\")"
    images = [base64.b64decode(data) for data in INLINE_PNG.findall(html)]
    assert len(images) >= len(names), (f"{path.name} saves {len(names)} figures {names}, but its "
                                       f"page shows {len(images)} inline PNG images")
    for image in images:
        assert image.startswith(PNG_SIGNATURE) and len(image) > 1000, "an inline image is not a PNG"
    assert "Traceback" not in html and "AssertionError" not in html
    assert "IProgress not found" not in html       # tqdm's notebook bars need ipywidgets


def test_api_reference_is_generated_from_the_docstrings(site):
    html = (site / "api" / "ops.html").read_text()
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
    result = build(["build", "--site-dir", str(tmp_path / "site")], tmp_path)
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


class _Links(html.parser.HTMLParser):
    """The href and src values of a page, and its element ids."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)
            elif name == "id" and value is not None:
                self.ids.add(value)


def parse_page(path):
    parser = _Links()
    parser.feed(path.read_text())
    return parser


def test_every_link_of_the_site_opens_a_file_from_disk(site):
    """Opened from disk (file://), a link to a folder shows a directory listing, not a page:
    every internal link must name a file that exists, and its #anchor an element id.
    (404.html is left out: a web server shows it for any missing path, so its links start
    at the site's root; from disk nothing opens it.)"""
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    parsed = {page: parse_page(page) for page in pages}
    broken, checked = [], 0
    for page, links in parsed.items():
        for link in links.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue                                     # http(s), data:, mailto:
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {link} -> "
                              f"{'a folder' if target.is_dir() else 'nothing'}")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else parse_page(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} -> no such anchor")
    assert not broken, "\n".join(broken)
    assert checked > 1000


def test_search_works_from_disk(site):
    """The offline plugin writes the search index as a script, and the worker shim that
    runs the search under file:// comes from the repository, not from a CDN."""
    index = (site / "search" / "search_index.js").read_text()
    assert index.startswith("var __index = ") and '"location":"ops.html' in index
    home = (site / "index.html").read_text()
    assert 'src="javascripts/iframe-worker-shim.js"' in home
    assert "unpkg.com" not in home
    assert (site / "javascripts" / "iframe-worker-shim.js").read_text().count("IFrameWorker")


def test_the_readme_install_names_every_runtime_dependency():
    # [project] dependencies = [...] of pyproject.toml (tomllib is Python 3.11+)
    block = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(),
                      re.M | re.S).group(1)
    names = re.findall(r'"([A-Za-z0-9_.-]+)', block)
    assert "numpy" in names and "tqdm" in names
    install = (ROOT / "README.md").read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in names if name not in install]
    assert not missing, f"the README's Install section does not name {missing}"
