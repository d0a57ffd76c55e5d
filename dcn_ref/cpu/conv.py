"""conv2d and deform_conv2d on the CPU: channels-last columns and one GEMM per conv group.

For a chunk of n images (sized so that its columns stay within COLUMN_BUDGET_BYTES):

    x_cl     = the chunk, channels last, plus a zero row         (n, H*W + 1, C)
    columns  = im2col, plain or deformable (columns.py)         (groups, n*L, K*C_g)
    out_g    = columns[g] @ weight_g.T                           (n*L, C_out_g)
    out      = out_g back to channels first (+ bias)             (n, C_out, L)

and backward, with gout_g = grad_out's group g, channels last (n*L, C_out_g):

    grad_weight_g += gout_g.T @ columns[g]
    grad_columns[g] = gout_g @ weight_g                          then col2im, and for the
                                                                 deformable op the offset
                                                                 and mask gradients

The weight is used as (groups, C_out_g, K, C_g), its taps outermost, to match the columns.
Every GEMM covers the whole chunk, not one image, so BLAS runs on large matrices, cut
into a block of rows a Numba thread (gemm.py): the whole op runs on Numba's threads.
"""
import numba
import numpy as np

from ..kernel_args import EngineViews, chunks, or_stand_in
from ..sampling import ZEROS
from . import columns as cl
from . import gemm
from . import second_order

# The columns of one batch chunk (the backward frees them before it allocates their
# gradient, so one such buffer is alive at a time). Below glibc's largest heap block
# (32 MiB) a freed buffer is reused by the next call; above it every call maps fresh
# memory and page-faults through it.
COLUMN_BUDGET_BYTES = 30 * 2**20


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


