"""DCNv3 and DCNv4 on the CPU: channels-last kernels, one location per sampling point.

    input        (N, H, W, C)          C = group * group_channels, channels last
    offset       (N, H_out, W_out, Do)  read through PointGeometry (dcn_ref/geometry.py)
    mask         (N, H_out, W_out, Dm)  (for DCNv4 the same packed array as offset)
    out          (N, H_out, W_out, C)

For every (n, ho, wo, g, p) the point is located once (``point_cell`` of
``dcn_ref/sampling.py``) and its four corners are then applied to the ``group_channels``
neighbouring channels of group g, which are contiguous in memory. The kernels walk the
kernel positions (i, j) directly, counting the point p alongside, so that no point costs
an integer division.

The channels are handled eight at a time ("lanes"), on the arrays flattened to 1-d, by
four small vector operations written here in LLVM IR: ``lanes_bilinear`` (the forward of
a whole cell), ``lanes_cell_backward`` (its backward), and ``lanes_axpy`` and
``lanes_dot`` for the single corners of a cell at the border. The channels a group has
beyond a multiple of eight take a plain loop. Numba's own loops cannot do this for a
group of 16 channels: its loop vectoriser leaves loops shorter than 32 floats to scalar
or 4-wide code, it vectorises no sum without reassociating it (fastmath, which
gradient-checked code does not use), and Numba runs no SLP vectoriser. ``lanes_dot``
sums its products in a fixed order (lane by lane, then pairwise across the lanes), so
results stay deterministic; the other operations round exactly as the scalar loops they
replace (no fused multiply-add).
"""
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils, errors
from numba.extending import intrinsic

from ..sampling import corner, is_removed, point_cell, point_entries
from .compile import kernel

LANES = 8


# -- eight channels at a time ----------------------------------------------------------------

def _check_flat(*arrays):
    """The lanes operations take C-contiguous 1-d arrays of one float dtype."""
    for a in arrays:
        if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                and a.dtype == arrays[0].dtype and isinstance(a.dtype, types.Float)):
            raise errors.TypingError(f"expected C-contiguous 1-d arrays of one float dtype, "
                                     f"got {', '.join(map(str, arrays))}")


def _vector_at(context, builder, arraytype, array, index):
    """The eight elements of a 1-d array from ``index`` (an intp) on, as an LLVM vector,
    and the pointer to them."""
    data = context.make_array(arraytype)(context, builder, array).data
    element = context.get_data_type(arraytype.dtype)
    vector = ir.VectorType(element, LANES)
    pointer = builder.bitcast(builder.gep(data, [index]), vector.as_pointer())
    return builder.load(pointer, align=arraytype.dtype.bitwidth // 8), pointer


def _lanes_at(context, builder, arraytype, array, indextype, index):
    """``_vector_at`` for an index of any integer type."""
    return _vector_at(context, builder, arraytype, array, _intp(context, builder, index, indextype))


def _intp(context, builder, value, valuetype):
    return context.cast(builder, value, valuetype, types.intp)


def _zeros(context, arraytype):
    """A vector of eight zeros of the array's dtype."""
    return ir.Constant(ir.VectorType(context.get_data_type(arraytype.dtype), LANES), None)


def _mask(lanes):
    """A shufflevector mask: the lanes to take, counting the second vector's from after
    the first's."""
    return ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes)


def _splat(builder, scalar):
    """A vector of LANES copies of ``scalar``."""
    vector = ir.VectorType(scalar.type, LANES)
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, one, _mask([0] * LANES))


def _halves(builder, vector, width):
    """The lanes [0, width/2) and [width/2, width) of ``vector``."""
    half = width // 2
    return (builder.shuffle_vector(vector, vector, _mask(list(range(half)))),
            builder.shuffle_vector(vector, vector, _mask(list(range(half, width)))))


