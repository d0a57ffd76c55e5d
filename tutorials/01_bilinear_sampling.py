# %% [markdown]
# # Tutorial 01: bilinear sampling, the one operation under every deformable layer
#
# A deformable convolution reads its input at fractional positions. This tutorial takes
# that single step apart with `dcn_ref.ops.bilinear_sample`:
#
# 1. the four-neighbour formula, by hand, on a 3x4 image;
# 2. the two padding modes, "zeros" and "border", against `scipy.ndimage.map_coordinates`;
# 3. the derivative with respect to the coordinates: piecewise constant, jumping at
#    integers, and the right-derivative convention used there;
# 4. a finite-difference check of every gradient with `dcn_ref.gradcheck`;
# 5. a picture: an image read on a rotated, zoomed grid of points.
#
# Run it as a script (`python tutorials/01_bilinear_sampling.py`) or open it as a notebook.

# %%
import math
import os

import numpy as np
from scipy import ndimage

from dcn_ref.gradcheck import check_gradients, format_table, numerical_vjp, off_kink
from dcn_ref.ops import bilinear_sample, bilinear_sample_backward
from dcn_ref.plotting import plt, save_figure

FAST = os.environ.get("DCN_REF_FAST") == "1"  # smaller sizes, same code path
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. The four-neighbour formula
#
# Pixel centres sit at integer coordinates, (y, x) = (row, column), as in
# `scipy.ndimage`. A point (y, x) between pixel centres lies in the cell whose top-left
# corner is (y0, x0) = (floor(y), floor(x)), at fractions ly = y - y0 and lx = x - x0
# inside that cell. Here is a 3x4 image to read from.

# %%
image = np.array([[1.0, 2.0, 0.0, 4.0],
                  [3.0, 8.0, 5.0, 1.0],
                  [0.0, 2.0, 6.0, 7.0]])  # (H, W) = (3, 4)
y, x = 0.25, 1.5
y0, x0 = math.floor(y), math.floor(x)
ly, lx = y - y0, x - x0
print(f"point ({y}, {x}) lies in the cell with corner ({y0}, {x0}), fractions ly={ly}, lx={lx}")

# %% [markdown]
# The value is the average of the four corners, each weighted by the area of the
# rectangle *opposite* it, so the nearest corner weighs most:
#
#     v = (1-ly)(1-lx) I[y0, x0] + (1-ly) lx I[y0, x0+1]
#       + ly (1-lx) I[y0+1, x0]  + ly lx I[y0+1, x0+1]

# %%
by_hand = ((1 - ly) * (1 - lx) * image[y0, x0] + (1 - ly) * lx * image[y0, x0 + 1]
           + ly * (1 - lx) * image[y0 + 1, x0] + ly * lx * image[y0 + 1, x0 + 1])
print("by hand:", by_hand)

# %% [markdown]
# With the numbers: the weights are 0.75 × 0.5 = 0.375 for the top corners (2 and 0) and
# 0.25 × 0.5 = 0.125 for the bottom ones (8 and 5), so v = 0.75 + 0 + 1 + 0.625 = 2.375.
# Every number here is a sum of powers of two, so floating point gets it exactly.
#
# `bilinear_sample` takes a batch of images (B, H, W) and a batch of points
# (B, P, 2), each point a (y, x) pair, and returns (B, P) values.

# %%
coords = np.array([[[y, x], [1.0, 2.0], [1.5, 1.5]]])      # (B, P, 2) = (1, 3, 2)
values = bilinear_sample(image[None], coords)               # (B, P) = (1, 3)
print("bilinear_sample:", values[0])
assert values[0, 0] == by_hand == 2.375
assert values[0, 1] == image[1, 2]                          # a pixel centre is the pixel
assert values[0, 2] == (8 + 5 + 2 + 6) / 4                  # a cell centre averages 4 pixels

# %% [markdown]
# ## 2. Padding: what lies outside the image
#
# Near the edge some of the four corners are missing. The library offers two answers:
#
# * **"zeros"**: the image is surrounded by zeros and the formula above is used as it
#   is. A point half a pixel above the top row gets half of the top pixel; a point at
#   y <= -1, y >= H, x <= -1 or x >= W touches only zeros and gives exactly 0.
# * **"border"**: the point is first clamped into [0, H-1] x [0, W-1], so the edge
#   pixels extend outwards forever. This is what the Keras `ConvOffset2D` layer does.