def _chunk_size(channels, tasks):
    """Channels per task of deform_col2im, so that about 2 tasks a thread are there for
    ``tasks`` (image, offset group) pairs, and no fewer than 16 channels a task."""
    per_task = -(-channels // max(1, -(-2 * numba.get_num_threads() // max(1, tasks))))
    return max(16, per_task)


class _Conv:
    """The shape bookkeeping shared by the plain and the deformable convolution."""

    def __init__(self, x, weight, geometry):
        self.x, self.weight, self.geometry = x, weight, geometry
        self.groups = geometry.groups
        self.N, self.C, self.H, self.W = x.shape
        self.c_out, self.c_g = weight.shape[:2]
        self.K, self.L = geometry.taps, geometry.pixels
        self.out_hw = (geometry.out_h, geometry.out_w)
        self.weight_g = _weight_taps_last_channel(weight, self.groups)  # (groups, C_out_g, K*C_g)

    def chunks(self):
        return chunks(self.N, self.L * self.K * self.C * self.x.dtype.itemsize,
                      COLUMN_BUDGET_BYTES)

    def empty_columns(self, n):
        return np.empty((self.groups, n, self.L, self.K, self.c_g), self.x.dtype)

    def work(self, n):
        return n * self.L * self.K * self.C

    def gemm_work(self, n):
        return self.work(n) * (self.c_out // self.groups)

    def forward(self, fill_columns, bias):
        """out (N, C_out, H_out, W_out); fill_columns(n0, n1, x_cl, columns)."""
        with gemm.single_threaded_blas():
            out = self._forward(fill_columns)
        if bias is not None:
            out += bias[None, :, None]
        return out.reshape((self.N, self.c_out) + self.out_hw)

    def _forward(self, fill_columns):
        out = np.empty((self.N, self.c_out, self.L), self.x.dtype)
        m = self.c_out // self.groups
        blocks = gemm.blocks()
        for n0, n1 in self.chunks():
            n = n1 - n0
            columns = self.empty_columns(n)
            fill_columns(n0, n1, channels_last(self.x[n0:n1]), columns)
            out_g = np.empty((n * self.L, m), self.x.dtype)
            for g in range(self.groups):
                gemm.matmul_nt(columns[g].reshape(n * self.L, -1), self.weight_g[g], blocks, out_g,
                               work=self.gemm_work(n))
                _transpose(out_g.reshape(n, self.L, m), out[n0:n1, g * m:(g + 1) * m])
        return out

    def backward(self, grad_out, fill_columns, scatter_columns, has_bias):
        """(grad_input, grad_weight, grad_bias); scatter_columns(n0, n1, x_cl, grad_columns,
        grad_x_cl) adds the columns' gradient into the chunk's grad_x_cl."""
        grad_out = grad_out.reshape(self.N, self.c_out, self.L)
        with gemm.single_threaded_blas():
            grad_input, grad_w = self._backward(grad_out, fill_columns, scatter_columns)
        grad_bias = grad_out.sum(axis=(0, 2)) if has_bias else None
        return grad_input, _weight_back(grad_w, self.weight.shape, self.groups), grad_bias

    def _backward(self, grad_out, fill_columns, scatter_columns):
        grad_input = np.empty(self.x.shape, self.x.dtype)
        grad_w = np.zeros(self.weight_g.shape, self.x.dtype)
        partial = np.empty((gemm.blocks(),) + self.weight_g.shape[1:], self.x.dtype)
        m = self.c_out // self.groups
        blocks = gemm.blocks()
        for n0, n1 in self.chunks():
            n = n1 - n0
            x_cl = channels_last(self.x[n0:n1])
            gout_cl = np.empty((self.groups, n, self.L, m), self.x.dtype)       # channels last
            for g in range(self.groups):
                _transpose(grad_out[n0:n1, g * m:(g + 1) * m], gout_cl[g])
            gout_cl = gout_cl.reshape(self.groups, n * self.L, m)
            columns = self.empty_columns(n)
            fill_columns(n0, n1, x_cl, columns)
            for g in range(self.groups):
                gemm.matmul_tn_add(gout_cl[g], columns[g].reshape(n * self.L, -1), partial,
                                   grad_w[g], work=self.gemm_work(n))
            del columns                                     # before its gradient: a smaller peak
            grad_columns = self.empty_columns(n)
            for g in range(self.groups):
                gemm.matmul_nn(gout_cl[g], self.weight_g[g], blocks,
                               grad_columns[g].reshape(n * self.L, -1), work=self.gemm_work(n))
            grad_x_cl = np.zeros_like(x_cl)
            scatter_columns(n0, n1, x_cl, grad_columns, grad_x_cl)
            _transpose(grad_x_cl[:, : self.H * self.W],
                       grad_input[n0:n1].reshape(n, self.C, self.H * self.W))
        return grad_input, grad_w


def conv2d(x, weight, bias, geometry):
    """out (N, C_out, H_out, W_out) of x (N, C_in, H, W) and a ConvGeometry."""
    conv = _Conv(x, weight, geometry)

    def fill(n0, n1, x_cl, columns):
        cl.im2col(x_cl, conv.H, conv.W, geometry, columns, work=conv.work(n1 - n0))

    return conv.forward(fill, bias)


def conv2d_backward(grad_out, x, weight, has_bias, geometry, deterministic=False):
    """(grad_input, grad_weight, grad_bias or None); always deterministic on the CPU."""
    conv = _Conv(x, weight, geometry)

    def fill(n0, n1, x_cl, columns):
        cl.im2col(x_cl, conv.H, conv.W, geometry, columns, work=conv.work(n1 - n0))

    def scatter(n0, n1, x_cl, grad_columns, grad_x_cl):
        cl.col2im(grad_columns, conv.H, conv.W, geometry, grad_x_cl, work=conv.work(n1 - n0))

    return conv.backward(grad_out, fill, scatter, has_bias)


def deform_conv2d(x, offset, mask, weight, bias, geometry):
    """out (N, C_out, H_out, W_out); offset and mask in the op's layouts, mask possibly None."""
    conv = _Conv(x, weight, geometry)
    views = EngineViews(geometry, conv.C, conv.H, conv.W)

    def fill(n0, n1, x_cl, columns):
        m, use_mask = or_stand_in(views.masks(mask, n0, n1), (1, 1, 1), x, np.empty)
        cl.deform_im2col(x_cl, conv.H, conv.W, views.offsets(offset, n0, n1), m, use_mask, ZEROS,
                         geometry, columns, work=conv.work(n1 - n0))

    return conv.forward(fill, bias)


def deform_conv2d_backward(grad_out, x, offset, mask, weight, has_bias, geometry,
                           deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_bias or None, grad_mask or None); always
    deterministic on the CPU."""
    conv = _Conv(x, weight, geometry)
    views = EngineViews(geometry, conv.C, conv.H, conv.W)
    G = geometry.offset_groups
    grad_offset = np.empty(offset.shape, x.dtype)
    grad_mask = np.empty(mask.shape, x.dtype) if mask is not None else None

    def fill(n0, n1, x_cl, columns):
        m, use_mask = or_stand_in(views.masks(mask, n0, n1), (1, 1, 1), x, np.empty)
        cl.deform_im2col(x_cl, conv.H, conv.W, views.offsets(offset, n0, n1), m, use_mask, ZEROS,
                         geometry, columns, work=conv.work(n1 - n0))

    def scatter(n0, n1, x_cl, grad_columns, grad_x_cl):
        n = n1 - n0
        off = views.offsets(offset, n0, n1)
        m, use_mask = or_stand_in(views.masks(mask, n0, n1), (1, 1, 1), x, np.empty)
        goff = views.offsets(grad_offset, n0, n1)
        gmask, _ = or_stand_in(views.masks(grad_mask, n0, n1), (1, 1, 1), x, np.empty)
        if n * G >= 2 * numba.get_num_threads():     # enough (image, group) tasks: one pass
            cl.deform_backward(grad_columns, x_cl, conv.H, conv.W, off, m, use_mask, ZEROS,
                               geometry, grad_x_cl, goff, gmask, work=conv.work(n))
            return
        cl.deform_col2im(grad_columns, conv.H, conv.W, off, m, use_mask, ZEROS, geometry,
                         _chunk_size(conv.C // G, n * G), grad_x_cl, work=conv.work(n))
        cl.deform_coord_grad(grad_columns, x_cl, conv.H, conv.W, off, m, use_mask, ZEROS,
                             geometry, goff, gmask, work=conv.work(n))

    grad_input, grad_weight, grad_bias = conv.backward(grad_out, fill, scatter, has_bias)
    return grad_input, grad_offset, grad_weight, grad_bias, grad_mask


# -- forward mode and second derivatives (the kernels in second_order.py) -------------------
# With columns X(x, offset, mask) and out = W X + b, along tangents (x_dot, offset_dot,
# mask_dot, W_dot, b_dot) the output changes by  W X_dot + W_dot X + b_dot,  X_dot the
# column tangents. The backward's gradient along cotangents of its outputs (the same
# tangents) is, for grad_output, that JVP; for W, dout X_dot^T; for x, offset and mask, the
# first-order backward with W_dot in place of W plus the second-order sampling of
# grad_columns = W^T dout.

def _tangent_columns(conv, views, offset, mask, x_dot, offset_dot, mask_dot):
    """fill(n0, n1, x_cl, columns) writing the column tangents of a chunk, and a function
    giving a chunk's (x_dot channels last, whether there is one)."""
    def image_dot(n0, n1):
        if x_dot is None:
            return np.empty((1, 1, 1), conv.x.dtype), False
        return channels_last(x_dot[n0:n1]), True

    def fill(n0, n1, x_cl, columns):
        m, use_mask = or_stand_in(views.masks(mask, n0, n1), (1, 1, 1), conv.x, np.empty)
        m_dot, _ = or_stand_in(views.masks(mask_dot, n0, n1), (1, 1, 1), conv.x, np.empty)
        xdot_cl, use_image_dot = image_dot(n0, n1)
        second_order.deform_tangent_im2col(
            x_cl, xdot_cl, use_image_dot, conv.H, conv.W, views.offsets(offset, n0, n1), m,
            use_mask, views.offsets(offset_dot, n0, n1), m_dot, conv.geometry, columns,
            work=conv.work(n1 - n0))

    return fill, image_dot


def deform_conv2d_jvp(x, offset, mask, weight, bias, geometry, x_dot, offset_dot, mask_dot,
                      weight_dot, bias_dot):
    """out_dot (N, C_out, H_out, W_out); x_dot, weight_dot and bias_dot may be None."""
    conv = _Conv(x, weight, geometry)
    views = EngineViews(geometry, conv.C, conv.H, conv.W)
    fill, _ = _tangent_columns(conv, views, offset, mask, x_dot, offset_dot, mask_dot)
    out = conv.forward(fill, bias_dot)
    if weight_dot is not None:
        out += deform_conv2d(x, offset, mask, weight_dot, None, geometry)
    return out


def deform_conv2d_backward_backward(grad_out, x, offset, mask, weight, geometry, x_dot,
                                    offset_dot, mask_dot, weight_dot, deterministic=False):
    """(grad_input, grad_offset, grad_weight, grad_mask or None) of the backward along the
    cotangents x_dot, offset_dot, mask_dot, weight_dot (grad_output's is deform_conv2d_jvp);
    x_dot and weight_dot may be None. Always deterministic on the CPU."""
    conv = _Conv(x, weight, geometry)
    views = EngineViews(geometry, conv.C, conv.H, conv.W)
    first_input = None
    if weight_dot is not None:
        first_input, grad_offset, _, _, grad_mask = deform_conv2d_backward(
            grad_out, x, offset, mask, weight_dot, False, geometry)
    else:
        grad_offset = np.zeros(offset.shape, x.dtype)
        grad_mask = np.zeros(mask.shape, x.dtype) if mask is not None else None
    fill, image_dot = _tangent_columns(conv, views, offset, mask, x_dot, offset_dot, mask_dot)

    def scatter(n0, n1, x_cl, grad_columns, grad_x_cl):
        m, use_mask = or_stand_in(views.masks(mask, n0, n1), (1, 1, 1), x, np.empty)
        m_dot, _ = or_stand_in(views.masks(mask_dot, n0, n1), (1, 1, 1), x, np.empty)
        gmask, _ = or_stand_in(views.masks(grad_mask, n0, n1), (1, 1, 1), x, np.empty)
        xdot_cl, use_image_dot = image_dot(n0, n1)
        second_order.deform_second_backward(
            grad_columns, x_cl, xdot_cl, use_image_dot, conv.H, conv.W,
            views.offsets(offset, n0, n1), m, use_mask, views.offsets(offset_dot, n0, n1), m_dot,
            geometry, grad_x_cl, views.offsets(grad_offset, n0, n1), gmask,
            work=conv.work(n1 - n0))

    grad_input, grad_weight, _ = conv.backward(grad_out, fill, scatter, False)
    if first_input is not None:
        grad_input += first_input
    return grad_input, grad_offset, grad_weight, grad_mask
