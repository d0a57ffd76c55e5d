# %% [markdown]
# # Tutorial 07: deformable RoI pooling and deformable position-sensitive RoI pooling
#
# The paper's second module (Dai et al. 2017, section 2.2) pools a region of interest (RoI)
# into a fixed k x k grid of bins, as the detection heads of Faster R-CNN and R-FCN do, and
# lets every bin move by a learned offset. dcn_ref has both flavours:
# `deform_roi_pool` (the semantics of mmcv's DeformRoIPool; without offsets it is
# `torchvision.ops.roi_align(aligned=True)`) and `deform_psroi_pool` (the original MXNet
# DeformablePSROIPooling of R-FCN). Plan:
#
# 1. RoI align: the half-pixel-shifted RoI, its bins and their sample points, drawn over an
#    image and checked by hand on a ramp;
# 2. roi_align's own boundary rule for samples near and outside the image;
# 3. deformable RoI pooling: offsets normalised by the RoI's size, x first; bins drawn
#    before and after their offsets; the shift checked by hand;
# 4. the backward pass: the offset gradient by hand on the ramp, finite differences, and
#    gradient descent that recovers unknown offsets;
# 5. position-sensitive RoI pooling: which channel each bin reads, MXNet's rounding and
#    sub-bin corners, checked by hand;
# 6. the layer: `DeformRoIPool` and its zero-initialised offset predictor.
#
# Run it as a script (`python tutorials/07_deformable_roi_pooling.py`) or open it as a
# notebook.

# %%
import numpy as np

from dcn_ref.gradcheck import check_gradients, format_table
from dcn_ref.nn import DeformRoIPool
from dcn_ref.ops import deform_psroi_pool, deform_roi_pool, deform_roi_pool_backward
from dcn_ref.plotting import plt, save_figure

np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. RoI align: bins and sample points
#
# A RoI is a row (batch_index, x1, y1, x2, y2) in the pixels of the original image. A
# feature map of stride 16 sees it scaled by spatial_scale = 1/16. With pixel centres at
# integers, a box edge at image coordinate x1 is at feature coordinate x1*s - 0.5 (the
# "aligned" half-pixel shift of roi_align), so RoI k spans
#
#     x in [x1*s - 0.5, x2*s - 0.5],    y in [y1*s - 0.5, y2*s - 0.5].
#
# It is cut into ph x pw bins of bin_h = roi_h / ph by bin_w = roi_w / pw, and each bin
# averages grid_h x grid_w bilinear samples at the centres of a regular sub-grid:
#
#     y = y1*s - 0.5 + i*bin_h + (iy + 0.5) * bin_h / grid_h        (x alike)
#     out[k, c, i, j] = (1 / (grid_h*grid_w)) * sum_{iy, ix} bilinear(input[n, c], y, x)
#
# grid = sampling_ratio, or, when sampling_ratio = 0, ceil(roi_h / ph) (ceil(roi_w / pw)):
# about one sample per pixel.
#
# **By hand.** Bilinear interpolation reproduces a linear image exactly, and the mean of
# a linear function over symmetric samples is its value at their centre. So on the ramp
# I[y, x] = 2y + 3x + 1 every bin must give the ramp at the bin's centre. The RoI
# (0, 2, 1.5, 6, 4.5) at scale 1 spans x in [1.5, 5.5], y in [1.0, 4.0]; 2x2 bins are
# 2 wide and 1.5 high, with centres x = 2.5, 4.5 and y = 1.75, 3.25:
#
#     out = [[2*1.75 + 3*2.5 + 1, 2*1.75 + 3*4.5 + 1],   = [[12.0, 18.0],
#            [2*3.25 + 3*2.5 + 1, 2*3.25 + 3*4.5 + 1]]      [15.0, 21.0]]

