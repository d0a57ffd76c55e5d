"""Where the time of conv2d and deform_conv2d forward+backward goes on the CPU.

    python benchmarks/profile_cpu_conv.py [--shapes abcd] [--repeat 5] [--no-models]

The ops build and use their columns block by block (``dcn_ref/cpu/conv.py``), so one
kernel does the sampling and the products of a block together. To split its time, this
script runs each pass alone over the same blocks, on the same workers, with the op's own
building blocks (``conv.fill_block``, ``gemm.gemm``, ``columns.deform_rows_backward``,
``columns.col2im_rows``):

    fill         the columns of every block (im2col or the deformable sampling), forward
                 and again in the backward
    GEMM fwd     the forward products of every block
    GEMM bwd     the two backward products of every block (weight and columns gradients)
    scatter      the rows' gradients handed to the image, offsets and mask
    layouts      the input to channels last (twice) and the image gradient back

next to the median total of one forward+backward through the ops; "rest" is the total less
the passes (allocation, the bias, the spill and partial-sum additions, Python). The last
column is the products' rate in GFLOP/s. Then, for the experiment's cnn and
deform_cnn("dcn") (batch 32, eval mode), the forward time of every layer, and for the three
deformable layers of "dcn" the split into the offset convolution and the deformable
convolution beside the plain conv2d they replace.
"""
import argparse
import statistics
import time
from collections import defaultdict

import numba
import numpy as np
from numba import prange

from dcn_ref import ops
from dcn_ref.bench.shapes import SHAPES, make_inputs, threads_line
from dcn_ref.bench.timing import median_ms
from dcn_ref.cpu import columns as cl
from dcn_ref.cpu import conv
from dcn_ref.cpu.blocking import block_rows, worker_blocks
from dcn_ref.cpu.gemm import gemm, single_threaded_blas
from dcn_ref.geometry import conv_geometry
from dcn_ref.kernel_args import EngineViews
from dcn_ref.sampling import ZEROS, SamplePoints

PASSES = ("fill", "GEMM fwd", "GEMM bwd", "scatter", "layouts")


@numba.njit(parallel=True)
def fill_pass(x_cl, height, width, offset, mask, use_mask, geometry, deformable, blocks,
              scratch):
    workers = scratch.shape[0]
    total_rows = x_cl.shape[0] * geometry.out_h * geometry.out_w
    for w in prange(workers):
        points = SamplePoints(offset, mask, use_mask, ZEROS, geometry, height, width, 0.0)
        start, stop = worker_blocks(w, blocks, workers)
        for b in range(start, stop):
            r0, r1 = block_rows(b, blocks, total_rows)
            conv.fill_block(x_cl, r0, r1, points, deformable, scratch[w])


@numba.njit(parallel=True)
def gemm_pass(weight_g, blocks, total_rows, scratch, product, gout, parts, backward):
    workers = scratch.shape[0]
    B, row_length = scratch.shape[2], scratch.shape[3] * scratch.shape[4]
    for w in prange(workers):
        start, stop = worker_blocks(w, blocks, workers)
        for b in range(start, stop):
            r0, r1 = block_rows(b, blocks, total_rows)
            for g in range(weight_g.shape[0]):
                cols_g = scratch[w, g].reshape(B, row_length)[: r1 - r0]
                if backward:
                    gemm(False, False, 1.0, gout[w][:, : r1 - r0], cols_g, 1.0, parts[w, g])
                    gemm(True, False, 1.0, gout[w][:, : r1 - r0], weight_g[g], 0.0, cols_g)
                else:                                  # the op's (rows, C_out_g) product
                    m = weight_g.shape[1]
                    gemm(False, True, 1.0, cols_g, weight_g[g], 0.0,
                         product[w][: (r1 - r0) * m].reshape(r1 - r0, m))


@numba.njit(parallel=True)
def scatter_pass(x_cl, height, width, offset, mask, use_mask, geometry, deformable, blocks,
                 scratch, spill, grad_offset, grad_mask):
    workers = scratch.shape[0]
    L = geometry.out_h * geometry.out_w
    for w in prange(workers):
        points = SamplePoints(offset, mask, use_mask, ZEROS, geometry, height, width, 0.0)
        start, stop = worker_blocks(w, blocks, workers)
        for b in range(start, stop):
            r0, r1 = block_rows(b, blocks, x_cl.shape[0] * L)
            r = r0
            while r < r1:
                n, l0, l1 = conv.segment(r, r1, L)
                if deformable:
                    cl.deform_rows_backward(scratch[w], x_cl, n, l0, l1, points, spill[w],
                                            grad_offset, grad_mask, r - r0)
                else:
                    cl.col2im_rows(scratch[w], l0, l1, geometry, height, width, spill[w], r - r0)
                r += l1 - l0


def _timed(fn, repeat):
    fn()
    return statistics.median(_once(fn) for _ in range(repeat))


