# %% [markdown]
# # Tutorial 10: second derivatives and forward mode, and a gradient penalty through a deformable layer
#
# A gradient penalty (WGAN-GP, R1), a Hessian-vector product or MAML differentiates a
# gradient: the backward pass itself must be differentiable. dcn_ref's backward passes are
# derived by hand, so their derivatives are too. Plan:
#
# 1. the second derivative of bilinear sampling, by hand: why d²v/dy² vanishes inside a
#    cell and the cross term d²v/dy dx does not;
# 2. what the library offers: `*_jvp` (forward mode, a Jacobian-vector product) and
#    `*_backward_backward` (the gradient of a backward pass), checked on the hand-worked
#    point and against finite differences;
# 3. the deformable convolution: which second derivatives it has, and the checks;
# 4. a gradient penalty training through `dcn_ref.torch.DeformConv2d` in PyTorch, with
#    `torch.autograd.gradgradcheck` and `torch.func.jvp` on the way.
#
# Run it as a script (`python tutorials/10_second_derivatives.py`; part 4 needs
# `pip install 'dcn-ref[torch]'`) or open it as a notebook.

# %%
import os

import numpy as np

from dcn_ref import ops
from dcn_ref.gradcheck import check_backward_backward, check_jvp, format_table, off_kink
from dcn_ref.plotting import plt, save_figure

FAST = os.environ.get("DCN_REF_FAST") == "1"  # fewer steps, same code path
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. The second derivative of bilinear sampling, by hand
#
# A point (y, x) in the cell with top-left corner (y0, x0), at fractions ly = y − y0 and
# lx = x − x0, reads
#
#     v = (1-ly)(1-lx) I00 + (1-ly) lx I01 + ly (1-lx) I10 + ly lx I11
#
# Each corner weight is a product wy·wx of a factor linear in ly and one linear in lx.
# So v is linear in y for a fixed x, and linear in x for a fixed y:
#
#     dv/dy = (1-lx)(I10 - I00) + lx (I11 - I01)      does not depend on ly:  d²v/dy² = 0
#     dv/dx = (1-ly)(I01 - I00) + ly (I11 - I10)      does not depend on lx:  d²v/dx² = 0
#
# but dv/dy depends on lx, linearly:
#
#     d²v/dy dx = I00 - I01 - I10 + I11
#
# the cell's "twist": zero for an image that is a plane over the cell, and the same
# everywhere inside it. At the integers (the kinks) the first derivatives jump; there, as
# everywhere in dcn_ref, derivatives are those of the cell [floor(y), floor(y) + 1], the
# right derivatives, and so are the second. Here is the 2x2 image of this section and its
# numbers at (0.25, 0.5).

# %%
image = np.array([[[1.0, 2.0],
                   [3.0, 5.0]]])                 # (B, H, W) = (1, 2, 2): I00=1, I01=2, I10=3, I11=5
coords = np.array([[[0.25, 0.5]]])               # (B, P, 2): one point (y, x)
ly, lx = 0.25, 0.5
I00, I01, I10, I11 = 1.0, 2.0, 3.0, 5.0
dv_dy = (1 - lx) * (I10 - I00) + lx * (I11 - I01)
dv_dx = (1 - ly) * (I01 - I00) + ly * (I11 - I10)
twist = I00 - I01 - I10 + I11
print(f"dv/dy = {dv_dy}, dv/dx = {dv_dx}, d2v/dydx = {twist}")
g = np.ones((1, 1))
first = ops.bilinear_sample_backward(g, image, coords)
print("bilinear_sample_backward(...).coords:", first.coords[0, 0])
assert np.allclose(first.coords[0, 0], [dv_dy, dv_dx])

# %% [markdown]
# Along a vertical line through the cell, v is a straight line and dv/dy a constant; along
# a horizontal line, dv/dy changes at the rate d²v/dy dx. A picture on a larger image,
# where the lines cross several cells: v along y is piecewise linear (kinks at the
# integers), so its derivative is piecewise constant and its second derivative zero
# between the kinks; dv/dy along x is piecewise linear.

