"""Every argument mistake of the RoI pooling ops, bad RoIs included, is a ValueError naming
the argument, what it got and what it expected: one case per message."""
import numpy as np
import pytest

from dcn_ref import ops

f64, f32 = np.float64, np.float32


def z(*shape, dtype=f64):
    return np.zeros(shape, dtype)


X = z(2, 3, 6, 7)                                       # input (N=2, C=3, H=6, W=7)
ROIS = np.array([[0, 1.0, 1.0, 4.0, 5.0], [1, 0.0, 0.5, 6.0, 2.0]])
OFF, MASK = z(2, 2, 2, 2), z(2, 1, 2, 2)               # output_size 2
PS = z(2, 8, 6, 7)                                      # output_dim 2, group_size 2
TRANS = z(2, 2, 2, 2)                                   # 1 class, part_size 2


def rois_with(row, value, column):
    rois = ROIS.copy()
    rois[row, column] = value
    return rois


def roi(**kw):
    return ops.deform_roi_pool(kw.pop("input", X), kw.pop("rois", ROIS), **{"output_size": 2, **kw})


def psroi(**kw):
    args = {"trans": TRANS, "output_dim": 2, "group_size": 2, "pooled_size": 2, **kw}
    return ops.deform_psroi_pool(args.pop("input", PS), args.pop("rois", ROIS), **args)


