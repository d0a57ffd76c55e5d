"""The fast paths of the CUDA target, in the simulator: which GEMM runs, what the cuBLAS path
hands to cuBLAS (a NumPy model of cuBLAS's documented strided batched GEMM stands in for
it), how many launches each op makes, the float32 arithmetic's accuracy, and the parallel
sort of the deterministic gathers."""
import collections
import ctypes

import numpy as np
import pytest

from dcn_ref import ops
from dcn_ref.cuda import blas, deterministic, gemm, launch, memory
from numba import cuda

from helpers import assert_close, compare, deform_case

simulator_only = pytest.mark.skipif(not launch.SIMULATED, reason="the stand-in reads device "
                                    "memory as host memory, as the simulator's is")

OP_N, OP_T = 0, 1


class NumPyCuBLAS:
    """``cublas<t>gemmStridedBatched`` as cuBLAS documents it, computed with NumPy on the
    memory at the pointers it is given (the simulator's device arrays live in host memory):

        C_i = alpha * op(A_i) @ op(B_i) + beta * C_i,   i < batch_count,

    every matrix column-major, op(A_i) m x k, op(B_i) k x n, C_i m x n, X_i starting
    stride_x elements after X_{i-1}, and its columns ld_x elements apart. It records the
    calls and the streams it is set to."""

    def __init__(self):
        self.calls = []
        self.streams = []

    def create(self):
        return 1

    def set_stream(self, handle, stream):
        self.streams.append(stream)

    def sgemm_strided_batched(self, *args):
        self._gemm(np.float32, ctypes.c_float, *args)

    def dgemm_strided_batched(self, *args):
        self._gemm(np.float64, ctypes.c_double, *args)

    def _gemm(self, dtype, scalar, handle, transa, transb, m, n, k, alpha, a, lda, stride_a, b,
              ldb, stride_b, beta, c, ldc, stride_c, batch_count):
        self.calls.append(dict(transa=transa, transb=transb, m=m, n=n, k=k, batch=batch_count,
                               strides=(stride_a, stride_b, stride_c)))
        size = np.dtype(dtype).itemsize

        def matrix(pointer, rows, cols, ld):
            assert ld >= max(1, rows), (ld, rows)
            buffer = (ctypes.c_char * (size * (ld * (cols - 1) + rows))).from_address(pointer)
            return np.lib.stride_tricks.as_strided(np.frombuffer(buffer, dtype), (rows, cols),
                                                   (size, ld * size))

        def op(pointer, trans, rows, cols, ld):
            return matrix(pointer, cols, rows, ld).T if trans == OP_T else matrix(pointer, rows,
                                                                                   cols, ld)
        alpha_, beta_ = scalar.from_address(alpha).value, scalar.from_address(beta).value
        for i in range(batch_count):
            product = alpha_ * (op(a + i * stride_a * size, transa, m, k, lda)
                                @ op(b + i * stride_b * size, transb, k, n, ldb))
            out = matrix(c + i * stride_c * size, m, n, ldc)
            out[...] = product if beta_ == 0 else product + beta_ * out   # beta 0: C not read


@pytest.fixture
def stand_in_cublas():
    """The NumPy model installed as the target's cuBLAS (``gemm.use``), then the simulator's
    choice restored."""
    library = NumPyCuBLAS()
    previous = gemm.use("cublas", blas.CuBLAS(library, pointer=lambda a: a.ctypes.data))
    yield library
    gemm.use(*previous)


@simulator_only
def test_the_simulator_runs_the_tiled_gemm():
    assert gemm.backend() == "tiled"


@simulator_only
@pytest.mark.parametrize("trans_a,trans_b,A", [(False, False, 1), (True, False, 2),
                                               (False, True, 4), (False, False, 2)])
