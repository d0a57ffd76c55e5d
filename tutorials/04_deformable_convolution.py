# %% [markdown]
# # Tutorial 04: deformable convolution, DCNv1 and DCNv2, forward and backward
#
# A deformable convolution (Dai et al. 2017) is a convolution whose kernel taps do not sit
# on a fixed grid: every tap of every output pixel is moved by a learned offset (dy, dx)
# and reads the input there by bilinear interpolation (tutorial 01). DCNv2 (Zhu et al.
# 2019) also multiplies every tap by a learned modulation, the mask. This tutorial uses
# `dcn_ref.ops.deform_conv2d`, which has the signature and numbers of
# `torchvision.ops.deform_conv2d`. Plan:
#
# 1. where the taps of one output pixel sample, drawn over the input, and checked;
# 2. identities small enough to check by hand: zero offsets reproduce `conv2d`, an
#    offset of 0.5 averages two neighbours, a constant mask scales the output;
# 3. the backward pass with respect to input, offset, mask and weight: each formula,
#    a case computed by hand, and a finite-difference check;
# 4. offset groups: which channel of `offset` is the dy of which tap in which group,
#    shown on labels and confirmed by experiment;
# 5. the im2col + GEMM structure, and why it is fast.
#
# Run it as a script (`python tutorials/04_deformable_convolution.py`) or open it as a
# notebook.

# %%
import os
import time

import numpy as np

from dcn_ref.gradcheck import check_gradients, format_table, off_kink
from dcn_ref.ops import bilinear_sample, conv2d, deform_conv2d, deform_conv2d_backward
from dcn_ref.plotting import plt, save_figure

FAST = os.environ.get("DCN_REF_FAST") == "1"  # smaller sizes, same code path
np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Where the taps sample
#
# Take input (N, C_in, H, W), weight (C_out, C_in, kh, kw) and number the taps
# k = i*kw + j. Tap (i, j) of output pixel (oy, ox) reads input channel c at
#
#     y = oy*stride_h - pad_h + i*dilation_h + dy,     x = ox*stride_w - pad_w + j*dilation_w + dx
#
# where dy = offset[n, 2k, oy, ox] and dx = offset[n, 2k + 1, oy, ox]: every output
# pixel has its own 2*kh*kw offsets, so `offset` is (N, 2*kh*kw, H_out, W_out). Without
# dy and dx this is exactly the window of `conv2d`. The output is
#
#     out[n, o, oy, ox] = b[o] + sum_{c, i, j} w[o, c, i, j] * m_k * bilinear(input[n, c], y, x)
#
# with m_k = mask[n, k, oy, ox] for DCNv2 and m_k = 1 for DCNv1.
#
# Here are the nine sample points of output pixel (4, 4) of a 3x3 kernel with padding 1
# on a 9x9 input, for three offset fields.

# %%
H = W = 9
oy, ox = 4, 4
kh = kw = 3
ii, jj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
regular_y = (oy - 1 + ii).ravel()                       # stride 1, padding 1, dilation 1
regular_x = (ox - 1 + jj).ravel()                       # (K,) each

offset_fields = {
    "zero offsets: conv2d's 3x3 window": np.zeros((kh * kw, 2)),
    "random offsets, N(0, 0.8^2)": rng.normal(0.0, 0.8, (kh * kw, 2)),
    "dy = i - 1, dx = j - 1: a dilated window": np.stack([ii.ravel() - 1.0, jj.ravel() - 1.0], axis=1),
}
image = np.zeros((1, 1, H, W))
image[0, 0, 2:7, 4] = 1.0                                # a small cross to look at
image[0, 0, 4, 2:7] = 1.0
image += 0.15 * rng.random((1, 1, H, W))

# %% [markdown]
# Let's check that a tap really reads where the formula says. A weight that is 1 at tap
# k and 0 elsewhere makes output channel k equal the sample of tap k, so with K such
# weights `deform_conv2d` lists the nine samples; `bilinear_sample` at the points we
# computed must give the same numbers.

