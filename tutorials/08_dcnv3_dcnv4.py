# %% [markdown]
# # Tutorial 08: DCNv3 and DCNv4, the deformable operators of InternImage and its successor
#
# DCNv2 (tutorial 04) moves and weighs every tap of a convolution, and keeps a full weight
# per tap: C_out x C_in x kh x kw numbers. DCNv3 (Wang et al. 2023, InternImage) keeps the
# moving and the weighing but drops the per-tap weights: the channels are split into groups,
# each group's samples are summed with P scalar weights (a softmax over the points, not a
# sigmoid per tap), and the mixing of channels is left to linear projections before and
# after. DCNv4 (Xiong et al. 2024) removes the softmax and packs offsets and weights into
# one array. `dcn_ref.ops.dcnv3` and `dcnv4` follow InternImage's and OpenGVLab's
# layouts exactly, which are not torchvision's. Plan:
#
# 1. from DCNv2 to DCNv3 to DCNv4: the formulas, and what each step removes;
# 2. the three layouts side by side on labelled arrays: torchvision's (dy, dx) row-major
#    taps, InternImage's (x, y) column-major points, DCNv4's packing with padding; and a
#    conversion checked against `deform_conv2d`;
# 3. where the points of one output pixel sample, drawn and checked;
# 4. identities checked by hand: a one-hot weight gives a shifted input, offset_scale = 0
#    collapses the points onto the centre, dcnv4 on the packed array is dcnv3 on the pair,
#    remove_center drops the centre;
# 5. the backward pass, against finite differences;
# 6. the blocks: `dcn_ref.nn.DCNv3` and `DCNv4`, what a fresh block computes.
#
# Run it as a script (`python tutorials/08_dcnv3_dcnv4.py`) or open it as a notebook.

# %%
import os

import numpy as np

from dcn_ref.gradcheck import numerical_vjp, rel_error
from dcn_ref.nn import DCNv3, DCNv4, DeformConv2D
from dcn_ref.ops import bilinear_sample, dcnv3, dcnv3_backward, dcnv4, deform_conv2d
from dcn_ref.plotting import plt, save_figure

FAST = os.environ.get("DCN_REF_FAST") == "1"  # smaller sizes, same code path
np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. From DCNv2 to DCNv3 to DCNv4
#
# **DCNv2** (tutorial 04), for output channel o at output pixel q, with taps k = 1..K
# at the regular positions p_k of a kh x kw window:
#
#     out[o, q] = b[o] + sum_c sum_k  w[o, c, k] * m_k(q) * x_c(q + p_k + dp_k(q))
#
# m_k = sigmoid(...) is a weight in (0, 1) for each tap, and w holds C_out*C_in*K
# numbers: the sampling and the channel mixing are one operation.
#
# **DCNv3** splits the C channels into G groups of C/G. Within group g every channel is
# sampled at the same P points with the same weights, and there is no w:
#
#     y[g*Cg + c, q] = sum_p  m_gp(q) * x_{g*Cg + c}(q + p_p + dp_gp(q))
#     m_g.(q) = softmax over the P points of the group's raw weights
#
# The channels are mixed before and after by linear layers (input_proj, output_proj),
# which cost 2*C*C numbers instead of C*C*K. The softmax makes every output a convex
# combination of samples, which the InternImage paper found to keep training stable at
# scale; a sigmoid lets the K weights sum to anything between 0 and K.
#
# **DCNv4** keeps DCNv3's sum but drops the softmax (the weights are used as they come,
# unbounded), and reads offsets and weights from a single array per pixel, group after
# group: 2P offsets, then P weights. The packing serves the original CUDA kernels (one
# contiguous read per pixel and group); without the softmax the weights have the
# unbounded range of a convolution's, which the DCNv4 paper reports to converge faster.
#
# The parameter count tells the first step: a 3x3 modulated deformable convolution from
# 64 to 64 channels against a DCNv3 block of 64 channels in 4 groups.

