# %% [markdown]
# # Tutorial 03: the Keras ConvOffset2D layer, and the reshape that breaks it
#
# The first deformable layer many people met was `ConvOffset2D` from a popular Keras
# re-implementation of Dai et al. (2017): a plain 3x3 convolution predicts one (dy, dx)
# for every channel and pixel, and the feature map is resampled at the moved points.
# `dcn_ref.ops.offset_sample` is that resampling step, with an explicit layout. Plan:
#
# 1. the layer's idea, and `offset_sample` checked by hand (zero offsets, a shift by one);
# 2. the classic pitfall: reshaping a (b, 2c, h, w) offset map into (b*c, h, w, 2) pairs
#    neighbouring pixels instead of (dy, dx), shown on a labelled array, and the
#    transpose that does it right;
# 3. what the wrong pairing does to an image (a picture);
# 4. the gradients: the clamp of "border" padding, and a finite-difference check;
# 5. the whole layer (offset convolution + resampling) forward and backward, chained by hand.
#
# Run it as a script (`python tutorials/03_offset_sampling_keras_layer.py`) or open it as
# a notebook.

# %%
import os

import numpy as np

from dcn_ref.gradcheck import check_gradients, format_table, numerical_vjp, off_kink, rel_error
from dcn_ref.ops import conv2d, conv2d_backward, offset_sample, offset_sample_backward
from dcn_ref.plotting import plt, save_figure

FAST = os.environ.get("DCN_REF_FAST") == "1"  # smaller sizes, same code path
np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The idea: every channel and pixel moves by its own (dy, dx)
#
# For an input x of shape (N, C, H, W) the layer computes
#
#     offset = conv2d(x, w_offset, padding=1)        (N, 2C, H, W): a 3x3 conv, 2C outputs
#     out[n, c, i, j] = bilinear(x[n, c], i + dy[n, c, i, j], j + dx[n, c, i, j])
#
# with the point clamped into the image ("border" padding), as the Keras layer does.
# `offset_sample(input, offset)` is the second line. Its layout is spelled out: channel
# 2c of `offset` is the dy of input channel c, channel 2c + 1 its dx.
#
# Two checks by hand. Zero offsets read every pixel where it is, so the layer is the
# identity. An offset dx = 1 reads each pixel's right neighbour, shifting the image one
# column to the left; the last column reads past the edge and, clamped, repeats itself.

# %%
x = np.arange(12.0).reshape(1, 1, 3, 4)                  # (N, C, H, W)
zero = np.zeros((1, 2, 3, 4))                            # (N, 2C, H, W)
assert np.array_equal(offset_sample(x, zero), x)

shift = np.zeros((1, 2, 3, 4))
shift[0, 1] = 1.0                                        # channel 1 = dx of channel 0
shifted = offset_sample(x, shift)
print("input:\n", x[0, 0], "\nwith dx = 1:\n", shifted[0, 0])
assert np.array_equal(shifted[0, 0], [[1, 2, 3, 3], [5, 6, 7, 7], [9, 10, 11, 11]])

# %% [markdown]
# ## 2. The pitfall: a reshape is not a transpose
#
# The offset convolution hands over its 2C channels in one array. The sampler wants a
# (dy, dx) pair per channel and pixel, e.g. an array (b*c, h, w, 2). The tempting line
#
#     offset.reshape(b * c, h, w, 2)                 # WRONG
#
# runs without complaint. (The widely copied Keras layer does exactly this after
# transposing its channels-last output to (b, 2c, h, w).) A reshape never moves data:
# it reads the elements in memory order and cuts them into the new shape. In memory
# the last axis of (b, 2c, h, w) is w, so the two elements that become a "pair" are two
# neighbouring pixels of the same map, not a dy and a dx.
#
# To see it, label every element with its meaning: `dy1(0,2)` is the dy of channel 1 at
# pixel (0, 2).

