"""The scale-and-shift transform against scipy.ndimage.affine_transform (same pixels, image by
image), hand-checked cases, the drawing of its parameters, reproducibility and bad arguments."""
import numpy as np
import pytest
from scipy import ndimage

from dcn_ref.data import (ScaleShift, draw_scale_shift, load_mnist, random_scale_shift,
                          scale_shift, scaled_epoch, scaled_test_set)


def _keras_matrix(zoom, shift, shape):
    """The 2x2 matrix and offset of the transform as Keras composes it (shift, then zoom, about
    the centre), here with the centre at ((H-1)/2, (W-1)/2); built from 3x3 homogeneous matrices."""
    centre = (np.array(shape) - 1) / 2
    to_centre = np.array([[1, 0, centre[0]], [0, 1, centre[1]], [0, 0, 1]])
    from_centre = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])
    shift_m = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
    zoom_m = np.diag([zoom[0], zoom[1], 1.0])
    m = to_centre @ shift_m @ zoom_m @ from_centre
    return m[:2, :2], m[:2, 2]


def _scipy(images, params):
    out = np.empty_like(images)
    for n, image in enumerate(images):
        matrix, offset = _keras_matrix(params.zoom[n], params.shift[n], image.shape)
        out[n] = ndimage.affine_transform(image, matrix, offset, order=0, mode="nearest")
    return out


def _assert_same_pixels(ours, reference):
    differ = np.argwhere(ours != reference)
    assert differ.size == 0, (f"{len(differ)} pixels differ, first at {tuple(differ[0])}: "
                              f"ours {ours[tuple(differ[0])]} vs scipy {reference[tuple(differ[0])]}")


@pytest.fixture(scope="module")
def digits():
    return load_mnist().test_images[:300]


@pytest.mark.parametrize("zoom_range, shift_range", [((1.0, 2.5), 0.2), ((0.4, 3.0), 0.6)],
                         ids=["experiment", "wide"])
def test_equals_scipy_affine_transform_on_real_digits(digits, zoom_range, shift_range):
    params = draw_scale_shift(np.random.default_rng(1), len(digits), (28, 28), zoom_range, shift_range)
    _assert_same_pixels(scale_shift(digits, params), _scipy(digits, params))


def test_equals_scipy_where_coordinates_fall_exactly_on_halves(digits):
    """Zooms and shifts on a grid of halves: all arithmetic is exact and many source points sit
    exactly between two pixels, where the rounding rule (halves go up) decides."""
    rng = np.random.default_rng(2)
    params = ScaleShift(rng.choice([0.5, 1.0, 1.5, 2.0, 2.5], (len(digits), 2)),
                        rng.integers(-12, 13, (len(digits), 2)) / 2)
    _assert_same_pixels(scale_shift(digits, params), _scipy(digits, params))


def test_equals_scipy_on_non_square_float_images():
    rng = np.random.default_rng(3)
    images = rng.standard_normal((20, 17, 31))
    params = draw_scale_shift(rng, 20, (17, 31), (0.5, 2.5), 0.4)
    _assert_same_pixels(scale_shift(images, params), _scipy(images, params))


def test_zoom_one_shift_zero_is_the_identity(digits):
    params = ScaleShift(np.ones((len(digits), 2)), np.zeros((len(digits), 2)))
    np.testing.assert_array_equal(scale_shift(digits, params), digits)


def test_an_integer_shift_moves_by_minus_shift_and_replicates_the_edge():
    image = np.arange(7 * 9).reshape(1, 7, 9)
    out = scale_shift(image, ScaleShift(np.ones((1, 2)), np.array([[3.0, -2.0]])))
    # by hand: output (i, j) copies input (i + 3, j - 2), clamped into the image
    expected = [[image[0, min(i + 3, 6), max(j - 2, 0)] for j in range(9)] for i in range(7)]
    np.testing.assert_array_equal(out[0], expected)


def _extent(mask):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (rows[0], rows[-1]), (cols[0], cols[-1])


def test_a_zoom_of_two_halves_the_extent_about_the_centre():
    square = np.zeros((1, 28, 28), np.uint8)
    square[0, 4:24, 4:24] = 255  # rows and columns 4..23: 20 pixels centred on 13.5
    out = scale_shift(square, ScaleShift(np.array([[2.0, 2.0]]), np.zeros((1, 2))))
    # by hand: output row i copies input row round(2 * (i - 13.5) + 13.5) = floor(2i - 13),
    # which lies in 4..23 for i = 9..18: 10 rows, centred on 13.5
    assert _extent(out[0] > 0) == ((9, 18), (9, 18))
    assert np.count_nonzero(out) == 100
    out = scale_shift(square, ScaleShift(np.array([[2.0, 1.0]]), np.zeros((1, 2))))
    assert _extent(out[0] > 0) == ((9, 18), (4, 23))