# %%
one_hot = np.zeros((kh * kw, 1, kh, kw))                 # (C_out = K, C_in = 1, kh, kw)
one_hot[np.arange(kh * kw), 0, ii.ravel(), jj.ravel()] = 1.0
for name, taps in offset_fields.items():
    offset = np.zeros((1, 2 * kh * kw, H, W))            # (N, 2K, H_out, W_out)
    offset[0, 0::2, oy, ox] = taps[:, 0]                 # channel 2k: dy of tap k
    offset[0, 1::2, oy, ox] = taps[:, 1]                 # channel 2k + 1: dx of tap k
    samples = deform_conv2d(image, offset, one_hot, padding=1)[0, :, oy, ox]  # (K,)
    points = np.stack([regular_y + taps[:, 0], regular_x + taps[:, 1]], axis=1)
    assert np.allclose(samples, bilinear_sample(image[0], points[None])[0], rtol=0, atol=1e-12)
print("the nine taps of pixel (4, 4) read exactly where the formula says, for all three fields")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
for ax, (name, taps) in zip(axes, offset_fields.items()):
    ax.imshow(image[0, 0], cmap="gray_r", vmin=0, vmax=2)
    ax.plot(regular_x, regular_y, "o", markersize=9, markerfacecolor="none",
            markeredgecolor="tab:blue", markeredgewidth=1.5, label="regular grid")
    moved = np.any(taps != 0)
    if moved:
        ax.quiver(regular_x, regular_y, taps[:, 1], taps[:, 0], angles="xy", scale_units="xy",
                  scale=1, color="tab:red", width=0.006)
    ax.plot(regular_x + taps[:, 1], regular_y + taps[:, 0], "o", markersize=5,
            color="tab:red", label="sample points (grid + offset)")
    ax.add_patch(plt.Rectangle((ox - 0.5, oy - 0.5), 1, 1, fill=False, edgecolor="gold",
                               linewidth=2.5, label="output pixel (4, 4)"))
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_xticks(range(W))
    ax.set_yticks(range(H))
axes[0].legend(loc="lower left", fontsize=7, framealpha=0.9)
fig.suptitle("Where the 3x3 taps of one output pixel read the input (deform_conv2d, padding 1)")
fig.tight_layout(rect=(0, 0, 1, 0.95))
save_figure(fig, "04_sampling_grid")

# %% [markdown]
# The third field moves tap (i, j) by (i - 1, j - 1), doubling the spacing of the window:
# that is a dilated convolution. With the same field at every output pixel,
# `deform_conv2d` equals `conv2d(dilation=2, padding=2)`. Offsets can express dilation,
# scaling and any other per-pixel warp of the window.

# %%
x = rng.standard_normal((1, 2, 7, 6))
weight = rng.standard_normal((3, 2, 3, 3))
dilating = np.zeros((1, 18, 7, 6))
dilating[0, 0::2] = (ii - 1).reshape(9, 1, 1)           # dy of tap (i, j) = i - 1
dilating[0, 1::2] = (jj - 1).reshape(9, 1, 1)           # dx of tap (i, j) = j - 1
assert np.allclose(deform_conv2d(x, dilating, weight, padding=1),
                   conv2d(x, weight, padding=2, dilation=2), rtol=0, atol=1e-12)

# %% [markdown]
# ## 2. Checks by hand
#
# **Zero offsets reproduce conv2d**, with any stride, padding, dilation and bias,
# and a mask of ones reproduces DCNv1.

# %%
N, C_in, C_out, H, W = 2, 3, 4, 7, 8
x = rng.standard_normal((N, C_in, H, W))
weight = rng.standard_normal((C_out, C_in, 3, 3))
bias = rng.standard_normal(C_out)
conv = dict(stride=2, padding=1, dilation=2)
plain = conv2d(x, weight, bias, **conv)                 # (N, C_out, H_out, W_out)
H_out, W_out = plain.shape[2:]
zero_offset = np.zeros((N, 2 * 9, H_out, W_out))
assert np.allclose(deform_conv2d(x, zero_offset, weight, bias, **conv), plain, rtol=0, atol=1e-12)
ones_mask = np.ones((N, 9, H_out, W_out))
assert np.allclose(deform_conv2d(x, zero_offset, weight, bias, mask=ones_mask, **conv), plain,
                   rtol=0, atol=1e-12)
