"""conv2d and deform_conv2d on the CPU: channels-last columns built and multiplied block by block.

The output pixels of each image are cut into blocks whose columns fit in one core's L2
cache (``blocking.py``). A worker (one a Numba thread) takes a run of blocks and, for each,

    columns  = the block's rows of im2col, plain or deformable (columns.py)   (groups, B, K, C_g)
    product  = columns[g] @ weight_g.T                                        (B, C_out_g)
    out[n, group g, block]  = product.T

straight into the output (N, C_out, L), while the columns are still in its cache. (The
product is taken pixels by channels and transposed after: BLAS runs 10-20% faster with
the block's pixels, not the few output channels, as the long side on the shapes of the
bench.) And backward, with gout = grad_output[n, group g, block] read in place (C_out_g, B):

    grad_weight_g  += gout @ columns[g]                 (the worker's own partial sum)
    grad_columns[g] = gout.T @ weight_g                 (over the columns, now spent)
    then each row's gradient handed back to the image, and for the deformable op to the
    offsets and mask of its pixel (columns.py)

where x_cl (N, H*W + 1, C) is the input channels last, plus a zero row, and the weight is
used as (groups, C_out_g, K*C_g), its taps outermost, to match the columns. The plain and
the deformable convolution share these loops; they differ only in how a row of columns is
filled and handed back.

No two workers write the same output or offset entry. The image gradient of an image whose
blocks two workers share is summed by the worker that holds its first block in place, and
by each other one in a spill buffer of its own, added afterwards in worker order; the weight
gradient's partial sums are added in worker order too. So the results depend on the thread
count (in their last bits) but never on timing.
"""
import numba
import numpy as np
from numba import prange
from numba.extending import register_jitable

from ..kernel_args import EngineViews, chunks, or_stand_in
from ..sampling import ZEROS, SamplePoints
from . import blocking
from . import columns as cl
from . import second_order
from .blocking import block_rows, worker_blocks
from .compile import kernel
from .gemm import gemm, single_threaded_blas


