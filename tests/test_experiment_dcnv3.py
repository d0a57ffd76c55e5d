"""The deform_dcnv3 arm: the cnn with InternImage's DCNv3 block in front of conv21 and conv22,
every layer fine-tuned. Tiny synthetic data, one epoch of a few steps."""
import numpy as np
import pytest

from dcn_ref import models
from dcn_ref.experiment import ARMS, DEFAULT_ARMS, Config, _export
from dcn_ref.experiment.figures import has_sampling_points
from dcn_ref.experiment.stages import _build, offset_params, run_stage, select
from dcn_ref.nn import Sequential


def test_the_arm_is_selectable_but_not_in_the_default_run():
    assert "deform_dcnv3" not in DEFAULT_ARMS
    assert [a.name for a in select(["deform_dcnv3"])] == ["cnn", "deform_dcnv3"]
    assert "deform_dcnv3" in [a.name for a in select(["all"])]


def test_the_model_starts_as_the_trained_cnn_with_the_blocks_parameters_counted_by_hand():
    rng = np.random.default_rng(1)
    cnn = models.cnn(seed=3)
    for key, value in cnn.params.items():                      # any "trained" weights
        layer, _, name = key.partition(".")
        cnn[layer].params[name][...] = rng.normal(0, 0.2, value.shape)
    model, _ = _build(ARMS["deform_dcnv3"], Config(), cnn.state_dict())
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(model.eval().forward(x), cnn.eval().forward(x), rtol=1e-6,
                               atol=1e-6)
    # per block of C channels, G = C/16 groups, 9 points: input and output projections
    # C*C + C each, depthwise 3x3 9C + C, layer norm 2C, offsets 2*9G*(C + 1), point weights
    # 9G*(C + 1)
    extra = sum(2 * (C * C + C) + 10 * C + 2 * C + 27 * (C // 16) * (C + 1) for C in (64, 128))
    assert model.num_params() == cnn.num_params() + extra
    assert not has_sampling_points(model)                     # no sampling figure for it


def test_the_residual_wrapper_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    block = models.ResidualDCNv3(16, 2, rng=0, dtype=np.float64, name="b")
    for key in ("output_proj_weight", "mask_weight", "offset_bias"):
        block.params[key][...] = rng.normal(0, 0.3, block.params[key].shape)
    x = rng.normal(size=(1, 16, 4, 3))
    w = rng.normal(size=x.shape)                              # loss = sum(w * out)
    block.forward(x)
    dx = block.backward(w)
    numeric = np.empty_like(x)
    eps = 1e-6
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric[i] = (np.sum(w * block.forward(plus)) - np.sum(w * block.forward(minus))) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="b: input: expected 16 channels"):
        block.forward(x.transpose(0, 2, 3, 1))


def test_the_arm_trains_every_parameter_and_exports_a_loadable_model(tmp_path):
    rng = np.random.default_rng(0)
    config = Config(batch_size=32, finetune_epochs=1)
    data = (rng.integers(0, 256, (48, 28, 28), dtype=np.uint8), rng.integers(0, 10, 48))
    arm = ARMS["deform_dcnv3"]
    start = models.cnn(seed=0).state_dict()
    before, optimizer = _build(arm, config, start)
    assert {n for n, _, _ in before.trainable_parameters()} == set(before.params)
    offsets = offset_params(before)
    assert {k.partition(".")[0] for k in offsets} == {"conv21_dcnv3", "conv22_dcnv3"}
    for key in offsets:                                       # offsets at deform_dcn's rate
        assert optimizer.lr * optimizer.lr_scale[key] == pytest.approx(config.dcn_lr)
    model, history = run_stage(arm, config, data, tmp_path, start_state=start,
                               log=lambda *a: None, progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    # 3 steps of 32 (48 scaled + 24 unscaled digits): every parameter has moved; the
    # blocks' inner parameters get gradients from the second step on, once the output
    # projection is no longer zero
    unmoved = [k for k, v in model.params.items() if np.array_equal(v, before.params[k])]
    assert unmoved == []
    path = tmp_path / "deform_dcnv3.npz"
    _export(path, model)                                      # what the run writes
    loaded = models.dcnv3_cnn(seed=5)                        # other initial weights
    assert isinstance(loaded, Sequential)
    loaded.load(path)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded.eval().forward(x), model.eval().forward(x))
