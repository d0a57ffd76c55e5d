"""The experiment's figures: training curves, and where a deformable model samples.

The sampling figure follows figure 5 of Dai et al. (2017): take one unit of the last
deformable layer (conv22) and follow its 3x3 taps back through conv21 and conv12 to the
input, adding the learned offsets at every level: 9 x 9 x 9 = 729 points on the digit.
Offsets live on the integer grid of each layer's output, so at the fractional points of
the level above they are read by bilinear interpolation (``dcn_ref.ops.bilinear_sample``).
For the "offset" model, whose ConvOffset2D layers move every channel separately, the
points move by the offset averaged over channels; likewise, a DeformConv2D with several
offset groups moves them by the offset averaged over its groups.
"""
import numpy as np
# Figure objects made directly, not through pyplot: they draw with Agg whatever backend the
# caller's process uses, and the library never switches that backend.
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..nn import ConvOffset2D, DeformConv2D
from ..ops import bilinear_sample

# (layer, stride) of the three deformable levels, from the input up; every kernel is 3x3
# with padding 1, so tap (i, j) of output position p sits at p*stride - 1 + (i, j).
LEVELS = (("conv12", 2), ("conv21", 1), ("conv22", 2))
TAPS = np.array([(i, j) for i in range(3) for j in range(3)], dtype=np.float64)  # (9, 2)


def _read(field, points):
    """Values of ``field`` (C, H, W) at (P, 2) fractional (y, x) points: (P, C)."""
    C = field.shape[0]
    coords = np.broadcast_to(points, (C,) + points.shape).astype(field.dtype)
    return bilinear_sample(field, np.ascontiguousarray(coords), "border").T


def _offset_fields(model, image):
    """For each level: a function points (P, 2) -> the offsets (P, 9, 2) of their 9 taps,
    in the coordinates of the level's input, after one forward pass of ``image``."""
    model.eval()
    model.forward(image[None, None].astype(model.dtype))
    fields = {}
    for name, stride in LEVELS:
        layer = model[name]
        if isinstance(layer, DeformConv2D):
            offset = layer._cache[1][0]                       # (G*18, H_out, W_out): (dy, dx) per group, tap
            offset = offset.reshape(-1, 18, *offset.shape[1:]).mean(0)   # averaged over the G groups

            def at(points, offset=offset):
                return _read(offset, points).reshape(len(points), 9, 2)
        else:
            moved = model[f"{name}_offset"]
            assert isinstance(moved, ConvOffset2D)
            offset = moved._cache[1][0]                       # (2C, H, W) at conv's input
            mean = np.stack([offset[0::2].mean(0), offset[1::2].mean(0)])   # (2, H, W)

            def at(points, mean=mean, stride=stride):
                taps = points[:, None, :] * stride - 1 + TAPS[None]          # (P, 9, 2)
                return _read(mean, taps.reshape(-1, 2)).reshape(len(points), 9, 2)
        fields[name] = (at, stride)
    return fields


def sampling_points(model, image, unit):
    """The input positions (729, 2) that conv22's output ``unit`` (y, x) reads, through the
    three levels of offsets; and the same with all offsets zero (the plain receptive field)."""
    fields = _offset_fields(model, image)
    points = np.array([unit], dtype=np.float64)
    regular = points.copy()
    for name, _ in reversed(LEVELS):
        at, stride = fields[name]
        points = (points[:, None, :] * stride - 1 + TAPS[None] + at(points)).reshape(-1, 2)
        regular = (regular[:, None, :] * stride - 1 + TAPS[None]).reshape(-1, 2)
    return points, regular


def digit_unit(image):
    """The conv22 unit (on its 7x7 grid) over the digit's centre of mass: unit u is centred
    on input pixel 4u (each stride-2 level doubles the coordinates)."""
    weights = image.astype(np.float64)
    rows, cols = np.indices(image.shape)
    centre = np.array([(rows * weights).sum(), (cols * weights).sum()]) / max(weights.sum(), 1e-9)
    return tuple(int(v) for v in np.clip(np.round(centre / 4), 0, 6))


def sampling_figure(path, model, images, title):
    """Draw, over each of ``images`` (n, 28, 28) uint8, the points that the conv22 unit over
    the digit's centre samples."""
    fig = Figure(figsize=(3.2 * len(images), 3.4))
    axes = fig.subplots(1, len(images))
    for ax, image in zip(np.atleast_1d(axes), images):
        unit = digit_unit(image)
        points, regular = sampling_points(model, image.astype(np.float32) / 255.0, unit)
        ax.imshow(image, cmap="gray_r")
        ax.scatter(regular[:, 1], regular[:, 0], s=3, c="tab:blue", alpha=0.35)
        ax.scatter(points[:, 1], points[:, 0], s=3, c="tab:red", alpha=0.6)
        centre = np.array(unit) * 4
        ax.plot(centre[1], centre[0], "g+", ms=12, mew=2)
        ax.set_xlim(-0.5, 27.5)
        ax.set_ylim(27.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    legend = [Line2D([], [], ls="", marker="o", ms=4, color="tab:blue", alpha=0.5, label="regular grid"),
              Line2D([], [], ls="", marker="o", ms=4, color="tab:red", label="with offsets"),
              Line2D([], [], ls="", marker="+", ms=8, mew=2, color="g", label="the unit")]
    np.atleast_1d(axes)[0].legend(handles=legend, loc="lower left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def training_curves(path, histories):
    """Loss and accuracy per epoch of every stage."""
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["loss"] for h in history], "o-", label=name)
        ax_acc.plot(epochs, [h["accuracy"] for h in history], "o-", label=name)
    ax_loss.set(xlabel="epoch of the stage", ylabel="training loss", yscale="log")
    ax_acc.set(xlabel="epoch of the stage", ylabel="training accuracy")
    ax_acc.legend(fontsize=8)
    fig.suptitle("Training (cnn on normal digits; the others fine-tuned on scaled + normal)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
