"""The catalogue of contract cases that ``dcn-ref conformance`` runs: small deformable
convolutions, each built to put its sample points where one rule of the contract decides
the numbers (see docs/conventions/borders-and-kinks.md and non-finite.md).

A case is a ``Case`` (its geometry and how its sample points are placed); ``arrays(case,
dtype)`` builds its inputs, the same numbers every time. The sample points are placed
first and the offsets computed from them (offset = sample point - grid point), so that a
case about the band (-1, 0) has every sample there.
"""
from typing import NamedTuple

import numpy as np

#: Where the taps of a case read: random offsets, or points drawn in a band on one axis.
PLACEMENTS = ("random", "y in (-1, 0)", "y in (H-1, H)", "x in (-1, 0)", "x in (W-1, W)",
              "integers", "far outside", "nan offset", "inf offset")


class Case(NamedTuple):
    """One contract case: a deformable convolution and where its taps read."""
    name: str
    placement: str = "random"
    batch: int = 2
    in_channels: int = 4
    out_channels: int = 3
    height: int = 5
    width: int = 6
    kernel_size: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: tuple = (1, 1)
    dilation: tuple = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    mask: str = ""            # "": no mask; "random": raw multipliers in (-0.5, 1.5); "nan"
    bias: bool = True
    nonfinite: bool = False   # opt-in: the rules for NaN and inf differ between libraries

    @property
    def out_size(self):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel_size, self.stride, self.padding,
                                                  self.dilation)
        return ((self.height + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                (self.width + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


CATALOGUE = (
    Case("random offsets"),
    Case("border band y in (-1, 0)", "y in (-1, 0)"),
    Case("border band y in (H-1, H)", "y in (H-1, H)"),
    Case("border band x in (-1, 0)", "x in (-1, 0)"),
    Case("border band x in (W-1, W)", "x in (W-1, W)"),
    Case("integer coordinates (kinks)", "integers"),
    Case("far outside", "far outside"),
    Case("groups", in_channels=4, out_channels=4, groups=2),
    Case("offset groups", offset_groups=2),
    Case("rectangular kernel", kernel_size=(2, 3), padding=(0, 1)),
    Case("stride", stride=(2, 1)),
    Case("dilation", dilation=(2, 1), padding=(2, 1)),
    Case("mask", mask="random"),
    Case("mask, groups, offset groups, stride", in_channels=4, out_channels=6, groups=2,
         offset_groups=4, stride=(2, 2), mask="random", bias=False),
    Case("empty batch", batch=0, mask="random"),
    Case("NaN offset", "nan offset", nonfinite=True),
    Case("inf offset", "inf offset", nonfinite=True),
    Case("NaN mask", mask="nan", nonfinite=True),
)


def catalogue(nonfinite=False):
    """The cases, with the NaN and inf ones when ``nonfinite``."""
    return [c for c in CATALOGUE if nonfinite or not c.nonfinite]


class Arrays(NamedTuple):
    """The inputs of a case, as torchvision's deform_conv2d takes them (NumPy arrays)."""
    input: np.ndarray
    offset: np.ndarray
    weight: np.ndarray
    bias: object
    mask: object
    stride: tuple
    padding: tuple
    dilation: tuple


def grid_points(case):
    """(gy, gx), each (K, H_out, W_out): where each tap of each output pixel reads at zero
    offset (K = kh*kw, tap k = i*kw + j)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (case.kernel_size, case.stride, case.padding,
                                              case.dilation)
    out_h, out_w = case.out_size
    i, j = np.divmod(np.arange(kh * kw), kw)
    gy = np.arange(out_h)[None, :, None] * sh - ph + i[:, None, None] * dh
    gx = np.arange(out_w)[None, None, :] * sw - pw + j[:, None, None] * dw
    shape = (kh * kw, out_h, out_w)
    return np.broadcast_to(gy, shape), np.broadcast_to(gx, shape)


def _sample_points(case, rng, shape):
    """(y, x) sample points of the case's placement, each of ``shape``."""
    H, W = case.height, case.width
    inside_y, inside_x = rng.uniform(0, H - 1, shape), rng.uniform(0, W - 1, shape)
    band = rng.uniform(0.05, 0.95, shape)
    if case.placement == "y in (-1, 0)":
        return -band, inside_x
    if case.placement == "y in (H-1, H)":
        return H - 1 + band, inside_x
    if case.placement == "x in (-1, 0)":
        return inside_y, -band
    if case.placement == "x in (W-1, W)":
        return inside_y, W - 1 + band
    if case.placement == "integers":        # kinks, the last rows and columns and -1, H, W
        return (rng.integers(-1, H + 1, shape).astype(float),
                rng.integers(-1, W + 1, shape).astype(float))
    if case.placement == "far outside":     # beyond every border, up to huge finite values
        side = rng.choice([-1.0, 1.0], shape)
        far = 10.0 ** rng.uniform(0.5, 30, shape)
        return H / 2 + side * (H + far), inside_x + rng.choice([0.0, 1.0], shape) * far
    raise ValueError(f"placement: expected one of {PLACEMENTS}, got {case.placement!r}")


def arrays(case, dtype):
    """The inputs of ``case`` in ``dtype`` (float32 or float64); the same numbers each call."""
    rng = np.random.default_rng(sum(map(ord, case.name)))
    N, C, H, W = case.batch, case.in_channels, case.height, case.width
    (kh, kw), G = case.kernel_size, case.offset_groups
    K, (out_h, out_w) = kh * kw, case.out_size
    input = rng.normal(size=(N, C, H, W))
    weight = rng.normal(size=(case.out_channels, C // case.groups, kh, kw)) / np.sqrt(C * K)
    bias = rng.normal(size=case.out_channels) if case.bias else None
    if case.placement in ("random", "nan offset", "inf offset"):
        offset = rng.normal(scale=1.5, size=(N, G, K, 2, out_h, out_w))
    else:
        gy, gx = grid_points(case)
        y, x = _sample_points(case, rng, (N, G, K, out_h, out_w))
        offset = np.stack([y - gy, x - gx], axis=3)                  # (N, G, K, 2, out_h, out_w)
    if case.placement in ("nan offset", "inf offset"):
        bad = rng.random(offset.shape) < 0.05
        offset[bad] = np.nan if case.placement == "nan offset" else rng.choice([-np.inf, np.inf],
                                                                              bad.sum())
    mask = None
    if case.mask:
        mask = rng.uniform(-0.5, 1.5, size=(N, G * K, out_h, out_w))
        if case.mask == "nan":
            mask[rng.random(mask.shape) < 0.05] = np.nan
    cast = (lambda a: None if a is None else np.ascontiguousarray(a, dtype))
    return Arrays(cast(input), cast(offset.reshape(N, 2 * G * K, out_h, out_w)), cast(weight),
                  cast(bias), cast(mask), case.stride, case.padding, case.dilation)
