"""Every op's backward returns the NamedTuple that ``dcn_ref.grads.BY_OP`` names for it
(the PyTorch bridge reads the differentiable inputs from there), its fields the op's
array inputs in the order of the op's parameters, and so does the op's loop reference."""
import inspect

import numpy as np
import pytest

from dcn_ref import grads, reference, reference_dcnv3, reference_roi

from test_jit_off import op_cases

CASES = {case[0]: case for case in op_cases(np.float64)}
REFERENCES = {"bilinear_sample": reference, "offset_sample": reference, "conv2d": reference,
              "deform_conv2d": reference, "deform_roi_pool": reference_roi,
              "deform_psroi_pool": reference_roi, "dcnv3": reference_dcnv3,
              "dcnv4": reference_dcnv3}


def test_every_differentiable_op_has_its_gradients_named():
    assert sorted(grads.BY_OP) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_returns_the_ops_gradient_namedtuple(name):
    _, forward, backward, inputs, params = CASES[name]
    expected = grads.BY_OP[name]
    parameters = list(inspect.signature(forward).parameters)
    assert [f for f in parameters if f in expected._fields] == list(expected._fields)
    out = forward(**inputs, **params)
    assert type(backward(np.ones_like(out), **inputs, **params)) is expected
    loops = getattr(REFERENCES[name], f"{name}_backward")
    assert type(loops(np.ones_like(out), **inputs, **params)) is expected
