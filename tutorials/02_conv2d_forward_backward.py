# %% [markdown]
# # Tutorial 02: convolution as im2col + GEMM, forward and backward
#
# Deformable convolution is an ordinary convolution whose input patches are read at
# shifted points. This tutorial builds the ordinary one first, the way `dcn_ref.ops.conv2d`
# computes it:
#
# 1. the output-size formula;
# 2. im2col: the column matrix of a 3x4 image, printed in full;
# 3. the forward pass as one matrix product (GEMM), and `conv2d` against an independent
#    computation with `scipy.signal.correlate`;
# 4. the backward pass derived from the GEMM: dW = dout X^T, db = sum dout,
#    dx = col2im(W^T dout), each checked against the library;
# 5. every gradient against finite differences;
# 6. a picture of col2im: how often each pixel is read, with stride 1 and stride 2.
#
# Run it as a script (`python tutorials/02_conv2d_forward_backward.py`) or open it as a
# notebook.

# %%
import os

import numpy as np
from scipy import signal

from dcn_ref.gradcheck import check_gradients, format_table
from dcn_ref.ops import col2im, conv2d, conv2d_backward, im2col
from dcn_ref.plotting import plt, save_figure

FAST = os.environ.get("DCN_REF_FAST") == "1"  # smaller sizes, same code path
np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The output size
#
# `conv2d(input, weight, bias, stride, padding, dilation, groups)` has the semantics of
# `torch.nn.functional.conv2d`: input (N, C_in, H, W), weight (C_out, C_in/groups, kh, kw),
# and it computes a cross-correlation (the kernel is not flipped),
#
#     out[n, o, oy, ox] = b[o] + sum_{c, i, j} w[o, c, i, j] * x[n, c, oy*stride - pad + i*dilation,
#                                                                     ox*stride - pad + j*dilation]
#
# with zeros outside the image. A dilated kernel spans dilation*(kh - 1) + 1 rows; the
# padded image has H + 2*pad; the window fits at every stride-th position that leaves
# room for it:
#
#     H_out = (H + 2*pad - dilation*(kh - 1) - 1) // stride + 1        (W_out alike)

# %%
def output_size(size, k, stride, pad, dilation):
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


for H, k, stride, pad, dilation in [(3, 2, 1, 0, 1), (7, 3, 1, 1, 1), (7, 3, 2, 1, 1),
                                    (7, 3, 1, 0, 2), (8, 3, 3, 2, 2)]:
    x = np.zeros((1, 1, H, H))
    w = np.zeros((1, 1, k, k))
    out = conv2d(x, w, stride=stride, padding=pad, dilation=dilation)
    print(f"H={H}, k={k}, stride={stride}, pad={pad}, dilation={dilation}: "
          f"H_out = {output_size(H, k, stride, pad, dilation)}, conv2d gives {out.shape[2]}")
    assert out.shape[2:] == (output_size(H, k, stride, pad, dilation),) * 2

# %% [markdown]
# ## 2. im2col: every window becomes a column
#
# Take a 3x4 image holding 1 ... 12 and a 2x2 kernel. There are
# L = H_out * W_out = 2 * 3 = 6 windows and each holds K = kh * kw = 4 pixels. im2col
# copies window l = oy * W_out + ox into column l of a (C_in * K, L) matrix, tap
# k = i * kw + j in row k. `dcn_ref.ops.im2col` returns that matrix for every image,
# (N, C_in * K, L), row c * K + k for channel c. (The convolutions build their own columns
# internally in whichever layout their target runs fastest: channels last on the CPU.)

# %%
x = np.arange(1.0, 13.0).reshape(1, 1, 3, 4)            # (N, C_in, H, W)
kh, kw, out_h, out_w = 2, 2, 2, 3
columns = im2col(x, (kh, kw))                           # (N, C_in*K, L): stride 1, no padding
print("image:\n", x[0, 0])
print("column matrix (rows: taps (0,0), (0,1), (1,0), (1,1); columns: windows):\n",
      columns.reshape(4, 6))

# %% [markdown]
# Check by hand: window 0 is the top-left 2x2 patch [[1, 2], [5, 6]], so column 0 is
# (1, 2, 5, 6); window 5 is the bottom-right patch [[7, 8], [11, 12]]. Row 0 (tap (0, 0))
# lists the top-left pixel of every window: 1, 2, 3 from row 0 and 5, 6, 7 from row 1.