# %%
outside = np.array([[[-0.5, 1.0],    # half a pixel above I[0, 1] = 2
                     [1.0, 3.5],     # half a pixel right of I[1, 3] = 1
                     [3.0, 1.0],     # one pixel below the last row
                     [-1.0, 0.0]]])  # one pixel above the first row
zeros = bilinear_sample(image[None], outside, "zeros")[0]
border = bilinear_sample(image[None], outside, "border")[0]
for point, z, b in zip(outside[0], zeros, border):
    print(f"(y, x) = {tuple(point.tolist())}: zeros -> {z}, border -> {b}")
assert list(zeros) == [0.5 * 2, 0.5 * 1, 0.0, 0.0]
assert list(border) == [2.0, 1.0, image[2, 1], image[0, 0]]

# %% [markdown]
# Both modes are standard ones of `scipy.ndimage.map_coordinates` with `order=1`:
# "zeros" is `mode="grid-constant"` (with `cval=0`) and "border" is `mode="nearest"`.
# Note that scipy wants the coordinates as (2, P), rows first, hence the `.T`.
# Let's compare on random points, many of them outside the image.

# %%
rng = np.random.default_rng(0)
H, W = 5, 6
random_image = rng.standard_normal((1, H, W))                       # (B, H, W)
points = rng.uniform([-2.0, -2.0], [H + 1.0, W + 1.0], (1, 500, 2))  # (B, P, 2)
for mode, scipy_mode in [("zeros", "grid-constant"), ("border", "nearest")]:
    ours = bilinear_sample(random_image, points, mode)[0]
    scipys = ndimage.map_coordinates(random_image[0], points[0].T, order=1,
                                     mode=scipy_mode, cval=0.0)
    print(f"{mode:>6} vs scipy mode={scipy_mode!r}: max |difference| = "
          f"{np.max(np.abs(ours - scipys)):.1e}")
    assert np.allclose(ours, scipys, rtol=0, atol=1e-12)

# %% [markdown]
# ## 3. The derivative with respect to the coordinates
#
# A deformable layer learns *where* to sample, so it needs dv/dy and dv/dx. Inside one
# cell, v is linear in x when y is fixed (and vice versa); differentiating the formula
# above gives
#
#     dv/dx = (1-ly) (I[y0, x0+1] - I[y0, x0]) + ly (I[y0+1, x0+1] - I[y0+1, x0])
#
# a blend of two differences of neighbouring pixels. It does not depend on lx, so it is
# constant while x moves across the cell (y fixed). When x crosses an
# integer the point moves into the next cell, which has other neighbours: the
# derivative **jumps**. At an integer itself the two one-sided derivatives disagree, and
# the library (like torchvision) takes the **right derivative**: the one of the cell
# [floor(x), floor(x) + 1] that starts there.
#
# Let's walk along row y = 1 of the image, through the pixel centres (1, 0) ... (1, 3),
# and ask `bilinear_sample_backward` for the derivatives. With a gradient of ones
# flowing in, its `coords` gradient is exactly (dv/dy, dv/dx) at every point.

# %%
n_line = 121 if FAST else 601
xs = np.union1d(np.linspace(-1.5, 4.5, n_line), np.arange(-1.0, 5.0))  # every integer -1..4 too
line = np.stack([np.ones_like(xs), xs], axis=-1)[None]  # (1, P, 2): y = 1, x varies
line_values, line_grads = {}, {}
for mode in ("zeros", "border"):
    line_values[mode] = bilinear_sample(image[None], line, mode)[0]
    grads = bilinear_sample_backward(np.ones((1, xs.size)), image[None], line, mode)
    line_grads[mode] = grads.coords[0]              # (P, 2): (dv/dy, dv/dx)

# %% [markdown]
# A check by hand at x = 1, on row 1 (pixels 3, 8, 5, 1). Left of x = 1 the value
# climbs from 3 to 8 (slope +5); right of it, it falls from 8 to 5 (slope -3). The right
# derivative is -3. One-sided finite differences of the value agree.
#
# In y the point sits exactly on a row (y = 1 is an integer too), so dv/dy is also
# a right derivative: it comes from rows 1 and 2 of column 1, I[2, 1] - I[1, 1] = 2 - 8 = -6,
# not from rows 0 and 1 (8 - 2 = +6).