def _once(fn):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def profile(op, shape, a, repeat):
    """({pass: median ms}, median total ms of one forward+backward, GFLOP/s of the products)."""
    deformable = op == "deform_conv2d"
    p = {"stride": shape.stride, "padding": 1}
    x, weight = a["input"], a["weight"]
    N, C, H, W = x.shape
    out_h = (H + 2 - 3) // shape.stride + 1
    out_w = (W + 2 - 3) // shape.stride + 1
    geometry = conv_geometry((3, 3), (out_h, out_w), (shape.stride,) * 2, (1, 1), (1, 1))
    c = conv._Conv(x, weight, geometry)                   # the op's own blocks and scratch
    views = EngineViews(geometry, C, H, W)
    offset = views.offsets(a["offset"], 0, N)
    mask = a["mask"] if a["mask"] is not None else np.zeros((N, 9, out_h, out_w), x.dtype)
    mask = views.masks(mask, 0, N)
    use_mask = a["mask"] is not None
    x_cl = conv.channels_last(x)
    rows = N * out_h * out_w
    m = weight.shape[0]
    gout = np.ascontiguousarray(np.broadcast_to(
        a["grad"].reshape(N, m, -1)[0, :, :1], (c.workers, m, c.scratch.shape[2])))
    parts = np.zeros((c.workers,) + c.weight_g.shape, x.dtype)
    spill = np.zeros((c.workers, H * W + 1, C), x.dtype)
    grad_offset, grad_mask = np.empty_like(offset), np.empty_like(mask)
    grad_x = np.empty((N, C, H * W), x.dtype)
    grad_x_cl = np.ascontiguousarray(x_cl[:, : H * W])

    def fill():
        fill_pass(x_cl, H, W, offset, mask, use_mask, geometry, deformable, c.blocks, c.scratch)

    def gemm_forward():
        with single_threaded_blas():
            gemm_pass(c.weight_g, c.blocks, rows, c.scratch, c.product, gout, parts, False)

    def gemm_backward():
        with single_threaded_blas():
            gemm_pass(c.weight_g, c.blocks, rows, c.scratch, c.product, gout, parts, True)

    def scatter():
        scatter_pass(x_cl, H, W, offset, mask, use_mask, geometry, deformable, c.blocks,
                     c.scratch, spill, grad_offset, grad_mask)

    def layouts():
        conv.channels_last(x)
        conv.channels_last(x)
        conv._transpose(grad_x_cl, grad_x)

    def both():
        if deformable:
            ops.deform_conv2d(x, a["offset"], weight, None, mask=a["mask"], **p)
            ops.deform_conv2d_backward(a["grad"], x, a["offset"], weight, None, mask=a["mask"],
                                       **p)
        else:
            ops.conv2d(x, weight, None, **p)
            ops.conv2d_backward(a["grad"], x, weight, None, **p)

    passes = {"fill": 2 * _timed(fill, repeat), "GEMM fwd": _timed(gemm_forward, repeat),
              "GEMM bwd": _timed(gemm_backward, repeat), "scatter": _timed(scatter, repeat),
              "layouts": _timed(layouts, repeat)}
    total = _timed(both, repeat)
    flops = 3 * 2 * rows * 9 * C * m
    rate = flops / ((passes["GEMM fwd"] + passes["GEMM bwd"]) * 1e-3) / 1e9
    return passes, total, rate


def layer_times(model, x, repeat):
    """{layer name: median forward ms} over ``repeat`` passes (eval mode)."""
    model.eval()
    model.forward(x)
    spent = defaultdict(list)
    for _ in range(repeat):
        h = x
        for layer in model.layers:
            start = time.perf_counter()
            h = layer.forward(h)
            spent[layer.name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in spent.items()}


def profile_models(repeat):
    from dcn_ref import models
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 28, 28), dtype=np.float32)
    cnn, dcn = layer_times(models.cnn(), x, repeat), layer_times(models.deform_cnn("dcn"), x, repeat)
    print(f"\nforward of a batch of 32, ms (median of {repeat}): cnn {sum(cnn.values()):.1f}, "
          f"dcn {sum(dcn.values()):.1f}")
    print("| layer | cnn | dcn | dcn: offset conv2d | dcn: deform_conv2d |")
    print("| --- | --- | --- | --- | --- |")
    # the inputs of conv12, conv21, conv22: (channels, size, stride, output channels)
    deformed = {"conv12": (32, 28, 2, 64), "conv21": (64, 14, 1, 128), "conv22": (128, 14, 2, 128)}
    for name in cnn:
        if name in deformed:
            C, H, s, c_out = deformed[name]
            h_out = (H - 1) // s + 1
            xi = rng.random((32, C, H, H), dtype=np.float32)
            w, w_off = rng.random((c_out, C, 3, 3), dtype=np.float32), rng.random((18, C, 3, 3), dtype=np.float32)
            off = rng.normal(0, 1, (32, 18, h_out, h_out)).astype(np.float32)
            p = {"stride": s, "padding": 1}
            split = (f" {median_ms(lambda: ops.conv2d(xi, w_off, None, **p), repeat):.1f} |"
                     f" {median_ms(lambda: ops.deform_conv2d(xi, off, w, None, **p), repeat):.1f} |")
        else:
            split = " | |"
        print(f"| {name} | {cnn[name]:.1f} | {dcn[name]:.1f} |{split}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="abcd")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-models", action="store_true", help="skip the per-layer model profile")
    args = parser.parse_args()
    print(threads_line())
    print("ms per forward+backward (float32, median); each pass run alone over the op's own "
          "blocks; 'rest' = total - passes")
    print(f"| shape | op | total | {' | '.join(PASSES)} | rest | blocks | GEMM GFLOP/s |")
    print("|" + " --- |" * (len(PASSES) + 6))
    for name in args.shapes:
        shape = SHAPES[name]
        a = make_inputs(shape)
        for op in ("conv2d", "deform_conv2d"):
            passes, total, rate = profile(op, shape, a, args.repeat)
            blocks = conv._Conv(a["input"], a["weight"], conv_geometry(
                (3, 3), ((shape.H - 1) // shape.stride + 1,) * 2, (shape.stride,) * 2, (1, 1),
                (1, 1))).blocks
            cells = " | ".join(f"{passes[k]:.1f}" for k in PASSES)
            print(f"| {name} | {op} | {total:.1f} | {cells} | {total - sum(passes.values()):.1f} "
                  f"| {blocks} | {rate:.0f} |")
    if not args.no_models:
        profile_models(max(args.repeat, 15))


if __name__ == "__main__":
    main()