# %%
b, c, h, w = 1, 2, 2, 3
labels = np.empty((b, 2 * c, h, w), dtype=object)        # (b, 2c, h, w)
for ch in range(2 * c):
    for i in range(h):
        for j in range(w):
            labels[0, ch, i, j] = f"{'dy' if ch % 2 == 0 else 'dx'}{ch // 2}({i},{j})"
print("offset channels as the convolution returns them:")
for ch in range(2 * c):
    print(f"  channel {ch}:", labels[0, ch].tolist())

wrong = labels.reshape(b * c, h, w, 2)                   # (b*c, h, w, 2), but wrong
print("\nreshape -> (b*c, h, w, 2); the pair at pixel (i, j) of channel 0:")
for i in range(h):
    print("  ", [tuple(wrong[0, i, j]) for j in range(w)])
assert tuple(wrong[0, 0, 0]) == ("dy0(0,0)", "dy0(0,1)")  # two pixels of the dy map
assert tuple(wrong[0, 1, 0]) == ("dx0(0,0)", "dx0(0,1)")  # the second half: the dx map

# %% [markdown]
# Channel 0's "pairs" are (dy at pixel (0,0), dy at pixel (0,1)), (dy at (0,2), dy at
# (1,0)), ... and, once the dy map is used up, pairs of dx values. Pixel (i, j) of
# the output is moved by numbers predicted for other pixels.
#
# The right way splits the channel axis 2c into (c, 2), which *is* a plain reshape
# because the two halves of a pair are whole neighbouring channels, and then moves the
# axis of length 2 to the end with a transpose:
#
#     (b, 2c, h, w) -> reshape (b, c, 2, h, w) -> transpose (b, c, h, w, 2) -> reshape (b*c, h, w, 2)

# %%
right = labels.reshape(b, c, 2, h, w).transpose(0, 1, 3, 4, 2).reshape(b * c, h, w, 2)
print("reshape + transpose; the pair at pixel (i, j) of channel 0:")
for i in range(h):
    print("  ", [tuple(right[0, i, j]) for j in range(w)])
for ch in range(c):
    for i in range(h):
        for j in range(w):
            assert tuple(right[ch, i, j]) == (f"dy{ch}({i},{j})", f"dx{ch}({i},{j})")

# %% [markdown]
# `offset_sample` avoids the question: it takes the (N, 2C, H, W) map as it is and
# views it as `(N*C, 2, H*W)`, a pure split of the channel axis (see
# `dcn_ref/ops/offset_sample.py`). The labels confirm that this view pairs correctly:

# %%
engine_view = labels.reshape(b * c, 2, h * w)            # (b*c, 2, h*w)
assert tuple(engine_view[1, :, 4]) == ("dy1(1,1)", "dx1(1,1)")
print("view (b*c, 2, h*w), channel 1, pixel 4 = (1, 1):", tuple(engine_view[1, :, 4]))

# %% [markdown]
# ## 3. What the wrong pairing does to an image
#
# Feed `offset_sample` the pairs the wrong reshape makes (translated back to its
# layout with the correct transpose, so that the only error is the reshape). First with
# the shift dx = 1 of section 1, small enough to check by hand. The dy map is all 0 and
# the dx map all 1, so the first half of the rows gets pairs (0, 0) and stays put, the
# second half gets pairs (1, 1) and moves diagonally.