# %%
at_one = np.array([[[1.0, 1.0]]])
dv_dy, dv_dx = bilinear_sample_backward(np.ones((1, 1)), image[None], at_one).coords[0, 0]
h = 1e-3
v = bilinear_sample(image[None], np.array([[[1.0, 1.0 - h], [1.0, 1.0], [1.0, 1.0 + h]]]))[0]
print(f"at (1, 1): dv/dx = {dv_dx}, left slope {(v[1] - v[0]) / h:.4f}, "
      f"right slope {(v[2] - v[1]) / h:.4f}; dv/dy = {dv_dy}")
assert dv_dx == -3.0 and np.isclose((v[2] - v[1]) / h, -3.0) and np.isclose((v[1] - v[0]) / h, 5.0)
assert dv_dy == image[2, 1] - image[1, 1] == -6.0

# %% [markdown]
# The picture: the value is piecewise linear through the pixel values; dv/dx is a
# staircase. Filled dots mark what the library returns at each integer (the step to
# its right), open circles the left limit it does not use. With "zeros" the value falls
# to 0 over the last pixel outside the image; with "border" it stays flat there and the
# derivative is 0.

# %%
fig, (ax_v, ax_d) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
integers = np.arange(-1, 5)
on_integer = np.isin(xs, integers)
assert on_integer.sum() == integers.size
styles = {"zeros": dict(color="C0"), "border": dict(color="C1", linestyle="--")}
for mode, style in styles.items():
    ax_v.plot(xs, line_values[mode], label=f'padding "{mode}"', **style)
    dx_line = line_grads[mode][:, 1]
    # draw each cell's constant slope as its own segment, so the jumps show as gaps
    edges = np.concatenate([[xs[0]], integers, [xs[-1] + 1e-9]])
    for left, right in zip(edges[:-1], edges[1:]):
        in_cell = (xs >= left) & (xs < right)
        ax_d.plot(xs[in_cell], dx_line[in_cell], **style)
    ax_d.plot(xs[on_integer], dx_line[on_integer], "o", color=style["color"], markersize=5)
    left_limits = [dx_line[xs < k][-1] for k in integers]
    ax_d.plot(integers, left_limits, "o", markerfacecolor="white", color=style["color"],
              markersize=5)
ax_v.plot(np.arange(4), image[1], "ks", label="pixel centres of row 1")
ax_v.set_ylabel("value v(1, x)")
ax_v.set_title("Bilinear sampling along row y = 1 of the 3x4 image")
ax_v.legend(loc="upper right", fontsize=8)
ax_d.set_ylabel("dv/dx")
ax_d.set_xlabel("x (pixel centres at integers; the image spans x = 0 ... 3)")
ax_d.set_title("Its derivative: constant in each cell, jumping at integers\n"
               "(filled: the right derivative returned there; open: the left limit)",
               fontsize=10)
for ax in (ax_v, ax_d):
    for k in integers:
        ax.axvline(k, color="0.85", linewidth=0.8, zorder=0)
fig.tight_layout()
save_figure(fig, "01_value_and_derivative")

# %% [markdown]
# ## 4. Checking every gradient by finite differences
#
# `bilinear_sample_backward(grad_output, image, coords)` returns the gradients of the
# scalar `sum(grad_output * out)` with respect to `image` and `coords`.
# `dcn_ref.gradcheck.check_gradients` computes the same numbers by nudging every input
# element by +-eps and taking centred differences,
#
#     d/dx_i sum(g * f(x)) ~ (sum(g * f(x + eps e_i)) - sum(g * f(x - eps e_i))) / (2 eps),
#
# and reports the largest relative difference. `off_kink` draws points whose
# fractional parts stay away from the integers, for reasons the next cell shows.

# %%
n_points = 12 if FAST else 40
check_image = rng.standard_normal((2, 4, 5))                    # (B, H, W)
check_coords = off_kink(rng, (2, n_points, 2), -2, 6)           # (B, P, 2), some outside
rows = []
for mode in ("zeros", "border"):
    rows += check_gradients(bilinear_sample, bilinear_sample_backward,
                            {"image": check_image, "coords": check_coords},
                            {"padding_mode": mode}, op=f"bilinear_sample[{mode}]")
print(format_table(rows))
assert all(row.passed for row in rows)

# %% [markdown]
# Exactly on a kink the centred difference straddles two cells and returns the
# *average* of the left and right slopes, (5 + (-3)) / 2 = 1 at x = 1, while the
# backward pass returns the right derivative, -3. Neither is wrong; they answer
# different questions, which is why the check keeps its points off the integers.