def _weight_taps_last_channel(weight, groups):
    """(C_out, C_g, kh, kw) -> (groups, C_out_g, K*C_g), taps outermost within a row."""
    c_out, c_g, kh, kw = weight.shape
    w = weight.reshape(groups, c_out // groups, c_g, kh * kw).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(w).reshape(groups, c_out // groups, kh * kw * c_g)


def _weight_back(grad_w, weight_shape, groups):
    """The inverse of ``_weight_taps_last_channel`` for the weight's gradient."""
    c_out, c_g, kh, kw = weight_shape
    g = grad_w.reshape(groups, c_out // groups, kh * kw, c_g).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(g).reshape(weight_shape)


def _transpose(src, dst):
    """dst (n, B, A) = src (n, A, B) transposed, with the blocked parallel kernel."""
    cl.transpose_last_two(src, dst, work=src.size)


def channels_last(x):
    """(n, C, H, W) -> (n, H*W + 1, C) with a zero last row."""
    n, c, h, w = x.shape
    x_cl = np.empty((n, h * w + 1, c), x.dtype)
    _transpose(x.reshape(n, c, h * w), x_cl[:, : h * w])
    x_cl[:, h * w] = 0
    return x_cl


# -- the blocked loops ----------------------------------------------------------------------
# A block is a run [r0, r1) of the batch's output pixels (pixel l of image n is row n*L + l);
# it may span images, and ``segments`` walks it image by image.

@register_jitable
def segment(r, r1, L):
    """The part of rows [r, r1) in r's image: (image n, its pixels l0 .. l1)."""
    n = r // L
    l0 = r - n * L
    return n, l0, min(L, l0 + r1 - r)


@register_jitable
def fill_block(x_cl, r0, r1, points, deformable, columns):
    """Rows 0 .. r1-r0 of columns (groups, B, K, C_g): the batch's output pixels r0 .. r1."""
    L = points.geometry.out_h * points.geometry.out_w
    r = r0
    while r < r1:
        n, l0, l1 = segment(r, r1, L)
        if deformable:
            cl.deform_rows(x_cl, n, l0, l1, points, columns, r - r0)
        else:
            cl.im2col_rows(x_cl, n, l0, l1, points.geometry, points.height, points.width,
                           columns, r - r0)
        r += l1 - l0


@kernel
def forward_blocks(x_cl, height, width, offset, mask, use_mask, mode, geometry, deformable,
                   weight_g, blocks, scratch, out_scratch, out):
    """out (N, C_out, L) = the convolution, block by block (the module's note); scratch
    (workers, groups, B, K, C_g) holds each worker's columns, out_scratch (workers, B *
    C_out_g) a group's products, pixels by channels, before they go to the output
    transposed, image by image."""
    workers = scratch.shape[0]
    groups, m = weight_g.shape[0], weight_g.shape[1]
    L = out.shape[2]
    total_rows = x_cl.shape[0] * L
    B, row_length = scratch.shape[2], scratch.shape[3] * scratch.shape[4]
    for w in prange(workers):  # worker w writes only its scratch and its blocks' output pixels
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width, 0.0)
        columns = scratch[w]
        start, stop = worker_blocks(w, blocks, workers)
        for b in range(start, stop):
            r0, r1 = block_rows(b, blocks, total_rows)
            fill_block(x_cl, r0, r1, points, deformable, columns)
            product = out_scratch[w][: (r1 - r0) * m].reshape(r1 - r0, m)    # (rows, C_out_g)
            for g in range(groups):
                cols_g = columns[g].reshape(B, row_length)[: r1 - r0]        # (rows, K*C_g)
                gemm(False, True, 1.0, cols_g, weight_g[g], 0.0, product)
                r = r0
                while r < r1:
                    n, l0, l1 = segment(r, r1, L)
                    cl.put_transposed(product[r - r0:r - r0 + l1 - l0],
                                      out[n, g * m:(g + 1) * m, l0:l1])
                    r += l1 - l0


@kernel
def backward_blocks(x_cl, height, width, offset, mask, use_mask, mode, geometry, deformable,
                    weight_g, grad_out, blocks, scratch, gout_scratch, grad_w_parts, spill,
                    grad_x_cl, grad_offset, grad_mask):
    """The gradients, block by block (the module's note): gout_scratch (workers, C_out_g, B)
    holds a group's grad_output of the block, grad_w_parts (workers, groups, C_out_g, K*C_g)
    and spill (workers, H*W + 1, C) are each worker's own sums, grad_x_cl (N, H*W + 1, C)
    zeros on entry; grad_offset and grad_mask in the engine's layout."""
    workers = scratch.shape[0]
    groups, m = weight_g.shape[0], weight_g.shape[1]
    L = grad_out.shape[2]
    total_rows = x_cl.shape[0] * L
    B, row_length = scratch.shape[2], scratch.shape[3] * scratch.shape[4]
    for w in prange(workers):  # worker w writes only its own scratch, partial sums and spill,
        # the image gradient of the images whose first pixel it holds, and its pixels' offsets
        points = SamplePoints(offset, mask, use_mask, mode, geometry, height, width, 0.0)
        columns = scratch[w]
        grad_w_parts[w][:] = 0.0
        spill[w][:] = 0.0
        start, stop = worker_blocks(w, blocks, workers)
        first_row = block_rows(start, blocks, total_rows)[0]
        for b in range(start, stop):
            r0, r1 = block_rows(b, blocks, total_rows)
            fill_block(x_cl, r0, r1, points, deformable, columns)
            gout = gout_scratch[w].reshape(m, B)[:, : r1 - r0]                # (C_out_g, rows)
            for g in range(groups):
                r = r0
                while r < r1:
                    n, l0, l1 = segment(r, r1, L)
                    gout[:, r - r0:r - r0 + l1 - l0] = grad_out[n, g * m:(g + 1) * m, l0:l1]
                    r += l1 - l0
                cols_g = columns[g].reshape(B, row_length)[: r1 - r0]        # (rows, K*C_g)
                gemm(False, False, 1.0, gout, cols_g, 1.0, grad_w_parts[w, g])
                gemm(True, False, 1.0, gout, weight_g[g], 0.0, cols_g)   # now grad_columns
            r = r0
            while r < r1:
                n, l0, l1 = segment(r, r1, L)
                # only the worker's first image can have begun in an earlier worker's run
                grad_image = grad_x_cl[n] if n * L >= first_row else spill[w]
                if deformable:
                    cl.deform_rows_backward(columns, x_cl, n, l0, l1, points, grad_image,
                                            grad_offset, grad_mask, r - r0)
                else:
                    cl.col2im_rows(columns, l0, l1, geometry, height, width, grad_image, r - r0)
                r += l1 - l0


# -- the host side --------------------------------------------------------------------------

class _Conv:
    """One call's shapes, its blocks and the arrays the blocked loops need."""

    def __init__(self, x, weight, geometry):
        self.x, self.weight, self.geometry = x, weight, geometry
        self.groups = geometry.groups
        self.N, self.C, self.H, self.W = x.shape
        self.c_out, self.c_g = weight.shape[:2]
        self.K, self.L = geometry.taps, geometry.pixels
        self.out_hw = (geometry.out_h, geometry.out_w)
        self.weight_g = _weight_taps_last_channel(weight, self.groups)  # (groups, C_out_g, K*C_g)
        self.workers = numba.get_num_threads()
        rows = self.N * self.L
        self.blocks = blocking.block_count(rows, self.K * self.C * x.dtype.itemsize,
                                           self.weight_g[0].nbytes, self.workers)
        B = blocking.max_block_rows(rows, self.blocks)
        self.scratch = np.empty((self.workers, self.groups, B, self.K, self.c_g), x.dtype)
        self.product = np.empty((self.workers, B * (self.c_out // self.groups)), x.dtype)

    def work(self):
        """Inner-loop iterations of one pass over the columns (serial or parallel build)."""
        return self.N * self.L * self.K * self.C * max(1, self.c_out // self.groups)

    def points(self, offset, mask):
        """offset, mask and use_mask in the engine's layout (stand-ins for conv2d)."""
        if offset is None:
            offset = np.zeros((1, 1, 2, 1), self.x.dtype)
            return offset, np.zeros((1, 1, 1), self.x.dtype), False
        views = EngineViews(self.geometry, self.C, self.H, self.W)
        m, use_mask = or_stand_in(views.masks(mask, 0, self.N), (1, 1, 1), self.x, np.empty)
        return views.offsets(offset, 0, self.N), m, use_mask

    def forward(self, bias, offset=None, mask=None):
        """out (N, C_out, H_out, W_out)."""
        off, m, use_mask = self.points(offset, mask)
        out = np.empty((self.N, self.c_out, self.L), self.x.dtype)
        if out.size:
            with single_threaded_blas():
                forward_blocks(channels_last(self.x), self.H, self.W, off, m, use_mask, ZEROS,
                               self.geometry, offset is not None, self.weight_g, self.blocks,
                               self.scratch, self.product, out, work=self.work())
        if bias is not None:
            out += bias[None, :, None]
        return out.reshape((self.N, self.c_out) + self.out_hw)

    def backward(self, grad_out, has_bias, offset=None, mask=None, grad_offset=None,
                 grad_mask=None):
        """(grad_input, grad_weight, grad_bias or None); grad_offset and grad_mask (the
        deformable op's, in its layouts) written."""
        grad_out = np.ascontiguousarray(grad_out).reshape(self.N, self.c_out, self.L)
        off, m, use_mask = self.points(offset, mask)
        goff, gmask = off, m                                 # stand-ins, written to nowhere
        if offset is not None:
            views = EngineViews(self.geometry, self.C, self.H, self.W)
            goff = views.offsets(grad_offset, 0, self.N)
            gmask, _ = or_stand_in(views.masks(grad_mask, 0, self.N), (1, 1, 1), self.x,
                                   np.empty)
        grad_x_cl = np.zeros((self.N, self.H * self.W + 1, self.C), self.x.dtype)
        parts = np.empty((self.workers,) + self.weight_g.shape, self.x.dtype)
        spill = np.empty((self.workers, self.H * self.W + 1, self.C), self.x.dtype)
        if grad_out.size:
            with single_threaded_blas():
                backward_blocks(channels_last(self.x), self.H, self.W, off, m, use_mask, ZEROS,
                                self.geometry, offset is not None, self.weight_g, grad_out,
                                self.blocks, self.scratch, self.product, parts, spill,
                                grad_x_cl, goff, gmask, work=self.work())
        else:
            parts[:] = 0.0
            spill[:] = 0.0
        rows = self.N * self.L
        for w in range(1, self.workers):                     # in worker order: deterministic
            start, stop = worker_blocks(w, self.blocks, self.workers)
            first_row = block_rows(start, self.blocks, rows)[0]
            if start < stop and first_row % self.L:          # began inside an earlier run's image
                grad_x_cl[first_row // self.L] += spill[w]
        grad_w = parts[0]
        for w in range(1, self.workers):
            grad_w += parts[w]
        grad_input = np.empty(self.x.shape, self.x.dtype)
        _transpose(grad_x_cl[:, : self.H * self.W],
                   grad_input.reshape(self.N, self.C, self.H * self.W))
        grad_bias = grad_out.sum(axis=(0, 2)) if has_bias else None
        return grad_input, _weight_back(grad_w, self.weight.shape, self.groups), grad_bias


def conv2d(x, weight, bias, geometry):
    """out (N, C_out, H_out, W_out) of x (N, C_in, H, W) and a ConvGeometry."""
    return _Conv(x, weight, geometry).forward(bias)


def conv2d_backward(grad_out, x, weight, has_bias, geometry, deterministic=False):
    """(grad_input, grad_weight, grad_bias or None); always deterministic on the CPU."""
    return _Conv(x, weight, geometry).backward(grad_out, has_bias)


def deform_conv2d(x, offset, mask, weight, bias, geometry):
    """out (N, C_out, H_out, W_out); offset and mask in the op's layouts, mask possibly None."""
    return _Conv(x, weight, geometry).forward(bias, offset, mask)


def deform_conv2d_backward(grad_out, x, offset, mask, weight, has_bias, geometry,
                           deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_bias or None, grad_mask or None); always
    deterministic on the CPU."""
    grad_offset = np.empty(offset.shape, x.dtype)
    grad_mask = np.empty(mask.shape, x.dtype) if mask is not None else None
    grad_input, grad_weight, grad_bias = _Conv(x, weight, geometry).backward(
        grad_out, has_bias, offset, mask, grad_offset, grad_mask)
    return grad_input, grad_offset, grad_weight, grad_bias, grad_mask


# -- forward mode and second derivatives (the kernels in second_order.py) -------------------
# With columns X(x, offset, mask) and out = W X + b, along tangents (x_dot, offset_dot,
# mask_dot, W_dot, b_dot) the output changes by  W X_dot + W_dot X + b_dot,  X_dot the
# column tangents. The backward's gradient along cotangents of its outputs (the same
# tangents) is, for grad_output, that JVP; for W, dout X_dot^T; for x, offset and mask, the
# first-order backward with W_dot in place of W plus the second-order sampling of
# grad_columns = W^T dout. These are not the ops people train with, so they keep the plain
# design: a chunk of images' whole columns (groups, n, L, K, C_g), then NumPy's matmul.

# A chunk's columns stay below this (glibc reuses a freed block below 32 MiB).
SECOND_ORDER_BUDGET_BYTES = 30 * 2**20


class _Tangents:
    """The column tangents of deform_conv2d, chunk by chunk of the batch."""

    def __init__(self, conv, offset, mask, x_dot, offset_dot, mask_dot):
        self.conv = conv
        self.views = EngineViews(conv.geometry, conv.C, conv.H, conv.W)
        self.offset, self.mask = offset, mask
        self.x_dot, self.offset_dot, self.mask_dot = x_dot, offset_dot, mask_dot

    def chunks(self):
        conv = self.conv
        return chunks(conv.N, conv.L * conv.K * conv.C * conv.x.dtype.itemsize,
                      SECOND_ORDER_BUDGET_BYTES)

    def arrays(self, n0, n1):
        """x_cl, (x_dot channels last, whether there is one), and the engine's offset,
        mask (and whether there is one), offset_dot and mask_dot of images n0 .. n1."""
        conv, views, x = self.conv, self.views, self.conv.x
        m, use_mask = or_stand_in(views.masks(self.mask, n0, n1), (1, 1, 1), x, np.empty)
        m_dot, _ = or_stand_in(views.masks(self.mask_dot, n0, n1), (1, 1, 1), x, np.empty)
        if self.x_dot is None:
            xdot_cl, use_image_dot = np.empty((1, 1, 1), x.dtype), False
        else:
            xdot_cl, use_image_dot = channels_last(self.x_dot[n0:n1]), True
        return (channels_last(x[n0:n1]), xdot_cl, use_image_dot, views.offsets(self.offset, n0, n1),
                m, use_mask, views.offsets(self.offset_dot, n0, n1), m_dot)

    def columns(self, n0, n1, arrays):
        """The chunk's column tangents as (groups, n, L, K*C_g)."""
        conv = self.conv
        n = n1 - n0
        x_cl, xdot_cl, use_image_dot, off, m, use_mask, off_dot, m_dot = arrays
        cols = np.empty((conv.groups, n, conv.L, conv.K, conv.c_g), conv.x.dtype)
        second_order.deform_tangent_im2col(
            x_cl, xdot_cl, use_image_dot, conv.H, conv.W, off, m, use_mask, off_dot, m_dot,
            conv.geometry, cols, work=n * conv.L * conv.K * conv.C)
        return cols.reshape(conv.groups, n, conv.L, conv.K * conv.c_g)


def deform_conv2d_jvp(x, offset, mask, weight, bias, geometry, x_dot, offset_dot, mask_dot,
                      weight_dot, bias_dot):
    """out_dot (N, C_out, H_out, W_out); x_dot, weight_dot and bias_dot may be None."""
    conv = _Conv(x, weight, geometry)
    tangents = _Tangents(conv, offset, mask, x_dot, offset_dot, mask_dot)
    m = conv.c_out // conv.groups
    out = np.empty((conv.N, conv.c_out, conv.L), x.dtype)
    for n0, n1 in tangents.chunks():
        cols = tangents.columns(n0, n1, tangents.arrays(n0, n1))
        for g in range(conv.groups):                       # (m, KC) @ (n, KC, L) -> (n, m, L)
            out[n0:n1, g * m:(g + 1) * m] = np.matmul(conv.weight_g[g],
                                                      cols[g].transpose(0, 2, 1))
    if bias_dot is not None:
        out += bias_dot[None, :, None]
    out = out.reshape((conv.N, conv.c_out) + conv.out_hw)
    if weight_dot is not None:
        out += deform_conv2d(x, offset, mask, weight_dot, None, geometry)
    return out


def deform_conv2d_backward_backward(grad_out, x, offset, mask, weight, geometry, x_dot,
                                    offset_dot, mask_dot, weight_dot, deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_mask or None) of the backward along the
    cotangents x_dot, offset_dot, mask_dot, weight_dot (grad_output's is deform_conv2d_jvp);
    x_dot and weight_dot may be None. Always deterministic on the CPU."""
    conv = _Conv(x, weight, geometry)
    if weight_dot is not None:
        grad_input, grad_offset, _, _, grad_mask = deform_conv2d_backward(
            grad_out, x, offset, mask, weight_dot, False, geometry)
    else:
        grad_input = np.zeros(x.shape, x.dtype)
        grad_offset = np.zeros(offset.shape, x.dtype)
        grad_mask = np.zeros(mask.shape, x.dtype) if mask is not None else None
    tangents = _Tangents(conv, offset, mask, x_dot, offset_dot, mask_dot)
    views = tangents.views
    m = conv.c_out // conv.groups
    grad_out = np.ascontiguousarray(grad_out).reshape(conv.N, conv.c_out, conv.L)
    grad_w = np.zeros(conv.weight_g.shape, x.dtype)
    for n0, n1 in tangents.chunks():
        n = n1 - n0
        arrays = tangents.arrays(n0, n1)
        cols = tangents.columns(n0, n1, arrays)
        grad_columns = np.empty((conv.groups, n, conv.L, conv.K, conv.c_g), x.dtype)
        for g in range(conv.groups):
            gout = grad_out[n0:n1, g * m:(g + 1) * m]                          # (n, m, L)
            grad_w[g] += np.matmul(gout, cols[g]).sum(axis=0)                  # (m, KC)
            grad_columns[g] = np.matmul(gout.transpose(0, 2, 1), conv.weight_g[g]).reshape(
                n, conv.L, conv.K, conv.c_g)                                   # (n, L, KC)
        x_cl, xdot_cl, use_image_dot, off, msk, use_mask, off_dot, m_dot = arrays
        gmask, _ = or_stand_in(views.masks(grad_mask, n0, n1), (1, 1, 1), x, np.empty)
        grad_x_cl = np.zeros_like(x_cl)
        second_order.deform_second_backward(
            grad_columns, x_cl, xdot_cl, use_image_dot, conv.H, conv.W, off, msk, use_mask,
            off_dot, m_dot, geometry, grad_x_cl, views.offsets(grad_offset, n0, n1), gmask,
            work=n * conv.L * conv.K * conv.C)
        chunk_grad = np.empty((n, conv.C, conv.H * conv.W), x.dtype)
        _transpose(grad_x_cl[:, : conv.H * conv.W], chunk_grad)
        grad_input[n0:n1] += chunk_grad.reshape(n, conv.C, conv.H, conv.W)
    return grad_input, grad_offset, _weight_back(grad_w, weight.shape, conv.groups), grad_mask