print("zero offsets (and a mask of ones) reproduce conv2d")

# %% [markdown]
# **An offset of 0.5 averages two neighbours.** With a 1x1 kernel of weight 1 and
# dx = 0.5 everywhere, pixel (i, j) reads halfway between (i, j) and (i, j + 1):
# out = (x[i, j] + x[i, j+1]) / 2. In the last column the right neighbour is the zero
# padding, so the pixel is halved. (Compare `offset_sample` in tutorial 03, whose
# "border" padding would keep it.)
#
#     x = [[0, 2, 4],        out = [[(0+2)/2, (2+4)/2, (4+0)/2],   = [[1, 3, 2],
#          [6, 8, 10]]              [(6+8)/2, (8+10)/2, (10+0)/2]]     [7, 9, 5]]

# %%
x = np.array([[[[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]]])   # (1, 1, 2, 3)
half = np.zeros((1, 2, 2, 3))
half[0, 1] = 0.5                                         # dx of the only tap
out = deform_conv2d(x, half, np.ones((1, 1, 1, 1)))
print(out[0, 0])
assert np.array_equal(out[0, 0], [[1, 3, 2], [7, 9, 5]])

# %% [markdown]
# **The DCNv2 mask multiplies each sample.** The op takes raw multipliers (DCNv2 passes
# a convolution's output through a sigmoid first; that happens outside the op). A
# mask of 0.25 everywhere quarters the output of a convolution without bias.

# %%
mask = np.full((1, 1, 2, 3), 0.25)
assert np.array_equal(deform_conv2d(x, half, np.ones((1, 1, 1, 1)), mask=mask), 0.25 * out)

# %% [markdown]
# ## 3. The backward pass
#
# Write one column entry (channel c, tap k, output pixel l) as
#
#     col[c, k, l] = m_kl * v_ckl,     v_ckl = bilinear(input[c], p_kl + offset_kl)
#
# so that out = W col + b, the GEMM of tutorial 02 with deformable columns. Given
# dout = dL/dout, the chain rule gives, one input at a time:
#
# * **weight and bias**, exactly as for conv2d:  dW = sum_n dout col^T,  db = sum dout.
# * **the columns**:  dcol = W^T dout,  shape `(C_in*K, L)`.
# * **input**: v_ckl is a weighted sum of four pixels, so each pixel receives
#   dcol * m * (its bilinear weight) from every sample that read it. This is the
#   deformable col2im: `deform_rows_backward` in `dcn_ref/cpu/columns.py` (channels last,
#   with the offset and mask gradients in the same pass) and `deform_col2im_atomic` in
#   `dcn_ref/cuda/deform.py` (one GPU thread a column entry).
# * **offset**: moving the sample point changes v at the rate of the bilinear
#   derivative (tutorial 01), and all C_in/G channels of the offset group share the point:
#
#       dL/d dy_kl = m_kl * sum_c dcol[c, k, l] * dv_ckl/dy       (and dx alike)
#
# * **mask**:  dL/d m_kl = sum_c dcol[c, k, l] * v_ckl   (the unmasked sample).
#
# **The formulas as loops.** `dcn_ref.reference.deform_conv2d_backward` is the slow loop
# version that the fast kernels are tested against, written straight from these formulas.
# For every tap of every output pixel (`_deform_taps` in `dcn_ref/reference.py`), every
# channel c of its offset group and every output channel o, it adds one term to each
# gradient; with go = dout[o] and w = W[o, c, tap], the sum over o of go * w is dcol:
#
#     grad_weight[o, c, i, j]          += go * m * value        dW = dout col^T, col = m v
#     grad_offset[n, 2 * tap, oy, ox]  += go * w * m * dv_dy    dL/d dy = m sum_c dcol dv/dy
#     grad_mask[n, tap, oy, ox]        += go * w * value        dL/dm = sum_c dcol v
#     grad_input[n, c, r, s]           += go * w * m * weight_rs    each of the four pixels:
#                                                               dcol * m * its weight
#
# Here is its loop, printed from the library's source:

# %%
import inspect  # noqa: E402

from dcn_ref import reference  # noqa: E402

source = inspect.getsource(reference.deform_conv2d_backward)
print(source[source.index("    for n, oy, ox"):source.index("    grad_bias")])

# %% [markdown]
# The fast kernels compute the same sums in another order. The per-sample maths (cell,
# corner weights, their derivatives, a tap's offset and mask gradients from its four
# corner sums over the group's channels) is written once, for both targets, in
# `dcn_ref/sampling.py`: `locate`, `corner`, `tap_grads` and `tap_coord_grad`. The page
# "Reading the code" of the documentation (`docs/reading.md`) follows them down to the
# kernels.
#
# **By hand.** One channel, a 1x1 kernel of weight w = 2, a mask of 0.5, the offset
# dx = 0.25 everywhere, on an image that grows by 10 per row and 3 per column. Let
# dout be 1 at pixel (1, 1) only. That pixel samples at (1, 1.25):
#
#     v = 0.75 * x[1, 1] + 0.25 * x[1, 2] = 0.75 * 13 + 0.25 * 16 = 13.75
#     dL/dw = m v = 6.875            dL/db = 1
#     dL/dm = w v = 27.5
#     dL/d dy = w m dv/dy = 2 * 0.5 * 10 = 10      (y = 1 is an integer: the right derivative, rows 1 and 2)
#     dL/d dx = w m dv/dx = 2 * 0.5 * 3 = 3
#     dL/dx[1, 1] = w m 0.75 = 0.75,  dL/dx[1, 2] = w m 0.25 = 0.25, all other pixels 0

# %%
x = (10.0 * np.arange(3)[:, None] + 3.0 * np.arange(4)[None]).reshape(1, 1, 3, 4)
offset = np.zeros((1, 2, 3, 4))
offset[0, 1] = 0.25                                      # dx
mask = np.full((1, 1, 3, 4), 0.5)
w, b = np.full((1, 1, 1, 1), 2.0), np.zeros(1)
dout = np.zeros((1, 1, 3, 4))
dout[0, 0, 1, 1] = 1.0
g = deform_conv2d_backward(dout, x, offset, w, b, mask=mask)
expected_dx = np.zeros((3, 4))
expected_dx[1, 1], expected_dx[1, 2] = 0.75, 0.25
print("dw", g.weight.ravel(), " db", g.bias, " dm", g.mask[0, 0, 1, 1],
      " d(dy, dx)", g.offset[0, :, 1, 1])
assert g.weight.ravel()[0] == 6.875 and g.bias[0] == 1.0 and g.mask[0, 0, 1, 1] == 27.5
assert list(g.offset[0, :, 1, 1]) == [10.0, 3.0]
assert np.array_equal(g.input[0, 0], expected_dx)
loops = reference.deform_conv2d_backward(dout, x, offset, w, b, mask=mask)
assert all(np.allclose(getattr(loops, name), getattr(g, name), rtol=0, atol=1e-12)
           for name in g._fields)
print("the loop reference gives the same gradients")

# %% [markdown]
# **Finite differences** on a case with everything switched on: two convolution
# groups, two offset groups, a 3x2 kernel, stride, padding, dilation, bias, and
# sample points that leave the image. Offsets are kept off integers (tutorial 01).

# %%
N, H, W = (1, 5, 4) if FAST else (2, 6, 5)
x = rng.standard_normal((N, 4, H, W))
weight = rng.standard_normal((6, 2, 3, 2))               # groups = 4 / 2 = 2
params = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}
H_out, W_out = conv2d(x, weight, groups=2, **params).shape[2:]
G, K = 2, 6
inputs = {"input": x, "offset": off_kink(rng, (N, 2 * G * K, H_out, W_out), -2.5, 2.5),
          "weight": weight, "bias": rng.standard_normal(6),
          "mask": rng.uniform(0.2, 1.0, (N, G * K, H_out, W_out))}
