"""Random problems for the RoI pooling ops (tests/ and tests/cuda/), and where they sample.

The sample points come from the loop reference (dcn_ref.reference_roi), so a test can
check that no point sits near a kink before it compares gradients with finite
differences.
"""
import numpy as np

from dcn_ref import reference_roi


def random_rois(rng, K, N, H, W, spatial_scale, min_size=0.5):
    """(K, 5) rows (batch, x1, y1, x2, y2) in input pixels before spatial_scale: boxes of
    at least ``min_size`` pixels (after scaling) that may stick out of the image."""
    size = rng.uniform(min_size, 1.2 * max(H, W), (K, 2))          # (w, h), scaled pixels
    x1 = rng.uniform(-2.0, W - 0.5, K)
    y1 = rng.uniform(-2.0, H - 0.5, K)
    boxes = np.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], axis=1) / spatial_scale
    return np.concatenate([rng.integers(0, N, (K, 1)).astype(np.float64), boxes], axis=1)


def roi_case(rng, *, N=2, C=3, H=6, W=7, K=4, output_size=(2, 3), spatial_scale=1.0,
             sampling_ratio=2, gamma=0.1, offset=True, mask=True, dtype=np.float64):
    """A deform_roi_pool problem: (inputs, params) dicts, keyword names of the op."""
    ph, pw = output_size
    inputs = {
        "input": rng.standard_normal((N, C, H, W)),
        "rois": random_rois(rng, K, N, H, W, spatial_scale),
        "offset": rng.uniform(-1.5, 1.5, (K, 2, ph, pw)) if offset else None,
        "mask": rng.uniform(0.2, 1.0, (K, 1, ph, pw)) if mask else None,
    }
    inputs = {k: None if v is None else v.astype(dtype) for k, v in inputs.items()}
    params = {"output_size": output_size, "spatial_scale": spatial_scale,
              "sampling_ratio": sampling_ratio, "gamma": gamma}
    return inputs, params


def psroi_case(rng, *, N=2, output_dim=2, group_size=2, pooled_size=3, part_size=0,
               sample_per_part=2, num_classes=1, trans=True, H=6, W=7, K=3, spatial_scale=1.0,
               trans_std=0.1, dtype=np.float64):
    """A deform_psroi_pool problem: (inputs, params) dicts, keyword names of the op."""
    parts = part_size or pooled_size
    inputs = {
        "input": rng.standard_normal((N, output_dim * group_size ** 2, H, W)),
        "rois": random_rois(rng, K, N, H, W, spatial_scale, min_size=1.0),
        "trans": rng.uniform(-2.0, 2.0, (K, 2 * num_classes, parts, parts)) if trans else None,
    }
    inputs = {k: None if v is None else v.astype(dtype) for k, v in inputs.items()}
    params = {"spatial_scale": spatial_scale, "output_dim": output_dim, "group_size": group_size,
              "pooled_size": pooled_size, "part_size": part_size,
              "sample_per_part": sample_per_part, "trans_std": trans_std}
    return inputs, params


def roi_sample_points(inputs, params):
    """(S, 2) array of the (y, x) sample points of every bin of a deform_roi_pool case."""
    samples = reference_roi._roi_align_samples(
        inputs["rois"], inputs["offset"], inputs["mask"], params["output_size"],
        params["spatial_scale"], params["sampling_ratio"], params["gamma"])
    return np.array([(y, x) for _, _, _, _, y, x, _, _, _, _ in samples]).reshape(-1, 2)


def psroi_sample_points(inputs, params):
    """(S, 2) array of the (y, x) sample points of every bin of a deform_psroi_pool case."""
    bins = reference_roi._psroi_bins(
        inputs["input"], inputs["rois"], inputs["trans"], params["spatial_scale"],
        params["output_dim"], params["group_size"], params["pooled_size"], params["part_size"],
        params["sample_per_part"], params["trans_std"])
    return np.array([p for b in bins for p in b[6]]).reshape(-1, 2)


def distance_to(points, kinks, window=None):
    """The smallest distance of any coordinate to any value in ``kinks`` (per axis: kinks[0]
    for y, kinks[1] for x) or to an integer. With ``window`` ((y_lo, y_hi), (x_lo, x_hi)),
    points that lie more than 0.01 outside it in either axis (samples that are skipped
    whatever small step a finite difference takes) are left out."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if window is not None:
        (y_lo, y_hi), (x_lo, x_hi) = window
        y, x = points[:, 0], points[:, 1]
        points = points[(y > y_lo - 0.01) & (y < y_hi + 0.01) & (x > x_lo - 0.01) & (x < x_hi + 0.01)]
    if points.size == 0:
        return np.inf
    to_integer = np.abs(points - np.round(points)).min()
    to_listed = min(np.abs(points[:, a, None] - np.asarray(kinks[a])[None, :]).min(initial=np.inf)
                    for a in range(2))
    return min(to_integer, to_listed)