@intrinsic
def lanes_dot(typingctx, x, i, y, j, chunks):
    """sum over l < 8 * chunks of x[i + l] * y[j + l]: lane by lane over the chunks, then
    the eight lanes pairwise (l with l + 4, then l with l + 2, then the last two)."""
    _check_flat(x, y)

    def codegen(context, builder, sig, args):
        i = _intp(context, builder, args[1], sig.args[1])
        j = _intp(context, builder, args[3], sig.args[3])
        acc = cgutils.alloca_once_value(builder, _zeros(context, sig.args[0]))
        with cgutils.for_range(builder, _intp(context, builder, args[4], sig.args[4])) as loop:
            q = builder.mul(loop.index, ir.Constant(loop.index.type, LANES))
            a, _ = _vector_at(context, builder, sig.args[0], args[0], builder.add(i, q))
            b, _ = _vector_at(context, builder, sig.args[2], args[2], builder.add(j, q))
            builder.store(builder.fadd(builder.load(acc), builder.fmul(a, b)), acc)
        total, width = builder.load(acc), LANES
        while width > 1:
            low, high = _halves(builder, total, width)
            total = builder.fadd(low, high)
            width //= 2
        return builder.extract_element(total, ir.Constant(ir.IntType(32), 0))

    return x.dtype(x, i, y, j, chunks), codegen


