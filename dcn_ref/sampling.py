"""The maths of deformable sampling, written once for both targets.

Every op in dcn_ref reads an image at fractional points with bilinear interpolation.
The functions here are plain Python on scalars and single array elements, handing each
other NamedTuples that Numba compiles (a ``Cell``, a ``Corner``, a tap's ``TapGrads``, a
call's ``SamplePoints``), so that a kernel reads ``cell.m`` or ``grads.d_dy`` by name.
``register_jitable`` leaves each one an ordinary Python function and tells Numba to
compile it for whichever target calls it: the CPU kernels of ``dcn_ref.cpu``
(``numba.njit``) and the GPU kernels of ``dcn_ref.cuda`` (``numba.cuda.jit``) call the
very same lines, and so does Numba's CUDA simulator, which runs them as Python. The
targets differ only in how they walk over the elements (a ``prange`` loop, a thread
each) and in how they add into shared memory (``+=``, ``cuda.atomic.add``).

The sampling engine
-------------------
One engine serves every sampling op. It reads ``Q`` sampling planes; the ``Cq``
channels of a plane share one set of sample points (an offset group):

    image    (Q, Cq, H, W)
    offset   (Q, K, 2, L)     offset[q, k, 0, l] = dy, offset[q, k, 1, l] = dx
    mask     (Q, K, L)        multiplies each sample (DCNv2); read only when use_mask
    columns  (Q, Cq, K, L)    columns[q, c, k, l] = mask[q, k, l] * bilinear(image[q, c], y, x)
    geometry a ``ConvGeometry`` (dcn_ref/geometry.py); the engine reads kernel_w, out_w,
                              and the strides, pads and dilations

Tap ``k = i*kernel_w + j`` of output pixel ``l = oy*out_w + ox`` samples at

    y = oy*stride_h - pad_h + i*dilation_h + dy
    x = ox*stride_w - pad_w + j*dilation_w + dx

How the ops map onto it (``dcn_ref.ops`` does the reshapes, all of them views):
    deform_conv2d    Q = N*G offset groups, Cq = C/G, K = kh*kw, L = H_out*W_out;
                     columns viewed as (N, C*K, L) is the im2col matrix of the GEMM.
    offset_sample    Q = N*C, Cq = 1, K = 1, L = H*W: a 1x1 "kernel" with stride 1.
    bilinear_sample  Q = B, Cq = 1, K = P, L = 1: each point is a tap of a grid
                     collapsed onto the origin (stride = dilation = 0), so its offset is
                     the coordinate itself.

DCNv3 and DCNv4 do not go through the engine: their points follow a grid of their own
(column-major, scaled by ``offset_scale``, channels last; see ``dcn_ref.ops.dcnv3``).
``dcn_ref.point_sampling`` places such a point (``point_location``, ``point_cell``), using the same ``locate`` and
``corner`` as every other op; ``dcn_ref/geometry.py`` (PointGeometry) holds its layout.

Bilinear interpolation
----------------------
A point (y, x) lies in the cell with top-left corner ``(y0, x0) = (floor(y), floor(x))``
at fractions ``ly = y - y0`` and ``lx = x - x0``. Its value is the weighted sum of
the four corners,

    v = (1-ly)(1-lx) I[y0, x0] + (1-ly) lx I[y0, x0+1] + ly (1-lx) I[y0+1, x0] + ly lx I[y0+1, x0+1],

where a corner outside the image contributes nothing ("zeros" padding). Inside one
cell v is bilinear, so

    dv/dy = (1-lx) (I[y0+1, x0] - I[y0, x0]) + lx (I[y0+1, x0+1] - I[y0, x0+1])

and likewise for x. At integer coordinates v has kinks; taking the cell
``[floor(y), floor(y)+1]`` there makes every derivative the *right* derivative
(torchvision's convention).

Padding modes
-------------
ZEROS:  the image is surrounded by zeros. Points with y < -1, y >= H, x < -1 or
        x >= W touch no pixel: value 0, gradient 0. (At y = -1 exactly the value is
        0 too and the right derivative comes from the cell [-1, 0].)
BORDER: the point is first clamped into [0, H-1] x [0, W-1]; the derivative of the
        clamp is 1 strictly inside and 0 where it clamped (right derivative again:
        1 at y = 0, 0 at y = H-1).
NaN coordinates touch no pixel in either mode; +-inf lands far outside (ZEROS) or on
the edge (BORDER). The range test comes before ``floor``, so no huge number is ever
turned into an index. An image of zero height or width has no pixel: every sample of it
is 0 with zero gradient.

Masks
-----
A tap whose mask value is NaN counts as touching no pixel: it contributes 0 and its
offset and mask get zero gradient, exactly as a NaN offset. A tap that touches no pixel
contributes 0 whatever its mask (no ``0 * inf``).

The arithmetic's type
---------------------
A call's ``SamplePoints`` carry ``real``, a number (0) of the type the sample positions,
corner weights and sums are computed in; every constant below is ``as_real(c, ...)`` of
the value it meets, so that one type runs through. The CPU kernels pass ``0.0``: positions
and weights in float64 whatever the data (their float32 products run in float32 after, in
``cpu/columns.py``). The CUDA kernels pass a zero of the data's dtype: float32 inputs are
sampled in float32 arithmetic, as torchvision's kernels do (a GPU has far fewer float64
units), float64 inputs in float64. RoI pooling places its samples in float64 on both.

Second order and forward mode
-----------------------------
A column entry is ``m * v`` with ``v = sum_t w_t pixel_t``. Along a tangent (a direction
of change: ``pixel_dot`` for the image, ``(dy_dot, dx_dot)`` for the tap's offset,
``m_dot`` for its mask, a ``TapTangent``) it changes by

    columns_dot = sum_t (m w_t pixel_dot_t + e_t pixel_t),
    e_t = m (jy dy_dot dw_t/dly + jx dx_dot dw_t/dlx) + m_dot w_t      (tangent_factors)

which is the forward mode (the Jacobian-vector product) of every sampling op. The
backward's own gradient needs the second derivatives of the corner weights
(``corner_second``). ``w = wy * wx`` with wy linear in ly and wx linear in lx, so inside a
cell

    d2w/dly2 = d2w/dlx2 = 0,        d2w/dly dlx = sy * sx = +-1:

a bilinear sample is linear along each axis, and only the cross term survives. At the
kinks the cell ``[floor(y), floor(y)+1]`` is used as everywhere, so these are right
derivatives too; the clamp of BORDER has zero second derivative. For the scalar
``T = sum_c grad_columns[c] * columns_dot[c]`` of one tap, whose gradient is the
backward's own vector-Jacobian product, ``tap_second_grads`` gives d T/d dy, d T/d dx and
d T/d mask from the corner sums D_t (of the image) and DD_t (of the image's tangent),
and the image gets ``e_t * grad_columns`` at corner t.
"""
import math
from typing import NamedTuple