# %%
rng = np.random.default_rng(0)
big = rng.standard_normal((1, 5, 5))
t = np.linspace(0.02, 3.98, 397)
x_fixed, y_fixed = 1.3, 2.6
along_y = np.stack([t, np.full_like(t, x_fixed)], -1)[None]     # points (t, 1.3)
along_x = np.stack([np.full_like(t, y_fixed), t], -1)[None]     # points (2.6, t)
ones = np.ones((1, t.size))
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
axes[0].plot(t, ops.bilinear_sample(big, along_y)[0])
axes[0].set_title(f"v(y, x={x_fixed}): linear within each cell")
axes[1].plot(t, ops.bilinear_sample_backward(ones, big, along_y).coords[0, :, 0])
axes[1].set_title("dv/dy along y: constant within each cell")
axes[2].plot(t, ops.bilinear_sample_backward(ones, big, along_x).coords[0, :, 0])
axes[2].set_title(f"dv/dy along x (y={y_fixed}): slope d²v/dydx")
for ax, label in zip(axes, ["y", "y", "x"]):
    ax.set_xlabel(label)
    for k in range(1, 4):
        ax.axvline(k, color="0.85", lw=0.8)
fig.tight_layout()
save_figure(fig, "10_bilinear_second_derivative")

# %% [markdown]
# The middle panel's steps are flat, so its slope, d²v/dy², is 0 between the kinks; the
# right panel's segments have slopes d²v/dy dx of the cells they cross. Checked on one cell
# of the big image: the slope of dv/dy along x is the twist of that cell.

# %%
cell = big[0, 2:4, 1:3]                           # the cell of (2.6, 1.x): rows 2-3, columns 1-2
cell_twist = cell[0, 0] - cell[0, 1] - cell[1, 0] + cell[1, 1]
inside = (t > 1.05) & (t < 1.95)
slope = np.polyfit(t[inside], ops.bilinear_sample_backward(ones, big, along_x).coords[0, inside, 0], 1)[0]
print(f"slope of dv/dy along x in the cell: {slope:.6f}, its twist: {cell_twist:.6f}")
assert abs(slope - cell_twist) < 1e-9

# %% [markdown]
# ## 2. Forward mode and the gradient of the backward pass
#
# Every sampling op `f` has two more functions:
#
# - `f_jvp(<inputs>, *, <input>_dot=...)`: how the output changes along a *tangent* of the
#   inputs (one keyword per differentiable input, None for no change), the
#   Jacobian-vector product J·d;
# - `f_backward_backward(grad_grads, grad_output, <inputs>)`: the gradients of a scalar
#   that depends on the backward's outputs (`grad_grads` holds its gradients with respect
#   to them, a NamedTuple like the backward's), with respect to *every* input of the
#   backward, grad_output included.
#
# The backward is linear in grad_output (it is Jᵀ·g), so the gradient with respect to
# grad_output is the forward mode along grad_grads; the rest contracts the second
# derivatives. On the point of section 1, with grad_grads.coords = (1, 0) (the scalar is
# the backward's dv/dy) and then (0, 1) (dv/dx):

# %%
along_y_dir = ops.bilinear_sample_backward_backward((None, np.array([[[1.0, 0.0]]])), g, image,
                                                    coords)
along_x_dir = ops.bilinear_sample_backward_backward((None, np.array([[[0.0, 1.0]]])), g, image,
                                                    coords)
print("d(dv/dy)/d(y, x) =", along_y_dir.coords[0, 0], "  d(dv/dx)/d(y, x) =",
      along_x_dir.coords[0, 0])
print("d(dv/dy)/d(pixels) =\n", along_y_dir.image[0])
assert np.allclose(along_y_dir.coords[0, 0], [0.0, twist])   # d2v/dy2 = 0, d2v/dydx
assert np.allclose(along_x_dir.coords[0, 0], [twist, 0.0])
# d(dv/dy)/dI = dw/dy: -(1 - lx), -lx, (1 - lx), lx for the four corners
assert np.allclose(along_y_dir.image[0], [[-(1 - lx), -lx], [1 - lx, lx]])
# the gradient with respect to grad_output: the forward mode along grad_grads
assert np.allclose(along_y_dir.grad_output, ops.bilinear_sample_jvp(
    image, coords, coords_dot=np.array([[[1.0, 0.0]]])))
assert np.allclose(along_y_dir.grad_output, dv_dy)