# %%
def keras_pairing(offset):
    """The (dy, dx) pairs of ``offset.reshape(b*c, h, w, 2)``, back in the (b, 2c, h, w) layout."""
    n, two_c, height, width = offset.shape
    pairs = offset.reshape(n * two_c // 2, height, width, 2)      # the wrong reshape
    return pairs.reshape(n, two_c // 2, height, width, 2).transpose(0, 1, 4, 2, 3).reshape(offset.shape)


x = np.arange(16.0).reshape(1, 1, 4, 4)
shift = np.zeros((1, 2, 4, 4))
shift[0, 1] = 1.0
garbled = offset_sample(x, keras_pairing(shift))
print("input:\n", x[0, 0], "\nintended (dx = 1):\n", offset_sample(x, shift)[0, 0],
      "\nwith the wrong reshape:\n", garbled[0, 0])
assert np.array_equal(garbled[0, 0, :2], x[0, 0, :2])                     # pairs (0, 0)
assert np.array_equal(garbled[0, 0, 2:], [[13, 14, 15, 15], [13, 14, 15, 15]])  # pairs (1, 1)

# %% [markdown]
# Now a shear on a 12x12 letter: dx grows linearly down the rows and dy is 0. The
# arrows show where each output pixel reads from.

# %%
size = 12
glyph = np.zeros((1, 1, size, size))
glyph[0, 0, 2:10, 4:6] = 1.0                               # the stem of an "F"
glyph[0, 0, 2:4, 4:10] = 1.0                               # its top bar
glyph[0, 0, 6, 4:9] = 1.0                                  # its middle bar
shear = np.zeros((1, 2, size, size))
shear[0, 1] = 0.3 * (np.arange(size)[:, None] - 5.5)       # dx = 0.3 * (i - 5.5), dy = 0
cases = {"correct pairing": shear, "offset.reshape(b*c, h, w, 2)": keras_pairing(shear)}

fig, axes = plt.subplots(2, 2, figsize=(7.5, 7.5))
jj, ii = np.meshgrid(np.arange(size), np.arange(size))
for row, (name, offset) in zip(axes, cases.items()):
    row[0].imshow(glyph[0, 0], cmap="gray_r", vmin=0, vmax=1.5)
    row[0].quiver(jj, ii, offset[0, 1], offset[0, 0], color="tab:red", angles="xy",
                  scale_units="xy", scale=1, width=0.005)
    row[0].set_title(f"{name}:\nwhere each pixel reads from", fontsize=10)
    row[1].imshow(offset_sample(glyph, offset)[0, 0], cmap="gray_r", vmin=0, vmax=1.5)
    row[1].set_title(f"{name}:\noffset_sample output", fontsize=10)
    for ax in row:
        ax.set_xlabel("x")
        ax.set_ylabel("y")
fig.suptitle("A shear dx = 0.3 (y - 5.5), dy = 0, with correct and with reshaped offsets")
fig.tight_layout(rect=(0, 0, 1, 0.95))
save_figure(fig, "03_offset_pairing")

# %% [markdown]
# ## 4. Gradients
#
# `offset_sample_backward(dout, input, offset)` returns the gradients with respect to
# `input` and `offset`. For one output pixel, with (y, x) = (i + dy, j + dx):
#
#     d out / d dy = d bilinear / d y    (the difference of neighbouring pixels, tutorial 01)
#     d out / d dx = d bilinear / d x
#     d out / d input[corner] = that corner's bilinear weight
#
# With "border" padding the point is clamped first; where the clamp is active, moving
# the point does nothing, and the derivative is 0 (the right derivative again: at
# y = H - 1 exactly it is 0, at y = 0 it is not).
#
# By hand on an image that grows by 1 per column and 10 per row: the pixel (0, 0)
# moved by dy = 1.5 lands inside, and its gradient is (10, 1); moved by dy = 5 it is
# clamped to the last row and its dy gradient vanishes.

# %%
ramp = (10.0 * np.arange(4)[:, None] + np.arange(4)[None]).reshape(1, 1, 4, 4)
offset = np.zeros((1, 2, 4, 4))
offset[0, 0, 0, 0] = 1.5                                  # dy of pixel (0, 0): inside
offset[0, 0, 0, 1] = 5.0                                  # dy of pixel (0, 1): clamped
offset[0, 1, 0, 1] = 0.5                                  # dx of pixel (0, 1)
grads = offset_sample_backward(np.ones((1, 1, 4, 4)), ramp, offset)
print("(d/d dy, d/d dx) at pixel (0, 0):", grads.offset[0, :, 0, 0])
print("(d/d dy, d/d dx) at pixel (0, 1):", grads.offset[0, :, 0, 1])
assert list(grads.offset[0, :, 0, 0]) == [10.0, 1.0]
assert list(grads.offset[0, :, 0, 1]) == [0.0, 1.0]

# %% [markdown]
# And the finite-difference check on random data, both padding modes (offsets kept off
# the integers, where the derivative jumps):

# %%
N, C, H, W = (1, 2, 4, 4) if FAST else (2, 3, 5, 4)
inputs = {"input": rng.standard_normal((N, C, H, W)),
          "offset": off_kink(rng, (N, 2 * C, H, W), -3, 3)}
rows = []
for mode in ("border", "zeros"):
    rows += check_gradients(offset_sample, offset_sample_backward, inputs,
                            {"padding_mode": mode}, op=f"offset_sample[{mode}]")
print(format_table(rows))
assert all(row.passed for row in rows)

# %% [markdown]
# ## 5. The whole layer, forward and backward
#
# The layer is two ops in a row, and x feeds both: the offset convolution reads it, and
# so does the sampler. The backward pass runs them in reverse and adds the two
# gradients that reach x:
#
#     g_sample = offset_sample_backward(dout, x, offset)          -> .input, .offset
#     g_conv   = conv2d_backward(g_sample.offset, x, w_offset)    -> .input, .weight
#     dx       = g_sample.input + g_conv.input
#     dw_offset = g_conv.weight

# %%
N, C, H, W = (1, 2, 4, 4) if FAST else (2, 2, 5, 5)
x = rng.standard_normal((N, C, H, W))
w_offset = 0.5 * rng.standard_normal((2 * C, C, 3, 3))    # (2C, C, 3, 3): no bias, as in Keras


def layer(x, w_offset):
    offset = conv2d(x, w_offset, padding=1)                # (N, 2C, H, W)
    return offset_sample(x, offset)                        # (N, C, H, W)


dout = rng.standard_normal((N, C, H, W))
offset = conv2d(x, w_offset, padding=1)
g_sample = offset_sample_backward(dout, x, offset)
g_conv = conv2d_backward(g_sample.offset, x, w_offset, padding=1)

# %% [markdown]
#     dx = g_sample.input + g_conv.input

# %%
dx = g_sample.input + g_conv.input
dw_offset = g_conv.weight

numeric_dx = numerical_vjp(lambda v: layer(v, w_offset), x, dout)
numeric_dw = numerical_vjp(lambda v: layer(x, v), w_offset, dout)
print(f"layer gradient vs finite differences: x {rel_error(dx, numeric_dx):.1e}, "
      f"w_offset {rel_error(dw_offset, numeric_dw):.1e}")
assert rel_error(dx, numeric_dx) < 1e-6 and rel_error(dw_offset, numeric_dw) < 1e-6

# %% [markdown]
# ## Summary
#
# * ConvOffset2D = a 3x3 convolution predicting 2C offset channels + a bilinear resampling
#   of every channel at its own moved points (`offset_sample`, "border" padding).
# * A reshape re-cuts memory in order; it cannot move an axis. Turning (b, 2c, h, w) into
#   (b*c, h, w, 2) with a reshape pairs neighbouring pixels of one map. Split 2c into
#   (c, 2) and transpose the 2 to the end instead.
# * The offset gradient is the bilinear derivative times the incoming gradient, and 0
#   where "border" clamped the point.
# * A layer made of two ops is differentiated by chaining their backward passes; an input
#   used twice collects the sum of both gradients.
#
# ## Exercises
#
# 1. The Keras layer works on channels-last arrays (b, h, w, 2c). Label such an array
#    and find which pairs `reshape(b*c, h, w, 2)` makes *without* the transpose to
#    channels-first. Are they any better?
# 2. Write the function that takes pairs (b*c, h, w, 2) back to the (b, 2c, h, w) layout
#    (the second line of `keras_pairing`) and check on the labels that it undoes the
#    correct reshape + transpose of section 2.
# 3. With the wrong reshape, which pixels of an H x W map get a correct (dy, dx) pair by
#    accident when dy = dx everywhere? When the offsets are constant?
# 4. Set `w_offset` to zeros in section 5. What are the gradients of `w_offset` now,
#    and why is the layer still able to learn from this starting point?
