# %% [markdown]
# # Tutorial 06: training on scaled MNIST, and where the deformable layers learn to look
#
# The classic demonstration of deformable convolution: a CNN trained on ordinary digits
# fails on digits that are shrunk and shifted; giving it deformable sampling and training
# only the offsets lets it read the small digits again, and the learned sampling points
# show how. This is a short version of `dcn-ref experiment scaled-mnist`, built from the
# same library pieces step by step. Plan:
#
# 1. the data: the MNIST digits shipped with dcn_ref, and the scale-and-shift transform
#    (checked by hand on a square);
# 2. the plain CNN trained on normal digits with the library's trainer;
# 3. its deformable twin (Keras' ConvOffset2D layers) starts from it: checked by hand to be
#    the same network while its offsets are zero, then only the offsets and batch norms are
#    fine-tuned on a mix of scaled and normal digits;
# 4. accuracies on normal and scaled test digits;
# 5. the sampling locations of one output unit, traced through the three deformable layers.
#
# Run it as a script (`python tutorials/06_training_scaled_mnist.py`) or open it as a
# notebook. It trains for real: 16.5 minutes, measured on 2 cores shared with other work
# (load average 5 to 8), and about 5 minutes on 2 idle cores (an estimate from the speeds
# the experiment measured there: 4 epochs of the cnn, about a minute; 2 epochs of the
# offset layers, about 3 minutes). `DCN_REF_FAST=1` runs the same code on fewer digits for
# fewer epochs (85 s on the same busy machine).

# %%
import os

import numpy as np

from dcn_ref import models
from dcn_ref.data import ScaleShift, load_mnist, random_scale_shift, scale_shift, scaled_test_set
from dcn_ref.experiment.figures import digit_unit, sampling_points
from dcn_ref.nn import SoftmaxCrossEntropy
from dcn_ref.optim import Adam
from dcn_ref.plotting import plt, save_figure
from dcn_ref.train import evaluate, train_epoch

FAST = os.environ.get("DCN_REF_FAST") == "1"  # smaller sizes, same code path
N_TRAIN, N_TEST = (500, 300) if FAST else (5000, 2000)
CNN_EPOCHS, FINETUNE_EPOCHS = (1, 1) if FAST else (4, 2)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Normal and scaled digits
#
# `load_mnist()` returns the 5,000 training digits shipped with the package (500 a class)
# and the official 10,000 test digits, as uint8 arrays (N, 28, 28). The scaled digits of
# the experiment zoom every image out by its own factors zy, zx ~ U(1, 2.5) about the
# centre and shift it by up to 0.2 * 28 px: output pixel (i, j) copies the input pixel
# nearest to
#
#     y = zy * (i - c) + c + ty,    x = zx * (j - c) + c + tx,    c = (28 - 1) / 2.
#
# A check by hand: with zoom 2 and no shift, a 12-pixel square centred in the image
# covers every other input pixel, so it comes out 6 pixels wide.

# %%
square = np.zeros((1, 28, 28), np.uint8)
square[0, 8:20, 8:20] = 255                              # rows and columns 8..19: 12 pixels
half = scale_shift(square, ScaleShift(zoom=np.array([[2.0, 2.0]]), shift=np.zeros((1, 2))))
rows = np.nonzero(half[0].any(axis=1))[0]
print("the square's rows after zoom 2:", rows)
assert len(rows) == 6

mnist = load_mnist()
keep = rng.permutation(len(mnist.train_images))[:N_TRAIN]
train_images, train_labels = mnist.train_images[keep], mnist.train_labels[keep]
test_images, test_labels = mnist.test_images[:N_TEST], mnist.test_labels[:N_TEST]
scaled_test, _ = scaled_test_set(test_images)           # drawn once from a fixed seed