def test_the_cublas_path_hands_cublas_the_right_operands(stand_in_cublas, monkeypatch, trans_a,
                                                        trans_b, A):
    monkeypatch.setattr(blas, "stream_handle", id)     # the simulator's streams have no handle
    rng = np.random.default_rng(A + 2 * trans_a + 4 * trans_b)
    Z, M, P, N = 4, 3, 5, 2
    a = rng.standard_normal((A, P, M) if trans_a else (A, M, P)).astype(np.float32)
    b = rng.standard_normal((Z, N, P) if trans_b else (Z, P, N)).astype(np.float32)
    bias = rng.standard_normal(A * M).astype(np.float32)
    c0 = rng.standard_normal((Z, M, N)).astype(np.float32)
    product = np.stack([(a[z % A].T if trans_a else a[z % A]) @ (b[z].T if trans_b else b[z])
                        for z in range(Z)])
    row_bias = np.stack([bias[(z % A) * M:(z % A + 1) * M, None] for z in range(Z)])
    stream = cuda.stream()
    with launch.on_stream(stream):
        for accumulate in (False, True):
            for with_bias in (False, True):
                c = cuda.to_device(c0)
                gemm.gemm(cuda.to_device(a), cuda.to_device(b), c, trans_a, trans_b, accumulate,
                          cuda.to_device(bias) if with_bias else None)
                expected = (c0 if accumulate else 0) + product + (row_bias if with_bias else 0)
                assert_close(c.copy_to_host(), expected, 1e-6, f"{accumulate} {with_bias}")
    # one call for a weight shared by the whole batch or none, one per residue z % A else
    assert len(stand_in_cublas.calls) == 4 * (A if 1 < A < Z else 1)
    assert stand_in_cublas.streams == [id(stream)] * 4


@simulator_only
@pytest.mark.parametrize("deterministic", [False, True])
def test_deform_conv2d_through_the_cublas_path_equals_the_cpu(stand_in_cublas, deterministic):
    rng = np.random.default_rng(1)
    inputs, params = deform_case(rng, N=2, C_in=4, C_out=4, H=4, W=3, kernel=(2, 2), G=2,
                                 groups=2)
    cpu = ops.deform_conv2d(**inputs, **params)
    assert_close(ops.deform_conv2d(**inputs, **params, target="cuda"), cpu, 1e-12, "forward")
    g = rng.standard_normal(cpu.shape)
    compare(ops.deform_conv2d_backward(g, **inputs, **params, target="cuda",
                                       deterministic=deterministic),
            ops.deform_conv2d_backward(g, **inputs, **params), 1e-12, "backward")
    # cuBLAS ran all three products: inner sizes Kd = C_in/groups*K (forward), L (the weight
    # gradient's terms) and M = C_out/groups (the gradient of the columns)
    assert {call["k"] for call in stand_in_cublas.calls} == {2 * 4, 5 * 4, 2}


# -- launches per op ----------------------------------------------------------------------------

@pytest.fixture
def launches(monkeypatch):
    """Counter of the kernels started (by name) and of the driver's memsets ("memset"), with
    the tiled GEMM (a kernel; cuBLAS's calls are not Numba launches) on hardware too."""
    previous = gemm.use("tiled")
    counts = collections.Counter()
    real_start, real_memset = launch.start, memory.device_memset

    def counting_start(kernel, blocks, threads, args):
        counts[kernel.py_func.__name__] += 1
        real_start(kernel, blocks, threads, args)

    def counting_memset(*args):
        counts["memset"] += 1
        real_memset(*args)

    monkeypatch.setattr(launch, "start", counting_start)
    monkeypatch.setattr(memory, "device_memset", counting_memset)
    yield counts
    gemm.use(*previous)


def counted(counts, fn):
    counts.clear()
    fn()
    return dict(counts)


def test_launches_per_op_do_not_grow_with_the_batch(launches):
    # Before, the weight gradient took one GEMM per image and the bias a pass of its own:
    # 39 launches for a backward of 32 images.
    forward = {"deform_im2col": 1, "gemm": 1}                     # the bias in the GEMM
    backward = {"memset": 1, "deform_im2col": 1, "gemm": 2, "weight_and_bias_grads": 1,
                "deform_col2im_atomic": 1, "deform_coord_grad": 1}
    deterministic = {**{k: v for k, v in backward.items() if k != "deform_col2im_atomic"},
                     "memset": 2, "sample_cells": 1, "scan_cells": 1, "place_samples": 1,
                     "sort_cells": 1, "gather_image_grad": 1}
    for N in (1, 3):
        inputs, params = deform_case(np.random.default_rng(N), N=N, C_in=2, C_out=2, H=2, W=2,
                                     kernel=(2, 2))
        out = np.ones((N, 2, 3, 3))
        assert counted(launches, lambda: ops.deform_conv2d(**inputs, **params,
                                                           target="cuda")) == forward
        for mode, expected in ((False, backward), (True, deterministic)):
            assert counted(launches, lambda: ops.deform_conv2d_backward(
                out, **inputs, **params, target="cuda", deterministic=mode)) == expected, (N, mode)


