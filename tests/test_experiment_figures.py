"""The sampling figure's points, checked by hand: with constant offsets every level moves
a point by that offset, scaled by the strides of the levels below it."""
import os
import subprocess
import sys

import numpy as np

from dcn_ref import models
from dcn_ref.experiment.figures import digit_unit, figure_units, sampling_figure, sampling_points


def test_zero_offsets_give_the_regular_receptive_field():
    model = models.deform_cnn("offset", dtype=np.float64)
    for name in ("conv12_offset", "conv21_offset", "conv22_offset"):
        model[name].params["weight"][...] = 0.0
    image = np.random.default_rng(0).random((28, 28))
    points, regular = sampling_points(model, image, (3, 3))
    assert points.shape == regular.shape == (729, 2)
    np.testing.assert_array_equal(points, regular)
    # by hand: conv22's unit 3 reads rows 3*2-1+{0,1,2} = 5..7 of its input, conv21 (stride 1)
    # reads 4..8 of its own, and conv12 (stride 2) reads 4*2-1 = 7 to 8*2-1+2 = 17
    assert regular.min() == 7 and regular.max() == 17


def test_constant_offsets_with_several_groups_move_every_point_by_the_group_mean():
    model = models.deform_cnn("dcn", offset_groups=4, dtype=np.float64)
    rng = np.random.default_rng(1)
    shifts = rng.uniform(-0.4, 0.4, size=(4, 2))               # (dy, dx) per offset group
    for name in ("conv12", "conv21", "conv22"):
        layer = model[name]
        layer.params["offset_weight"][...] = 0.0
        # channel 2*(g*9 + k) is dy of tap k in group g, the next one its dx
        layer.params["offset_bias"][...] = np.repeat(shifts[:, None, :], 9, axis=1).ravel()
    image = rng.random((28, 28))
    points, regular = sampling_points(model, image, (3, 3))
    # each offset is scaled by the strides below its level: conv22's by 1*2 (conv21, conv12),
    # conv21's by 2 (conv12), conv12's by 1
    expected = regular + 5 * shifts.mean(axis=0)
    np.testing.assert_allclose(points, expected, atol=1e-12)


def test_no_module_switches_the_matplotlib_backend():
    # in a fresh process: importing the library's figure modules leaves the backend
    # unresolved (matplotlib picks it, e.g. inline in a notebook) and the experiment's
    # figures do not even import pyplot
    code = ("import sys, matplotlib\n"
            "import dcn_ref.experiment, dcn_ref.experiment.figures\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
            "import dcn_ref.plotting\n"
            "assert matplotlib.rcParams._get_backend_or_none() is None, "
            "matplotlib.rcParams._get_backend_or_none()\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr


def test_the_sampling_figure_draws_a_few_units_with_their_regular_grid(tmp_path):
    model = models.deform_cnn("dcn", offset_groups=4)
    images = np.zeros((2, 28, 28), np.uint8)
    images[:, 4:24, 4:24] = 255                            # centre of mass (13.5, 13.5): unit (3, 3)
    assert digit_unit(images[0]) == (3, 3)
    # the quarter points of the box 4..23: 4 + 19/4 = 8.75 -> unit 2, 4 + 57/4 = 18.25 -> unit 5
    assert figure_units(images[0]) == [(3, 3), (2, 2), (5, 5)]
    small = np.zeros((28, 28), np.uint8)
    small[13:15, 13:15] = 255                              # a small digit: one unit covers it
    assert figure_units(small) == [(3, 3)]
    fig = sampling_figure(tmp_path / "s.png", model, images, "title", units=3)
    assert (tmp_path / "s.png").stat().st_size > 1000
    ax = fig.axes[0]
    # per unit: the 729 sampled points, then the regular grid: an interior unit's 27 x 27
    # taps cover 11 x 11 distinct pixels (rows 4u-5 .. 4u+5)
    sizes = [len(c.get_offsets()) for c in ax.collections]
    assert sizes == [729, 121] * 3


def test_the_training_curves_of_several_seeds_are_their_mean_with_a_band_and_say_so():
    from matplotlib.collections import PolyCollection
    from dcn_ref.experiment.figures import training_curves

    def history(losses):
        return [{"epoch": i + 1, "loss": v, "accuracy": 1 - v, "test_accuracy_normal": 0.9,
                 "test_accuracy_scaled": 0.5 + v} for i, v in enumerate(losses)]

    fig = training_curves(None, {"cnn": [history([2.0, 1.0]), history([1.0, 0.5])]}, [0, 1])
    assert "mean of seeds 0, 1 (band: lowest to highest seed)" in fig._suptitle.get_text()
    loss_axes = fig.axes[0]
    np.testing.assert_allclose(loss_axes.lines[0].get_ydata(), [1.5, 0.75])   # by hand
    band = [c for c in loss_axes.collections if isinstance(c, PolyCollection)]
    assert len(band) == 1
    ys = band[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == 0.5 and ys.max() == 2.0                 # lowest and highest seed
    one = training_curves(None, {"cnn": [history([2.0, 1.0])]}, [7])
    assert one._suptitle.get_text().endswith("; seed 7")
    assert not [c for c in one.axes[0].collections if isinstance(c, PolyCollection)]