def as_input(images):
    """uint8 digits (N, 28, 28) -> float32 model input (N, 1, 28, 28) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[:, None]


fig, axes = plt.subplots(2, 6, figsize=(9, 3.2))
for j in range(6):
    axes[0, j].imshow(test_images[j], cmap="gray_r")
    axes[1, j].imshow(scaled_test[j], cmap="gray_r")
    for ax in axes[:, j]:
        ax.set_xticks([])
        ax.set_yticks([])
axes[0, 0].set_ylabel("normal")
axes[1, 0].set_ylabel("scaled")
save_figure(fig, "06_normal_and_scaled")

# %% [markdown]
# ## 2. The plain CNN on normal digits
#
# `models.cnn()` is the Keras model: four 3x3 convolutions (32, 64 with stride 2, 128,
# 128 with stride 2), each followed by ReLU and batch norm, a global average pool and a
# dense layer to 10 logits. `train_epoch` runs one epoch of mini-batches in an order drawn
# from `rng`; every step is forward, loss, backward, optimiser step, all hand-written.

# %%
cnn = models.cnn(seed=0)
loss = SoftmaxCrossEntropy()
optimizer = Adam(cnn, lr=2e-3)
for epoch in range(CNN_EPOCHS):
    stats = train_epoch(cnn, loss, optimizer, as_input(train_images), train_labels, 32, rng,
                        progress=False)
    print(f"cnn epoch {epoch + 1}: loss {stats.loss:.3f}, accuracy {stats.accuracy:.3f}, "
          f"{stats.images_per_second:.0f} images/s")
cnn_normal = evaluate(cnn, as_input(test_images), test_labels)
cnn_scaled = evaluate(cnn, as_input(scaled_test), test_labels)
print(f"cnn: normal test digits {cnn_normal:.3f}, scaled {cnn_scaled:.3f}")

# %% [markdown]
# ## 3. The deformable twin, started from the CNN
#
# `models.deform_cnn("offset")` inserts a ConvOffset2D layer before conv12, conv21 and
# conv22: a 3x3 convolution predicts a (dy, dx) for every channel and pixel, and the
# feature map is resampled there (tutorial 03). Checkpoints go by layer name, so loading
# the CNN's state fills every layer the two share. A check by hand: with the offset
# convolutions' weights at zero every offset is 0, every ConvOffset2D is the identity, and
# the twin computes exactly what the CNN computes.

# %%
deform = models.deform_cnn("offset", seed=0)
result = deform.load_state_dict(cnn.state_dict(), strict=False)
print("left at their initial values:", result.missing)
saved = {}
for name in ("conv12_offset", "conv21_offset", "conv22_offset"):
    saved[name] = deform[name].params["weight"].copy()
    deform[name].params["weight"][...] = 0.0
probe = as_input(scaled_test[:16])
assert np.array_equal(deform.eval().forward(probe), cnn.eval().forward(probe))
for name, weight in saved.items():
    deform[name].params["weight"][...] = weight        # back to Keras' N(0, 0.01) start

# %% [markdown]
# Now the Keras recipe: freeze every convolution and the dense layer, train only the
# offset layers (and the batch norms) on scaled digits. We mix in half as many normal
# digits, so that the network keeps reading those too, and draw fresh transforms every
# epoch (`random_scale_shift`).

# %%
trained = deform.train_only([layer.name for layer in deform
                             if layer.name.endswith(("_offset", "_bn"))])
print("training:", trained)
optimizer = Adam(deform, lr=5e-4)
for epoch in range(FINETUNE_EPOCHS):
    scaled, _ = random_scale_shift(train_images, rng)
    normal = rng.permutation(len(train_images))[: len(train_images) // 2]
    images = np.concatenate([scaled, train_images[normal]])
    labels = np.concatenate([train_labels, train_labels[normal]])
    stats = train_epoch(deform, loss, optimizer, as_input(images), labels, 32, rng,
                        progress=False)
    print(f"deform epoch {epoch + 1}: loss {stats.loss:.3f}, accuracy {stats.accuracy:.3f}")

# %% [markdown]
# ## 4. Accuracies

# %%
deform_normal = evaluate(deform, as_input(test_images), test_labels)
deform_scaled = evaluate(deform, as_input(scaled_test), test_labels)
print(f"{'':10}{'normal':>8}{'scaled':>8}")
print(f"{'cnn':10}{cnn_normal:>8.3f}{cnn_scaled:>8.3f}")
print(f"{'deform':10}{deform_normal:>8.3f}{deform_scaled:>8.3f}")
if not FAST:   # with a few epochs the effect is already clear; the full experiment goes further
    assert deform_scaled > cnn_scaled

# %% [markdown]
# ## 5. Where one unit looks
#
# Take the conv22 unit over the digit's centre. Its 3x3 taps read conv21's output at
# 2p - 1 + (i, j) plus the offsets there; each of those points reads conv21's own 3x3
# taps plus offsets, and so on down to the input: 9 x 9 x 9 = 729 points
# (`dcn_ref.experiment.figures.sampling_points`, with the offsets averaged over channels
# for ConvOffset2D). Without offsets they form a regular grid (blue); the learned offsets
# move them (red).

# %%
fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4))
for ax, image in zip(axes, scaled_test[:3]):
    unit = digit_unit(image)                            # the 7x7 conv22 unit over its centre
    points, regular = sampling_points(deform, image.astype(np.float32) / 255.0, unit)
    ax.imshow(image, cmap="gray_r")
    ax.scatter(regular[:, 1], regular[:, 0], s=3, c="tab:blue", alpha=0.35)
    ax.scatter(points[:, 1], points[:, 0], s=3, c="tab:red", alpha=0.6)
    ax.set_xlim(-0.5, 27.5)
    ax.set_ylim(27.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("sampling points of one conv22 unit: regular grid (blue), learned (red)")
save_figure(fig, "06_sampling_locations")
assert points.shape == (729, 2) and regular.shape == (729, 2)

# %% [markdown]
# ## Summary
#
# * The scaled digits are zoomed out by up to 2.5x and shifted; a CNN trained on normal
#   digits loses much of its accuracy on them.
# * A deformable model that shares the CNN's weights and starts with zero offsets *is* the
#   CNN; training only its offset layers (and batch norms) lets it adapt its sampling to
#   the small digits without changing a single convolution weight.
# * The learned sampling points of a deep unit gather on the digit instead of spreading
#   over a fixed square.
# * `dcn-ref experiment scaled-mnist` runs the full version: more epochs, the DCN model,
#   a CNN fine-tuned on the same data as a control, checkpoints and figures.
#
# ## Exercises
#
# 1. Fine-tune without the normal digits in the mix. What happens to the accuracy on
#    normal digits, and why?
# 2. Train `models.deform_cnn("dcn")` the same way (its offsets start at zero: try a
#    larger learning rate) and draw its sampling points.
# 3. Freeze the batch norms too. How much of the gain do the offsets alone give?
# 4. Pick a unit off the digit, in the background. Where do its sampling points go?