CASES = {
    # deform_roi_pool: arrays
    "input rank": (lambda: roi(input=z(3, 6, 7)), r"input: expected 4 dimensions \(N, C, H, W\), got shape \(3, 6, 7\)"),
    "input dtype": (lambda: roi(input=X.astype(int)), r"input: expected dtype float32 or float64, got int64"),
    "rois None": (lambda: roi(rois=None), r"rois: expected an array of shape \(K, 5\), got None"),
    "rois rank": (lambda: roi(rois=ROIS[0]), r"rois: expected 2 dimensions \(K, 5\), got shape \(5,\)"),
    "rois columns": (lambda: roi(rois=ROIS[:, 1:]), r"rois: expected shape \(K, 5\), rows \(batch_index, x1, y1, x2, y2\), got \(2, 4\)"),
    "rois dtype": (lambda: roi(rois=ROIS.astype(f32)), r"rois: expected dtype float64 \(the dtype of input\), got float32"),
    "rois NaN": (lambda: roi(rois=rois_with(1, np.nan, 3)), r"rois: expected finite coordinates \(also times spatial_scale = 1.0\), got row 1 = \[1.0, 0.0, 0.5, nan, 2.0\]"),
    "rois inf": (lambda: roi(rois=rois_with(0, -np.inf, 2)), r"rois: expected finite coordinates .* got row 0 = \[0.0, 1.0, -inf, 4.0, 5.0\]"),
    "rois overflow after scaling": (lambda: roi(rois=rois_with(0, 1e308, 3), spatial_scale=10.0), r"rois: expected finite coordinates \(also times spatial_scale = 10.0\), got row 0"),
    "rois batch index too large": (lambda: roi(rois=rois_with(1, 2.0, 0)), r"rois: expected batch indices \(column 0\) that are whole numbers in \[0, 2\) \(N = input.shape\[0\]\), got 2.0 in row 1"),
    "rois batch index negative": (lambda: roi(rois=rois_with(0, -1.0, 0)), r"rois: expected batch indices .* got -1.0 in row 0"),
    "rois batch index fraction": (lambda: roi(rois=rois_with(0, 0.5, 0)), r"rois: expected batch indices .* whole numbers .* got 0.5 in row 0"),
    "rois x2 < x1": (lambda: roi(rois=rois_with(0, 0.5, 3)), r"rois: expected x2 >= x1 and y2 >= y1 in every row \(batch_index, x1, y1, x2, y2\), got row 0 = \[0.0, 1.0, 1.0, 0.5, 5.0\]"),
    "rois y2 < y1": (lambda: roi(rois=rois_with(1, 0.25, 4)), r"rois: expected x2 >= x1 and y2 >= y1 .* got row 1 = \[1.0, 0.0, 0.5, 6.0, 0.25\]"),
    "rois adaptive grid too large": (lambda: roi(rois=rois_with(0, 1e7, 3)), r"rois: expected at most 1048576 samples a bin, got row 0 .* has 10000000; pass a positive sampling_ratio"),
    "offset rank": (lambda: roi(offset=z(2, 2, 4)), r"offset: expected 4 dimensions \(K, 2, ph, pw\), got shape \(2, 2, 4\)"),
    "offset shape": (lambda: roi(offset=z(2, 2, 2, 3)), r"offset: expected shape \(2, 2, 2, 2\) \(K, 2, ph, pw\): channel 0 = x-shift, 1 = y-shift, got \(2, 2, 2, 3\)"),
    "offset dtype": (lambda: roi(offset=OFF.astype(f32)), r"offset: expected dtype float64 \(the dtype of input\), got float32"),
    "mask shape": (lambda: roi(mask=z(2, 2, 2, 2)), r"mask: expected shape \(2, 1, 2, 2\) \(K, 1, ph, pw\), got \(2, 2, 2, 2\)"),
    "mask dtype": (lambda: roi(mask=MASK.astype(f32)), r"mask: expected dtype float64 \(the dtype of input\), got float32"),
    "roi grad_output shape": (lambda: ops.deform_roi_pool_backward(z(2, 3, 2, 3), X, ROIS, output_size=2), r"grad_output: expected shape \(2, 3, 2, 2\) \(K, C, ph, pw\), got \(2, 3, 2, 3\)"),
    "roi grad_output dtype": (lambda: ops.deform_roi_pool_backward(z(2, 3, 2, 2, dtype=f32), X, ROIS, output_size=2), r"grad_output: expected dtype float64 \(the dtype of input\), got float32"),
    # deform_roi_pool: scalars
    "output_size zero": (lambda: roi(output_size=(2, 0)), r"output_size: expected values >= 1, got \(2, 0\)"),
    "output_size float": (lambda: roi(output_size=2.0), r"output_size: expected an int or a pair of ints, got 2.0"),
    "spatial_scale zero": (lambda: roi(spatial_scale=0), r"spatial_scale: expected a finite positive number, got 0"),
    "spatial_scale NaN": (lambda: roi(spatial_scale=float("nan")), r"spatial_scale: expected a finite positive number, got nan"),
    "spatial_scale string": (lambda: roi(spatial_scale="1/16"), r"spatial_scale: expected a finite positive number, got '1/16'"),
    "sampling_ratio negative": (lambda: roi(sampling_ratio=-1), r"sampling_ratio: expected an int in \[0, 1024\], got -1"),
    "sampling_ratio float": (lambda: roi(sampling_ratio=2.0), r"sampling_ratio: expected an int in \[0, 1024\], got 2.0"),
    "sampling_ratio huge": (lambda: roi(sampling_ratio=4096), r"sampling_ratio: expected an int in \[0, 1024\], got 4096"),
    "gamma inf": (lambda: roi(gamma=float("inf")), r"gamma: expected a finite number, got inf"),
    "gamma bool": (lambda: roi(gamma=True), r"gamma: expected a finite number, got True"),
    "target": (lambda: roi(target="gpu"), r"target: expected 'cpu', 'cuda' or None, got 'gpu'"),
    # deform_psroi_pool
    "psroi channels not divisible": (lambda: psroi(input=z(2, 7, 6, 7), output_dim=None), r"input: expected C divisible by group_size\*\*2 = 4 \(C = output_dim \* group_size\*\*2\), got C = 7"),
    "psroi channels vs output_dim": (lambda: psroi(output_dim=3), r"input: expected C = output_dim \* group_size\*\*2 = 3 \* 4 = 12 channels, got 8"),
    "psroi output_dim zero": (lambda: psroi(output_dim=0), r"output_dim: expected an int in \[1, 2147483648\], got 0"),
    "psroi group_size zero": (lambda: psroi(group_size=0), r"group_size: expected an int in \[1, 32768\], got 0"),
    "psroi pooled_size float": (lambda: psroi(pooled_size=2.0), r"pooled_size: expected an int in \[1, 32768\], got 2.0"),
    "psroi part_size negative": (lambda: psroi(part_size=-1), r"part_size: expected an int in \[0, 32768\], got -1"),
    "psroi sample_per_part zero": (lambda: psroi(sample_per_part=0), r"sample_per_part: expected an int in \[1, 1024\], got 0"),
    "psroi trans_std NaN": (lambda: psroi(trans_std=float("nan")), r"trans_std: expected a finite number, got nan"),
    "psroi spatial_scale negative": (lambda: psroi(spatial_scale=-0.0625), r"spatial_scale: expected a finite positive number, got -0.0625"),
    "psroi no_trans with trans": (lambda: psroi(no_trans=True), r"trans: expected None with no_trans=True, got an array"),
    "psroi trans missing": (lambda: psroi(trans=None, no_trans=False), r"trans: expected an array \(K, 2\*num_classes, part_size, part_size\) with no_trans=False, got None \(pass no_trans=True to pool without offsets\)"),
    "psroi no_trans not a bool": (lambda: psroi(no_trans="yes"), r"no_trans: expected True, False or None, got 'yes'"),
    "psroi trans odd channels": (lambda: psroi(trans=z(2, 3, 2, 2)), r"trans: expected 2\*num_classes channels with num_classes dividing output_dim = 2, got 3"),
    "psroi trans classes": (lambda: psroi(trans=z(2, 6, 2, 2)), r"trans: expected 2\*num_classes channels with num_classes dividing output_dim = 2, got 6"),
    "psroi trans parts": (lambda: psroi(trans=z(2, 2, 3, 3)), r"trans: expected shape \(2, 2, 2, 2\) \(K, 2\*num_classes, part_size, part_size\), got \(2, 2, 3, 3\)"),
    "psroi trans rank": (lambda: psroi(trans=z(2, 2, 4)), r"trans: expected 4 dimensions \(K, 2\*num_classes, part_size, part_size\), got shape \(2, 2, 4\)"),
    "psroi trans dtype": (lambda: psroi(trans=TRANS.astype(f32)), r"trans: expected dtype float64 \(the dtype of input\), got float32"),
    "psroi rois batch index": (lambda: psroi(rois=rois_with(0, 5.0, 0)), r"rois: expected batch indices .* \[0, 2\) .* got 5.0 in row 0"),
    "psroi grad_output shape": (lambda: ops.deform_psroi_pool_backward(z(2, 2, 3, 3), PS, ROIS, TRANS, output_dim=2, group_size=2, pooled_size=2), r"grad_output: expected shape \(2, 2, 2, 2\) \(K, output_dim, pooled_size, pooled_size\), got \(2, 2, 3, 3\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error_message(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_the_valid_calls_above_run():
    # the cases differ from these calls in one argument each
    assert roi(offset=OFF, mask=MASK).shape == (2, 3, 2, 2)
    assert psroi().shape == (2, 2, 2, 2)
    assert psroi(trans=None).shape == (2, 2, 2, 2)