# %%
central = numerical_vjp(lambda c: bilinear_sample(image[None], c), at_one, np.ones((1, 1)), eps=1e-4)
print("centred difference at (1, 1): (dv/dy, dv/dx) =", central[0, 0])
assert np.allclose(central[0, 0], [(6 + -6) / 2, (5 + -3) / 2])

# %% [markdown]
# ## 5. A picture: reading an image on a warped grid
#
# Deformable layers read the input on a grid of points that need not be regular. Here
# a small image is read on a grid rotated by 30 degrees and zoomed out by 1.4 about the
# image centre, so the grid's corners fall outside: "zeros" fades them to black,
# "border" smears the edge pixels outwards.

# %%
glyph = np.zeros((8, 8))
glyph[1:7, 2] = 1.0                      # the stem of an "F"
glyph[1, 2:6] = 1.0                      # its top bar
glyph[4, 2:5] = 1.0                      # its middle bar
glyph += np.linspace(0.0, 0.4, 8)[None]  # a gentle left-to-right ramp
n_grid = 16 if FAST else 40
u = np.linspace(-0.5, 0.5, n_grid)
gy, gx = np.meshgrid(u, u, indexing="ij")
angle, zoom, centre = np.deg2rad(30), 1.4 * 7, 3.5
grid_y = centre + zoom * (np.cos(angle) * gy - np.sin(angle) * gx)
grid_x = centre + zoom * (np.sin(angle) * gy + np.cos(angle) * gx)
grid = np.stack([grid_y, grid_x], axis=-1).reshape(1, n_grid * n_grid, 2)  # (1, P, 2)
read = {mode: bilinear_sample(glyph[None], grid, mode).reshape(n_grid, n_grid)
        for mode in ("zeros", "border")}

fig, axes = plt.subplots(1, 3, figsize=(11, 3.9))
axes[0].imshow(glyph, cmap="gray", vmin=0, vmax=1.4)
step = max(1, n_grid // 16)              # draw at most 16x16 of the points
axes[0].plot(grid_x[::step, ::step].ravel(), grid_y[::step, ::step].ravel(), ".",
             color="tab:red", markersize=3)
axes[0].plot(grid_x[0, 0], grid_y[0, 0], "o", color="tab:red", markersize=7)
axes[0].set_xlim(-4, 11)
axes[0].set_ylim(11, -4)
axes[0].set_title("8x8 input and the sample points\n(big dot: output pixel (0, 0))", fontsize=10)
axes[0].set_xlabel("x")
axes[0].set_ylabel("y")
for ax, mode in zip(axes[1:], ("zeros", "border")):
    ax.imshow(read[mode], cmap="gray", vmin=0, vmax=1.4)
    ax.set_title(f'{n_grid}x{n_grid} samples, padding "{mode}"', fontsize=10)
    ax.set_xlabel("output column")
    ax.set_ylabel("output row")
fig.suptitle("bilinear_sample on a grid rotated by 30 degrees and zoomed out by 1.4")
fig.tight_layout(rect=(0, 0, 1, 0.94))
save_figure(fig, "01_sampled_grid")

# %% [markdown]
# ## Summary
#
# * A bilinear sample is a weighted average of the four surrounding pixels; the
#   weights are products of the fractions (1-ly or ly) and (1-lx or lx).
# * "zeros" padding continues the formula into a zero rim (exactly 0 beyond one pixel);
#   "border" clamps the point into the image. They equal `map_coordinates(order=1)`
#   with `mode="grid-constant"` and `mode="nearest"`.
# * The coordinate derivative is a difference of neighbouring pixels: constant inside
#   a cell and jumping at integers, where the library returns the right derivative.
# * Centred differences agree with the backward pass away from integers and return the
#   average of the two slopes on them.
#
# ## Exercises
#
# 1. Show that dv/dx along a *column* (x fixed at 1.5, y varying) is piecewise linear
#    rather than piecewise constant. Which term of the formula makes it so?
# 2. Use `bilinear_sample_backward` to find the image gradient of the point (0.25, 1.5)
#    and check that its four non-zero entries are the four weights 0.375, 0.375,
#    0.125, 0.125.
# 3. With "border" padding, what is dv/dy at y = H - 1 exactly, and at y = 0 exactly?
#    Predict from the right-derivative rule, then check.
# 4. Zoom *in* (zoom < 1) in section 5 until single pixels cover several samples. What
#    shape do the transitions between pixels take, and why?
