"""The catalogue of `dcn-ref gradcheck`: one small float64 case per op and mode.

The numerics (centred differences, relative errors, the row type) are in
``dcn_ref.gradcheck``; this module only lists what to check and runs it, row by row:
every op's gradients, then, for the ops that have them, the forward mode (rows named
``<op>_jvp``) and the second derivatives (rows named ``<op>_backward``: the gradients of
the backward pass, with respect to grad_output and every input) on the same cases.
"""
import numpy as np

from .gradcheck import check_backward_backward, check_jvp, iter_gradient_checks, off_kink


def standard_cases(seed=0):
    """[(op name, forward, backward, inputs, params)]: one small float64 case per op and
    mode, with groups, offset groups, masks, strides and samples outside the image."""
    from . import ops

    rng = np.random.default_rng(seed)
    cases = []
    image = rng.standard_normal((2, 5, 6))
    coords = off_kink(rng, (2, 24, 2), -2.5, 7.5)
    for mode in ("zeros", "border"):
        cases.append((f"bilinear_sample[{mode}]", ops.bilinear_sample, ops.bilinear_sample_backward,
                      {"image": image, "coords": coords}, {"padding_mode": mode}))
    x = rng.standard_normal((2, 3, 5, 4))
    offset = off_kink(rng, (2, 6, 5, 4), -3, 3)
    for mode in ("border", "zeros"):
        cases.append((f"offset_sample[{mode}]", ops.offset_sample, ops.offset_sample_backward,
                      {"input": x, "offset": offset}, {"padding_mode": mode}))
    x = rng.standard_normal((2, 4, 6, 5))
    weight = rng.standard_normal((6, 2, 3, 2))
    bias = rng.standard_normal(6)
    conv = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}
    cases.append(("conv2d", ops.conv2d, ops.conv2d_backward,
                  {"input": x, "weight": weight, "bias": bias}, {**conv, "groups": 2}))
    out_h, out_w = ops.conv2d(x, weight, None, groups=2, **conv).shape[2:]
    G, K = 2, 6
    offset = off_kink(rng, (2, 2 * G * K, out_h, out_w), -2.5, 2.5)
    mask = rng.uniform(0.2, 1.0, (2, G * K, out_h, out_w))
    cases.append(("deform_conv2d[v1]", ops.deform_conv2d, ops.deform_conv2d_backward,
                  {"input": x, "offset": offset, "weight": weight, "bias": bias}, conv))
    cases.append(("deform_conv2d[v2]", ops.deform_conv2d, ops.deform_conv2d_backward,
                  {"input": x, "offset": offset, "weight": weight, "bias": bias, "mask": mask},
                  conv))
    cases += _roi_cases(rng)
    cases += _dcnv3_cases(rng)
    return cases


def _roi_cases(rng):
    """The RoI pooling ops, with sample points kept off the kinks by construction."""
    from . import ops

    # 2x2 RoIs in 2x2 bins: bins 1 px wide, samples at x1 + j -/+ 0.25 + dx with x1 = k + 0.5
    # and |dx| = gamma * 2 * |offset| < 0.2. The last two RoIs stick out of the 5x6 image.
    rois = np.array([[0, 1.5, 0.5, 3.5, 2.5], [1, -1.5, 2.5, 0.5, 4.5], [1, 4.5, 3.5, 6.5, 5.5]])
    inputs = {"input": rng.standard_normal((2, 3, 5, 6)), "rois": rois,
              "offset": rng.uniform(-1, 1, (3, 2, 2, 2)), "mask": rng.uniform(0.2, 1, (3, 1, 2, 2))}
    cases = [("deform_roi_pool", ops.deform_roi_pool, ops.deform_roi_pool_backward, inputs,
              {"output_size": 2, "sampling_ratio": 2, "gamma": 0.1})]
    # whole-pixel RoIs 4 px wide: samples on half-integers (where samples start being
    # skipped) moved by trans_std * 4 * |trans|, between 0.04 and 0.2 px
    rois = np.array([[0, 1, 0, 4, 3], [1, -2, 1, 1, 4]], np.float64)
    trans = rng.uniform(0.1, 0.5, (2, 4, 2, 2)) * rng.choice([-1, 1], (2, 4, 2, 2))
    inputs = {"input": rng.standard_normal((2, 8, 5, 6)), "rois": rois, "trans": trans}
    cases.append(("deform_psroi_pool", ops.deform_psroi_pool, ops.deform_psroi_pool_backward,
                  inputs, {"output_dim": 2, "group_size": 2, "pooled_size": 2,
                           "sample_per_part": 2, "trans_std": 0.1}))
    return cases