# -- float32 -----------------------------------------------------------------------------------

def test_float32_is_within_its_stated_accuracy_of_float64():
    # docs/cuda.md: float32 results within 1e-5 of the float64 ones, relative to the largest
    rng = np.random.default_rng(2)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=3, H=5, W=4, kernel=(3, 3),
                                 offset_scale=3.0, dtype=np.float32)
    wide = {k: None if v is None else v.astype(np.float64) for k, v in inputs.items()}
    out = ops.deform_conv2d(**inputs, **params, target="cuda")
    assert out.dtype == np.float32
    assert_close(out, ops.deform_conv2d(**wide, **params, target="cuda"), 1e-5, "forward")
    g = rng.standard_normal(out.shape).astype(np.float32)
    ours = ops.deform_conv2d_backward(g, **inputs, **params, target="cuda")
    reference = ops.deform_conv2d_backward(g.astype(np.float64), **wide, **params, target="cuda")
    for name in ours._fields:
        assert getattr(ours, name).dtype == np.float32
        assert_close(getattr(ours, name), getattr(reference, name), 1e-5, name)


# -- the parallel sort ---------------------------------------------------------------------------

def test_the_parallel_sort_is_numpys_stable_sort():
    # more cells than a block has threads (the scan walks tiles), samples that touch no pixel
    # (-1), and one cell holding most samples of plane 1
    rng = np.random.default_rng(4)
    n_cells = 2 * launch.THREADS_PER_BLOCK + 5
    cell_of = rng.integers(-1, n_cells, (2, 90)).astype(np.int32)
    cell_of[1, ::3] = 7
    counts = np.stack([np.bincount(row[row >= 0], minlength=n_cells) for row in cell_of])
    start, count, order = (a.copy_to_host() for a in deterministic.sort_by_cell(
        cuda.to_device(cell_of), cuda.to_device(counts.astype(np.int32))))
    for q in range(2):
        np.testing.assert_array_equal(count[q], counts[q])
        np.testing.assert_array_equal(start[q], np.cumsum(counts[q]) - counts[q])
        placed = np.argsort(cell_of[q], kind="stable")[np.count_nonzero(cell_of[q] < 0):]
        np.testing.assert_array_equal(order[q, :placed.size], placed)
    # the simulator places the samples in index order already: the last step (sort_cells)
    # must also sort segments that come shuffled, as a GPU's atomics leave them
    shuffled = order.copy()
    for q in range(2):
        for cell in range(n_cells):
            segment = shuffled[q, start[q, cell]:start[q, cell] + count[q, cell]]
            segment[:] = rng.permutation(segment)
    assert not np.array_equal(shuffled, order)
    on_device = cuda.to_device(shuffled)
    launch.launch(deterministic.sort_cells, count.size, cuda.to_device(start),
                  cuda.to_device(count), on_device)
    np.testing.assert_array_equal(on_device.copy_to_host(), order)


def test_deterministic_gather_with_every_sample_in_one_cell():
    # one long segment for the sort of each cell (a heapsort): every tap lands in the cell
    # whose top-left corner is (1, 1)
    rng = np.random.default_rng(3)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=2, H=4, W=4, kernel=(2, 2), mask=False)
    N, _, out_h, out_w = inputs["offset"].shape
    oy, ox = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    offset = np.empty((N, 4, 2, out_h, out_w))
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        offset[:, k, 0] = 1.25 - (oy - 1 + i)      # y = oy - pad + i + dy = 1.25
        offset[:, k, 1] = 1.5 - (ox - 1 + j)
    inputs["offset"] = offset.reshape(inputs["offset"].shape)
    g = rng.standard_normal((N, 2, out_h, out_w))
    runs = [ops.deform_conv2d_backward(g, **inputs, **params, target="cuda", deterministic=True)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].input, runs[1].input)
    compare(runs[0], ops.deform_conv2d_backward(g, **inputs, **params), 1e-12, "one cell")
    assert np.count_nonzero(runs[0].input[0, 0]) == 4    # the cell's four corners only