from numba.extending import overload, register_jitable

ZEROS = 0
BORDER = 1
PADDING_MODES = {"zeros": ZEROS, "border": BORDER}


# -- what the functions below hand each other (NamedTuples compile for both targets) ---

class Cell(NamedTuple):
    """Where a sample point lies: every op's per-sample functions return one.

    inside  False when the point touches no pixel (or its mask is NaN): it reads 0 and
            gets zero gradient
    y0, x0  the cell's top-left corner (ints)
    ly, lx  the point's fractions inside the cell, in [0, 1)
    jy, jx  d(coordinate used)/d(its offset): 1.0, 0.0 where BORDER clamped, DCNv3's
            offset_scale
    m       the point's mask value (1.0 without a mask) where inside, else 0.0, so that
            nothing is ever ``0 * inf``
    """
    inside: bool
    y0: int
    x0: int
    ly: float
    lx: float
    jy: float
    jx: float
    m: float


class Corner(NamedTuple):
    """Corner t of a cell: its pixel (row r, column s), its corner weight ``w = wy * wx``
    and the weight's derivatives with respect to the fractions."""
    r: int
    s: int
    w: float
    dw_dly: float
    dw_dlx: float


class TapGrads(NamedTuple):
    """The gradients of one tap: d/d dy, d/d dx and d/d mask."""
    d_dy: float
    d_dx: float
    d_mask: float