# %%
assert list(columns[0, :, 0]) == [1, 2, 5, 6]
assert list(columns[0, :, 5]) == [7, 8, 11, 12]
assert list(columns[0, 0]) == [1, 2, 3, 5, 6, 7]

# %% [markdown]
# The same in a picture: window 4 (output pixel (1, 1)) and the column it becomes.

# %%
fig, (ax_x, ax_c) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [4, 6]})
ax_x.imshow(x[0, 0], cmap="Blues", vmin=0, vmax=16)
ax_c.imshow(columns[0], cmap="Blues", vmin=0, vmax=16)
for ax, values in ((ax_x, x[0, 0]), (ax_c, columns[0])):
    for (r, s), value in np.ndenumerate(values):
        ax.text(s, r, int(value), ha="center", va="center")
ax_x.add_patch(plt.Rectangle((0.5, 0.5), 2, 2, fill=False, edgecolor="tab:red", linewidth=3))
ax_c.add_patch(plt.Rectangle((3.5, -0.5), 1, 4, fill=False, edgecolor="tab:red", linewidth=3))
ax_x.set_title("input 3x4; window of output pixel (1, 1)", fontsize=10)
ax_x.set_xticks(range(4))
ax_x.set_yticks(range(3))
ax_x.set_xlabel("x")
ax_x.set_ylabel("y")
ax_c.set_title("column matrix (K, L) = (4, 6); that window is column 4", fontsize=10)
ax_c.set_xticks(range(6))
ax_c.set_yticks(range(4), ["(0,0)", "(0,1)", "(1,0)", "(1,1)"])
ax_c.set_xlabel("window l = oy*W_out + ox")
ax_c.set_ylabel("tap (i, j)")
fig.suptitle("im2col with a 2x2 kernel, stride 1, no padding")
fig.tight_layout(rect=(0, 0, 1, 0.92))
save_figure(fig, "02_im2col")

# %% [markdown]
# With padding 1 and stride 2 the windows start outside the image, and im2col writes the
# zeros of the padding into the matrix. The output is
# ((3 + 2 - 1 - 1) // 2 + 1) x ((4 + 2 - 1 - 1) // 2 + 1) = 2 x 3.

# %%
padded_columns = im2col(x, 2, stride=2, padding=1)
print("padding 1, stride 2:\n", padded_columns.reshape(4, 6))
assert list(padded_columns[0, :, 0]) == [0, 0, 0, 1]      # window 0 covers rows -1..0, columns -1..0

# %% [markdown]
# ## 3. The forward pass is one matrix product
#
# Once the windows are columns X (C_in*K, L), every output channel is a dot product of
# its flattened kernel with every column. Stacking the kernels as rows of
# W (C_out, C_in*K):
#
#     out = W X + b          (C_out, L), one GEMM per image
#
# The C_out x L dot products, each of length C_in*K, are exactly what a matrix-multiply
# library (BLAS) is best at. Here with two input channels and three output channels.

# %%
C_in, C_out, H, W = 2, 3, 4, 5
x = rng.standard_normal((1, C_in, H, W))
weight = rng.standard_normal((C_out, C_in, 3, 3))
bias = rng.standard_normal(C_out)
out_h, out_w = output_size(H, 3, 1, 1, 1), output_size(W, 3, 1, 1, 1)
X = im2col(x, 3, padding=1)[0]                            # (C_in*K, L) of the one image
W_mat = weight.reshape(C_out, C_in * 9)                   # (C_out, C_in*K)

# %% [markdown]
#     out = W X + b

# %%
gemm_out = W_mat @ X + bias[:, None]                      # (C_out, L)
library_out = conv2d(x, weight, bias, padding=1)          # (1, C_out, H_out, W_out)
print("max |GEMM - conv2d| =", np.max(np.abs(gemm_out.reshape(C_out, out_h, out_w) - library_out[0])))
assert np.allclose(gemm_out.reshape(C_out, out_h, out_w), library_out[0], rtol=0, atol=1e-12)

# %% [markdown]
# ### An independent check with SciPy
#
# `scipy.signal.correlate(a, k, mode="valid")` is a plain 2-d cross-correlation without
# stride, padding or dilation. Those three are easy to add around it: pad the image
# with `np.pad`, spread the kernel out with zeros between its taps (dilation), and keep
# every stride-th output. Summing over input channels gives one output channel.