# %%
dcn2 = DeformConv2D(64, 64, 3, modulated=True, rng=0)
block3 = DCNv3(channels=64, group=4, rng=0)
print(f"DCNv2 layer, 64 -> 64, 3x3: {dcn2.num_params():>7,} parameters "
      f"({dcn2.params['weight'].size:,} in the per-tap weight)")
print(f"DCNv3 block, 64 channels, 4 groups: {block3.num_params():>7,} parameters")
assert block3.num_params() < dcn2.num_params()

# %% [markdown]
# ## 2. Three layouts for the same offsets
#
# All three name a kernel position by its row r (0..kh-1) and column c (0..kw-1) and
# move it by (dy, dx). They store the numbers differently:
#
# * **torchvision** `deform_conv2d`, NCHW: offset (N, 2*G*K, H_out, W_out); channel
#   2*(g*K + r*kw + c) is the **dy** of tap (r, c) in group g, the next its dx. Taps are
#   **row-major** (c fastest). The mask has channel g*K + r*kw + c.
# * **InternImage** `dcnv3`, channels last: offset (N, H_out, W_out, G*P*2); entry
#   2*(g*P + p) is the **x** (dx) of point p, the next its y. Points are **column-major**:
#   p = c*kh + r (r fastest). The mask has entry g*P + p.
# * **DCNv4** `dcnv4`: offset_mask (N, H_out, W_out, D); group g's block of 3P entries
#   starts at g*3P: the 2P (x, y) pairs of its points in dcnv3's order, then their P
#   weights. D is rounded up to a multiple of 8, and entries from G*3P on are padding.
#
# Labelled, for a kernel of kh = 2 rows and kw = 3 columns and G = 2 groups (K = P = 6):

# %%
kh, kw, G = 2, 3, 2
K = P = kh * kw


def torchvision_labels():
    names = []
    for ch in range(2 * G * K):
        tap, axis = divmod(ch, 2)                 # channel 2*tap + axis
        g, k = divmod(tap, K)                     # tap = g*K + k
        r, c = divmod(k, kw)                      # row-major: k = r*kw + c
        names.append(f"{'dy' if axis == 0 else 'dx'} g{g} r{r}c{c}")
    return names


def internimage_labels():
    names = []
    for e in range(2 * G * P):
        point, axis = divmod(e, 2)                # entry 2*point + axis
        g, p = divmod(point, P)                   # point = g*P + p
        c, r = divmod(p, kh)                      # column-major: p = c*kh + r
        names.append(f"{'dx' if axis == 0 else 'dy'} g{g} r{r}c{c}")
    return names


def dcnv4_labels(D):
    names = []
    for e in range(D):
        if e >= G * 3 * P:
            names.append("(padding)")
            continue
        g, rest = divmod(e, 3 * P)                # group g's block of 3P entries
        if rest < 2 * P:                          # 2P offsets as (x, y) pairs ...
            p, axis = divmod(rest, 2)
            kind = "dx" if axis == 0 else "dy"
        else:                                     # ... then P weights
            p, kind = rest - 2 * P, "m "
        c, r = divmod(p, kh)
        names.append(f"{kind} g{g} r{r}c{c}")
    return names


