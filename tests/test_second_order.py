"""Forward mode (``*_jvp``) and second derivatives (``*_backward_backward``) of the sampling
ops: against their loop references (dcn_ref/reference_second.py, float64, 1e-12), against
centred differences of the op and of its backward (float64, 1e-6, sample points 0.1 px or
more from the kinks), a case worked by hand, float32, the argument checks and hostile
values. Tiny shapes: the CUDA versions are in tests/cuda/test_cuda_second_order.py."""
import numpy as np
import pytest

from dcn_ref import grads, ops, reference_second
from dcn_ref.gradcheck import check_backward_backward, check_jvp, off_kink, rel_error

from dcnv3_cases import dcnv3_case, pack
from helpers import compare, deform_case


def cases():
    """{id: (op name, inputs, params)}: every op with second derivatives, with groups, offset
    groups, masks, strides, dilations, both padding modes and points outside the image."""
    rng = np.random.default_rng(0)
    found = {}
    image = rng.standard_normal((2, 4, 5))
    coords = off_kink(rng, (2, 9, 2), -2.5, 6.5)
    for mode in ("zeros", "border"):
        found[f"bilinear_sample {mode}"] = ("bilinear_sample", {"image": image, "coords": coords},
                                            {"padding_mode": mode})
    x = rng.standard_normal((1, 2, 3, 4))
    offset = off_kink(rng, (1, 4, 3, 4), -2.5, 2.5)
    for mode in ("border", "zeros"):
        found[f"offset_sample {mode}"] = ("offset_sample", {"input": x, "offset": offset},
                                          {"padding_mode": mode})
    inputs, params = deform_case(rng, N=2, C_in=4, C_out=2, H=4, W=5, kernel=(2, 3), G=2,
                                 groups=2, stride=(1, 2), dilation=(2, 1))
    found["deform_conv2d v2 groups"] = ("deform_conv2d", inputs, params)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=3, H=4, W=4, kernel=(2, 2), mask=False,
                                 bias=False, offset_scale=3.0)
    found["deform_conv2d v1 far"] = ("deform_conv2d", inputs, params)
    inputs, params = dcnv3_case(rng, N=1, H=4, W=5, group=2, group_channels=2, kernel=(3, 2),
                                stride=(2, 1), padding=(1, 1), dilation=(1, 2), offset_scale=0.5)
    found["dcnv3"] = ("dcnv3", inputs, params)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=4, group=1, group_channels=3, kernel=(3, 3),
                                remove_center=True, offset_scale=1.5)
    found["dcnv3 remove_center"] = ("dcnv3", inputs, params)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=4, group=2, group_channels=1, kernel=(3, 3),
                                offset_scale=1.5)
    offset_mask = pack(inputs["offset"], inputs["mask"], 2, extra=3, fill=np.nan)
    found["dcnv4"] = ("dcnv4", {"input": inputs["input"], "offset_mask": offset_mask}, params)
    return found


CASES = cases()


def fn(op, kind):
    return getattr(ops, f"{op}{kind}"), getattr(reference_second, f"{op}{kind}")


def random_like(rng, inputs):
    return {k: None if v is None else rng.standard_normal(v.shape) for k, v in inputs.items()
            if k != "rois"}


def differentiable(op):
    return grads.BY_OP[op]._fields


# -- against the loop references -------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_jvp_equals_its_loop_reference(case):
    op, inputs, params = CASES[case]
    rng = np.random.default_rng(len(case))
    ours, loops = fn(op, "_jvp")
    tangents = random_like(rng, inputs)
    names = [n for n in differentiable(op) if tangents[n] is not None]
    # all tangents at once, then each alone (the others None)
    for chosen in [names] + [[n] for n in names]:
        given = {f"{n}_dot": tangents[n] for n in chosen}
        compare(ours(**inputs, **params, **given), loops(**inputs, **params, **given), 1e-12,
                f"{op}_jvp along {chosen}")


@pytest.mark.parametrize("case", CASES)
def test_backward_backward_equals_its_loop_reference(case):
    op, inputs, params = CASES[case]
    rng = np.random.default_rng(len(case))
    ours, loops = fn(op, "_backward_backward")
    grad_output = rng.standard_normal(getattr(ops, op)(**inputs, **params).shape)
    full = random_like(rng, inputs)
    names = [n for n in differentiable(op) if full[n] is not None]
    Grads = grads.BY_OP[op]
    for chosen in [names] + [[n] for n in names]:
        grad_grads = Grads(**{n: full[n] if n in chosen else None for n in Grads._fields})
        result = ours(grad_grads, grad_output, **inputs, **params)
        assert type(result) is grads.BACKWARD_BY_OP[op]
        compare(result, loops(grad_grads, grad_output, **inputs, **params), 1e-12,
                f"{op}_backward_backward along {chosen}")