class TapTangent(NamedTuple):
    """A tap's direction of change in forward mode: the tangents of its offset (dy, dx)
    and of its mask m (all 0 for a tap that touches no pixel, and m where there is no
    mask)."""
    dy: float
    dx: float
    m: float


class CornerSecond(NamedTuple):
    """The second derivatives of corner t's weight ``w = wy * wx`` with respect to the
    fractions: 0, +-1, 0, since wy is linear in ly and wx in lx."""
    d2w_dly2: float
    d2w_dly_dlx: float
    d2w_dlx2: float


class SamplePoints(NamedTuple):
    """Where the taps of a call read: the engine's offset (Q, K, 2, L) and mask (Q, K, L)
    (read only when use_mask), the padding mode and the grid (a ``ConvGeometry``), the
    image's height and width, and ``real``, a zero of the arithmetic's type (the module's
    docstring). DCNv3/DCNv4 use it too, with their (N, H_out, W_out, D) offsets and
    weights, ZEROS and a ``PointGeometry``."""
    offset: object
    mask: object
    use_mask: bool
    mode: int
    geometry: object
    height: int
    width: int
    real: float


# -- the arithmetic's type ----------------------------------------------------------------

def as_real(x, like):
    """``x`` as a number of ``like``'s type (float64 for a Python float). Compiled code
    converts by type alone: the value of ``like`` is never read."""
    return type(like)(x)


@overload(as_real)
def _as_real(x, like):
    to_type = like

    def convert(x, like):
        return to_type(x)
    return convert


# -- one point ------------------------------------------------------------------------

@register_jitable
def grid_point(k, l, geometry):
    """The grid point of tap ``k`` of output pixel ``l`` (a ``ConvGeometry``): where it
    samples before its offset, (grid_y, grid_x) as ints."""
    i = k // geometry.kernel_w
    j = k - i * geometry.kernel_w
    oy = l // geometry.out_w
    ox = l - oy * geometry.out_w
    return (oy * geometry.stride_h - geometry.pad_h + i * geometry.dilation_h,
            ox * geometry.stride_w - geometry.pad_w + j * geometry.dilation_w)


@register_jitable
def locate(y, x, height, width, mode):
    """The ``Cell`` of the point (y, x) in an image of height x width (m = 1.0 inside),
    computed in the type of y and x."""
    zero = as_real(0.0, y)
    one = as_real(1.0, y)
    if mode == BORDER:
        if not (y == y and x == x):  # NaN
            return Cell(False, 0, 0, zero, zero, zero, zero, zero)
        last_y = as_real(height - 1, y)
        last_x = as_real(width - 1, y)
        jy = one if zero <= y < last_y else zero
        jx = one if zero <= x < last_x else zero
        y = min(max(y, zero), last_y)
        x = min(max(x, zero), last_x)
    else:
        if not (-one <= y < as_real(height, y) and -one <= x < as_real(width, y)):  # NaN too
            return Cell(False, 0, 0, zero, zero, zero, zero, zero)
        jy = one
        jx = one
    # int(): math.floor gives an int on the CPU but a float on CUDA; the range test
    # above makes the conversion safe
    y0 = int(math.floor(y))
    x0 = int(math.floor(x))
    return Cell(True, y0, x0, y - as_real(y0, y), x - as_real(x0, y), jy, jx, one)


