"""The bridge's custom ops state what the ops of dcn_ref.ops take and give: each schema
names the op's parameters in the op's order, and the backward returns one gradient per
field of the op's gradient NamedTuple (``dcn_ref.grads``)."""
import inspect

import numpy as np
import pytest
import torch

import dcn_ref.torch  # noqa: F401  (registers the ops)
from dcn_ref import ops
from dcn_ref.grads import BY_OP

BRIDGED = ["bilinear_sample", "deform_conv2d", "deform_psroi_pool", "deform_roi_pool", "dcnv3",
           "dcnv4", "offset_sample"]


def parameters(fn):
    """The names of ``fn``'s parameters that can be given by position (not ``target``)."""
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD]


def test_the_bridge_registers_every_op_but_conv2d():
    registered = sorted(n for n in BY_OP if hasattr(torch.ops.dcn_ref, n))
    assert registered == sorted(BRIDGED)


@pytest.mark.parametrize("name", BRIDGED)
def test_the_schemas_name_the_ops_parameters_in_order(name):
    forward = getattr(torch.ops.dcn_ref, name).default._schema
    backward = getattr(torch.ops.dcn_ref, f"{name}_backward").default._schema
    assert [a.name for a in forward.arguments] == parameters(getattr(ops, name))
    assert [a.name for a in backward.arguments] == parameters(getattr(ops, f"{name}_backward"))
    assert len(backward.returns) == 1 and str(backward.returns[0].type) == "List[Tensor]"


def test_the_backward_op_returns_the_gradient_namedtuples_fields():
    rng = np.random.default_rng(0)
    image, coords = rng.standard_normal((1, 3, 4)), rng.uniform(0, 2, (1, 5, 2))
    grad = torch.ones(1, 5, dtype=torch.float64)
    returned = torch.ops.dcn_ref.bilinear_sample_backward(grad, torch.from_numpy(image),
                                                          torch.from_numpy(coords), "zeros")
    expected = ops.bilinear_sample_backward(np.ones((1, 5)), image, coords, "zeros")
    assert len(returned) == len(BY_OP["bilinear_sample"]._fields) == 2
    for tensor, name in zip(returned, BY_OP["bilinear_sample"]._fields):
        np.testing.assert_array_equal(tensor.numpy(), getattr(expected, name))