# -- against finite differences ---------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_against_centred_differences(case):
    """The JVP against differences of the op along a random tangent of each input; the double
    backward against differences of sum(gg * backward) in every element of grad_output and
    of each input."""
    op, inputs, params = CASES[case]
    forward, backward = getattr(ops, op), getattr(ops, f"{op}_backward")
    rows = (check_jvp(forward, getattr(ops, f"{op}_jvp"), inputs, params)
            + check_backward_backward(forward, backward, getattr(ops, f"{op}_backward_backward"),
                                      inputs, params))
    failed = [f"{r.op}.{r.input} {r.max_rel_error:.2e}" for r in rows if not r.passed]
    assert not failed, failed
    given = [n for n in differentiable(op) if inputs[n] is not None]
    assert [r.input for r in rows] == given + ["grad_output"] + given


def test_the_checks_catch_a_wrong_jvp_and_a_wrong_double_backward():
    op, inputs, params = CASES["bilinear_sample border"]

    def wrong_jvp(*args, coords_dot=None, **kw):
        return ops.bilinear_sample_jvp(*args, coords_dot=None if coords_dot is None
                                       else 1.001 * coords_dot, **kw)

    def wrong_backward_backward(*args, **kw):
        right = ops.bilinear_sample_backward_backward(*args, **kw)
        return right._replace(coords=right.coords * 1.001)

    rows = check_jvp(ops.bilinear_sample, wrong_jvp, inputs, params, wrt=["image", "coords"])
    assert [r.passed for r in rows] == [True, False]
    rows = check_backward_backward(ops.bilinear_sample, ops.bilinear_sample_backward,
                                   wrong_backward_backward, inputs, params)
    assert [r.passed for r in rows] == [True, True, False]


# -- worked by hand --------------------------------------------------------------------------

def test_bilinear_second_derivatives_by_hand():
    """One point (0.25, 0.5) in the cell of the 2x2 image [[1, 2], [3, 5]]: v is linear in y
    and in x, so d2v/dy2 = d2v/dx2 = 0, and d2v/dydx = 1 - 2 - 3 + 5 = 1."""
    image = np.array([[[1.0, 2.0], [3.0, 5.0]]])
    coords = np.array([[[0.25, 0.5]]])
    g = np.array([[1.0]])
    # the backward's coordinate gradient is (dv/dy, dv/dx) = (0.5*2 + 0.5*3, 0.75*1 + 0.25*2)
    np.testing.assert_allclose(ops.bilinear_sample_backward(g, image, coords).coords,
                               [[[2.5, 1.25]]])
    along_y = ops.bilinear_sample_backward_backward((None, np.array([[[1.0, 0.0]]])), g, image,
                                                    coords)
    along_x = ops.bilinear_sample_backward_backward((None, np.array([[[0.0, 1.0]]])), g, image,
                                                    coords)
    # d(dv/dy)/dy = 0 and d(dv/dy)/dx = 1; d(dv/dx)/dy = 1 and d(dv/dx)/dx = 0
    np.testing.assert_array_equal(along_y.coords, [[[0.0, 1.0]]])
    np.testing.assert_array_equal(along_x.coords, [[[1.0, 0.0]]])
    # d(dv/dy)/dpixel = dw/dy = -(1 - lx), -lx, 1 - lx, lx; d(dv/dx)/dpixel = dw/dx
    np.testing.assert_array_equal(along_y.image, [[[-0.5, -0.5], [0.5, 0.5]]])
    np.testing.assert_array_equal(along_x.image, [[[-0.75, 0.75], [-0.25, 0.25]]])
    # and d/d grad_output is dv/dy (along y), dv/dx (along x): the forward mode
    np.testing.assert_array_equal(along_y.grad_output, [[2.5]])
    np.testing.assert_array_equal(along_x.grad_output, [[1.25]])
    np.testing.assert_array_equal(
        ops.bilinear_sample_jvp(image, coords, coords_dot=np.array([[[1.0, 1.0]]])), [[3.75]])


# -- float32, untouched inputs, layouts -----------------------------------------------------