@register_jitable
def corner(t, cell):
    """Corner ``t`` (0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right) of a
    cell, a ``Corner``: its pixel, its weight and the weight's derivatives."""
    down = t // 2
    right = t - 2 * down
    ly, lx = cell.ly, cell.lx
    one = as_real(1.0, ly)
    wy = ly if down else one - ly
    wx = lx if right else one - lx
    sy = one if down else -one  # d wy / d ly
    sx = one if right else -one  # d wx / d lx
    return Corner(cell.y0 + down, cell.x0 + right, wy * wx, sy * wx, wy * sx)


@register_jitable(inline="always")
def zeros_corner_rows(y, x, m, height, width):
    """The four corners of the point (y, x), masked by m, in the ZEROS mode, for images
    stored a pixel a row (row r*width + s, plus a zero row height*width): ``(rows,
    factors)``, tuples of four, factors[t] = m * w_t. A point that touches no pixel (or m
    NaN) gives the zero row and factor 0 at every corner; a corner outside the image, the
    zero row with its factor. The numbers of ``locate`` and ``corner``, written without a
    branch so that a loop over points vectorises; y, x and m in the arithmetic's type."""
    zero, one = as_real(0.0, y), as_real(1.0, y)
    inside = (y >= -one) & (y < as_real(height, y)) & (x >= -one) & (x < as_real(width, y)) & (m == m)
    y = y if inside else -one                # any point inside: its cell is never read
    x = x if inside else -one
    m = m if inside else zero
    fy, fx = math.floor(y), math.floor(x)
    ly, lx = y - fy, x - fx
    y0, x0 = int(fy), int(fx)
    top, bottom = inside & (y0 >= 0), inside & (y0 + 1 < height)
    left, right = x0 >= 0, x0 + 1 < width
    base, nothing = y0 * width + x0, height * width
    rows = (base if top & left else nothing, base + 1 if top & right else nothing,
            base + width if bottom & left else nothing,
            base + width + 1 if bottom & right else nothing)
    factors = (m * ((one - ly) * (one - lx)), m * ((one - ly) * lx), m * (ly * (one - lx)),
               m * (ly * lx))
    return rows, factors


@register_jitable
def bilinear_value(image, q, c, cell):
    """Interpolated value of plane ``image[q, c]`` (an array (Q, C, H, W)) in a located cell."""
    height = image.shape[2]
    width = image.shape[3]
    v = as_real(0.0, cell.ly)
    for t in range(4):
        r, s, w, _, _ = corner(t, cell)
        if 0 <= r < height and 0 <= s < width:
            v += w * image[q, c, r, s]
    return v


@register_jitable
def bilinear_value_and_grad(image, q, c, cell):
    """The value and its derivatives with respect to the fractions: (v, dv_dly, dv_dlx)."""
    height = image.shape[2]
    width = image.shape[3]
    v = dv_dly = dv_dlx = as_real(0.0, cell.ly)
    for t in range(4):
        r, s, w, dw_dly, dw_dlx = corner(t, cell)
        if 0 <= r < height and 0 <= s < width:
            pixel = image[q, c, r, s]
            v += w * pixel
            dv_dly += dw_dly * pixel
            dv_dlx += dw_dlx * pixel
    return v, dv_dly, dv_dlx


