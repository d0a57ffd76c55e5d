"""Every pointer into the code that the documentation and the tutorials give resolves: the
files they name exist, and the names they cite are defined where they say.

The pointers are read from README.md, the pages of docs/ and the tutorials (their text
cells and docstrings), in these forms (single or double backticks):

    `dcn_ref/cpu/columns.py`               a file of the repository, or a folder of the package
    `dcn_ref.ops.deform_conv2d`            a module, or a name defined in one
    `sampling.tap_grads`                   the same, by the short name of a module of the
                                           maths or the kernels (``SHORT_MODULES``)
    `tap_grads` in `dcn_ref/sampling.py`   a name defined in that file (also "of", "from",
    `a`, `b` and `c` in `dcn_ref/x.py`     and for a list of names, or a second file:
    `a` in `dcn_ref/x.py`, ..., and in `dcn_ref/y.py`)
    `dcn_ref/sampling.py`'s `tap_grads`
    `dcn_ref/sampling.py`: `locate`, `corner`, ...   (the names up to the end of the line)
"""
import ast
import importlib
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                  *(ROOT / "docs" / "conventions").glob("*.md"), *(ROOT / "docs" / "api").glob("*.md"),
                  *(ROOT / "tutorials").glob("*.py"), ROOT / "tutorials" / "README.md"])

#: Modules the pages name by their last part alone; other short forms (``torch.library``,
#: ``cuda.jit``, ``geometry.stride_h``) are not pointers into the package.
SHORT_MODULES = ("sampling", "roi_sampling", "psroi_sampling", "reference", "reference_roi",
                 "reference_dcnv3", "gradcheck", "gradcheck_cases", "kernel_args",
                 "targets", "columns", "planar", "lanes", "deterministic", "engine", "compile")

TICK = r"`{1,2}"
PATH = r"(?:dcn_ref/[\w/.-]*|(?:tests|benchmarks|tutorials|docs)/[\w/.-]*\.(?:py|md))"
NAME = r"[A-Za-z_]\w*"
PATHS = re.compile(rf"{TICK}({PATH}){TICK}")
DOTTED = re.compile(rf"{TICK}(dcn_ref(?:\.{NAME})+)(?:\(\))?{TICK}")
SHORT = re.compile(rf"{TICK}({NAME})\.({NAME})(?:\(\))?{TICK}")
ONE = rf"{TICK}{NAME}(?:\(\))?{TICK}"
NAME_IN = re.compile(rf"((?:{ONE}(?:, | and |, and ))*{ONE}),? (?:in|of|from) {TICK}({PATH}\.py){TICK}")
AND_IN = re.compile(rf"{TICK}({NAME})(?:\(\))?{TICK} in {TICK}{PATH}\.py{TICK}[^`]*? and in "
                    rf"{TICK}({PATH}\.py){TICK}")
POSSESSIVE = re.compile(rf"{TICK}({PATH}\.py){TICK}'s {TICK}({NAME})(?:\(\))?{TICK}")
LISTED = re.compile(rf"{TICK}({PATH}\.py){TICK}: ((?:{ONE}(?:, | and |, and ))*{ONE})")


def text_of(path):
    """The prose of a page or tutorial, with a tutorial's comment markers removed and its
    lines joined as the reader sees them."""
    text = path.read_text()
    if path.suffix == ".py":
        text = "\n".join(line[2:] if line.startswith("# ") else line for line in text.splitlines())
    text = re.sub(r"\n(?=[^\n])", " ", re.sub(r"\n\s*\n", "\n\n", text))
    return re.sub(r"[ \t]+", " ", text)


@lru_cache(maxsize=None)
def defined_names(path):
    """The names a Python file defines at its top level (functions, classes, assignments,
    imports)."""
    tree = ast.parse((ROOT / path).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


@lru_cache(maxsize=None)
def module_by_last_part():
    """{last part of a module's name: dotted name} for the package's modules that are the
    only ones of their name (``sampling`` -> ``dcn_ref.sampling``)."""
    found = {}
    for path in (ROOT / "dcn_ref").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.setdefault(dotted.split(".")[-1], []).append(dotted)
    return {last: names[0] for last, names in found.items() if len(names) == 1}


def resolve(dotted):
    """Import the longest module prefix of ``dotted`` and getattr the rest; the object."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def pointers(path):
    """[(kind, what, where)] of every pointer in one page or tutorial."""
    text = text_of(path)
    found = [("path", p.rstrip("/.,"), None) for p in PATHS.findall(text)]
    found += [("dotted", d, None) for d in DOTTED.findall(text)]
    modules = module_by_last_part()
    found += [("dotted", f"{modules[m]}.{n}", None) for m, n in SHORT.findall(text)
              if m in SHORT_MODULES and m in modules and n not in ("py", "md")]
    found += [("name", n, p) for p, n in POSSESSIVE.findall(text)]
    found += [("name", n, p) for n, p in AND_IN.findall(text)]
    for names, p in NAME_IN.findall(text):
        found += [("name", n, p) for n in re.findall(rf"{TICK}({NAME})", names)]
    for p, names in LISTED.findall(text):
        found += [("name", n, p) for n in re.findall(rf"{TICK}({NAME})", names)]
    return found


def test_the_pages_and_tutorials_point_at_the_code():
    counts = {kind: sum(kind == k for source in SOURCES for k, _, _ in pointers(source))
              for kind in ("path", "dotted", "name")}
    assert counts["path"] > 80 and counts["dotted"] > 60 and counts["name"] > 20, counts


@pytest.mark.parametrize("source", SOURCES, ids=[str(s.relative_to(ROOT)) for s in SOURCES])
def test_every_pointer_resolves(source):
    broken = []
    for kind, what, where in pointers(source):
        if kind == "path":
            if not (ROOT / what).exists():
                broken.append(f"no file {what}")
        elif kind == "dotted":
            try:
                resolve(what)
            except (ImportError, AttributeError) as exc:
                broken.append(f"{what}: {type(exc).__name__} {exc}")
        elif not (ROOT / where).is_file():
            broken.append(f"`{what}` in {where}: no such file")
        elif what not in defined_names(where):
            broken.append(f"`{what}` is not defined in {where}")
    assert not broken, f"{source.relative_to(ROOT)}: " + "; ".join(broken)