# %%
N, C_in, C_out, H, W = (1, 2, 3, 6, 5) if FAST else (2, 3, 4, 9, 8)
stride, pad, dilation = 2, 1, 2
x = rng.standard_normal((N, C_in, H, W))
weight = rng.standard_normal((C_out, C_in, 3, 3))
bias = rng.standard_normal(C_out)

dilated = np.zeros((C_out, C_in, 2 * dilation + 1, 2 * dilation + 1))
dilated[:, :, ::dilation, ::dilation] = weight           # taps dilation apart
x_padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
scipy_out = np.stack([
    np.stack([sum(signal.correlate(x_padded[n, c], dilated[o, c], mode="valid")
                  for c in range(C_in))[::stride, ::stride] + bias[o]
              for o in range(C_out)])
    for n in range(N)])
ours = conv2d(x, weight, bias, stride=stride, padding=pad, dilation=dilation)
print("shapes:", ours.shape, scipy_out.shape, " max |difference| =", np.max(np.abs(ours - scipy_out)))
assert ours.shape == scipy_out.shape
assert np.allclose(ours, scipy_out, rtol=0, atol=1e-12)

# %% [markdown]
# ## 4. The backward pass, derived from the GEMM
#
# A loss L depends on out; we are handed dout = dL/dout, shaped like out. Per image,
# out[o, l] = sum_r W[o, r] X[r, l] + b[o], so d out[o, l] / d W[o, r] = X[r, l] and, by
# the chain rule, dL/dW[o, r] = sum_l dout[o, l] X[r, l]; summed over the images of the
# batch:
#
#     dW = sum_n dout_n X_n^T                (C_out, C_in*K)
#
# The bias adds to every pixel of every image, so its gradient is the plain sum:
#
#     db = sum over n and l of dout          (C_out,)
#
# d out[o, l] / d X[r, l] = W[o, r], so the columns' gradient is another GEMM:
#
#     dX = W^T dout                          (C_in*K, L)
#
# Every entry of X is a *copy* of one input pixel (or a padding zero). A pixel copied
# into several windows gets the sum of the gradients of all its copies; copies of
# padding go nowhere. That adding-back is **col2im**, the adjoint of im2col:
#
#     dx = col2im(dX)
#
# Let's compute all three on a small batch and compare them with `conv2d_backward`.

# %%
N, C_in, C_out, H, W = 2, 2, 3, 5, 4
x = rng.standard_normal((N, C_in, H, W))
weight = rng.standard_normal((C_out, C_in, 3, 3))
bias = rng.standard_normal(C_out)
out_h, out_w = output_size(H, 3, 1, 1, 1), output_size(W, 3, 1, 1, 1)
X = im2col(x, 3, padding=1)                               # (N, C_in*K, L)
W_mat = weight.reshape(C_out, C_in * 9)
dout = rng.standard_normal((N, C_out, out_h * out_w))     # (N, C_out, L)
grads = conv2d_backward(dout.reshape(N, C_out, out_h, out_w), x, weight, bias, padding=1)

# %% [markdown]
#     dW = sum_n dout_n X_n^T

# %%
dW = sum(dout[n] @ X[n].T for n in range(N)).reshape(weight.shape)
assert np.allclose(dW, grads.weight, rtol=0, atol=1e-12)

# %% [markdown]
#     db = sum over n and l of dout

# %%
db = dout.sum(axis=(0, 2))
assert np.allclose(db, grads.bias, rtol=0, atol=1e-12)

# %% [markdown]
#     dx = col2im(W^T dout)

# %%
dX = np.stack([W_mat.T @ dout[n] for n in range(N)])      # (N, C_in*K, L)
dx = col2im(dX, x.shape, 3, padding=1)
assert np.allclose(dx, grads.input, rtol=0, atol=1e-12)
print("dW, db and dx from the three formulas equal conv2d_backward's")

# %% [markdown]
# A check by hand for col2im. Feed it columns of ones: each pixel then receives the
# number of windows that copied it. For the 3x4 image and 2x2 kernel of section 2, a
# corner pixel sits in one window, an edge pixel in two, an inner pixel in four. The same
# counts come out of `conv2d_backward` with a weight of ones and dout of ones: dx is
# W^T dout = 1 per copy, added back by col2im.