D = -(-G * 3 * P // 8) * 8                        # 36 -> 40
columns = {"torchvision offset": torchvision_labels(), "dcnv3 offset": internimage_labels(),
           "dcnv4 offset_mask": dcnv4_labels(D)}
print(f"{'index':>5}  " + "".join(f"{name:<22}" for name in columns))
for i in range(D):
    cells = [col[i] if i < len(col) else "" for col in columns.values()]
    print(f"{i:>5}  " + "".join(f"{cell:<22}" for cell in cells))
assert columns["torchvision offset"][:4] == ["dy g0 r0c0", "dx g0 r0c0", "dy g0 r0c1",
                                             "dx g0 r0c1"]
assert columns["dcnv3 offset"][:4] == ["dx g0 r0c0", "dy g0 r0c0", "dx g0 r1c0",
                                       "dy g0 r1c0"]
assert columns["dcnv4 offset_mask"][12:14] == ["m  g0 r0c0", "m  g0 r1c0"]

# %% [markdown]
# The tables are only as good as the formulas behind them. The op itself can confirm
# them: DCNv3 with the same offsets and weights is a DCNv2 whose per-tap weight is 1 on
# its own channel and 0 elsewhere (a depthwise `deform_conv2d` with weight (C, 1, kh,
# kw) of ones), so moving the numbers from one layout to the other and calling
# `deform_conv2d` (which matches torchvision) must give `dcnv3`'s output. The move is
# two transposes and a swap of (x, y) into (dy, dx):

# %%
def dcnv3_to_torchvision(offset, mask, kh, kw, group):
    """(N, H_out, W_out, G*P*2) and (N, H_out, W_out, G*P) -> torchvision's offset
    (N, 2*G*K, H_out, W_out) and mask (N, G*K, H_out, W_out)."""
    N, Ho, Wo, _ = offset.shape
    pairs = offset.reshape(N, Ho, Wo, group, kw, kh, 2)      # (.., g, c, r, (x, y))
    swapped = pairs[..., ::-1]                               # (.., g, c, r, (y, x))
    tv_offset = swapped.transpose(0, 3, 5, 4, 6, 1, 2)       # (N, g, r, c, (dy, dx), Ho, Wo)
    tv_mask = mask.reshape(N, Ho, Wo, group, kw, kh).transpose(0, 3, 5, 4, 1, 2)
    return (tv_offset.reshape(N, 2 * group * kh * kw, Ho, Wo),
            tv_mask.reshape(N, group * kh * kw, Ho, Wo))


N, H, W, C = 2, 6, 7, 4
geometry = dict(kernel_size=(kh, kw), stride=(2, 1), padding=(1, 2), dilation=(2, 1))
x = rng.standard_normal((N, H, W, C))                        # channels last
H_out = (H + 2 * 1 - (2 * (kh - 1) + 1)) // 2 + 1
W_out = (W + 2 * 2 - (1 * (kw - 1) + 1)) // 1 + 1
offset = rng.normal(0.0, 1.0, (N, H_out, W_out, G * P * 2))
mask = rng.uniform(0.0, 1.0, (N, H_out, W_out, G * P))
ours = dcnv3(x, offset, mask, group=G, **geometry)           # (N, H_out, W_out, C)
tv_offset, tv_mask = dcnv3_to_torchvision(offset, mask, kh, kw, G)
theirs = deform_conv2d(x.transpose(0, 3, 1, 2), tv_offset, np.ones((C, 1, kh, kw)),
                       mask=tv_mask, stride=(2, 1), padding=(1, 2), dilation=(2, 1))
print("dcnv3 == depthwise deform_conv2d after the layout move:",
      np.allclose(ours, theirs.transpose(0, 2, 3, 1), rtol=0, atol=1e-12))
assert np.allclose(ours, theirs.transpose(0, 2, 3, 1), rtol=0, atol=1e-12)

# %% [markdown]
# (This identity needs offset_scale = 1: DCNv3's `offset_scale` has no counterpart in
# torchvision; section 4 shows what it does.)
#
# ## 3. Where the points of one output pixel sample
#
# With half_h = dilation_h*(kh - 1)//2 (half_w alike), point p = (r, c) of output pixel
# (ho, wo) samples
#
#     y = ho*stride_h - pad_h + half_h + (r*dilation_h - half_h + dy) * offset_scale
#     x = wo*stride_w - pad_w + half_w + (c*dilation_w - half_w + dx) * offset_scale
#
# i.e. around the window's centre, with the regular grid and the offsets both scaled by
# offset_scale. Here are the points of pixel (4, 4) of a 3x3 kernel with padding 1 on a
# 9x9 image: the grid numbered both ways, then two groups with their own offsets and
# softmax weights (marker area proportional to the weight).

# %%
H = W = 9
ho, wo = 4, 4
kh = kw = 3
P, G = 9, 2
cols, rows = np.divmod(np.arange(P), kh)                    # dcnv3 point p = c*kh + r
grid_y, grid_x = ho - 1 + rows, wo - 1 + cols               # stride 1, pad 1, dilation 1
point_offsets = rng.normal(0.0, 0.7, (G, P, 2))              # (x, y) pairs per group
logits = rng.normal(0.0, 1.0, (G, P))
weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)   # softmax over P
image = np.zeros((H, W))
image[2:7, 4] = 1.0
image[4, 2:7] = 1.0
image += 0.15 * rng.random((H, W))

