"""Forward mode and second derivatives on the CUDA target against the CPU target (float64,
1e-10), the image gradients both scattered with atomics and gathered (deterministic=True,
bitwise reproducible). Tiny shapes: the simulator runs each thread in Python."""
import numpy as np
import pytest
from numba import cuda

from dcn_ref import grads, ops
from dcn_ref.gradcheck import off_kink

from dcnv3_cases import dcnv3_case, pack
from helpers import assert_close, compare, deform_case


def cases():
    rng = np.random.default_rng(0)
    found = {}
    image, coords = rng.standard_normal((2, 3, 4)), off_kink(rng, (2, 5, 2), -2, 5)
    for mode in ("zeros", "border"):
        found[f"bilinear_sample {mode}"] = ("bilinear_sample", {"image": image, "coords": coords},
                                            {"padding_mode": mode})
    found["offset_sample"] = ("offset_sample", {"input": rng.standard_normal((1, 1, 3, 3)),
                                                "offset": off_kink(rng, (1, 2, 3, 3), -2, 2)},
                              {"padding_mode": "zeros"})
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=3, W=3, kernel=(2, 2), G=2,
                                 groups=2, padding=(0, 0))
    found["deform_conv2d"] = ("deform_conv2d", inputs, params)
    inputs, params = dcnv3_case(rng, N=1, H=3, W=3, group=2, group_channels=1, kernel=(2, 2),
                                padding=(0, 0), offset_scale=0.5)
    found["dcnv3"] = ("dcnv3", inputs, params)
    offset_mask = pack(inputs["offset"], inputs["mask"], 2, extra=1, fill=np.nan)
    found["dcnv4"] = ("dcnv4", {"input": inputs["input"], "offset_mask": offset_mask}, params)
    return found


CASES = cases()


@pytest.mark.parametrize("case", CASES)
def test_jvp_and_backward_backward_equal_cpu(case):
    op, inputs, params = CASES[case]
    rng = np.random.default_rng(1)
    Grads = grads.BY_OP[op]
    tangents = Grads(*(None if inputs[n] is None else rng.standard_normal(inputs[n].shape)
                       for n in Grads._fields))
    jvp = getattr(ops, f"{op}_jvp")
    given = {f"{n}_dot": t for n, t in tangents._asdict().items()}
    cpu = jvp(**inputs, **params, **given)
    assert_close(jvp(**inputs, **params, **given, target="cuda"), cpu, 1e-10, f"{op}_jvp")
    backward_backward = getattr(ops, f"{op}_backward_backward")
    g = rng.standard_normal(cpu.shape)
    cpu = backward_backward(tangents, g, **inputs, **params)
    for deterministic in (False, True):
        compare(backward_backward(tangents, g, **inputs, **params, target="cuda",
                                  deterministic=deterministic),
                cpu, 1e-10, f"{op}_backward_backward deterministic={deterministic}")


def test_deterministic_is_bitwise_reproducible():
    # far-reaching points on a small image: many samples share pixels
    rng = np.random.default_rng(2)
    inputs, params = dcnv3_case(rng, N=1, H=2, W=2, group=1, group_channels=1, kernel=(2, 2),
                                padding=(1, 1), reach=2.0, dtype=np.float32)
    tangents = grads.DCNv3Grads(*(rng.standard_normal(v.shape).astype(np.float32)
                                  for v in inputs.values()))
    g = rng.standard_normal((1, 3, 3, 1)).astype(np.float32)
    runs = [ops.dcnv3_backward_backward(tangents, g, **inputs, **params, target="cuda",
                                        deterministic=True) for _ in range(2)]
    for name in runs[0]._fields:
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name),
                                      err_msg=name)
    image, coords = rng.standard_normal((1, 2, 2)), off_kink(rng, (1, 6, 2), -1, 2)
    gg = (rng.standard_normal(image.shape), rng.standard_normal(coords.shape))
    g = rng.standard_normal((1, 6))
    runs = [ops.bilinear_sample_backward_backward(gg, g, image, coords, target="cuda",
                                                  deterministic=True) for _ in range(2)]
    for name in runs[0]._fields:
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name),
                                      err_msg=name)


def test_device_arrays_in_give_device_arrays_out_in_float32():
    rng = np.random.default_rng(3)
    image = rng.standard_normal((1, 3, 3)).astype(np.float32)
    coords = off_kink(rng, (1, 4, 2), -1, 3).astype(np.float32)
    coords_dot = rng.standard_normal(coords.shape).astype(np.float32)
    out = ops.bilinear_sample_jvp(cuda.to_device(image), cuda.to_device(coords),
                                  coords_dot=cuda.to_device(coords_dot))
    assert hasattr(out, "copy_to_host")
    host = out.copy_to_host()
    assert host.dtype == np.float32
    assert_close(host, ops.bilinear_sample_jvp(image, coords, coords_dot=coords_dot), 1e-6,
                 "float32 on the device")