# %%
counts = col2im(np.ones((1, 4, 6)), (1, 1, 3, 4), 2)
print("copies of each pixel:\n", counts[0, 0])
expected = np.array([[1, 2, 2, 1],
                     [2, 4, 4, 2],
                     [1, 2, 2, 1]])
assert np.array_equal(counts[0, 0], expected)
dx_ones = conv2d_backward(np.ones((1, 1, 2, 3)), np.zeros((1, 1, 3, 4)), np.ones((1, 1, 2, 2))).input
assert np.array_equal(dx_ones[0, 0], expected)

# %% [markdown]
# ## 5. Finite differences
#
# The formulas above are checked against the library; the library is checked against
# centred finite differences of the forward pass (see tutorial 01). Here with every
# option at once: a rectangular kernel, stride (2, 1), padding (1, 2), dilation (1, 2)
# and two groups (input channels 0-1 feed output channels 0-2, channels 2-3 feed 3-5).

# %%
N, H, W = (1, 5, 4) if FAST else (2, 6, 5)
inputs = {"input": rng.standard_normal((N, 4, H, W)),
          "weight": rng.standard_normal((6, 2, 3, 2)),       # (C_out, C_in/groups, kh, kw)
          "bias": rng.standard_normal(6)}
params = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}
rows = check_gradients(conv2d, conv2d_backward, inputs, params)
print(format_table(rows))
assert all(row.passed for row in rows)

# %% [markdown]
# ## 6. A picture: how col2im spreads the gradient
#
# The copy counts decide how much gradient reaches each pixel when dout is uniform. With
# a 3x3 kernel and padding 1, stride 1 reads every pixel nine times except at the
# border. Stride 2 skips windows: some pixels are read by four windows, some by one, a
# checkerboard that shows up in the gradients of strided convolutions.

# %%
size = 7
fig, axes = plt.subplots(1, 2, figsize=(7, 4))
for ax, stride in zip(axes, (1, 2)):
    n_out = output_size(size, 3, stride, 1, 1)
    reads = conv2d_backward(np.ones((1, 1, n_out, n_out)), np.zeros((1, 1, size, size)),
                            np.ones((1, 1, 3, 3)), stride=stride, padding=1).input[0, 0]
    ax.imshow(reads, cmap="viridis", vmin=0, vmax=9)
    for (r, s), value in np.ndenumerate(reads):
        ax.text(s, r, int(value), ha="center", va="center",
                color="white" if value < 5 else "black")
    ax.set_title(f"3x3 kernel, padding 1, stride {stride}\n({n_out}x{n_out} windows)", fontsize=10)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
fig.suptitle("How many windows read each pixel of a 7x7 input\n"
             "(= dx from conv2d_backward with dout = 1 and weight = 1)", fontsize=11)
fig.tight_layout(rect=(0, 0, 1, 0.9))
save_figure(fig, "02_col2im_counts")

# %% [markdown]
# ## Summary
#
# * `H_out = (H + 2*pad - dilation*(kh - 1) - 1) // stride + 1`.
# * im2col copies every window into a column; the convolution is then one GEMM per
#   image, out = W X + b, which is why it is fast: all the arithmetic is in a matrix
#   product.
# * The backward pass is two more GEMMs and a col2im: dW = sum_n dout X^T,
#   db = sum dout, dx = col2im(W^T dout). col2im adds every copy's gradient back to
#   the pixel it came from.
# * `conv2d` agrees with `scipy.signal.correlate` (with padding, stride and dilation
#   built around it) and its gradients with finite differences.
#
# ## Exercises
#
# 1. Count the memory of the column matrix for a 64-channel 56x56 input and a 3x3
#    kernel (float32). How many times the input is it?
# 2. Show that `conv2d(x, w, groups=2)` equals two separate `conv2d` calls on the two
#    halves of the channels, concatenated.
# 3. Why is the input gradient of a stride-2 convolution with dout = 1 not uniform
#    even far from the border, while the stride-1 one is? Relate it to the picture.
# 4. Derive dx without im2col: show that it is a convolution of dout with the flipped
#    kernel (a "transposed convolution") when stride = 1, and check it with `conv2d`.
