"""The public im2col/col2im: against the definition written as loops, conv2d, and adjointness."""
import numpy as np
import pytest

from dcn_ref import ops, reference

from helpers import assert_close

CASES = [((3, 2), (2, 1), (1, 2), (1, 2)), ((2, 2), (1, 1), (0, 0), (1, 1)), ((3, 3), (2, 2), (2, 2), (2, 2))]


@pytest.mark.parametrize("kernel,stride,padding,dilation", CASES)
def test_im2col_is_the_definition_and_gives_conv2d(kernel, stride, padding, dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    columns = ops.im2col(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(columns, reference.im2col(x, kernel, stride, padding, dilation))
    weight = rng.standard_normal((4, 3) + kernel)
    expected = reference.conv2d(x, weight, None, stride, padding, dilation)
    assert_close(np.matmul(weight.reshape(4, -1), columns).reshape(expected.shape), expected,
                 1e-12, "W @ im2col(x)")


@pytest.mark.parametrize("kernel,stride,padding,dilation", CASES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_col2im_is_the_adjoint_of_im2col(kernel, stride, padding, dilation, dtype, tol):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    columns = ops.im2col(x, kernel, stride, padding, dilation)
    y = rng.standard_normal(columns.shape).astype(dtype)
    back = ops.col2im(y, x.shape, kernel, stride, padding, dilation)
    assert back.dtype == dtype and back.shape == x.shape
    lhs = np.sum(columns.astype(np.float64) * y)
    rhs = np.sum(x.astype(np.float64) * back)
    assert abs(lhs - rhs) <= tol * np.sum(np.abs(columns.astype(np.float64) * y))


def test_col2im_of_ones_counts_the_windows_of_each_pixel():
    counts = ops.col2im(np.ones((1, 4, 6)), (1, 1, 3, 4), 2)
    np.testing.assert_array_equal(counts[0, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [1, 2, 2, 1]])


@pytest.mark.parametrize("call,message", [
    (lambda: ops.col2im(np.ones((1, 4, 5)), (1, 1, 3, 4), 2),
     r"columns: expected shape \(1, 4, 6\) \(N, C\*kh\*kw, L\), got \(1, 4, 5\)"),
    (lambda: ops.col2im(np.ones((1, 4, 6)), (1, 3, 4), 2),
     r"input_shape: expected \(N, C, H, W\) of non-negative ints, got \(1, 3, 4\)"),
    (lambda: ops.im2col(np.ones((1, 1, 3, 4)), 0),
     r"kernel_size: expected values >= 1, got \(0, 0\)"),
    (lambda: ops.im2col(np.ones((1, 3, 4)), 2),
     r"input: expected 4 dimensions \(N, C, H, W\), got shape \(1, 3, 4\)"),
])
def test_im2col_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
