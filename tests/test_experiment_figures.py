"""The sampling figure's points, checked by hand: with constant offsets every level moves
a point by that offset, scaled by the strides of the levels below it."""
import numpy as np

from dcn_ref import models
from dcn_ref.experiment.figures import sampling_points


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