rows = check_gradients(deform_conv2d, deform_conv2d_backward, inputs, params, op="deform_conv2d[v2]")
print(format_table(rows))
assert all(row.passed for row in rows)

# %% [markdown]
# ## 4. Offset groups
#
# With G offset groups the input channels are split into G consecutive blocks of
# C_in/G, and each block gets its own offsets: `offset` has 2*G*kh*kw channels and
# `mask` G*kh*kw. The layout is
#
#     channel 2*(g*kh*kw + i*kw + j)     = dy of tap (i, j) in group g
#     channel 2*(g*kh*kw + i*kw + j) + 1 = dx of tap (i, j) in group g
#     mask channel g*kh*kw + i*kw + j    = modulation of tap (i, j) in group g
#
# Labelled, for a 2x2 kernel and two groups:

# %%
kh = kw = 2
G, K = 2, kh * kw
names = []
for ch in range(2 * G * K):
    tap, axis = divmod(ch, 2)                  # channel 2*tap + axis
    g, k = divmod(tap, K)                      # tap = g*K + k
    i, j = divmod(k, kw)                       # k = i*kw + j
    names.append(f"{'dy' if axis == 0 else 'dx'} g{g} ({i},{j})")
for ch in range(0, 2 * G * K, 4):
    print("   ".join(f"ch {c:2d}: {names[c]}" for c in range(ch, ch + 4)))

