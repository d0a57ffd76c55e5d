"""sampling.zeros_corner_rows, the branch-free corners the CPU forward finds a tap at a time,
against the scalar definition the backward and the GPU use (locate, corner, and the mask
rule of tap_cell): the same rows and the same factors, bit for bit, on points inside,
on the border, outside, huge, infinite and NaN, with masks that are NaN or negative."""
import math

import numba
import numpy as np
import pytest

from dcn_ref.sampling import ZEROS, corner, locate, zeros_corner_rows

H, W = 5, 7


def scalar_rows(y, x, m):
    """Rows and factors from locate and corner, one branch at a time."""
    cell = locate(y, x, H, W, ZEROS)
    if not (cell.inside and m == m):
        return [H * W] * 4, [0.0] * 4
    rows, factors = [], []
    for t in range(4):
        r, s, w, _, _ = corner(t, cell)
        rows.append(r * W + s if 0 <= r < H and 0 <= s < W else H * W)
        factors.append(m * w)
    return rows, factors


@numba.njit
def compiled_rows(ys, xs, ms, rows, factors):
    for i in range(ys.size):                     # a loop like plan_taps's, which vectorises
        r, f = zeros_corner_rows(ys[i], xs[i], ms[i], H, W)
        for t in range(4):
            rows[i, t] = r[t]
            factors[i, t] = f[t]


def points():
    rng = np.random.default_rng(7)
    ys = list(rng.uniform(-2.5, H + 1.5, 300)) + [-1.0, -1.0 - 1e-12, 0.0, H - 1.0, H - 1e-12,
                                                  float(H), 2.5, 1e30, -1e30, math.inf, math.nan]
    xs = list(rng.uniform(-2.5, W + 1.5, 300)) + [3.0, 3.0, -1.0, W - 1.0, W - 1e-12,
                                                  2.0, float(W), 1.0, 1.0, 1.0, 1.0]
    ms = list(rng.uniform(-1.0, 2.0, 300)) + [1.0, 1.0, 0.5, -0.25, 1.0, 1.0, 1.0, 1.0, 1.0,
                                              1.0, 1.0]
    ms[::17] = [math.nan] * len(ms[::17])
    return np.array(ys), np.array(xs), np.array(ms)


@pytest.mark.parametrize("compiled", [False, True])
def test_zeros_corner_rows_equals_locate_and_corner(compiled):
    ys, xs, ms = points()
    if compiled:
        rows = np.empty((ys.size, 4), np.int64)
        factors = np.empty((ys.size, 4))
        compiled_rows(ys, xs, ms, rows, factors)
    else:
        pairs = [zeros_corner_rows(y, x, m, H, W) for y, x, m in zip(ys, xs, ms)]
        rows = np.array([p[0] for p in pairs])
        factors = np.array([p[1] for p in pairs])
    for i, (y, x, m) in enumerate(zip(ys, xs, ms)):
        want_rows, want_factors = scalar_rows(y, x, m)
        assert list(rows[i]) == want_rows, (y, x, m)
        assert np.array_equal(factors[i], want_factors), (y, x, m)   # bit for bit
    touched = (rows != H * W).any(axis=1)
    assert 0 < touched.sum() < ys.size                  # the points cover both outcomes
