"""The experiment's figures: training curves, and where a deformable model samples.

The sampling figure follows figure 5 of Dai et al. (2017): take one unit of the last
deformable layer (conv22) and follow its 3x3 taps back through conv21 and conv12 to the
input, adding the learned offsets at every level: 9 x 9 x 9 = 729 points on the digit.
Offsets live on the integer grid of each layer's output, so at the fractional points of
the level above they are read by bilinear interpolation (``dcn_ref.ops.bilinear_sample``).
For the "offset" model, whose ConvOffset2D layers move every channel separately, the
points move by the offset averaged over channels; likewise, a DeformConv2D with several
offset groups moves them by the offset averaged over its groups.

The figures are drawn with matplotlib's object API (``matplotlib.figure.Figure`` and its
``savefig``), so that nothing here touches pyplot's state or the backend: the functions
return the Figure, which a notebook shows when it is the cell's value.
"""
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import numpy as np

from ..nn import ConvOffset2D, DeformConv2D
from ..ops import bilinear_sample

# (layer, stride) of the three deformable levels, from the input up; every kernel is 3x3
# with padding 1, so tap (i, j) of output position p sits at p*stride - 1 + (i, j).
LEVELS = (("conv12", 2), ("conv21", 1), ("conv22", 2))
TAPS = np.array([(i, j) for i in range(3) for j in range(3)], dtype=np.float64)  # (9, 2)


def has_sampling_points(model):
    """Whether ``model`` deforms conv12, conv21 and conv22 the way the figure reads them:
    each a DeformConv2D or behind a ConvOffset2D (the deform_cnn models, not dcnv3_cnn)."""
    names = {layer.name for layer in model}

    def deformed(name):
        if f"{name}_offset" in names:
            return isinstance(model[f"{name}_offset"], ConvOffset2D)
        return name in names and isinstance(model[name], DeformConv2D)

    return all(deformed(name) for name, _ in LEVELS)


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


#: colours of the units drawn on each digit: (sampled points, regular grid)
UNIT_COLOURS = (("tab:red", "tab:blue"), ("tab:orange", "tab:cyan"), ("tab:purple", "tab:green"))


def figure_units(image, count=3):
    """Up to ``count`` distinct conv22 units over the digit: the one over its centre of mass
    (``digit_unit``), then those over the quarter points of its ink's bounding box (top left,
    bottom right); a small digit gets fewer. Unit u is centred on input pixel 4u."""
    units = [digit_unit(image)]
    rows, cols = np.nonzero(image >= 128)              # the ink, not the faint edge pixels
    if len(rows):
        for q in (0.25, 0.75):
            centre = np.array([rows.min() + q * (rows.max() - rows.min()),
                               cols.min() + q * (cols.max() - cols.min())])
            unit = tuple(int(v) for v in np.clip(np.round(centre / 4), 0, 6))
            if unit not in units:
                units.append(unit)
    return units[:count]


def sampling_figure(path, model, images, title, units=1):
    """Draw over each of ``images`` (n, 28, 28) uint8 where ``units`` (1 to 3) conv22 units
    over the digit sample (``figure_units``): for each unit its 729 points with the learned
    offsets (small, semi-transparent) and, on top, its regular receptive field with all
    offsets zero (the 11 x 11 grid of distinct points its 729 taps cover). Saves a PNG at
    ``path`` (unless None); returns the Figure."""
    fig = Figure(figsize=(3.2 * len(images), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(images)))
    for ax, image in zip(axes, images):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        for unit, (colour, grid_colour) in zip(figure_units(image, units), UNIT_COLOURS):
            points, regular = sampling_points(model, image.astype(np.float32) / 255.0, unit)
            ax.scatter(points[:, 1], points[:, 0], s=6, color=colour, alpha=0.35,
                       linewidths=0, zorder=2)
            grid = np.unique(regular, axis=0)
            ax.scatter(grid[:, 1], grid[:, 0], s=6, marker="s", facecolors="none",
                       edgecolors=grid_colour, linewidths=0.5, alpha=0.8, zorder=3)
            ax.plot(unit[1] * 4, unit[0] * 4, "+", color="black", ms=9, mew=1.5, zorder=4)
        ax.set_xlim(-0.5, 27.5)
        ax.set_ylim(27.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    legend = [Line2D([], [], ls="", marker="o", ms=3, color="tab:red", alpha=0.5,
                     label="sampled, with the learned offsets"),
              Line2D([], [], ls="", marker="s", ms=4, mfc="none", color="tab:blue",
                     label="regular grid (offsets zero)"),
              Line2D([], [], ls="", marker="+", ms=8, mew=1.5, color="black",
                     label="the unit's centre")]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def training_curves(path, histories, seeds=None):
    """Per epoch of every stage: training loss, training accuracy and, when the histories
    have them, the test accuracies on normal (solid) and scaled (dashed) digits.

    ``histories`` maps an arm's name to its histories, one per seed (lists of equal length).
    With several seeds each curve is the mean over them, with a band from the lowest to the
    highest seed; the title names the seeds (``seeds``, a list of ints). Saves a PNG at
    ``path`` (unless None); returns the Figure."""
    with_test = any("test_accuracy_normal" in h for runs in histories.values()
                    for history in runs for h in history)
    fig = Figure(figsize=(15 if with_test else 10, 3.8))
    axes = fig.subplots(1, 3 if with_test else 2)
    ax_loss, ax_acc = axes[0], axes[1]

    def curve(ax, runs, key, style, colour, label=None):
        values = np.array([[h[key] for h in history] for history in runs])   # (seeds, epochs)
        epochs = np.arange(1, values.shape[1] + 1)
        ax.plot(epochs, values.mean(axis=0), style, color=colour, label=label)
        if len(values) > 1:
            ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour,
                            alpha=0.15, linewidth=0)

    for i, (name, runs) in enumerate(histories.items()):
        colour = f"C{i}"
        curve(ax_loss, runs, "loss", "o-", colour, name)
        curve(ax_acc, runs, "accuracy", "o-", colour, name)
        if with_test and runs[0] and "test_accuracy_normal" in runs[0][0]:
            curve(axes[2], runs, "test_accuracy_normal", "o-", colour)
            curve(axes[2], runs, "test_accuracy_scaled", "s--", colour)
    ax_loss.set(xlabel="epoch of the stage", ylabel="training loss")
    ax_acc.set(xlabel="epoch of the stage", ylabel="training accuracy")
    ax_acc.legend(fontsize=8)
    if with_test:
        axes[2].set(xlabel="epoch of the stage", ylabel="test accuracy")
        axes[2].legend(handles=[Line2D([], [], ls="-", marker="o", color="gray", label="normal digits"),
                                Line2D([], [], ls="--", marker="s", color="gray", label="scaled digits")],
                       fontsize=8)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    seeds = list(seeds) if seeds is not None else []
    if len(seeds) > 1:
        which = (f"mean of seeds {', '.join(map(str, seeds))} (band: lowest to highest seed)")
    else:
        which = f"seed {seeds[0]}" if seeds else "one seed"
    fig.suptitle("Training (cnn on normal digits; the others fine-tuned on scaled + normal), "
                 f"and accuracy on a fixed set of test digits after each epoch; {which}",
                 fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
