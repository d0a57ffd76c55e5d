"""The paper's RoI layers: deformable RoI pooling and deformable PS-RoI pooling, each with
its offset predictor.

Unlike the other layers these take two inputs, ``forward(x, rois)``: feature maps and the
boxes to pool (rows (batch_index, x1, y1, x2, y2), cast to the layer's dtype). The rois
get no gradient: ``backward(grad)`` returns dL/dx only. Offset predictors start at zero
(as in the paper, mmcv and MXNet), so a fresh layer pools without offsets.
"""
import numpy as np
from scipy.special import expit as sigmoid

from .. import ops
from ..ops._rois import finite_real, int_in
from ._args import float_dtype, pair, positive_float, positive_int
from .layer import Layer


def _rois_like(rois, dtype):
    if not isinstance(rois, np.ndarray):
        raise ValueError(f"rois: expected an ndarray of shape (K, 5), got {type(rois).__name__}")
    return rois.astype(dtype, copy=False)


class DeformRoIPool(Layer):
    """Deformable RoI pooling (Dai et al. 2017, section 2.2): mmcv's DeformRoIPoolPack, with
    ``modulated`` its ModulatedDeformRoIPoolPack.

    Parameters
    ----------
    channels : int
        C.
    output_size : int or (ph, pw)
    spatial_scale : float
        As in ``dcn_ref.ops.deform_roi_pool``.
    sampling_ratio : int
        As in ``dcn_ref.ops.deform_roi_pool``.
    gamma : float
        As in ``dcn_ref.ops.deform_roi_pool``.
    modulated : bool
        Also predict a mask ``(K, 1, ph, pw) = sigmoid(fc(pooled))``.
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (N, C, H, W), rois (K, 5) -> out (K, C, ph, pw)::

        pooled = deform_roi_pool(x, rois)                             # (K, C, ph, pw), no offsets
        offset = fc(pooled.reshape(K, C*ph*pw)).reshape(K, 2, ph, pw)   # normalised, x first
        mask = sigmoid(fc_mask(pooled ...)).reshape(K, 1, ph, pw)      # with modulated
        out = deform_roi_pool(x, rois, offset, gamma=gamma, mask=mask)

    fc has weight ``(2*ph*pw, C*ph*pw)`` and bias ``(2*ph*pw,)``, both zero at the start
    (mask 0.5).
    mmcv puts a three-layer MLP (hidden width 1024) where the paper and this layer have one
    fully connected layer. dL/dx sums two paths: the deformable pooling itself, and the
    plain pooling that feeds the offsets (and the mask).
    """

    def __init__(self, channels, output_size=7, spatial_scale=1.0, sampling_ratio=0, gamma=0.1,
                 modulated=False, *, dtype=np.float32, name="deform_roi_pool"):
        super().__init__(name)
        self.channels = positive_int(channels, "channels")
        self.output_size = pair(output_size, "output_size", 1)
        self.spatial_scale = positive_float(spatial_scale, "spatial_scale")
        self.sampling_ratio = int_in(sampling_ratio, "sampling_ratio", 0, 1024)
        self.gamma = finite_real(gamma, "gamma")
        self.modulated = bool(modulated)
        dtype = float_dtype(dtype)
        bins = self.output_size[0] * self.output_size[1]
        features = self.channels * bins
        self.add_param("offset_weight", np.zeros((2 * bins, features), dtype))
        self.add_param("offset_bias", np.zeros(2 * bins, dtype))
        if self.modulated:
            self.add_param("mask_weight", np.zeros((bins, features), dtype))
            self.add_param("mask_bias", np.zeros(bins, dtype))

    def _pool_args(self):
        return {"output_size": self.output_size, "spatial_scale": self.spatial_scale,
                "sampling_ratio": self.sampling_ratio, "gamma": self.gamma}

    def forward(self, x, rois):
        """x (N, C, H, W), rois (K, 5) -> (K, C, ph, pw)."""
        self._check_input(x, "(N, C, H, W)", self.channels)
        rois = _rois_like(rois, x.dtype)
        p, pool = self.params, self._pool_args()
        K, (ph, pw) = rois.shape[0], self.output_size
        pooled = ops.deform_roi_pool(x, rois, None, **pool).reshape(K, -1)   # (K, C*ph*pw)
        offset = (pooled @ p["offset_weight"].T + p["offset_bias"]).reshape(K, 2, ph, pw)
        mask = None
        if self.modulated:
            mask = sigmoid(pooled @ p["mask_weight"].T + p["mask_bias"]).reshape(K, 1, ph, pw)
        out = ops.deform_roi_pool(x, rois, offset, **pool, mask=mask)
        return self._save(out, x, rois, pooled, offset, mask)

    def backward(self, grad):
        """grad (K, C, ph, pw) -> dL/dx (N, C, H, W); dL/dparams to grads."""
        x, rois, pooled, offset, mask = self._saved(grad)
        p, pool = self.params, self._pool_args()
        K = rois.shape[0]
        g = ops.deform_roi_pool_backward(grad, x, rois, offset, **pool, mask=mask)
        g_offset = g.offset.reshape(K, -1)                            # (K, 2*ph*pw)
        grads = {"offset_weight": g_offset.T @ pooled, "offset_bias": g_offset.sum(axis=0)}
        g_pooled = g_offset @ p["offset_weight"]                       # (K, C*ph*pw)
        if self.modulated:
            # mask = sigmoid(z)  =>  dmask/dz = mask * (1 - mask)
            g_z = (g.mask * mask * (1 - mask)).reshape(K, -1)          # (K, ph*pw)
            grads.update(mask_weight=g_z.T @ pooled, mask_bias=g_z.sum(axis=0))
            g_pooled += g_z @ p["mask_weight"]
        self._store_grads(**grads)
        plain = ops.deform_roi_pool_backward(g_pooled.reshape(grad.shape), x, rois, None, **pool)
        return g.input + plain.input