# %% [markdown]
# Now confirm it with the op itself, not with the formula we just used. Give each of
# C_in = 4 channels (two per group) a one-hot weight per tap, so that output channel
# c*K + k is the sample of channel c at tap k. Then move one offset channel at a time
# and see which outputs change.

# %%
C_in, H, W = 4, 4, 4
x = rng.standard_normal((1, C_in, H, W))
identity = np.zeros((C_in * K, C_in, kh, kw))            # (C_out = C_in*K, C_in, kh, kw)
for c in range(C_in):
    for k in range(K):
        identity[c * K + k, c, k // kw, k % kw] = 1.0
base_offset = np.zeros((1, 2 * G * K, H - 1, W - 1))     # no padding: H_out = H - 1
before = deform_conv2d(x, base_offset, identity)
for ch in range(2 * G * K):
    moved = base_offset.copy()
    moved[0, ch] = 0.3
    changed = np.any(deform_conv2d(x, moved, identity) != before, axis=(0, 2, 3))  # (C_in*K,)
    hit = sorted({(c, divmod(k, kw)) for c in range(C_in) for k in range(K) if changed[c * K + k]})
    tap, axis = divmod(ch, 2)
    g, k = divmod(tap, K)
    assert hit == [(c, divmod(k, kw)) for c in range(g * C_in // G, (g + 1) * C_in // G)]
    if ch < 4 or ch >= 2 * G * K - 2:
        print(f"moving offset channel {ch:2d} ({names[ch]}) changes the samples (channel, tap) {hit}")
print("... every channel moves exactly the tap and the input channels its label names")

# %% [markdown]
# ## 5. im2col + GEMM, and why it is fast
#
# The one-hot weight above turned `deform_conv2d` into a deformable im2col: it returns
# the column matrix `(C_in*K, L)` that the op builds internally, one bilinear sample per
# (channel, tap, output pixel). Any real weight is then a single matrix product over
# those columns, out = W col + b, and that is exactly what the op does.

# %%
C_out = 5
weight = rng.standard_normal((C_out, C_in, kh, kw))
bias = rng.standard_normal(C_out)
offset = rng.normal(0.0, 1.0, (1, 2 * G * K, H - 1, W - 1))
columns = deform_conv2d(x, offset, identity).reshape(C_in * K, -1)   # (C_in*K, L)
gemm = weight.reshape(C_out, C_in * K) @ columns + bias[:, None]      # (C_out, L)
assert np.allclose(gemm.reshape(1, C_out, H - 1, W - 1), deform_conv2d(x, offset, weight, bias),
                   rtol=0, atol=1e-12)
print("deform_conv2d = W @ (deformable columns) + b")

# %% [markdown]
# Why this is fast:
#
# * The expensive, irregular part, `C_in*K*L` bilinear samples, is done once and shared by
#   all C_out output channels. An implementation that sampled inside the loop over output
#   channels would do it C_out times.
# * Everything else, `C_out*C_in*K*L` multiply-adds, is one dense matrix product, the
#   operation BLAS libraries run closest to the machine's peak (blocked for the caches,
#   vectorised).
#
# A timing on one layer of a small network (3x3, 64 -> 64 channels, 28x28) shows both:
# the GEMM does 64 times more arithmetic than there are samples and still takes a
# fraction of the time, and sampling once instead of once per output channel is what
# keeps the layer cheap. (Printed, not asserted: timings depend on the machine.)

# %%
C, S = (16, 14) if FAST else (64, 28)
x = rng.standard_normal((1, C, S, S))
offset = rng.normal(0.0, 1.0, (1, 18, S, S))
weight = rng.standard_normal((C, C, 3, 3))
columns = rng.standard_normal((C * 9, S * S))


def best_time(run, repeats):
    run()                                                # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


shared = best_time(lambda: deform_conv2d(x, offset, weight, padding=1), 3)
gemm_only = best_time(lambda: weight.reshape(C, C * 9) @ columns, 3)
per_channel = best_time(lambda: [deform_conv2d(x, offset, weight[o:o + 1], padding=1)
                                 for o in range(C)], 1)
print(f"samples: {C * 9 * S * S:,}; multiply-adds in the GEMM: {C * C * 9 * S * S:,}")
print(f"{'deform_conv2d: sample once, one GEMM':<58} {1e3 * shared:8.2f} ms")
print(f"{'  of which the GEMM alone':<58} {1e3 * gemm_only:8.2f} ms")
print(f"{f'{C} calls with one output channel each (sample {C} times)':<58} {1e3 * per_channel:8.2f} ms")

# %% [markdown]
# ## Summary
#
# * Tap (i, j) of output pixel (oy, ox) reads at the conv2d window position plus
#   (offset[2k], offset[2k+1]), k = i*kw + j, by bilinear interpolation with zero padding;
#   DCNv2 multiplies the sample by mask[k].
# * Zero offsets give conv2d; offsets (i - 1, j - 1) give a dilated conv2d; an offset of
#   0.5 averages two neighbours.
# * Backward: dW and db as for conv2d; dcol = W^T dout; the input gradient scatters
#   dcol * m * (corner weight) to the four corners; the offset gradient is m times the
#   bilinear derivative summed over the group's channels; the mask gradient is the
#   unmasked sample times dcol, summed likewise.
# * Offset channel 2*(g*kh*kw + i*kw + j) (+1) is the dy (dx) of tap (i, j) in group g.
# * The op is a deformable im2col followed by one GEMM.
#
# ## Exercises
#
# 1. Which offset field makes `deform_conv2d` with a 3x3 kernel equal `conv2d` with a
#    3x3 kernel and dilation 3? Check it.
# 2. Find an offset field that makes a 1x1-kernel `deform_conv2d` flip the input
#    left-right. What happens to the offset gradient at the centre column?
# 3. Repeat the by-hand gradient with dx = 0 instead of 0.25. Which derivatives change
#    because of the right-derivative convention?
# 4. In section 4, set one *mask* channel to 0 instead of moving an offset channel and
#    confirm the mask layout the same way.
# 5. Why can the offset and mask gradients be computed without atomics or locks on a
#    parallel machine, while the input gradient cannot? (Tutorial 05 answers it.)