# %% [markdown]
# `dcn_ref.gradcheck` checks both against centred finite differences: the JVP against
# (f(x + εd) − f(x − εd)) / 2ε for a random tangent d of each input, the double backward
# against the gradient of Σ gg · f_backward(g, x), nudging every element of g and of each
# input. Points stay 0.1 px from the integers, where the derivatives jump.

# %%
points = off_kink(rng, (2, 12, 2), -1.5, 5.5)          # some in the zero rim, some outside
inputs = {"image": rng.standard_normal((2, 4, 5)), "coords": points}
rows = (check_jvp(ops.bilinear_sample, ops.bilinear_sample_jvp, inputs)
        + check_backward_backward(ops.bilinear_sample, ops.bilinear_sample_backward,
                                  ops.bilinear_sample_backward_backward, inputs))
print(format_table(rows))
assert all(r.passed for r in rows)

# %% [markdown]
# ## 3. The deformable convolution
#
# With columns X[c, tap, pixel] = m · bilinear(x[c], y, x) and out = W·X + b, the columns
# are linear in the input and in the mask, and bilinear within a cell in (y, x) of each
# tap. So the only second derivatives of the sampling are input–offset (dw/dy),
# input–mask (w), offset–mask (dv/dy) and the dy–dx cross term (the twist); the weight
# enters once more through W·X. `deform_conv2d_backward_backward` returns one gradient per
# input of the backward; the bias's is 0 (the backward does not depend on it). Checked
# on a small v2 case with offset groups and a stride:

# %%
x = rng.standard_normal((1, 4, 5, 5))
weight = rng.standard_normal((2, 2, 3, 3))              # groups = 2
offset = off_kink(rng, (1, 2 * 2 * 9, 3, 3), -1.5, 1.5)  # two offset groups, stride 2
mask = rng.uniform(0.2, 1.0, (1, 2 * 9, 3, 3))
inputs = {"input": x, "offset": offset, "weight": weight, "bias": rng.standard_normal(2),
          "mask": mask}
params = {"stride": 2, "padding": 1}
rows = (check_jvp(ops.deform_conv2d, ops.deform_conv2d_jvp, inputs, params)
        + check_backward_backward(ops.deform_conv2d, ops.deform_conv2d_backward,
                                  ops.deform_conv2d_backward_backward, inputs, params))
print(format_table(rows))
assert all(r.passed for r in rows)

# %% [markdown]
# ## 4. A gradient penalty through a deformable layer in PyTorch
#
# Through the bridge, `dcn_ref::deform_conv2d_backward` has its own autograd formula
# (calling `deform_conv2d_backward_backward`), and `torch.func.jvp` and
# `torch.autograd.forward_ad` get the JVP. First PyTorch's own checks, in float64 against
# finite differences: `gradgradcheck` (in its fast mode, random projections of the
# second derivatives, with tolerances far tighter than its defaults) and a `torch.func.jvp`
# along an offset direction.

# %%
import torch  # noqa: E402

import dcn_ref.torch as dt  # noqa: E402

torch.manual_seed(0)
t_x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
t_offset = (0.1 + 0.8 * torch.rand(1, 18, 4, 4, dtype=torch.float64)).requires_grad_()
t_weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)


def layer(x, offset, weight):
    return dt.deform_conv2d(x, offset, weight, padding=(1, 1))


print("gradgradcheck:", torch.autograd.gradgradcheck(layer, (t_x, t_offset, t_weight),
                                                     check_batched_grad=False, fast_mode=True,
                                                     rtol=1e-6, atol=1e-8))
direction = torch.randn_like(t_offset)
_, tangent = torch.func.jvp(lambda o: layer(t_x.detach(), o, t_weight.detach()),
                            (t_offset.detach(),), (direction,))
with torch.no_grad():
    eps = 1e-6
    numeric = (layer(t_x, t_offset + eps * direction, t_weight)
               - layer(t_x, t_offset - eps * direction, t_weight)) / (2 * eps)
print(f"torch.func.jvp along an offset direction vs centred differences: max difference "
      f"{(tangent - numeric).abs().max():.1e}")
assert torch.allclose(tangent, numeric, atol=1e-7)

