"""Every argument mistake is a ValueError naming the argument, what it got and what it expected."""
import numpy as np
import pytest

from dcn_ref import ops

f64, f32 = np.float64, np.float32


def z(*shape, dtype=f64):
    return np.zeros(shape, dtype)


IMG, CO = z(2, 5, 6), z(2, 7, 2)
X, W3 = z(2, 4, 6, 6), z(6, 4, 3, 3)
OFF, MASK = z(2, 18, 4, 4), z(2, 9, 4, 4)
GO = z(2, 6, 4, 4)

CASES = {
    # bilinear_sample
    "image rank": (lambda: ops.bilinear_sample(z(5, 6), CO), r"image: expected 3 dimensions \(B, H, W\), got shape \(5, 6\)"),
    "image dtype": (lambda: ops.bilinear_sample(IMG.astype(int), CO), r"image: expected dtype float32 or float64, got int64"),
    "image None": (lambda: ops.bilinear_sample(None, CO), r"image: expected an array of shape \(B, H, W\), got None"),
    "coords shape": (lambda: ops.bilinear_sample(IMG, z(2, 7, 3)), r"coords: expected shape \(2, P, 2\) \(B, P, \(y, x\)\), got \(2, 7, 3\)"),
    "coords batch": (lambda: ops.bilinear_sample(IMG, z(3, 7, 2)), r"coords: expected shape \(2, P, 2\)"),
    "coords dtype": (lambda: ops.bilinear_sample(IMG, z(2, 7, 2, dtype=f32)), r"coords: expected dtype float64 \(the dtype of image\), got float32"),
    "padding_mode": (lambda: ops.bilinear_sample(IMG, CO, "reflect"), r"padding_mode: expected one of \['border', 'zeros'\], got 'reflect'"),
    "target": (lambda: ops.bilinear_sample(IMG, CO, target="gpu"), r"target: expected 'cpu', 'cuda' or None, got 'gpu'"),
    "bilinear grad_output": (lambda: ops.bilinear_sample_backward(z(2, 8), IMG, CO), r"grad_output: expected shape \(2, 7\) \(B, P\), got \(2, 8\)"),
    "bilinear grad_output dtype": (lambda: ops.bilinear_sample_backward(z(2, 7, dtype=f32), IMG, CO), r"grad_output: expected dtype float64 \(the dtype of image\), got float32"),
    # conv2d
    "input rank": (lambda: ops.conv2d(z(4, 6, 6), W3), r"input: expected 4 dimensions \(N, C_in, H, W\), got shape \(4, 6, 6\)"),
    "weight rank": (lambda: ops.conv2d(X, z(6, 4, 3)), r"weight: expected 4 dimensions \(C_out, C_in/groups, kh, kw\), got shape \(6, 4, 3\)"),
    "weight dtype": (lambda: ops.conv2d(X, W3.astype(f32)), r"weight: expected dtype float64 \(the dtype of input\), got float32"),
    "weight channels": (lambda: ops.conv2d(X, z(6, 3, 3, 3)), r"weight: expected shape\[1\] = C_in/groups = 4/1, got weight shape \(6, 3, 3, 3\)"),
    "weight empty kernel": (lambda: ops.conv2d(X, z(6, 4, 0, 3)), r"weight: expected positive C_in/groups, kh and kw, got shape \(6, 4, 0, 3\)"),
    "groups value": (lambda: ops.conv2d(X, W3, groups=0), r"groups: expected a positive int, got 0"),
    "groups type": (lambda: ops.conv2d(X, W3, groups=1.0), r"groups: expected a positive int, got 1.0"),
    "groups and C_out": (lambda: ops.conv2d(X, z(3, 2, 3, 3), groups=2), r"weight: expected C_out \(weight.shape\[0\]\) divisible by groups = 2, got 3"),
    "bias shape": (lambda: ops.conv2d(X, W3, z(5)), r"bias: expected shape \(6,\) \(C_out,\), got \(5,\)"),
    "bias rank": (lambda: ops.conv2d(X, W3, z(6, 1)), r"bias: expected 1 dimensions \(C_out,\), got shape \(6, 1\)"),
    "stride zero": (lambda: ops.conv2d(X, W3, stride=0), r"stride: expected values >= 1, got \(0, 0\)"),
    "stride float": (lambda: ops.conv2d(X, W3, stride=1.5), r"stride: expected an int or a pair of ints, got 1.5"),
    "stride triple": (lambda: ops.conv2d(X, W3, stride=(1, 1, 1)), r"stride: expected an int or a pair of ints, got \(1, 1, 1\)"),
    "padding negative": (lambda: ops.conv2d(X, W3, padding=(0, -1)), r"padding: expected values >= 0, got \(0, -1\)"),
    "dilation zero": (lambda: ops.conv2d(X, W3, dilation=(0, 1)), r"dilation: expected values >= 1, got \(0, 1\)"),
    "image too small": (lambda: ops.conv2d(z(1, 4, 2, 2), W3), r"input: expected an image at least as large as the dilated kernel after padding, got 2x2 with kernel 3x3"),
    "conv grad_output": (lambda: ops.conv2d_backward(z(2, 6, 4, 5), X, W3), r"grad_output: expected shape \(2, 6, 4, 4\) \(N, C_out, H_out, W_out\), got \(2, 6, 4, 5\)"),
    # deform_conv2d
    "offset channels": (lambda: ops.deform_conv2d(X, z(2, 17, 4, 4), W3), r"offset: expected a positive multiple of 2\*kh\*kw = 18 channels \(2\*G\*kh\*kw for G offset groups\), got 17"),
    "offset groups": (lambda: ops.deform_conv2d(X, z(2, 54, 4, 4), W3), r"offset: expected G = offset.shape\[1\] // \(2\*kh\*kw\) to divide C_in = 4, got G = 3"),
    "offset size": (lambda: ops.deform_conv2d(X, z(2, 18, 5, 4), W3), r"offset: expected shape \(2, 18, 4, 4\) \(N, 2\*G\*kh\*kw, H_out, W_out\) with G = 1, got \(2, 18, 5, 4\)"),
    "offset batch": (lambda: ops.deform_conv2d(X, z(1, 18, 4, 4), W3), r"offset: expected shape \(2, 18, 4, 4\)"),
    "offset dtype": (lambda: ops.deform_conv2d(X, OFF.astype(f32), W3), r"offset: expected dtype float64 \(the dtype of input\), got float32"),
    "deform weight channels": (lambda: ops.deform_conv2d(X, OFF, z(6, 3, 3, 3)), r"weight: expected weight.shape\[1\] to divide C_in = 4 \(groups = C_in / weight.shape\[1\]\), got weight.shape\[1\] = 3"),
    "mask shape": (lambda: ops.deform_conv2d(X, OFF, W3, mask=z(2, 18, 4, 4)), r"mask: expected shape \(2, 9, 4, 4\) \(N, G\*kh\*kw, H_out, W_out\) with G = 1, got \(2, 18, 4, 4\)"),
    "mask dtype": (lambda: ops.deform_conv2d(X, OFF, W3, mask=MASK.astype(f32)), r"mask: expected dtype float64 \(the dtype of input\), got float32"),
    "mask rank": (lambda: ops.deform_conv2d(X, OFF, W3, mask=z(2, 9, 16)), r"mask: expected 4 dimensions"),
    "deform grad_output": (lambda: ops.deform_conv2d_backward(z(2, 5, 4, 4), X, OFF, W3), r"grad_output: expected shape \(2, 6, 4, 4\)"),
    # offset_sample
    "offset_sample offset": (lambda: ops.offset_sample(X, z(2, 4, 6, 6)), r"offset: expected shape \(2, 8, 6, 6\) \(N, 2C, H, W\): channel 2c = dy, 2c\+1 = dx, got \(2, 4, 6, 6\)"),
    "offset_sample mode": (lambda: ops.offset_sample(X, z(2, 8, 6, 6), "wrap"), r"padding_mode: expected one of \['border', 'zeros'\], got 'wrap'"),
    "offset_sample grad_output": (lambda: ops.offset_sample_backward(z(2, 4, 6, 5), X, z(2, 8, 6, 6)), r"grad_output: expected shape \(2, 4, 6, 6\)"),
    "ragged list": (lambda: ops.offset_sample([[1.0], [1.0, 2.0]], z(2, 8, 6, 6)), r"input: expected an array of shape \(N, C, H, W\), got list that NumPy cannot convert"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error_message(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()