def dcnv3_offsets(rng, n, out_h, out_w, group, kernel_size, dilation, offset_scale,
                  remove_center=False, reach=2.5, margin=0.1):
    """Offsets (n, out_h, out_w, group*P*2) in DCNv3's (x, y) layout whose sample points lie
    ``margin`` or more from integer coordinates (the kinks), up to ``reach`` px from the grid
    centre: the displacement (grid + offset) * offset_scale is drawn off the integers and the
    offset solved from it (offset_scale must not be 0)."""
    from .reference_dcnv3 import kernel_points

    kh, kw = kernel_size
    dh, dw = dilation
    points = kernel_points(kh, kw, remove_center)
    half_h, half_w = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    grid = np.array([(i * dw - half_w, j * dh - half_h) for i, j in points], np.float64)  # (P, 2)
    shift = off_kink(rng, (n, out_h, out_w, group, len(points), 2), -reach, reach, margin)
    return (shift / offset_scale - grid).reshape(n, out_h, out_w, group * len(points) * 2)


def _dcnv3_cases(rng):
    """dcnv3 with a non-square kernel, stride, dilation, two groups and points outside the
    image; dcnv3 with remove_center; dcnv4 with padding entries in its packed array."""
    from . import ops

    cases = []
    x = rng.standard_normal((2, 5, 6, 4))
    grid = {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1), "dilation": (1, 2),
            "group": 2, "offset_scale": 0.5}
    offset = dcnv3_offsets(rng, 2, 3, 6, 2, (3, 2), (1, 2), 0.5)
    mask = rng.uniform(-1, 1, (2, 3, 6, 2 * 6))
    cases.append(("dcnv3", ops.dcnv3, ops.dcnv3_backward,
                  {"input": x, "offset": offset, "mask": mask}, grid))
    x = rng.standard_normal((1, 4, 5, 3))
    centre = {"kernel_size": 3, "padding": 1, "offset_scale": 1.5, "remove_center": True}
    offset = dcnv3_offsets(rng, 1, 4, 5, 1, (3, 3), (1, 1), 1.5, remove_center=True)
    mask = rng.uniform(-1, 1, (1, 4, 5, 8))
    cases.append(("dcnv3[remove_center]", ops.dcnv3, ops.dcnv3_backward,
                  {"input": x, "offset": offset, "mask": mask}, centre))
    x = rng.standard_normal((2, 5, 6, 4))
    G, P = 2, 6
    offset = dcnv3_offsets(rng, 2, 3, 6, G, (3, 2), (1, 2), 0.5).reshape(2, 3, 6, G, 2 * P)
    mask = rng.uniform(-1, 1, (2, 3, 6, G, P))
    padding = rng.standard_normal((2, 3, 6, 5))              # D = G*P*3 + 5
    offset_mask = np.concatenate([np.concatenate([offset, mask], -1).reshape(2, 3, 6, -1),
                                  padding], -1)
    cases.append(("dcnv4", ops.dcnv4, ops.dcnv4_backward,
                  {"input": x, "offset_mask": offset_mask}, grid))
    return cases


def renamed(case_name, suffix):
    """The name of a case's rows of another order: ``deform_conv2d[v2]`` with suffix
    ``_jvp`` is ``deform_conv2d_jvp[v2]``."""
    op, bracket, mode = case_name.partition("[")
    return f"{op}{suffix}{bracket}{mode}"


def iter_checks(target="cpu", tol=1e-6, seed=0):
    """Run ``check_gradients`` on every standard case, then ``check_jvp`` and
    ``check_backward_backward`` on those whose op has a forward mode and second derivatives,
    yielding each GradCheckRow as soon as it is computed (so a command line can print the
    table as it grows)."""
    from . import ops

    cases = standard_cases(seed)
    for name, forward, backward, inputs, params in cases:
        yield from iter_gradient_checks(forward, backward, inputs, params, op=name,
                                        target=target, tol=tol)
    for name, forward, backward, inputs, params in cases:
        jvp = getattr(ops, f"{forward.__name__}_jvp", None)
        if jvp is not None:
            yield from check_jvp(forward, jvp, inputs, params, op=renamed(name, "_jvp"),
                                 target=target, tol=tol, seed=seed)
    for name, forward, backward, inputs, params in cases:
        backward_backward = getattr(ops, f"{forward.__name__}_backward_backward", None)
        if backward_backward is not None:
            yield from check_backward_backward(forward, backward, backward_backward, inputs,
                                               params, op=renamed(name, "_backward"),
                                               target=target, tol=tol, seed=seed)