@pytest.mark.parametrize("case", ["bilinear_sample border", "deform_conv2d v2 groups", "dcnv4"])
def test_float32_is_close_to_the_float64_loop_reference(case):
    op, inputs, params = CASES[case]
    rng = np.random.default_rng(1)
    tangents = random_like(rng, inputs)
    f32 = {k: None if v is None else v.astype(np.float32) for k, v in inputs.items()}
    t32 = {f"{k}_dot": None if v is None else v.astype(np.float32) for k, v in tangents.items()}
    jvp, jvp_loops = fn(op, "_jvp")
    out = jvp(**f32, **params, **t32)
    assert out.dtype == np.float32
    reference = jvp_loops(**inputs, **params, **{f"{k}_dot": v for k, v in tangents.items()})
    assert rel_error(out, reference) < 1e-5
    bb, bb_loops = fn(op, "_backward_backward")
    g = rng.standard_normal(reference.shape)
    Grads = grads.BY_OP[op]
    result = bb(Grads(*(t32[f"{n}_dot"] for n in Grads._fields)), g.astype(np.float32), **f32,
                **params)
    expected = bb_loops(Grads(*(tangents[n] for n in Grads._fields)), g, **inputs, **params)
    for name in result._fields:
        ours, theirs = getattr(result, name), getattr(expected, name)
        if theirs is not None:
            assert ours.dtype == np.float32 and rel_error(ours, theirs) < 1e-5, name


def test_inputs_are_left_alone_and_views_are_accepted():
    op, inputs, params = CASES["deform_conv2d v2 groups"]
    rng = np.random.default_rng(2)
    tangents = random_like(rng, inputs)
    # every array a non-contiguous view (every other element of a larger array)
    views = {k: None if v is None else np.repeat(v, 2, axis=-1)[..., ::2]
             for k, v in {**inputs, **{f"{n}_dot": t for n, t in tangents.items()}}.items()}
    copies = {k: None if v is None else v.copy() for k, v in views.items()}
    g = rng.standard_normal(ops.deform_conv2d(**inputs, **params).shape)
    out = ops.deform_conv2d_jvp(**views, **params)
    result = ops.deform_conv2d_backward_backward(
        ops.DeformConv2dGrads(*(views[f"{n}_dot"] for n in ops.DeformConv2dGrads._fields)), g,
        **{k: views[k] for k in inputs}, **params)
    for k, v in views.items():
        np.testing.assert_array_equal(v, copies[k], err_msg=k)
    compare(out, reference_second.deform_conv2d_jvp(**copies, **params), 1e-12, "jvp")
    compare(result, reference_second.deform_conv2d_backward_backward(
        ops.DeformConv2dGrads(*(tangents[n] for n in ops.DeformConv2dGrads._fields)), g,
        **inputs, **params), 1e-12, "backward_backward")


# -- hostile values and arguments -------------------------------------------------------------

def test_nan_inf_and_huge_offsets_and_masks_give_zero_for_their_taps():
    """A tap with a NaN offset or mask, or one far outside (inf, 1e30), touches no pixel:
    it changes by 0 and its second derivatives are 0, as its first are, whatever the
    tangents; the other taps are those of the loop reference."""
    rng = np.random.default_rng(3)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=4, W=4, kernel=(2, 2))
    for bad in (np.nan, np.inf, -np.inf, 1e30):
        hostile = {k: None if v is None else v.copy() for k, v in inputs.items()}
        hostile["offset"][0, 0, 1, 1] = bad                   # dy of tap 0 at pixel (1, 1)
        hostile["mask"][0, 3, 2, 0] = np.nan                  # tap 3 at pixel (2, 0)
        tangents = random_like(rng, inputs)
        g = rng.standard_normal((1, 2, 5, 5))
        jvp = ops.deform_conv2d_jvp(**hostile, **params,
                                    **{f"{n}_dot": t for n, t in tangents.items()})
        Grads = ops.DeformConv2dGrads
        result = ops.deform_conv2d_backward_backward(Grads(**tangents), g, **hostile, **params)
        assert np.isfinite(jvp).all() and all(np.isfinite(a).all() for a in result if a is not None)
        assert result.offset[0, 0:2, 1, 1].tolist() == [0.0, 0.0]
        assert result.mask[0, 0, 1, 1] == 0.0 and result.mask[0, 3, 2, 0] == 0.0
        loops = reference_second.deform_conv2d_backward_backward(Grads(**tangents), g, **hostile,
                                                                 **params)
        compare(result, loops, 1e-12, f"offset {bad}")