sample_y = grid_y + point_offsets[..., 1]                   # (G, P)
sample_x = grid_x + point_offsets[..., 0]

fig, axes = plt.subplots(1, 2, figsize=(11, 5))
ax = axes[0]
ax.imshow(image, cmap="gray_r", vmin=0, vmax=2)
for p in range(P):
    ax.plot(grid_x[p], grid_y[p], "o", markersize=22, markerfacecolor="white",
            markeredgecolor="tab:blue")
    ax.text(grid_x[p], grid_y[p] - 0.12, f"p={p}", ha="center", va="center", fontsize=8)
    ax.text(grid_x[p], grid_y[p] + 0.2, f"k={rows[p] * kw + cols[p]}", ha="center",
            va="center", fontsize=7, color="tab:gray")
ax.set_title("the 3x3 grid: dcnv3's p (column-major) and torchvision's k (row-major)",
             fontsize=9)
ax = axes[1]
ax.imshow(image, cmap="gray_r", vmin=0, vmax=2)
ax.plot(grid_x, grid_y, "o", markersize=9, markerfacecolor="none", markeredgecolor="gray",
        label="regular grid")
for g, colour in enumerate(["tab:blue", "tab:red"]):
    ax.quiver(grid_x, grid_y, point_offsets[g, :, 0], point_offsets[g, :, 1], angles="xy",
              scale_units="xy", scale=1, color=colour, width=0.004, alpha=0.6)
    ax.scatter(sample_x[g], sample_y[g], s=600 * weights[g], color=colour,
               label=f"group {g}: points, area ~ softmax weight")
ax.add_patch(plt.Rectangle((wo - 0.5, ho - 0.5), 1, 1, fill=False, edgecolor="gold",
                           linewidth=2.5))
ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
ax.set_title("two groups, each with its own offsets and weights", fontsize=9)
for ax in axes:
    ax.set_xticks(range(W))
    ax.set_yticks(range(H))
    ax.set_xlabel("x")
    ax.set_ylabel("y")
fig.suptitle("The sampling points of output pixel (4, 4) of dcnv3 (3x3, padding 1)")
fig.tight_layout(rect=(0, 0, 1, 0.95))
save_figure(fig, "08_sampling_points")

# %% [markdown]
# The op agrees with the picture. Put the image in both groups' channels, give the
# op the drawn offsets at pixel (4, 4), and a one-hot weight on point p: the output is
# the bilinear sample at the drawn point p of that group, which `bilinear_sample`
# (tutorial 01) computes independently.

# %%
x = np.repeat(image[None, :, :, None], G, axis=3)           # (1, H, W, C = G), Cg = 1
offset = np.zeros((1, H, W, G * P * 2))
offset[0, ho, wo] = point_offsets.reshape(-1)                # (x, y) pairs, group by group
expected = bilinear_sample(image[None], np.stack([sample_y.ravel(), sample_x.ravel()], -1)[None])
expected = expected.reshape(G, P)
for p in range(P):
    one_hot = np.zeros((1, H, W, G * P))
    one_hot[..., p::P] = 1.0                                 # point p of every group
    got = dcnv3(x, offset, one_hot, 3, padding=1, group=G)[0, ho, wo]   # (G,)
    assert np.allclose(got, expected[:, p], rtol=0, atol=1e-12)
