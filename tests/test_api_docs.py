"""The API pages say what the code does: every docstring they render parses cleanly, each
parameter's default (as the page states it) equals the default of ``inspect.signature``,
and no formula in a docstring's prose turns into italics.

The docstrings are read as the API pages read them: by griffe, the parser of mkdocstrings,
with the numpy style of mkdocs.yml, starting from every ``::: name`` of the pages (and from
``dcn_ref.ops``, ``dcn_ref.torch`` and ``dcn_ref.nn`` themselves) and going through their
public members. The defaults are compared with the signatures of the imported objects.
"""
import ast
import importlib
import inspect
import logging
import re
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["dcn_ref.ops", "dcn_ref.torch", "dcn_ref.nn"]


def rendered_names():
    names = list(PACKAGES)
    for page in sorted((ROOT / "docs").rglob("*.md")):
        names += re.findall(r"^::: ([\w.]+)", page.read_text(), re.M)
    return list(dict.fromkeys(names))


def public_objects(obj, seen):
    """``obj`` and the public functions and classes under it, as mkdocstrings lists them."""
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring:
        yield obj
    if not (obj.is_module or obj.is_class):
        return
    for name, member in obj.members.items():
        if name.startswith("_") or not member.is_public:
            continue
        if member.is_alias:
            try:
                member = member.final_target
            except griffe.AliasResolutionError:     # an import from outside dcn_ref
                continue
        if member.path.startswith("dcn_ref.") and (member.is_function or member.is_class):
            yield from public_objects(member, seen)


@pytest.fixture(scope="module")
def documented(caplog_module):
    """The griffe objects with a docstring, and what griffe warned while parsing them."""
    package = griffe.load("dcn_ref", search_paths=[str(ROOT)], docstring_parser="numpy")
    seen, objects = set(), []
    for name in rendered_names():
        objects += public_objects(package[name.removeprefix("dcn_ref.")], seen)
    for obj in objects:
        obj.docstring.parsed          # parse now, with the warnings captured
    return objects, [r.getMessage() for r in caplog_module]


@pytest.fixture(scope="module")
def caplog_module():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("griffe")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def runtime_object(path):
    """Import ``dcn_ref.a.b.C.f`` and return the object (the module part imported)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def stated_equals(stated, actual, module):
    """Whether a default written in a docstring means the value ``actual``: a literal, or a
    (dotted) name of the object's module, such as ``np.float32`` or ``MNIST_URL``."""
    try:
        return ast.literal_eval(stated) == actual
    except (ValueError, SyntaxError):
        pass
    if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", stated):
        head, *rest = stated.split(".")
        if head in vars(module):
            value = vars(module)[head]
            for part in rest:
                value = getattr(value, part)
            return value == actual
    return False


def parameter_sections(obj):
    return [s for s in obj.docstring.parsed if s.kind.value in ("parameters", "other parameters")]


def test_the_pages_render_the_public_api(documented):
    objects, _ = documented
    paths = {obj.path for obj in objects}
    # spot checks that the walk reaches what the pages show
    for path in ["dcn_ref.ops.deform_conv2d.deform_conv2d", "dcn_ref.torch.functional.dcnv3",
                 "dcn_ref.torch.modules.DCNv4", "dcn_ref.nn.roi.DeformRoIPool",
                 "dcn_ref.experiment.run", "dcn_ref.torch.mmcv.ModulatedDeformConv2dPack"]:
        assert path in paths, path
    assert len(objects) > 100


def test_every_docstring_parses_without_a_warning(documented):
    _, warnings = documented
    assert not warnings, "\n".join(warnings)


def test_each_parameter_line_names_one_parameter(documented):
    """``a, b : int`` gives b the default of a on the page: one parameter a line."""
    objects, _ = documented
    grouped = []
    for obj in objects:
        lines = obj.docstring.value.splitlines()
        for i, line in enumerate(lines[:-1]):
            header = line.strip() in ("Parameters", "Other Parameters")
            if header and set(lines[i + 1].strip()) == {"-"}:
                for item in lines[i + 2:]:
                    if not item.strip() or set(item.strip()) == {"-"}:
                        break
                    if item[:1] != " " and re.match(r"\w+(, *\w+)+\s*(:|$)", item):
                        grouped.append(f"{obj.path}: {item}")
    assert not grouped, "\n".join(grouped)


def test_the_stated_defaults_are_the_signatures(documented):
    objects, _ = documented
    wrong, checked = [], 0
    for obj in objects:
        if not parameter_sections(obj):
            continue
        runtime = runtime_object(obj.path)
        signature = inspect.signature(runtime)
        module = inspect.getmodule(runtime)
        for section in parameter_sections(obj):
            for param in section.value:
                if param.name not in signature.parameters:
                    wrong.append(f"{obj.path}: {param.name} is not a parameter")
                    continue
                default = signature.parameters[param.name].default
                optional = str(param.annotation or "").endswith("optional")
                if param.value is None:
                    if optional and default is inspect.Parameter.empty:
                        wrong.append(f"{obj.path}: {param.name} is 'optional' but required")
                    continue
                checked += 1
                if default is inspect.Parameter.empty:
                    wrong.append(f"{obj.path}: {param.name} has no default, the page says "
                                 f"{param.value}")
                elif not stated_equals(str(param.value), default, module):
                    wrong.append(f"{obj.path}: {param.name} defaults to {default!r}, the page "
                                 f"says {param.value}")
    assert not wrong, "\n".join(wrong)
    assert checked > 200


def prose(text):
    """``text`` without its code: code spans, and indented or ``::`` literal blocks."""
    text = re.sub(r"``.+?``|`[^`\n]+`", "code", text, flags=re.S)
    kept, in_block, base = [], False, None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if not line.strip():
            kept.append(line)
            continue
        if base is None:
            base = indent
        if in_block and indent > base:
            continue
        in_block = False
        if kept and not kept[-1].strip() and indent >= base + 4:   # a Markdown code block
            in_block = True
            continue
        kept.append(line)
        if line.rstrip().endswith("::"):
            in_block = True
    return "\n".join(kept)


def docstring_texts(obj):
    """The parts of a docstring that the page renders as Markdown."""
    for section in obj.docstring.parsed:
        value = section.value
        if section.kind.value == "text":
            yield value
        elif section.kind.value == "admonition":
            yield value.contents
        elif isinstance(value, list):
            for item in value:
                yield getattr(item, "description", "") or ""


def test_no_formula_in_the_prose_turns_into_italics(documented):
    """``g*kh*kw`` outside a code span renders as g<em>kh</em>kw."""
    objects, _ = documented
    starred = []
    for obj in objects:
        for text in docstring_texts(obj):
            for match in re.finditer(r"[\w)\]]\*+[\w(\[]", prose(text)):
                starred.append(f"{obj.path}: ...{match.group()}...")
    assert not starred, "\n".join(starred)


def test_type_fields_hold_types_not_sentences(documented):
    """The page sets a parameter's type in code, apart from its description: prose written
    on the type line ("int, the number of ...; ...") ends up half in each."""
    objects, _ = documented
    sentences = []
    for obj in objects:
        for section in parameter_sections(obj):
            for param in section.value:
                annotation = str(param.annotation or "")
                if re.search(r"; |: |[.:,]$|\(default|, (the|a|an|as|of) ", annotation):
                    sentences.append(f"{obj.path}: {param.name} : {annotation}")
    assert not sentences, "\n".join(sentences)