@register_jitable
def tap_grads(cell, d0, d1, d2, d3):
    """The gradients of one tap (a ``TapGrads``) from its cell and its corner sums.

    ``d0 .. d3`` are the corner sums D_t = sum over the tap's channels c of
    grad_columns[c] * pixel of channel c at corner t (0 for a corner outside the image).
    Since columns[c] = m * sum_t w_t * pixel_t,

        d/d dy   = m * jy * sum_t dw_dly_t * D_t       (d/d dx alike with jx, dw_dlx)
        d/d mask = sum_t w_t * D_t                     (the unmasked sample's gradient)

    Every op's backward on every target computes a tap's (or a DCNv3 point's) gradients
    here, whatever order it walks the channels in.
    """
    c0, c1, c2, c3 = corner(0, cell), corner(1, cell), corner(2, cell), corner(3, cell)
    dv_dly = c0.dw_dly * d0 + c1.dw_dly * d1 + c2.dw_dly * d2 + c3.dw_dly * d3
    dv_dlx = c0.dw_dlx * d0 + c1.dw_dlx * d1 + c2.dw_dlx * d2 + c3.dw_dlx * d3
    return TapGrads(d_dy=cell.m * cell.jy * dv_dly, d_dx=cell.m * cell.jx * dv_dlx,
                    d_mask=c0.w * d0 + c1.w * d1 + c2.w * d2 + c3.w * d3)


# -- second order and forward mode (see the module docstring) ---------------------------

@register_jitable
def corner_second(t):
    """The ``CornerSecond`` of corner t (0: top-left .. 3: bottom-right): the weight's
    second derivatives, the same in every cell."""
    down = t // 2
    right = t - 2 * down
    sy = 1.0 if down else -1.0  # d wy / d ly
    sx = 1.0 if right else -1.0  # d wx / d lx
    return CornerSecond(0.0, sy * sx, 0.0)


@register_jitable
def tangent_factors(cell, tangent):
    """(e0, e1, e2, e3): how the weight ``m * w_t`` of each corner changes along a tap's
    ``TapTangent``, ``e_t = m (jy dy_dot dw_t/dly + jx dx_dot dw_t/dlx) + m_dot w_t``.

    A tap's column tangent is ``sum_t (m w_t pixel_dot_t + e_t pixel_t)``; in the
    backward's own gradient, corner t of the image gets ``e_t * grad_columns``.
    """
    a = cell.m * cell.jy * tangent.dy
    b = cell.m * cell.jx * tangent.dx
    c0, c1, c2, c3 = corner(0, cell), corner(1, cell), corner(2, cell), corner(3, cell)
    return (a * c0.dw_dly + b * c0.dw_dlx + tangent.m * c0.w,
            a * c1.dw_dly + b * c1.dw_dlx + tangent.m * c1.w,
            a * c2.dw_dly + b * c2.dw_dlx + tangent.m * c2.w,
            a * c3.dw_dly + b * c3.dw_dlx + tangent.m * c3.w)


@register_jitable
def moves(tangent):
    """False when a tap's tangent is exactly zero: its offset and mask do not move, so the
    terms of ``tangent_factors`` vanish and a kernel may skip them."""
    return tangent.dy != 0.0 or tangent.dx != 0.0 or tangent.m != 0.0


@register_jitable
def tap_second_grads(cell, tangent, sums, tangent_sums):
    """The gradients (a ``TapGrads``) of one tap's ``T = sum_c grad_columns[c] *
    columns_dot[c] = sum_t (m w_t DD_t + e_t D_t)`` with respect to its dy, dx and mask.

    ``sums`` are the corner sums D_t of ``tap_grads`` (grad_columns times the image's
    pixels), ``tangent_sums`` the DD_t of the image's tangent. The DD_t part is
    ``tap_grads`` itself; the D_t part differentiates ``e_t``, whose weights depend on the
    fractions: with V_y = sum_t dw_t/dly D_t, V_xy = sum_t d2w_t/dly dlx D_t (and V_x,
    V_yy, V_xx alike), a = dy_dot, b = dx_dot,

        d T/d dy   += jy (m (jy a V_yy + jx b V_xy) + m_dot V_y)
        d T/d dx   += jx (m (jy a V_xy + jx b V_xx) + m_dot V_x)
        d T/d mask += jy a V_y + jx b V_x

    where V_yy = V_xx = 0 (``corner_second``): moving a point along y does not change how
    its value changes along y, only along x.
    """
    first = tap_grads(cell, tangent_sums[0], tangent_sums[1], tangent_sums[2], tangent_sums[3])
    v_y = v_x = v_yy = v_xy = v_xx = 0.0
    for t in range(4):
        c = corner(t, cell)
        h = corner_second(t)
        v_y += c.dw_dly * sums[t]
        v_x += c.dw_dlx * sums[t]
        v_yy += h.d2w_dly2 * sums[t]
        v_xy += h.d2w_dly_dlx * sums[t]
        v_xx += h.d2w_dlx2 * sums[t]
    a = cell.jy * tangent.dy
    b = cell.jx * tangent.dx
    m = cell.m
    return TapGrads(d_dy=first.d_dy + cell.jy * (m * (a * v_yy + b * v_xy) + tangent.m * v_y),
                    d_dx=first.d_dx + cell.jx * (m * (a * v_xy + b * v_xx) + tangent.m * v_x),
                    d_mask=first.d_mask + a * v_y + b * v_x)