# %%
yy, xx = np.mgrid[0:6, 0:8]
ramp = (2.0 * yy + 3.0 * xx + 1.0)[None, None]            # (N=1, C=1, H=6, W=8)
roi = np.array([[0.0, 2.0, 1.5, 6.0, 4.5]])               # (K=1, 5)
out = deform_roi_pool(ramp, roi, output_size=2)            # (K, C, 2, 2)
print(out[0, 0])
assert np.allclose(out[0, 0], [[12.0, 18.0], [15.0, 21.0]], rtol=0, atol=1e-12)


# %% [markdown]
# Here is where the samples of one RoI lie on a smooth test image, for a 3x3 pooling with
# sampling_ratio = 2 (four samples a bin). `roi_geometry` repeats the formulas above so
# that we can draw them.

# %%
def roi_geometry(roi, output_size, spatial_scale=1.0, sampling_ratio=2, offset=None, gamma=0.1):
    """Bin rectangles (ph, pw, 4) as (x0, y0, w, h) and sample points (ph, pw, S, 2) as (y, x)."""
    ph, pw = output_size
    x_start, y_start = roi[1] * spatial_scale - 0.5, roi[2] * spatial_scale - 0.5
    roi_w = roi[3] * spatial_scale - 0.5 - x_start
    roi_h = roi[4] * spatial_scale - 0.5 - y_start
    bin_h, bin_w = roi_h / ph, roi_w / pw
    g = sampling_ratio
    rects = np.zeros((ph, pw, 4))
    points = np.zeros((ph, pw, g * g, 2))
    for i in range(ph):
        for j in range(pw):
            dx = 0.0 if offset is None else gamma * roi_w * offset[0, i, j]   # channel 0: x
            dy = 0.0 if offset is None else gamma * roi_h * offset[1, i, j]   # channel 1: y
            y0, x0 = y_start + dy + i * bin_h, x_start + dx + j * bin_w
            rects[i, j] = x0, y0, bin_w, bin_h
            sub = (np.arange(g) + 0.5) / g
            points[i, j] = np.stack(np.meshgrid(y0 + sub * bin_h, x0 + sub * bin_w,
                                                indexing="ij"), -1).reshape(-1, 2)
    return rects, points


H, W = 24, 32
gy, gx = np.mgrid[0:H, 0:W]
image = (np.exp(-((gy - 9.0) ** 2 + (gx - 12.0) ** 2) / 20.0)
         + 0.7 * np.exp(-((gy - 15.0) ** 2 + (gx - 22.0) ** 2) / 30.0))[None, None]
box = np.array([0.0, 7.0, 5.0, 25.0, 20.0])               # a RoI at spatial_scale 1
rects, points = roi_geometry(box, (3, 3))


def draw_bins(ax, rects, points, colour, label):
    for x0, y0, w, h in rects.reshape(-1, 4):
        ax.add_patch(plt.Rectangle((x0, y0), w, h, fill=False, edgecolor=colour, linewidth=1.5))
    ax.plot(points[..., 1].ravel(), points[..., 0].ravel(), ".", color=colour, markersize=5,
            label=label)


fig, ax = plt.subplots(figsize=(6.4, 5))
ax.imshow(image[0, 0], cmap="gray_r")
draw_bins(ax, rects, points, "tab:blue", "samples (sampling_ratio = 2)")
ax.set_title("RoI align: 3x3 bins of the RoI (0, 7, 5, 25, 20), four samples a bin", fontsize=10)
ax.legend(loc="lower left", fontsize=8)
fig.tight_layout()
save_figure(fig, "07_roi_align_bins")

# %% [markdown]
# And the op agrees with the picture: interpolating the image at the drawn points (all
# inside it, so the four-neighbour formula of tutorial 01 applies as it is) and averaging
# each bin's four gives the op's output.

# %%
def bilinear_inside(plane, y, x):
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * plane[y0, x0] + (1 - ly) * lx * plane[y0, x0 + 1]
            + ly * (1 - lx) * plane[y0 + 1, x0] + ly * lx * plane[y0 + 1, x0 + 1])