@intrinsic
def lanes_axpy(typingctx, y, j, f, x, i):
    """y[j + l] += f * x[i + l] for l < 8 (x and y must not overlap)."""
    _check_flat(x, y)

    def codegen(context, builder, sig, args):
        out, pointer = _lanes_at(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        src, _ = _lanes_at(context, builder, sig.args[3], args[3], sig.args[4], args[4])
        f = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        out = builder.fadd(out, builder.fmul(_splat(builder, f), src))
        builder.store(out, pointer, align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(y, j, f, x, i), codegen


@intrinsic
def lanes_bilinear(typingctx, y, j, x, i0, f0, i1, f1, i2, f2, i3, f3):
    """y[j + l] += f0 x[i0 + l] + f1 x[i1 + l] + f2 x[i2 + l] + f3 x[i3 + l] for l < 8,
    added left to right (x and y must not overlap)."""
    _check_flat(x, y)

    def codegen(context, builder, sig, args):
        out, pointer = _lanes_at(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        total = None
        for k in range(4):
            corner_value, _ = _lanes_at(context, builder, sig.args[2], args[2],
                                        sig.args[3 + 2 * k], args[3 + 2 * k])
            f = context.cast(builder, args[4 + 2 * k], sig.args[4 + 2 * k], sig.args[0].dtype)
            term = builder.fmul(_splat(builder, f), corner_value)
            total = term if total is None else builder.fadd(total, term)
        builder.store(builder.fadd(out, total), pointer, align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(y, j, x, i0, f0, i1, f1, i2, f2, i3, f3), codegen


@intrinsic
def lanes_cell_backward(typingctx, gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks):
    """The four corners i0..i3 of a cell, 8 * chunks channels from each: gx[i_t + l] +=
    f_t * gy[j + l], and return the four sums over l of gy[j + l] * x[i_t + l], each
    summed in ``lanes_dot``'s order (the corners must not overlap gy)."""
    _check_flat(gx, x, gy)

    def codegen(context, builder, sig, args):
        starts = [_intp(context, builder, args[2 + t], sig.args[2 + t]) for t in range(4)]
        j = _intp(context, builder, args[7], sig.args[7])
        factors = [_splat(builder, context.cast(builder, args[8 + t], sig.args[8 + t],
                                                sig.args[0].dtype)) for t in range(4)]
        accs = [cgutils.alloca_once_value(builder, _zeros(context, sig.args[0])) for _ in range(4)]
        with cgutils.for_range(builder, _intp(context, builder, args[12], sig.args[12])) as loop:
            q = builder.mul(loop.index, ir.Constant(loop.index.type, LANES))
            g, _ = _vector_at(context, builder, sig.args[6], args[6], builder.add(j, q))
            for t in range(4):
                at = builder.add(starts[t], q)
                value, _ = _vector_at(context, builder, sig.args[1], args[1], at)
                builder.store(builder.fadd(builder.load(accs[t]), builder.fmul(g, value)), accs[t])
                grad, pointer = _vector_at(context, builder, sig.args[0], args[0], at)
                grad = builder.fadd(grad, builder.fmul(factors[t], g))
                builder.store(grad, pointer, align=sig.args[0].dtype.bitwidth // 8)
        products = [builder.load(acc) for acc in accs]
        # lanes_dot's pairwise sums, the four corners side by side: lane l + lane l + 4
        # (corners 0 and 1 in one vector of eight, 2 and 3 in another) ...
        first, second = _mask([0, 1, 2, 3, 8, 9, 10, 11]), _mask([4, 5, 6, 7, 12, 13, 14, 15])
        s01 = builder.fadd(builder.shuffle_vector(products[0], products[1], first),
                           builder.shuffle_vector(products[0], products[1], second))
        s23 = builder.fadd(builder.shuffle_vector(products[2], products[3], first),
                           builder.shuffle_vector(products[2], products[3], second))
        # ... then lane l + lane l + 2 of each corner's four ...
        s = builder.fadd(builder.shuffle_vector(s01, s23, _mask([0, 1, 4, 5, 8, 9, 12, 13])),
                         builder.shuffle_vector(s01, s23, _mask([2, 3, 6, 7, 10, 11, 14, 15])))
        # ... then the last two of each corner
        s = builder.fadd(builder.shuffle_vector(s, s, _mask([0, 2, 4, 6])),
                         builder.shuffle_vector(s, s, _mask([1, 3, 5, 7])))
        sums = [builder.extract_element(s, ir.Constant(ir.IntType(32), t)) for t in range(4)]
        return context.make_tuple(builder, sig.return_type, sums)

    signature = types.UniTuple(x.dtype, 4)(gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks)
    return signature, codegen


# -- the kernels ---------------------------------------------------------------------------------

@kernel
def dcnv3_forward(input, offset, mask, geometry, out):
    """out (N, H_out, W_out, C) = sum over points of weight * bilinear sample."""
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    Cg = geometry.group_channels
    full = Cg - Cg % LANES                   # channels a group covers with whole lanes
    cast = input.dtype.type                  # weights in the data's dtype: float32 stays SIMD-wide
    x, y = input.reshape(input.size), out.reshape(out.size)    # flat views, offsets below
    for task in prange(N * out_h * out_w):   # each iteration writes only out[n, ho, wo]
        n = task // (out_h * out_w)
        ho = (task // out_w) % out_h
        wo = task % out_w
        row = task * C                       # out[n, ho, wo, 0]
        for c in range(C):
            y[row + c] = 0.0
        for g in range(geometry.group):
            c0 = g * Cg
            p = 0
            for i in range(geometry.kernel_w):
                for j in range(geometry.kernel_h):
                    if is_removed(i, j, geometry):
                        continue
                    inside, y0, x0, ly, lx, m = point_cell(offset, mask, n, ho, wo, g, p, i, j,
                                                           H, W, geometry)
                    p += 1
                    if not inside:
                        continue
                    if 0 <= y0 and y0 + 1 < H and 0 <= x0 and x0 + 1 < W:   # the whole cell
                        _, _, w0, _, _ = corner(0, y0, x0, ly, lx)
                        _, _, w1, _, _ = corner(1, y0, x0, ly, lx)
                        _, _, w2, _, _ = corner(2, y0, x0, ly, lx)
                        _, _, w3, _, _ = corner(3, y0, x0, ly, lx)
                        f0, f1, f2, f3 = cast(m * w0), cast(m * w1), cast(m * w2), cast(m * w3)
                        a = ((n * H + y0) * W + x0) * C + c0      # input[n, y0, x0, c0]
                        b = a + C                                  # its right neighbour
                        c_ = a + W * C                             # the one below
                        d = c_ + C
                        o = row + c0
                        for k in range(0, full, LANES):
                            lanes_bilinear(y, o + k, x, a + k, f0, b + k, f1, c_ + k, f2,
                                           d + k, f3)
                        for c in range(full, Cg):
                            y[o + c] += (f0 * x[a + c] + f1 * x[b + c] + f2 * x[c_ + c]
                                         + f3 * x[d + c])
                        continue
                    for t in range(4):                                     # at the border
                        r, s, w, _, _ = corner(t, y0, x0, ly, lx)
                        if 0 <= r < H and 0 <= s < W:
                            f = cast(m * w)
                            src = ((n * H + r) * W + s) * C + c0
                            o = row + c0
                            for k in range(0, full, LANES):
                                lanes_axpy(y, o + k, f, x, src + k)
                            for c in range(full, Cg):
                                y[o + c] += f * x[src + c]


@kernel
def dcnv3_backward(grad_out, input, offset, mask, geometry, grad_input, grad_offset, grad_mask):
    """grad_input (N, H, W, C) += the input gradient; the offset and weight entries of every
    point written into grad_offset and grad_mask (arrays shaped like offset and mask).

    With D_t = sum over the group's channels of grad_out * input at corner t:
        d weight = sum_t w_t D_t,   d dy = m * offset_scale * sum_t dw_t/dly D_t  (dx alike),
    and each channel hands m * w_t * grad_out to corner t.
    """
    N, H, W, C = input.shape
    out_h, out_w = geometry.out_h, geometry.out_w
    G, Cg = geometry.group, geometry.group_channels
    full = Cg - Cg % LANES
    chunks = full // LANES
    scale = geometry.offset_scale
    cast = input.dtype.type
    x, gx = input.reshape(input.size), grad_input.reshape(grad_input.size)    # flat views
    gy = grad_out.reshape(grad_out.size)
    for task in prange(N * G):   # task (n, g) writes only image n's channels of group g and
        n = task // G            # the offset and weight entries of group g's points: no overlap
        g = task % G
        c0 = g * Cg
        for ho in range(out_h):
            for wo in range(out_w):
                go = ((n * out_h + ho) * out_w + wo) * C + c0     # grad_out[n, ho, wo, c0]
                p = 0
                for i in range(geometry.kernel_w):
                    for j in range(geometry.kernel_h):
                        if is_removed(i, j, geometry):
                            continue
                        o, k = point_entries(g, p, geometry)
                        inside, y0, x0, ly, lx, m = point_cell(offset, mask, n, ho, wo, g, p, i,
                                                               j, H, W, geometry)
                        p += 1
                        d_v = 0.0
                        d_ly = 0.0
                        d_lx = 0.0
                        if not inside:
                            m = 0.0
                        elif 0 <= y0 and y0 + 1 < H and 0 <= x0 and x0 + 1 < W:   # whole cell
                            _, _, w0, wy0, wx0 = corner(0, y0, x0, ly, lx)
                            _, _, w1, wy1, wx1 = corner(1, y0, x0, ly, lx)
                            _, _, w2, wy2, wx2 = corner(2, y0, x0, ly, lx)
                            _, _, w3, wy3, wx3 = corner(3, y0, x0, ly, lx)
                            f0, f1, f2, f3 = cast(m * w0), cast(m * w1), cast(m * w2), cast(m * w3)
                            a = ((n * H + y0) * W + x0) * C + c0      # input[n, y0, x0, c0]
                            b = a + C                                  # its right neighbour
                            c_ = a + W * C                             # the one below
                            d = c_ + C
                            # the four corners' dot products (and their input gradient)
                            d0, d1, d2, d3 = lanes_cell_backward(gx, x, a, b, c_, d, gy, go,
                                                                 f0, f1, f2, f3, chunks)
                            for c in range(full, Cg):
                                g_ = gy[go + c]
                                d0 += g_ * x[a + c]
                                d1 += g_ * x[b + c]
                                d2 += g_ * x[c_ + c]
                                d3 += g_ * x[d + c]
                                gx[a + c] += f0 * g_
                                gx[b + c] += f1 * g_
                                gx[c_ + c] += f2 * g_
                                gx[d + c] += f3 * g_
                            d_v = w0 * d0 + w1 * d1 + w2 * d2 + w3 * d3
                            d_ly = wy0 * d0 + wy1 * d1 + wy2 * d2 + wy3 * d3
                            d_lx = wx0 * d0 + wx1 * d1 + wx2 * d2 + wx3 * d3
                        else:                                              # at the border
                            for t in range(4):
                                r, s, w, w_ly, w_lx = corner(t, y0, x0, ly, lx)
                                if not (0 <= r < H and 0 <= s < W):
                                    continue                  # a corner outside reads 0
                                f = cast(m * w)
                                src = ((n * H + r) * W + s) * C + c0   # input[n, r, s, c0]
                                dot = lanes_dot(gy, go, x, src, chunks)
                                for q in range(0, full, LANES):
                                    lanes_axpy(gx, src + q, f, gy, go + q)
                                for c in range(full, Cg):
                                    dot += gy[go + c] * x[src + c]
                                    gx[src + c] += f * gy[go + c]
                                d_v += w * dot
                                d_ly += w_ly * dot
                                d_lx += w_lx * dot
                        grad_offset[n, ho, wo, o] = m * scale * d_lx
                        grad_offset[n, ho, wo, o + 1] = m * scale * d_ly
                        grad_mask[n, ho, wo, k] = d_v