# -- one element of the engine ----------------------------------------------------------

@register_jitable
def tap_cell(points, q, k, l):
    """The ``Cell`` of tap k of output pixel l in plane q (``SamplePoints``), with the tap's
    mask value; a NaN mask value makes the tap touch no pixel."""
    grid_y, grid_x = grid_point(k, l, points.geometry)
    offset, real = points.offset, points.real
    cell = locate(as_real(grid_y, real) + as_real(offset[q, k, 0, l], real),
                  as_real(grid_x, real) + as_real(offset[q, k, 1, l], real),
                  points.height, points.width, points.mode)
    m = as_real(points.mask[q, k, l], real) if points.use_mask else as_real(1.0, real)
    inside = cell.inside and m == m   # m == m: False for NaN
    if not inside:
        m = as_real(0.0, real)
    return Cell(inside, cell.y0, cell.x0, cell.ly, cell.lx, cell.jy, cell.jx, m)


@register_jitable
def column_value(image, points, q, c, k, l):
    """columns[q, c, k, l]: the (masked) sample of channel c at tap k of pixel l."""
    cell = tap_cell(points, q, k, l)
    if not cell.inside:
        return as_real(0.0, points.real)
    return cell.m * bilinear_value(image, q, c, cell)


@register_jitable
def corner_pixel(image, q, c, cell, t):
    """Pixel of corner t of a cell in plane ``image[q, c]``; 0 outside the image."""
    r = cell.y0 + t // 2
    s = cell.x0 + t % 2
    if 0 <= r < image.shape[2] and 0 <= s < image.shape[3]:
        return image[q, c, r, s]
    return as_real(0.0, cell.ly)


@register_jitable
def tap_coord_grad(grad_columns, image, points, q, k, l):
    """The ``TapGrads`` of tap k of pixel l in plane q, the corner sums taken over the Cq
    channels that share the sample point. All 0 for a tap that touches no pixel or has a
    NaN mask.
    """
    cell = tap_cell(points, q, k, l)
    d0 = d1 = d2 = d3 = as_real(0.0, points.real)
    if cell.inside:
        for c in range(image.shape[1]):
            g = grad_columns[q, c, k, l]
            d0 += g * corner_pixel(image, q, c, cell, 0)
            d1 += g * corner_pixel(image, q, c, cell, 1)
            d2 += g * corner_pixel(image, q, c, cell, 2)
            d3 += g * corner_pixel(image, q, c, cell, 3)
    return tap_grads(cell, d0, d1, d2, d3)