class DeformPSRoIPool(Layer):
    """The R-FCN head with deformable position-sensitive RoI pooling (Dai et al. 2017,
    section 2.2), as in Deformable-ConvNets' R-FCN: score maps and offset maps are 1x1
    convolutions of the features; the offset maps are pooled position-sensitively (without
    offsets) into the normalised offsets of the score maps' pooling.

    Parameters
    ----------
    in_channels : int
        C_in.
    output_dim : int
        The output channels (the classes in R-FCN).
    group_size : int
        G: the score maps have ``output_dim*G*G`` channels.
    pooled_size : int
        P.
    part_size : int
        The offset grid (0: pooled_size); the offset maps have ``2*output_dim*part_size**2``
        channels.
    sample_per_part : int
        As in ``dcn_ref.ops.deform_psroi_pool``.
    trans_std : float
        As in ``dcn_ref.ops.deform_psroi_pool``.
    spatial_scale : float
        As in ``dcn_ref.ops.deform_psroi_pool``.
    rng : numpy Generator, int or None
        For the score weight, ``N(0, 0.01^2)``.
    dtype : numpy dtype
        float32 or float64.
    name : str

    Notes
    -----
    x (N, C_in, H, W), rois (K, 5) -> out (K, output_dim, P, P)::

        score = conv2d(x, score_weight, score_bias)                   # (N, output_dim*G*G, H, W)
        offset_maps = conv2d(x, offset_weight, offset_bias)           # (N, 2*output_dim*S*S, H, W)
        trans = deform_psroi_pool(offset_maps, rois, output_dim=2*output_dim, group_size=S,
                                  pooled_size=S, no_trans=True)       # (K, 2*output_dim, S, S)
        out = deform_psroi_pool(score, rois, trans, output_dim=output_dim, group_size=G,
                                pooled_size=P, part_size=S, trans_std=trans_std)

    with S = part_size; offset weights start at zero. Output channel c has its own offsets
    (num_classes = output_dim in the op's terms).
    """

    def __init__(self, in_channels, output_dim, group_size=7, pooled_size=7, part_size=0,
                 sample_per_part=4, trans_std=0.1, spatial_scale=1.0, *, rng=None,
                 dtype=np.float32, name="deform_psroi_pool"):
        super().__init__(name)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.output_dim = positive_int(output_dim, "output_dim")
        self.group_size = positive_int(group_size, "group_size")
        self.pooled_size = positive_int(pooled_size, "pooled_size")
        self.part_size = int_in(part_size, "part_size", 0, 2 ** 15) or self.pooled_size
        self.sample_per_part = int_in(sample_per_part, "sample_per_part", 1, 1024)
        self.trans_std = finite_real(trans_std, "trans_std")
        self.spatial_scale = positive_float(spatial_scale, "spatial_scale")
        dtype = float_dtype(dtype)
        rng = np.random.default_rng(rng)
        n_score = self.output_dim * self.group_size ** 2
        n_offset = 2 * self.output_dim * self.part_size ** 2
        self.add_param("score_weight", (rng.standard_normal((n_score, self.in_channels, 1, 1))
                                        * 0.01).astype(dtype))
        self.add_param("score_bias", np.zeros(n_score, dtype))
        self.add_param("offset_weight", np.zeros((n_offset, self.in_channels, 1, 1), dtype))
        self.add_param("offset_bias", np.zeros(n_offset, dtype))

    def _offset_pool_args(self):
        S = self.part_size
        return {"spatial_scale": self.spatial_scale, "output_dim": 2 * self.output_dim,
                "group_size": S, "pooled_size": S, "sample_per_part": self.sample_per_part}

    def _score_pool_args(self):
        return {"spatial_scale": self.spatial_scale, "output_dim": self.output_dim,
                "group_size": self.group_size, "pooled_size": self.pooled_size,
                "part_size": self.part_size, "sample_per_part": self.sample_per_part,
                "trans_std": self.trans_std}

    def forward(self, x, rois):
        """x (N, C_in, H, W), rois (K, 5) -> (K, output_dim, P, P)."""
        self._check_input(x, "(N, C_in, H, W)", self.in_channels)
        rois = _rois_like(rois, x.dtype)
        p = self.params
        score = ops.conv2d(x, p["score_weight"], p["score_bias"])
        offset_maps = ops.conv2d(x, p["offset_weight"], p["offset_bias"])
        trans = ops.deform_psroi_pool(offset_maps, rois, None, **self._offset_pool_args())
        out = ops.deform_psroi_pool(score, rois, trans, **self._score_pool_args())
        return self._save(out, x, rois, score, offset_maps, trans)

    def backward(self, grad):
        """grad (K, output_dim, P, P) -> dL/dx (N, C_in, H, W); dL/dparams to grads."""
        x, rois, score, offset_maps, trans = self._saved(grad)
        p = self.params
        g = ops.deform_psroi_pool_backward(grad, score, rois, trans, **self._score_pool_args())
        g_maps = ops.deform_psroi_pool_backward(g.trans, offset_maps, rois, None,
                                                **self._offset_pool_args()).input
        s = ops.conv2d_backward(g.input, x, p["score_weight"], p["score_bias"])
        o = ops.conv2d_backward(g_maps, x, p["offset_weight"], p["offset_bias"])
        self._store_grads(score_weight=s.weight, score_bias=s.bias, offset_weight=o.weight,
                          offset_bias=o.bias)
        return s.input + o.input