summed = dcnv3(x, offset, np.tile(weights.reshape(1, 1, 1, -1), (1, H, W, 1)), 3, padding=1,
               group=G)[0, ho, wo]
assert np.allclose(summed, (weights * expected).sum(axis=1), rtol=0, atol=1e-12)
print("every point samples where the picture shows it; with the weights:", summed)

# %% [markdown]
# ## 4. Identities, checked by hand
#
# **Zero offsets and a one-hot weight give a shifted input.** With all offsets 0 and
# weight 1 on point p = (r, c) only, output (ho, wo) reads input (ho - pad_h +
# r*dilation_h, wo - pad_w + c*dilation_w) (stride 1), and 0 where that is outside the
# image. For the 3x3 kernel with padding 1, point p = 7 is (r, c) = (1, 2): one to the
# right, so out[h, w] = x[h, w + 1] and the last column is 0.

# %%
x = rng.standard_normal((1, 5, 6, 2))
zero = np.zeros((1, 5, 6, 2 * P))
one_hot = np.zeros((1, 5, 6, P))
one_hot[..., 7] = 1.0
shifted = np.zeros_like(x)
shifted[:, :, :-1] = x[:, :, 1:]
assert np.array_equal(dcnv3(x, zero, one_hot, 3, padding=1), shifted)
print("one-hot weight on p = 7 (r = 1, c = 2): the input moved one column left")

# %% [markdown]
# **offset_scale = 0 collapses every point onto the centre.** Both the grid and the
# offsets are multiplied by offset_scale, so at 0 every point samples (ho*stride - pad +
# half, ...), whatever the offsets: the output is the input at the window's centre times
# the sum of the weights. With padding = half that is the input itself when the weights
# sum to 1, as a softmax's do.

# %%
x = rng.standard_normal((2, 5, 4, 4))
any_offset = rng.normal(0.0, 3.0, (2, 5, 4, 2 * 2 * P))
softmaxed = rng.random((2, 5, 4, 2, P))
softmaxed /= softmaxed.sum(axis=-1, keepdims=True)
out = dcnv3(x, any_offset, softmaxed.reshape(2, 5, 4, -1), 3, padding=1, group=2,
            offset_scale=0.0)
assert np.allclose(out, x, rtol=0, atol=1e-12)
print("offset_scale = 0: every point on the centre pixel, the output is the input")

# %% [markdown]
# **dcnv4 on the packed array is dcnv3 on the pair.** Pack group by group: the 2P
# offsets, then the P weights, then padding up to a multiple of 8. The padding can hold
# anything; the op never reads it.