@register_jitable
def tap_tangent(tangents, cell, q, k, l):
    """The ``TapTangent`` of tap k of output pixel l in plane q, read from ``tangents``
    (``SamplePoints`` holding the offsets' tangent (Q, K, 2, L) and, with use_mask, the
    mask's (Q, K, L)); all 0 where ``cell`` (the tap's ``tap_cell``) touches no pixel."""
    if not cell.inside:
        return TapTangent(0.0, 0.0, 0.0)
    # 1.0 * : float64 fields whatever the arrays' dtype, one type for both returns (Numba's
    # float() keeps a float32 a float32)
    m = 1.0 * tangents.mask[q, k, l] if tangents.use_mask else 0.0
    return TapTangent(1.0 * tangents.offset[q, k, 0, l], 1.0 * tangents.offset[q, k, 1, l], m)


@register_jitable
def column_tangent(image, image_dot, use_image_dot, points, tangents, q, c, k, l):
    """columns_dot[q, c, k, l]: the change of ``column_value`` along the tangents,
    ``sum_t (m w_t image_dot_t + e_t image_t)`` (``tangents`` as in ``tap_tangent``; the
    image's tangent read only with use_image_dot)."""
    cell = tap_cell(points, q, k, l)
    if not cell.inside:
        return 0.0
    e = tangent_factors(cell, tap_tangent(tangents, cell, q, k, l))
    v = 0.0
    for t in range(4):
        r, s, w, _, _ = corner(t, cell)
        if 0 <= r < image.shape[2] and 0 <= s < image.shape[3]:
            v += e[t] * image[q, c, r, s]
            if use_image_dot:
                v += cell.m * w * image_dot[q, c, r, s]
    return v


@register_jitable
def plane_corner_sums(grad_columns, image, q, k, l, cell):
    """The corner sums D_t of ``tap_grads`` for tap k of pixel l over the channels of plane
    q of ``image`` (Q, Cq, H, W) (the image, or its tangent), as a tuple of four."""
    d0 = d1 = d2 = d3 = 0.0
    for c in range(image.shape[1]):
        g = grad_columns[q, c, k, l]
        d0 += g * corner_pixel(image, q, c, cell, 0)
        d1 += g * corner_pixel(image, q, c, cell, 1)
        d2 += g * corner_pixel(image, q, c, cell, 2)
        d3 += g * corner_pixel(image, q, c, cell, 3)
    return d0, d1, d2, d3


@register_jitable
def tap_second_coord_grad(grad_columns, image, image_dot, use_image_dot, points, tangents, q, k,
                          l):
    """The ``tap_second_grads`` of tap k of pixel l in plane q, the corner sums of the image
    (when the tap moves) and of its tangent taken over the plane's channels; all 0 for a
    tap that touches no pixel."""
    cell = tap_cell(points, q, k, l)
    tangent = tap_tangent(tangents, cell, q, k, l)
    sums = tangent_sums = (0.0, 0.0, 0.0, 0.0)
    if cell.inside and moves(tangent):
        sums = plane_corner_sums(grad_columns, image, q, k, l, cell)
    if cell.inside and use_image_dot:
        tangent_sums = plane_corner_sums(grad_columns, image_dot, q, k, l, cell)
    return tap_second_grads(cell, tangent, sums, tangent_sums)


@register_jitable
def add_tap_grads(grad_offset, grad_mask, use_mask, q, k, l, grads):
    """Add a tap's ``TapGrads`` into grad_offset (Q, K, 2, L) and, when there is a mask,
    grad_mask (Q, K, L) (``write_tap_grads``, adding)."""
    grad_offset[q, k, 0, l] += grads.d_dy
    grad_offset[q, k, 1, l] += grads.d_dx
    if use_mask:
        grad_mask[q, k, l] += grads.d_mask


@register_jitable
def write_tap_grads(grad_offset, grad_mask, use_mask, q, k, l, grads):
    """Store a tap's ``TapGrads`` in the engine's grad_offset (Q, K, 2, L) and, when there
    is a mask, grad_mask (Q, K, L)."""
    grad_offset[q, k, 0, l] = grads.d_dy
    grad_offset[q, k, 1, l] = grads.d_dx
    if use_mask:
        grad_mask[q, k, l] = grads.d_mask