by_hand = bilinear_inside(image[0, 0], points[..., 0], points[..., 1]).mean(axis=-1)  # (3, 3)
pooled = deform_roi_pool(image, box[None], output_size=3, sampling_ratio=2)
assert np.allclose(pooled[0, 0], by_hand, rtol=0, atol=1e-12)
print("bins by hand == deform_roi_pool:\n", pooled[0, 0])

# %% [markdown]
# ## 2. The boundary rule of roi_align
#
# RoIs often stick out of the feature map. roi_align does not pad with zeros the way
# `bilinear_sample(padding_mode="zeros")` does; its rule (torchvision's
# `bilinear_interpolate`) is:
#
# * a sample with y < -1, y > H, x < -1 or x > W reads 0;
# * otherwise the point is clamped into [0, H-1] x [0, W-1] and interpolated.
#
# So a sample half a pixel above the image reads the top row at full strength, and the
# value drops to 0 only past -1. One sample a bin (sampling_ratio = 1, a RoI 0.5 px
# wide centred on the point) shows each case on the 2x3 image [[1, 2, 3], [4, 5, 6]]:

# %%
tiny = np.array([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
cases = {(0.5, 1.5): (2 + 3 + 5 + 6) / 4, (-0.5, 0.5): (1 + 2) / 2, (1.7, 2.4): 6.0,
         (-1.0, 1.0): 2.0, (-1.5, 1.0): 0.0, (2.5, 1.0): 0.0}
for (cy, cx), expected in cases.items():
    one = np.array([[0.0, cx + 0.25, cy + 0.25, cx + 0.75, cy + 0.75]])
    value = deform_roi_pool(tiny, one, output_size=1, sampling_ratio=1)[0, 0, 0, 0]
    print(f"sample at (y, x) = ({cy:5.2f}, {cx:4.2f}): {value:5.2f}")
    assert abs(value - expected) < 1e-12

# %% [markdown]
# Without offsets `deform_roi_pool` is `torchvision.ops.roi_align(..., aligned=True)`:
# `benchmarks/roi_align_vs_torchvision.py` compares the two on random RoIs (in float64
# outputs and input gradients agree to 2e-15), and `tests/test_roi_ops.py` checks numbers
# recorded from torchvision.
#
# ## 3. Deformable RoI pooling
#
# The deformable version moves every bin as a whole. The offsets are *normalised*: a
# network predicts offset (K, 2, ph, pw), and bin (i, j) of RoI k moves by
#
#     dx = gamma * roi_w * offset[k, 0, i, j],     dy = gamma * roi_h * offset[k, 1, i, j]
#
# pixels (gamma = 0.1 in the paper). Scaling by the RoI's size makes the same offset
# mean the same part of an object whether the box is large or small. Note the order:
# **channel 0 is the x-shift** (mmcv's convention), unlike the (dy, dx) pairs of
# `deform_conv2d`.
#
# **By hand**, on the ramp again: the RoI of section 1 is 4 wide and 3 high. Moving bin
# (1, 0) by offset x = 0.5 shifts it 0.1 * 4 * 0.5 = 0.2 px right, and the ramp rises by
# 3 per pixel in x, so the bin gains 0.6; moving bin (0, 1) by offset y = -1 shifts it
# 0.3 px up, and the bin loses 2 * 0.3 = 0.6.

# %%
offset = np.zeros((1, 2, 2, 2))                            # (K, 2, ph, pw)
offset[0, 0, 1, 0] = 0.5                                   # x-shift of bin (1, 0)
offset[0, 1, 0, 1] = -1.0                                  # y-shift of bin (0, 1)
moved = deform_roi_pool(ramp, roi, offset, output_size=2, gamma=0.1)
print(moved[0, 0] - out[0, 0])
assert np.allclose(moved[0, 0] - out[0, 0], [[0.0, -0.6], [0.6, 0.0]], rtol=0, atol=1e-12)

# %% [markdown]
# An optional mask (K, 1, ph, pw) multiplies each bin (mmcv's ModulatedDeformRoIPool).
# Here are the bins of the RoI of section 1 before and after random offsets of standard
# deviation 1 (about 1.8 px in x and 1.5 px in y for this 18 x 15 RoI).

# %%
bin_offsets = rng.normal(0.0, 1.0, (2, 3, 3))
moved_rects, moved_points = roi_geometry(box, (3, 3), offset=bin_offsets)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
for ax, (title, r, p, colour) in zip(axes, [
        ("RoI align: regular bins", rects, points, "tab:blue"),
        ("deformable RoI pooling: each bin moved by gamma*(roi_w, roi_h)*offset",
         moved_rects, moved_points, "tab:red")]):
    ax.imshow(image[0, 0], cmap="gray_r")
    if colour == "tab:red":
        draw_bins(ax, rects, points, "tab:blue", "regular")
        centres = rects[..., :2] + rects[..., 2:] / 2
        shifts = moved_rects[..., :2] - rects[..., :2]
        ax.quiver(centres[..., 0], centres[..., 1], shifts[..., 0], shifts[..., 1],
                  angles="xy", scale_units="xy", scale=1, color="tab:red", width=0.005)
    draw_bins(ax, r, p, colour, "samples")
    ax.set_title(title, fontsize=9)
fig.tight_layout()
save_figure(fig, "07_bins_before_after_offsets")
# the op reads the red points: all inside the image here, so plain interpolation applies
assert moved_points.min() >= 0 and moved_points[..., 0].max() < H - 1
assert moved_points[..., 1].max() < W - 1
moved_pooled = deform_roi_pool(image, box[None], bin_offsets[None], output_size=3,
                               sampling_ratio=2)
assert np.allclose(moved_pooled[0, 0], bilinear_inside(image[0, 0], moved_points[..., 0],
                                                       moved_points[..., 1]).mean(-1),
                   rtol=0, atol=1e-12)

# %% [markdown]
# ## 4. The backward pass
#
# With w = mask / (grid_h*grid_w), the weight of each sample in its bin, the output is
# a sum of bilinear samples, so
#
# * **input**: every sample hands w * dout[k, c, i, j] to the four pixels it read, times
#   their bilinear weights (a scatter: RoIs overlap, so on the CPU the kernel loops over
#   image planes, and the GPU uses atomics or, deterministically, one thread per plane);
# * **offset**: d out / d offset[k, 0, i, j] = w * gamma * roi_w * sum_samples dv/dx,
#   summed over channels with dout; channel 1 alike with roi_h and dv/dy (dv/dx is 0 where
#   the sample was clamped, and the right derivative at integer x);
# * **mask**: the unmasked bin value.
#
# **By hand**: on the ramp dv/dx = 3 everywhere inside, so d out / d offset_x =
# 0.1 * 4 * 3 = 1.2 for every bin of our RoI (roi_w = 4), and d out / d offset_y =
# 0.1 * 3 * 2 = 0.6 (roi_h = 3).

# %%
grads = deform_roi_pool_backward(np.ones((1, 1, 2, 2)), ramp, roi, offset, output_size=2)
print("d out / d offset, channel 0 (x) and 1 (y):\n", grads.offset[0])
assert np.allclose(grads.offset[0, 0], 1.2, rtol=0, atol=1e-12)
assert np.allclose(grads.offset[0, 1], 0.6, rtol=0, atol=1e-12)

# %% [markdown]
# And against central differences on a random problem (float64; RoIs and offsets chosen
# so no sample sits on an integer coordinate, where bilinear interpolation has kinks):

# %%
x = rng.standard_normal((2, 3, 6, 7))
rois = np.array([[0, 1.1, 0.3, 5.2, 4.4], [1, -1.3, 2.2, 3.9, 7.1], [1, 2.2, 1.1, 7.7, 3.3]])
inputs = {"input": x, "rois": rois, "offset": rng.uniform(-1, 1, (3, 2, 2, 2)),
          "mask": rng.uniform(0.3, 1, (3, 1, 2, 2))}
rows = check_gradients(deform_roi_pool, deform_roi_pool_backward, inputs,
                       {"output_size": 2, "sampling_ratio": 2})
print(format_table(rows))
assert all(r.passed for r in rows)

# %% [markdown]
# The offset gradient is what lets a network learn where to look. A small experiment:
# pool a feature map with unknown offsets to get a target, then start from zero offsets
# and follow the gradient of the squared error. One channel would not do: a bin gives one
# number and has two offsets, so many shifts fit it equally well. Three channels, the x
# coordinate, the y coordinate and a blob, pin every bin down, and the descent finds the
# true offsets.

# %%
features = np.stack([gx / W, gy / H, np.exp(-((gy - 12.0) ** 2 + (gx - 16.0) ** 2) / 60.0)])[None]
true_offset = rng.uniform(-0.8, 0.8, (1, 2, 3, 3))                # up to 1.4 px in x
target = deform_roi_pool(features, box[None], true_offset, output_size=3, sampling_ratio=2)
guess = np.zeros_like(true_offset)
losses = []
for step in range(100):
    pooled = deform_roi_pool(features, box[None], guess, output_size=3, sampling_ratio=2)
    residual = pooled - target                                   # dL/dpooled for L = 0.5 r^2
    losses.append(0.5 * np.sum(residual ** 2))
    grad = deform_roi_pool_backward(residual, features, box[None], guess, output_size=3,
                                    sampling_ratio=2).offset
    guess -= 20.0 * grad
error = np.abs(guess - true_offset).max()
print(f"loss {losses[0]:.2e} -> {losses[-1]:.2e}; max |guess - true offset| = {error:.1e}")
assert losses[-1] < 1e-6 * losses[0] and error < 0.01

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogy(losses)
ax.set_xlabel("gradient step")
ax.set_ylabel("0.5 * sum (pooled - target)^2")
ax.set_title("Recovering the offsets of 3x3 bins by gradient descent", fontsize=10)
fig.tight_layout()
save_figure(fig, "07_offset_descent")

# %% [markdown]
# ## 5. Position-sensitive RoI pooling (R-FCN)
#
# R-FCN makes the *score maps* position-sensitive: for output_dim classes and a G x G
# group grid there are output_dim * G^2 input channels, and bin (i, j) of class ctop
# reads only channel
#
#     c = (ctop*G + gi)*G + gj,      gi = i*G // P,  gj = j*G // P   (P = pooled_size)
#
# (the "top-left" part of an object is scored by its own maps). Fill channel c with the
# constant c and every output tells which channel its bin read:

# %%
labels = np.broadcast_to(np.arange(8.0)[None, :, None, None], (1, 8, 5, 5)).copy()
ps = deform_psroi_pool(labels, np.array([[0.0, 0, 0, 4, 4]]), None, spatial_scale=1.0,
                       output_dim=2, group_size=2, pooled_size=2, sample_per_part=2)
print(ps[0])
assert np.array_equal(ps[0], [[[0, 1], [2, 3]], [[4, 5], [6, 7]]])

# %% [markdown]
# The deformable version (MXNet's DeformablePSROIPooling) differs from RoI align in
# details that change the numbers; from its source:
#
# * corners are rounded to whole pixels with C's round (halves away from zero) and the
#   box made inclusive: x_start = round(x1)*s - 0.5, roi_w = (round(x2) + 1)*s - 0.5 -
#   x_start, at least 0.1;
# * a bin's sample_per_part^2 samples sit at the **top-left corners** of its sub-bins,
#   x = x_bin + iw * bin_w / sample_per_part, not at their centres;
# * samples outside [-0.5, W - 0.5] are **skipped** and the bin is the mean of the
#   others (0 when none is inside); the rest are clamped into the image;
# * offsets come as trans (K, 2*num_classes, part_size, part_size), scaled by trans_std
#   and the RoI's size, channel 2*cls being x.
#
# **By hand**, on a ramp 10 + x, one bin, sample_per_part = 4 along a row: the RoI
# x1 = -0.5, x2 = 2 has round(-0.5) = -1 (NumPy's round would give 0), so x_start = -1.5,
# roi_w = 2 + 1 - (-1) = 4 and the samples are at -1.5 (skipped), -0.5 (clamped to 0),
# 0.5 and 1.5: the mean of 10, 10.5 and 11.5 is 32/3.

# %%
row = np.broadcast_to(10.0 + np.arange(8.0), (1, 1, 3, 8)).copy()
value = deform_psroi_pool(row, np.array([[0.0, -0.5, 1.0, 2.0, 1.0]]), None, 1.0, 1, 1, 1,
                          sample_per_part=4)[0, 0, 0, 0]
print(f"{value:.6f} = 32/3 = {32 / 3:.6f}")
assert abs(value - 32 / 3) < 1e-12

# %% [markdown]
# ## 6. The layer
#
# `dcn_ref.nn.DeformRoIPool` is the paper's module: pool without offsets, predict the
# normalised offsets with a fully connected layer on the pooled features, pool again
# with them. The fully connected layer starts at zero (as in the paper and mmcv), so a
# fresh layer is plain RoI align, and training moves the bins only as far as the loss
# asks. (`DeformPSRoIPool` is R-FCN's head: 1x1-convolution score and offset maps, the
# offsets pooled position-sensitively.)

# %%
layer = DeformRoIPool(1, output_size=3, sampling_ratio=2, dtype=np.float64)
pooled_plain = deform_roi_pool(image, box[None], output_size=3, sampling_ratio=2)
assert np.array_equal(layer.forward(image, box[None]), pooled_plain)
layer.backward(np.ones_like(pooled_plain))
print("fresh layer == roi_align; offset_weight gradient", layer.grads["offset_weight"].shape,
      "max |.| =", f"{np.abs(layer.grads['offset_weight']).max():.3f}")
assert np.abs(layer.grads["offset_weight"]).max() > 0   # the offsets would start to learn

# %% [markdown]
# ## Summary
#
# * RoI align cuts the half-pixel-shifted RoI into bins and averages grid_h x grid_w
#   bilinear samples per bin; its boundary rule clamps samples in [-1, H] and drops the
#   rest. `deform_roi_pool` without offsets is `torchvision.ops.roi_align(aligned=True)`.
# * Deformable RoI pooling moves each bin by gamma * (roi_w, roi_h) * offset, channel 0
#   being x; an optional mask multiplies each bin.
# * The offset gradient is the bilinear derivative summed over the bin's samples and
#   channels, scaled by gamma times the RoI's size; it is enough to recover offsets by
#   gradient descent on a smooth image.
# * PS-RoI pooling reads one channel group per bin; MXNet's deformable version rounds
#   the RoI, samples sub-bin corners and skips samples outside the image.
#
# ## Exercises
#
# 1. With sampling_ratio = 0, how many samples does a bin of a 100 x 30 px RoI take at
#    spatial_scale 1/16 and 7 x 7 bins? And at spatial_scale 1? Check your answer on
#    the ramp of section 1, where a bin's value tells where its samples' centre is.
# 2. Why does a sample at y = -0.5 get a zero gradient with respect to its y-offset?
#    What does mmcv's kernel return there (see the docstring of
#    `deform_roi_pool_backward`)?
# 3. Move the true offsets of section 4 to 3 (a shift of 30% of the RoI). Does gradient
#    descent still find them? Why might it not?
# 4. In `deform_psroi_pool`, which trans element moves bin (2, 5) of class 1 with
#    pooled_size 7 and part_size 4?