def test_shapes_and_dtypes_are_preserved_and_the_input_is_not_modified(digits):
    rng = np.random.default_rng(4)
    for dtype in (np.uint8, np.int16, np.float32, np.float64):
        images = digits[:10].astype(dtype)
        before = images.copy()
        out, params = random_scale_shift(images, rng)
        assert out.shape == images.shape and out.dtype == dtype
        assert params.zoom.shape == params.shift.shape == (10, 2)
        np.testing.assert_array_equal(images, before)
    out, params = random_scale_shift(np.zeros((0, 28, 28), np.uint8), rng)
    assert out.shape == (0, 28, 28) and params.zoom.shape == (0, 2)


def test_non_contiguous_input_gives_the_same_as_a_contiguous_copy(digits):
    view = digits[::2, :, ::-1]
    params = draw_scale_shift(np.random.default_rng(5), len(view))
    np.testing.assert_array_equal(scale_shift(view, params), scale_shift(np.ascontiguousarray(view), params))


def test_parameters_are_drawn_from_the_experiment_ranges():
    params = draw_scale_shift(np.random.default_rng(6), 5000)
    assert params.zoom.min() >= 1.0 and params.zoom.max() <= 2.5
    assert params.zoom.min() < 1.01 and params.zoom.max() > 2.49  # the whole range is used
    assert np.abs(params.shift).max() <= 0.2 * 28 and np.abs(params.shift).max() > 0.199 * 28
    assert abs(params.zoom.mean() - 1.75) < 0.02 and abs(params.shift.mean()) < 0.1
    # rows and columns have their own factors, and they are uncorrelated
    assert abs(np.corrcoef(params.zoom.T)[0, 1]) < 0.05


def test_the_same_seed_gives_the_same_images_and_another_seed_other_images(digits):
    a, pa = random_scale_shift(digits, np.random.default_rng(7))
    b, pb = random_scale_shift(digits, np.random.default_rng(7))
    c, pc = random_scale_shift(digits, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa.zoom, pb.zoom)
    assert not np.array_equal(a, c) and not np.array_equal(pa.zoom, pc.zoom)


def test_the_scaled_test_set_is_fixed_and_epochs_are_fresh_but_reproducible(digits):
    test_1, test_params = scaled_test_set(digits)
    test_2, _ = scaled_test_set(digits)
    np.testing.assert_array_equal(test_1, test_2)
    epoch_0, params_0 = scaled_epoch(digits, seed=0, epoch=0)
    epoch_0_again, _ = scaled_epoch(digits, seed=0, epoch=0)
    epoch_1, params_1 = scaled_epoch(digits, seed=0, epoch=1)
    np.testing.assert_array_equal(epoch_0, epoch_0_again)
    assert not np.array_equal(epoch_0, epoch_1)
    assert not np.isin(params_0.zoom, params_1.zoom).any()
    assert not np.isin(test_params.zoom, params_0.zoom).any()
    # what is returned is what was applied
    np.testing.assert_array_equal(scale_shift(digits, params_1), epoch_1)


@pytest.mark.parametrize("call, fragment", [
    (lambda d: scale_shift(d[0], ScaleShift(np.ones((1, 2)), np.zeros((1, 2)))),
     "images: expected 3 dimensions (N, H, W), got shape (28, 28)"),
    (lambda d: scale_shift(d[:5], ScaleShift(np.ones((4, 2)), np.zeros((4, 2)))),
     "params.zoom: expected shape (5, 2) for 5 images, got (4, 2)"),
    (lambda d: scale_shift(d[:1], ScaleShift(np.array([[np.nan, 1.0]]), np.zeros((1, 2)))),
     "params: expected zooms and shifts that give finite coordinates"),
    (lambda d: scale_shift(d[:1], np.ones(3)), "params: expected a ScaleShift(zoom, shift)"),
    (lambda d: random_scale_shift(d, np.random.RandomState(0)),
     "rng: expected a numpy.random.Generator, got RandomState"),
    (lambda d: random_scale_shift(d, np.random.default_rng(0), zoom_range=(2.0, 1.0)),
     "zoom_range: expected (low, high) with 0 < low <= high, got (2.0, 1.0)"),
    (lambda d: random_scale_shift(d, np.random.default_rng(0), zoom_range=3),
     "zoom_range: expected a pair of numbers (low, high), got 3"),
    (lambda d: random_scale_shift(d, np.random.default_rng(0), shift_range=-0.1),
     "shift_range: expected a finite number >= 0, got -0.1"),
    (lambda d: scaled_epoch(d, seed=0, epoch=-1), "epoch: expected a non-negative int, got -1"),
    (lambda d: scaled_test_set(d, seed=1.5), "seed: expected a non-negative int, got 1.5"),
], ids=["images-rank", "params-shape", "params-nan", "params-type", "rng", "zoom-order",
        "zoom-type", "shift-range", "epoch", "seed"])
def test_bad_arguments_raise_value_error_with_got_and_expected(digits, call, fragment):
    with pytest.raises(ValueError) as info:
        call(digits)
    assert fragment in str(info.value), str(info.value)