# %%
N, H, W, G = 1, 5, 5, 3
x = rng.standard_normal((N, H, W, 2 * G))
offset = rng.normal(0.0, 1.0, (N, H, W, G * P * 2))
weights = rng.normal(0.0, 1.0, (N, H, W, G * P))
D = -(-G * P * 3 // 8) * 8                                   # 81 -> 88
packed = np.full((N, H, W, D), 1e30)                         # the padding: never read
blocks = np.concatenate([offset.reshape(N, H, W, G, 2 * P), weights.reshape(N, H, W, G, P)],
                        axis=-1)                             # (N, H, W, G, 3P)
packed[..., :G * 3 * P] = blocks.reshape(N, H, W, -1)
assert np.array_equal(dcnv4(x, packed, 3, padding=1, group=G),
                      dcnv3(x, offset, weights, 3, padding=1, group=G))
print(f"dcnv4 on (N, H, W, {D}) == dcnv3 on the pair; padding entries ignored")

# %% [markdown]
# **remove_center drops exactly the centre point.** Without the centre, P = 8 and the
# points keep their column-major order with the centre (p = 4 of the 3x3 grid) left
# out. So it equals the full grid with the centre's weight set to 0 and the remaining
# points' offsets and weights slotted back around it.

# %%
x = rng.standard_normal((1, 5, 6, 2))
off8 = rng.normal(0.0, 1.0, (1, 5, 6, 8 * 2))
m8 = rng.random((1, 5, 6, 8))
off9 = np.insert(off8.reshape(1, 5, 6, 8, 2), 4, 0.0, axis=3).reshape(1, 5, 6, 18)
m9 = np.insert(m8, 4, 0.0, axis=3)                          # centre weight 0
assert np.allclose(dcnv3(x, off8, m8, 3, padding=1, remove_center=True),
                   dcnv3(x, off9, m9, 3, padding=1), rtol=0, atol=1e-12)
print("remove_center == the full grid with a zero weight at p = 4")

# %% [markdown]
# ## 5. The backward pass
#
# The output is linear in the input and in the weights, and bilinear in each offset, so
# the gradients are those of DCNv2 without the GEMM (tutorial 04):
#
# * **input**: each sample hands m * dout to its four neighbours, times their bilinear
#   weights (a scatter);
# * **weight** m_gp: the sample value, summed over the group's channels with dout;
# * **offset** (dx, dy) of point p: m_gp * offset_scale times the bilinear derivative in
#   x (y), summed over the group's channels with dout. offset_scale appears once, from
#   the chain rule.
#
# Against central differences, with offsets kept off integer coordinates (the kinks of
# bilinear interpolation):

# %%
N, H, W = (1, 4, 5) if FAST else (2, 5, 6)
x = rng.standard_normal((N, H, W, 4))
offset = rng.integers(-2, 2, (N, H, W, 2 * 2 * P)) + rng.uniform(0.2, 0.8, (N, H, W, 2 * 2 * P))
mask = rng.normal(0.0, 1.0, (N, H, W, 2 * P))
args = dict(kernel_size=3, padding=1, group=2, offset_scale=1.0)
dout = rng.standard_normal((N, H, W, 4))
grads = dcnv3_backward(dout, x, offset, mask, **args)
for name, value, f in [("input", x, lambda v: dcnv3(v, offset, mask, **args)),
                       ("offset", offset, lambda v: dcnv3(x, v, mask, **args)),
                       ("mask", mask, lambda v: dcnv3(x, offset, v, **args))]:
    err = rel_error(getattr(grads, name), numerical_vjp(f, value, dout))
    print(f"d/d{name:<7} relative error against finite differences: {err:.1e}")
    assert err < 1e-7

# %% [markdown]
# ## 6. The blocks
#
# `dcn_ref.nn.DCNv3` is InternImage's module around the op, channels last, with a
# hand-written backward pass:
#
#     x_proj = input_proj(x)                                 Linear C -> C
#     x1     = GELU(LayerNorm(depthwise_conv(x)))            what the offsets look at
#     offset = offset(x1)                                    Linear C -> G*P*2
#     mask   = softmax over each group's P of mask(x1)       Linear C -> G*P
#     y      = dcnv3(x_proj, offset, mask)
#     out    = output_proj(y)                                Linear C -> C
#
# `dcn_ref.nn.DCNv4` is OpenGVLab's: value_proj, an optional depthwise convolution,
# **one** Linear to the packed offset_mask (C -> D, D = G*P*3 rounded up to a multiple
# of 8), dcnv4, output_proj; no layer norm, no GELU, no softmax.
#
# The offset and mask projections start at zero. A fresh DCNv3 block therefore samples
# the regular grid (offsets 0) with softmax(0) = 1/P on every point: between the two
# projections it is a 3x3 mean filter with zero padding.

# %%
block = DCNv3(channels=4, group=2, rng=0, dtype=np.float64)
x = rng.standard_normal((1, 5, 6, 4))
p = block.params
x_proj = x @ p["input_proj_weight"].T + p["input_proj_bias"]
padded = np.pad(x_proj, ((0, 0), (1, 1), (1, 1), (0, 0)))
mean3x3 = sum(padded[:, r:r + 5, c:c + 6] for r in range(3) for c in range(3)) / 9
expected = mean3x3 @ p["output_proj_weight"].T + p["output_proj_bias"]
assert np.allclose(block.forward(x), expected, rtol=0, atol=1e-12)
print("a fresh DCNv3 block = output_proj(3x3 mean of input_proj(x))")

# %% [markdown]
# The block's backward pass chains the hand-written pieces: the output projection,
# dcnv3_backward, the softmax's Jacobian s * (g - sum(g * s)), the two projections
# from x1, GELU's derivative Phi(x) + x*phi(x), the layer norm's, the depthwise
# convolution's and the input projection's, and adds the two paths back to x. Checked
# end to end against finite differences on the input, with offsets moved off the
# kinks (tests/test_nn_dcnv.py checks every parameter the same way):

# %%
block.params["offset_bias"][...] = rng.integers(-1, 1, 36) + rng.uniform(0.3, 0.7, 36)  # G*P*2
block.params["mask_weight"][...] = rng.normal(0.0, 0.5, block.params["mask_weight"].shape)
x = rng.standard_normal((1, 3, 4, 4) if FAST else (2, 4, 5, 4))
out = block.forward(x)
dout = rng.standard_normal(out.shape)
analytic = block.backward(dout)
err = rel_error(analytic, numerical_vjp(block.forward, x, dout))
print(f"DCNv3 block, dL/dx: relative error {err:.1e}; "
      f"dL/dmask_weight max |.| = {np.abs(block.grads['mask_weight']).max():.3f}")
assert err < 1e-7

block4 = DCNv4(channels=4, group=2, rng=0, dtype=np.float64)
print(f"DCNv4 block: offset_mask projection {block4.params['offset_mask_weight'].shape} "
      f"(2 groups x 9 points x 3 = 54, padded to 56); a fresh block outputs 0:",
      np.abs(block4.forward(x)).max())
assert block4.params["offset_mask_weight"].shape == (56, 4)
assert np.array_equal(block4.forward(x), np.zeros_like(x))

# %% [markdown]
# ## Summary
#
# * DCNv3 drops DCNv2's per-tap weight: each of G channel groups sums its P samples with
#   P scalar weights, softmax-normalised; linear projections mix the channels.
# * DCNv4 keeps the sum, drops the softmax, and packs each group's 2P offsets and P
#   weights into one block of 3P entries, padded to a multiple of 8.
# * torchvision stores (dy, dx) per tap, row-major, channels first; InternImage stores
#   (x, y) per point, column-major (p = c*kh + r), channels last. Two transposes and a
#   swap move one into the other, and then dcnv3 is a depthwise deform_conv2d.
# * Point (r, c) samples at the window centre plus (grid offset + learned offset) times
#   offset_scale; offset_scale = 0 puts every point on the centre.
# * A fresh DCNv3 block is a 3x3 mean filter between two projections; a fresh DCNv4
#   block outputs 0 (all its point weights start at 0).
#
# ## Exercises
#
# 1. Write the inverse of `dcnv3_to_torchvision` and check that the two compose to the
#    identity on random arrays.
# 2. Which single entry of dcnv4's offset_mask holds the y-offset of the centre point
#    of group 2 for a 3x3 kernel? Move it and confirm with the op.
# 3. With offset_scale = 2 and zero offsets, which convolution does dcnv3 with a one-hot
#    weight on each point reproduce? (Compare with tutorial 04's dilated window.)
# 4. A DCNv3 block's softmax makes the weights sum to 1. Show that a DCNv3 block applied
#    to a constant image (all pixels equal, every point inside) returns
#    output_proj(input_proj(constant)) whatever its offsets, and that a DCNv4 block does
#    not.
# 5. Set `center_feature_scale=True` and check that a fresh DCNv3 block returns
#    output_proj(0.5 * mean + 0.5 * input_proj(x)).
