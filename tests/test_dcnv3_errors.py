"""Every argument mistake of dcnv3 and dcnv4 is a ValueError naming the argument, what it
got and what it expected: one case per message."""
import numpy as np
import pytest

from dcn_ref import ops

f64, f32 = np.float64, np.float32


def z(*shape, dtype=f64):
    return np.zeros(shape, dtype)


X = z(2, 5, 6, 4)                          # input (N=2, H=5, W=6, C=4)
OFF, MASK = z(2, 3, 4, 2 * 9 * 2), z(2, 3, 4, 2 * 9)   # kernel 3, group 2: H_out, W_out = 3, 4
OM = z(2, 3, 4, 56)                        # DCNv4: 2*9*3 = 54, plus 2 padding entries
GO = z(2, 3, 4, 4)


def v3(**kw):
    args = {"input": X, "offset": OFF, "mask": MASK, "group": 2, **kw}
    return ops.dcnv3(**args)


def v4(**kw):
    args = {"input": X, "offset_mask": OM, "group": 2, **kw}
    return ops.dcnv4(**args)


CASES = {
    "input None": (lambda: v3(input=None), r"input: expected an array of shape \(N, H, W, C\), got None"),
    "input rank": (lambda: v3(input=z(5, 6, 4)), r"input: expected 4 dimensions \(N, H, W, C\), got shape \(5, 6, 4\)"),
    "input dtype": (lambda: v3(input=X.astype(int)), r"input: expected dtype float32 or float64, got int64"),
    "input empty plane, kernel does not fit": (lambda: v3(input=z(2, 0, 6, 4)), r"input: expected an image at least as large as the dilated kernel after padding, got 0x6 with kernel 3x3"),
    "input too small": (lambda: v3(input=z(2, 2, 6, 4)), r"input: expected an image at least as large as the dilated kernel after padding, got 2x6 with kernel 3x3"),
    "kernel_size": (lambda: v3(kernel_size=0), r"kernel_size: expected values >= 1, got \(0, 0\)"),
    "kernel_size type": (lambda: v3(kernel_size=3.0), r"kernel_size: expected an int or a pair of ints, got 3.0"),
    "stride": (lambda: v3(stride=(1, 0)), r"stride: expected values >= 1, got \(1, 0\)"),
    "padding": (lambda: v3(padding=-1), r"padding: expected values >= 0, got \(-1, -1\)"),
    "dilation": (lambda: v3(dilation=(0, 1)), r"dilation: expected values >= 1, got \(0, 1\)"),
    "group value": (lambda: v3(group=0), r"group: expected a positive int, got 0"),
    "group type": (lambda: v3(group=2.0), r"group: expected a positive int, got 2.0"),
    "group divides C": (lambda: v3(group=3), r"group: expected a divisor of the channels C = 4 of input \(N, H, W, C\), got 3"),
    "offset_scale NaN": (lambda: v3(offset_scale=float("nan")), r"offset_scale: expected a finite number, got nan"),
    "offset_scale type": (lambda: v3(offset_scale="1"), r"offset_scale: expected a finite number, got '1'"),
    "remove_center type": (lambda: v3(remove_center=1), r"remove_center: expected True or False, got 1"),
    "remove_center even kernel": (lambda: v3(kernel_size=(3, 2), remove_center=True), r"remove_center: expected odd kernel sizes \(the centre must be a kernel point\), got kernel_size \(3, 2\)"),
    "remove_center 1x1": (lambda: v3(kernel_size=1, remove_center=True), r"remove_center: expected a kernel of more than one point, got kernel_size \(1, 1\)"),
    "offset None": (lambda: v3(offset=None), r"offset: expected an array of shape \(N, H_out, W_out, group\*P\*2\), got None"),
    "offset shape": (lambda: v3(offset=z(2, 3, 4, 18)), r"offset: expected shape \(2, 3, 4, 36\) \(N, H_out, W_out, group\*P\*2\) with group = 2, P = 9, got \(2, 3, 4, 18\)"),
    "offset shape with remove_center": (lambda: v3(remove_center=True), r"offset: expected shape \(2, 3, 4, 32\) .* with group = 2, P = 8, got \(2, 3, 4, 36\)"),
    "offset dtype": (lambda: v3(offset=OFF.astype(f32)), r"offset: expected dtype float64 \(the dtype of input\), got float32"),
    "mask rank": (lambda: v3(mask=z(2, 3, 4)), r"mask: expected 4 dimensions \(N, H_out, W_out, group\*P\), got shape \(2, 3, 4\)"),
    "mask shape": (lambda: v3(mask=z(2, 3, 4, 9)), r"mask: expected shape \(2, 3, 4, 18\) \(N, H_out, W_out, group\*P\) with group = 2, P = 9, got \(2, 3, 4, 9\)"),
    "mask dtype": (lambda: v3(mask=MASK.astype(f32)), r"mask: expected dtype float64 \(the dtype of input\), got float32"),
    "target": (lambda: v3(target="gpu"), r"target: expected 'cpu', 'cuda' or None, got 'gpu'"),
    "dcnv3 grad_output shape": (lambda: ops.dcnv3_backward(z(2, 3, 4, 2), X, OFF, MASK, group=2), r"grad_output: expected shape \(2, 3, 4, 4\) \(N, H_out, W_out, C\), got \(2, 3, 4, 2\)"),
    "dcnv3 grad_output dtype": (lambda: ops.dcnv3_backward(GO.astype(f32), X, OFF, MASK, group=2), r"grad_output: expected dtype float64 \(the dtype of input\), got float32"),
    # dcnv4
    "offset_mask None": (lambda: v4(offset_mask=None), r"offset_mask: expected an array of shape \(N, H_out, W_out, D\), got None"),
    "offset_mask rank": (lambda: v4(offset_mask=z(2, 3, 56)), r"offset_mask: expected 4 dimensions \(N, H_out, W_out, D\), got shape \(2, 3, 56\)"),
    "offset_mask too few entries": (lambda: v4(offset_mask=z(2, 3, 4, 53)), r"offset_mask: expected shape \(2, 3, 4, 'D'\) \(N, H_out, W_out, D\) with D >= group\*P\*3 = 54 \(group = 2, P = 9\), got \(2, 3, 4, 53\)"),
    "offset_mask rows": (lambda: v4(offset_mask=z(2, 4, 4, 56)), r"offset_mask: expected shape \(2, 3, 4, 'D'\) .* got \(2, 4, 4, 56\)"),
    "offset_mask dtype": (lambda: v4(offset_mask=OM.astype(f32)), r"offset_mask: expected dtype float64 \(the dtype of input\), got float32"),
    "dcnv4 remove_center even kernel": (lambda: v4(kernel_size=(2, 3), remove_center=True), r"remove_center: expected odd kernel sizes"),
    "dcnv4 grad_output shape": (lambda: ops.dcnv4_backward(z(1, 3, 4, 4), X, OM, group=2), r"grad_output: expected shape \(2, 3, 4, 4\) \(N, H_out, W_out, C\), got \(1, 3, 4, 4\)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_argument_error(name):
    call, message = CASES[name]
    with pytest.raises(ValueError, match=message):
        call()


def test_the_unchanged_call_is_valid():
    assert v3().shape == (2, 3, 4, 4)
    assert v4().shape == (2, 3, 4, 4)
