"""The eight-lane vector operations of dcn_ref/cpu/lanes.py: the LLVM IR that compiled
kernels run equals, bit for bit, its plain-Python twin (what runs with the JIT off), and
the twin equals the formula in its docstring written as a loop over the lanes."""
import numba
import numpy as np
import pytest

from dcn_ref.cpu import lanes

LANES = lanes.LANES


@numba.njit
def _compiled_dot(x, i, y, j, chunks):
    return lanes.lanes_dot(x, i, y, j, chunks)


@numba.njit
def _compiled_axpy(y, j, f, x, i):
    lanes.lanes_axpy(y, j, f, x, i)


@numba.njit
def _compiled_bilinear(y, j, x, i0, f0, i1, f1, i2, f2, i3, f3):
    lanes.lanes_bilinear(y, j, x, i0, f0, i1, f1, i2, f2, i3, f3)


@numba.njit
def _compiled_cell_backward(gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks):
    return lanes.lanes_cell_backward(gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks)


def same_bits(a, b, dtype=None):
    """Equal to the bit; ``dtype`` for a compiled scalar result, which Numba returns as a
    Python float (holding the float32 value exactly)."""
    a, b = np.asarray(a, dtype), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_dot(dtype):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(60).astype(dtype), rng.standard_normal(60).astype(dtype)
    for i, j, chunks in [(0, 0, 1), (3, 17, 2), (5, 1, 6), (9, 4, 0)]:
        twin = lanes.lanes_dot(x, i, y, j, chunks)
        assert same_bits(_compiled_dot(x, i, y, j, chunks), twin, dtype)
        lane_sums = [sum(x[i + q + l] * y[j + q + l] for q in range(0, LANES * chunks, LANES))
                     for l in range(LANES)]
        assert twin == pytest.approx(sum(lane_sums), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_axpy(dtype):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(30).astype(dtype), rng.standard_normal(30).astype(dtype)
    twin, compiled = y.copy(), y.copy()
    lanes.lanes_axpy(twin, 13, 0.3, x, 2)
    _compiled_axpy(compiled, 13, 0.3, x, 2)
    assert same_bits(compiled, twin)
    expected = y.copy()
    expected[13:21] += dtype(0.3) * x[2:10]
    assert same_bits(twin, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_bilinear(dtype):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(80).astype(dtype), rng.standard_normal(20).astype(dtype)
    args = (5, x, 0, 0.1, 9, 0.2, 40, 0.3, 49, 0.4)
    twin, compiled = y.copy(), y.copy()
    lanes.lanes_bilinear(twin, *args)
    _compiled_bilinear(compiled, *args)
    assert same_bits(compiled, twin)
    f = [dtype(v) for v in (0.1, 0.2, 0.3, 0.4)]
    expected = y.copy()
    expected[5:13] += f[0] * x[0:8] + f[1] * x[9:17] + f[2] * x[40:48] + f[3] * x[49:57]
    assert same_bits(twin, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_cell_backward(dtype):
    rng = np.random.default_rng(3)
    C, W = 27, 3                              # a cell's corners 27 and 3 * 27 entries apart
    x = rng.standard_normal(4 * W * C).astype(dtype)
    gx = rng.standard_normal(x.size).astype(dtype)
    gy = rng.standard_normal(40).astype(dtype)
    a = 2
    corners = (a, a + C, a + W * C, a + W * C + C)
    factors = (0.4, 0.3, 0.2, 0.1)
    for chunks in (1, 3):
        twin_gx, compiled_gx = gx.copy(), gx.copy()
        twin = lanes.lanes_cell_backward(twin_gx, x, *corners, gy, 7, *factors, chunks)
        compiled = _compiled_cell_backward(compiled_gx, x, *corners, gy, 7, *factors, chunks)
        assert same_bits(compiled, twin, dtype) and same_bits(compiled_gx, twin_gx)
        n = LANES * chunks
        for t, (at, f) in enumerate(zip(corners, factors)):
            assert same_bits(twin[t], lanes.lanes_dot(gy, 7, x, at, chunks))
            expected = gx[at:at + n] + dtype(f) * gy[7:7 + n]
            assert same_bits(twin_gx[at:at + n], expected)
