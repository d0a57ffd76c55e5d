"""Eight channels at a time: the vector operations of the DCNv3/DCNv4 CPU kernels.

The kernels of ``dcnv3_kernels.py`` apply a located point's four corners to the
``group_channels`` neighbouring channels of its group. These operations do that eight
channels ("lanes") at a time, on C-contiguous 1-d arrays (the kernels' flat views), written
in LLVM IR:

    lanes_bilinear        y[j + l] += f0 x[i0 + l] + f1 x[i1 + l] + f2 x[i2 + l] + f3 x[i3 + l]
    lanes_cell_backward   the backward of a whole cell: the four corners' input gradients,
                          and their dot products with the output gradient
    lanes_axpy            y[j + l] += f x[i + l], one corner of a cell at the border
    lanes_dot             a dot product, one corner of a cell at the border

for l < 8 (or 8 * chunks). Numba's own loops cannot do this for a group of 16 channels:
its loop vectoriser leaves loops shorter than 32 floats to scalar or 4-wide code, it
vectorises no sum without reassociating it (fastmath, which gradient-checked code does not
use), and Numba runs no SLP vectoriser. The dot products sum in a fixed order (lane by lane
over the chunks, then pairwise across the lanes: l with l + 4, then l with l + 2, then the
last two), so results stay deterministic; the other operations round exactly as the
scalar loops they replace (no fused multiply-add).

Each operation is a plain Python function, its **twin**, that computes the same numbers
with NumPy, in the same order: that is what runs when the JIT is off
(``NUMBA_DISABLE_JIT=1``, to step through a kernel in a debugger), and what the tests
check the compiled operation against, bit for bit. In compiled code an ``overload`` swaps
in the LLVM IR.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, errors
from numba.extending import intrinsic, overload

LANES = 8


# -- the twins: what each operation computes, in plain Python ------------------------------

def _pairwise(v):
    """The eight lanes of ``v`` summed pairwise: l with l + 4, l with l + 2, then the two."""
    v = v[:4] + v[4:]
    v = v[:2] + v[2:]
    return v[0] + v[1]


def lanes_dot(x, i, y, j, chunks):
    """sum over l < 8 * chunks of x[i + l] * y[j + l]: lane by lane over the chunks, then
    the eight lanes pairwise (l with l + 4, then l with l + 2, then the last two)."""
    acc = np.zeros(LANES, x.dtype)
    for q in range(0, LANES * chunks, LANES):
        acc += x[i + q:i + q + LANES] * y[j + q:j + q + LANES]
    return _pairwise(acc)


def lanes_axpy(y, j, f, x, i):
    """y[j + l] += f * x[i + l] for l < 8 (x and y must not overlap)."""
    y[j:j + LANES] += y.dtype.type(f) * x[i:i + LANES]


def lanes_bilinear(y, j, x, i0, f0, i1, f1, i2, f2, i3, f3):
    """y[j + l] += f0 x[i0 + l] + f1 x[i1 + l] + f2 x[i2 + l] + f3 x[i3 + l] for l < 8,
    added left to right (x and y must not overlap)."""
    cast = y.dtype.type
    total = cast(f0) * x[i0:i0 + LANES]
    total = total + cast(f1) * x[i1:i1 + LANES]
    total = total + cast(f2) * x[i2:i2 + LANES]
    total = total + cast(f3) * x[i3:i3 + LANES]
    y[j:j + LANES] += total


def lanes_cell_backward(gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks):
    """The four corners i0..i3 of a cell, 8 * chunks channels from each: gx[i_t + l] +=
    f_t * gy[j + l], and return the four sums over l of gy[j + l] * x[i_t + l], each
    summed in ``lanes_dot``'s order (the corners must not overlap gy)."""
    starts = (i0, i1, i2, i3)
    factors = tuple(gx.dtype.type(f) for f in (f0, f1, f2, f3))
    sums = [np.zeros(LANES, x.dtype) for _ in range(4)]
    for q in range(0, LANES * chunks, LANES):
        g = gy[j + q:j + q + LANES]
        for t in range(4):
            at = starts[t] + q
            sums[t] += g * x[at:at + LANES]
            gx[at:at + LANES] += factors[t] * g
    return tuple(_pairwise(s) for s in sums)


# -- the same in LLVM IR, for compiled code ---------------------------------------------------

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
def _lanes_dot_ir(typingctx, x, i, y, j, chunks):
    """``lanes_dot`` in LLVM IR."""
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
def _lanes_axpy_ir(typingctx, y, j, f, x, i):
    """``lanes_axpy`` in LLVM IR."""
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
def _lanes_bilinear_ir(typingctx, y, j, x, i0, f0, i1, f1, i2, f2, i3, f3):
    """``lanes_bilinear`` in LLVM IR."""
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
def _lanes_cell_backward_ir(typingctx, gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks):
    """``lanes_cell_backward`` in LLVM IR."""
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


# -- compiled code calls the IR where it calls a twin ------------------------------------------

@overload(lanes_dot)
def _lanes_dot_compiled(x, i, y, j, chunks):
    return lambda x, i, y, j, chunks: _lanes_dot_ir(x, i, y, j, chunks)


@overload(lanes_axpy)
def _lanes_axpy_compiled(y, j, f, x, i):
    return lambda y, j, f, x, i: _lanes_axpy_ir(y, j, f, x, i)


@overload(lanes_bilinear)
def _lanes_bilinear_compiled(y, j, x, i0, f0, i1, f1, i2, f2, i3, f3):
    return lambda y, j, x, i0, f0, i1, f1, i2, f2, i3, f3: _lanes_bilinear_ir(
        y, j, x, i0, f0, i1, f1, i2, f2, i3, f3)


@overload(lanes_cell_backward)
def _lanes_cell_backward_compiled(gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks):
    return lambda gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks: _lanes_cell_backward_ir(
        gx, x, i0, i1, i2, i3, gy, j, f0, f1, f2, f3, chunks)
