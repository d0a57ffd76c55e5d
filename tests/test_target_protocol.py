"""Both targets implement the one interface the ops call (``dcn_ref.targets.Target``), with
the same parameters, and the ops call nothing else on a target."""
import importlib
import inspect
import re
from pathlib import Path

import pytest

import dcn_ref
from dcn_ref.targets import Target

MEMBERS = sorted(name for name, value in vars(Target).items()
                 if inspect.isfunction(value) and not name.startswith("_"))


def _parameters(fn, method):
    """(name, kind, default) of each parameter, ``self`` dropped from a Protocol method."""
    params = list(inspect.signature(fn).parameters.values())[1 if method else 0:]
    return [(p.name, p.kind, p.default) for p in params]


def test_the_protocol_lists_the_whole_interface():
    assert {"to_target", "to_host", "empty", "zeros", "deform_im2col", "sample_backward",
            "conv2d", "deform_conv2d_backward", "deform_psroi_pool_backward",
            "dcnv3_backward"} <= set(MEMBERS)
    assert "name" in Target.__annotations__


@pytest.mark.parametrize("module", ["dcn_ref.cpu", "dcn_ref.cuda"])
def test_a_target_implements_every_member_with_the_same_parameters(module):
    # importing dcn_ref.cuda compiles nothing and needs no GPU
    target = importlib.import_module(module)
    assert target.name == module.rsplit(".", 1)[1]
    for name in MEMBERS:
        fn = getattr(target, name, None)
        assert callable(fn), f"{module} has no {name}"
        assert _parameters(fn, False) == _parameters(getattr(Target, name), True), \
            f"{module}.{name}{inspect.signature(fn)} differs from Target.{name}"


def test_the_ops_call_only_members_of_the_protocol():
    called = set()
    for path in (Path(dcn_ref.__file__).parent / "ops").glob("*.py"):
        called |= set(re.findall(r"\b(?:be|call\.backend)\.(\w+)", path.read_text()))
    assert called, "no target call found: the pattern no longer matches the ops"
    assert called <= set(MEMBERS), sorted(called - set(MEMBERS))