# %% [markdown]
# Now a critic, in the style of a GAN's discriminator: a `DeformConv2d` whose offsets come
# from a plain convolution, a ReLU, the mean of each channel and a linear score. It learns to score "real" images (a
# bright square) high and "fake" ones (noise) low, with the R1 penalty
# γ/2 · ||∂D(real)/∂x||², which keeps the critic smooth around the real data. The penalty
# is a function of a gradient; its gradient with respect to the weights and the offset
# convolution is a second derivative, which `loss.backward()` takes through
# `deform_conv2d_backward_backward`.

# %%
class Critic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.offsets = torch.nn.Conv2d(1, 18, 3, padding=1)
        self.deform = dt.DeformConv2d(1, 8, 3, padding=1)
        self.score = torch.nn.Linear(8, 1)
        torch.nn.init.zeros_(self.offsets.weight)
        torch.nn.init.zeros_(self.offsets.bias)

    def forward(self, x):
        features = torch.relu(self.deform(x, self.offsets(x))).mean(dim=(2, 3))
        return self.score(features)[:, 0]


def real_batch(n):
    images = 0.1 * torch.randn(n, 1, 10, 10)
    for i in range(n):
        top, left = torch.randint(0, 5, (2,)).tolist()
        images[i, 0, top:top + 5, left:left + 5] += 1.0
    return images


critic = Critic()
optimiser = torch.optim.Adam(critic.parameters(), lr=1e-2)
gamma = 1.0
history = {"critic loss": [], "R1 penalty": []}
for step in range(25 if FAST else 50):
    real = real_batch(4).requires_grad_()
    fake = torch.randn(4, 1, 10, 10)
    score_real = critic(real)
    (grad_real,) = torch.autograd.grad(score_real.sum(), real, create_graph=True)
    penalty = gamma / 2 * grad_real.square().sum(dim=(1, 2, 3)).mean()
    loss = (torch.nn.functional.softplus(critic(fake)).mean()
            + torch.nn.functional.softplus(-score_real).mean())
    optimiser.zero_grad()
    (loss + penalty).backward()
    optimiser.step()
    history["critic loss"].append(loss.item())
    history["R1 penalty"].append(penalty.item())
print(f"critic loss {history['critic loss'][0]:.3f} -> {history['critic loss'][-1]:.3f}, "
      f"R1 penalty {history['R1 penalty'][0]:.4f} -> {history['R1 penalty'][-1]:.4f}")
assert np.mean(history["critic loss"][-5:]) < 0.8 * history["critic loss"][0]

fig, ax = plt.subplots(figsize=(6.5, 4))
for name, values in history.items():
    ax.plot(values, label=name)
ax.set_xlabel("step")
ax.set_yscale("log")
ax.set_title("A critic with an R1 penalty, through DeformConv2d")
ax.legend()
save_figure(fig, "10_gradient_penalty")

# %% [markdown]
# The critic's loss falls as it learns to tell the square from the noise; the penalty,
# near zero for the untrained critic, grows as the critic sharpens around the real images
# and levels off where its cost balances what the sharper critic gains.
#
# The penalty's gradient reaches the offset convolution only through the second
# derivatives of the sampling (the penalty is ||∂D/∂x||², and ∂D/∂x depends on the
# offsets through dw/dy and the twist). One entry, in float64, against a centred
# difference of the penalty itself:

# %%
critic = critic.double()
images = real_batch(2).double()


def penalty_of(model):
    x = images.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    return grad.square().sum()


critic.zero_grad()
penalty_of(critic).backward()
by_hand = critic.offsets.weight.grad[0, 0, 1, 1].item()
with torch.no_grad():
    w = critic.offsets.weight
    w[0, 0, 1, 1] += 1e-6
plus = penalty_of(critic).item()
with torch.no_grad():
    w[0, 0, 1, 1] -= 2e-6
minus = penalty_of(critic).item()
with torch.no_grad():
    w[0, 0, 1, 1] += 1e-6
numeric = (plus - minus) / 2e-6
print(f"d penalty / d offset-conv weight: second derivatives {by_hand:.8f}, "
      f"centred difference {numeric:.8f}")
assert abs(by_hand - numeric) <= 1e-5 * max(1.0, abs(numeric))