def test_empty_batches_and_images_without_pixels():
    rng = np.random.default_rng(4)
    image, coords = np.zeros((0, 3, 4)), np.zeros((0, 5, 2))
    assert ops.bilinear_sample_jvp(image, coords, image_dot=image).shape == (0, 5)
    result = ops.bilinear_sample_backward_backward((image, coords), np.zeros((0, 5)), image,
                                                   coords)
    assert [a.shape for a in result] == [(0, 5), (0, 3, 4), (0, 5, 2)]
    inputs, params = dcnv3_case(rng, N=1, H=0, W=4, group=1, group_channels=2, kernel=(3, 3),
                                padding=(2, 2))                 # no pixel, a (2, 6) output
    out = ops.dcnv3_jvp(**inputs, **params, offset_dot=inputs["offset"])
    assert out.shape == (1, 2, 6, 2) and not out.any()
    result = ops.dcnv3_backward_backward((None, inputs["offset"], inputs["mask"]),
                                         np.ones((1, 2, 6, 2)), **inputs, **params)
    assert [a.shape for a in result] == [(1, 2, 6, 2), (1, 0, 4, 2), (1, 2, 6, 18), (1, 2, 6, 9)]
    assert not any(a.any() for a in result)


def test_wrong_tangents_and_cotangents_are_refused_by_name():
    op, inputs, params = CASES["deform_conv2d v1 far"]         # no mask, no bias
    g = np.zeros(ops.deform_conv2d(**inputs, **params).shape)
    x = inputs["input"]
    with pytest.raises(ValueError, match=r"^input_dot: expected shape \(1, 2, 4, 4\) \(the shape "
                                         r"of input\), got \(1, 2, 4, 5\)"):
        ops.deform_conv2d_jvp(**inputs, **params, input_dot=np.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match=r"^mask_dot: expected None, as mask is None"):
        ops.deform_conv2d_jvp(**inputs, **params, mask_dot=np.zeros((1, 4, 5, 5)))
    with pytest.raises(ValueError, match=r"^offset_dot: expected dtype float64"):
        ops.deform_conv2d_jvp(**inputs, **params,
                              offset_dot=inputs["offset"].astype(np.float32))
    with pytest.raises(ValueError, match=r"^grad_grads: expected a DeformConv2dGrads \(input, "
                                         r"offset, weight, bias, mask; None for zero\) or a "
                                         r"tuple of 5, got tuple of 2"):
        ops.deform_conv2d_backward_backward((x, None), g, **inputs, **params)
    with pytest.raises(ValueError, match=r"^grad_grads: expected a DeformConv2dGrads .*, got "
                                         r"ndarray"):
        ops.deform_conv2d_backward_backward(x, g, **inputs, **params)
    with pytest.raises(ValueError, match=r"^grad_grads: expected a DeformConv2dGrads .*, got "
                                         r"DeformConv2dBackwardGrads of 6"):
        ops.deform_conv2d_backward_backward(grads.DeformConv2dBackwardGrads(*[None] * 6), g,
                                            **inputs, **params)
    with pytest.raises(ValueError, match=r"^grad_grads.bias: expected None, as bias is None"):
        ops.deform_conv2d_backward_backward((None, None, None, np.zeros(3), None), g, **inputs,
                                            **params)
    with pytest.raises(ValueError, match=r"^grad_grads.offset: expected 4 dimensions"):
        ops.deform_conv2d_backward_backward((None, np.zeros(3), None, None, None), g, **inputs,
                                            **params)
    with pytest.raises(ValueError, match=r"^grad_output: expected shape"):
        ops.deform_conv2d_backward_backward((None,) * 5, g[:, :1], **inputs, **params)
    image, coords = CASES["bilinear_sample zeros"][1].values()
    with pytest.raises(ValueError, match=r"^coords_dot: expected 3 dimensions"):
        ops.bilinear_sample_jvp(image, coords, coords_dot=np.zeros(3))
    with pytest.raises(ValueError, match=r"^grad_grads.offset_mask: expected shape"):
        op, inputs, params = CASES["dcnv4"]
        ops.dcnv4_backward_backward((None, inputs["offset_mask"][..., 1:]),
                                    np.zeros((1, 3, 4, 2)), **inputs, **params)


def test_the_namedtuples_are_named_after_the_backwards_inputs():
    for op, Grads in grads.BACKWARD_BY_OP.items():
        assert Grads._fields == ("grad_output",) + grads.BY_OP[op]._fields
        assert Grads.__name__ == grads.BY_OP[op].__name__.replace("Grads", "BackwardGrads")
