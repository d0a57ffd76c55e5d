"""The deform_dcnv3 arm: the cnn with InternImage's DCNv3 block in front of conv21 and conv22,
every layer fine-tuned. A tiny run: 32 training digits, one epoch of three steps."""
import json

import numpy as np
import pytest

from dcn_ref import models
from dcn_ref.data import scaled_test_set
from dcn_ref.experiment import ARMS, DEFAULT_ARMS, Config, _load_data, _subset, run
from dcn_ref.experiment.figures import has_sampling_points
from dcn_ref.experiment.stages import _build, as_batch, offset_params, select
from dcn_ref.nn import Sequential
from dcn_ref.train import evaluate


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
        numeric[i] = np.sum(w * (block.forward(plus) - block.forward(minus))) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="b: input: expected 16 channels"):
        block.forward(x.transpose(0, 2, 3, 1))


def test_the_arm_trains_every_parameter_and_exports_a_loadable_model(tmp_path):
    config = Config(train_limit=32, test_limit=32, cnn_epochs=1, finetune_epochs=1,
                    batch_size=16, curve_test_limit=16)
    arm = ARMS["deform_dcnv3"]
    model, optimizer = _build(arm, config, models.cnn().state_dict())
    offsets = offset_params(model)
    assert {k.partition(".")[0] for k in offsets} == {"conv21_dcnv3", "conv22_dcnv3"}
    for key in offsets:                                       # offsets at deform_dcn's rate
        assert optimizer.lr * optimizer.lr_scale[key] == pytest.approx(config.dcn_lr)
    results = run(config, tmp_path, log=lambda *a: None, progress=False,
                  models=["deform_dcnv3"])
    assert [r["name"] for r in results] == ["cnn", "deform_dcnv3"]
    history = json.loads((tmp_path / "results.json").read_text())["history"]
    assert np.isfinite(history["deform_dcnv3-seed0"][0]["loss"])
    assert not list(tmp_path.glob("sampling_*.png"))         # the figure is for deform_cnn
    # where the stage started: the exported cnn, loaded as the stage loads it
    cnn = models.cnn()
    cnn.load(tmp_path / "models" / "cnn-seed0.npz")
    before, _ = _build(arm, config, cnn.state_dict())
    assert {n for n, _, _ in before.trainable_parameters()} == set(before.params)
    trained = models.dcnv3_cnn(seed=5)                        # other initial weights
    assert isinstance(trained, Sequential)
    trained.load(tmp_path / results[1]["model_file"])        # strict: every key, no other
    # 3 steps of 16 (32 scaled + 16 unscaled digits): every parameter has moved; the
    # blocks' inner parameters get gradients from the second step on, once the output
    # projection is no longer zero
    unmoved = [k for k, v in trained.params.items() if np.array_equal(v, before.params[k])]
    assert unmoved == []
    # the exported model, read back, gives the test accuracies the run measured
    mnist = _load_data(None)
    images, labels = _subset(mnist.test_images, mnist.test_labels, config.test_limit)
    assert evaluate(trained, as_batch(images), labels) == results[1]["test_accuracy_normal"]
    scaled = as_batch(scaled_test_set(images)[0])
    assert evaluate(trained, scaled, labels) == results[1]["test_accuracy_scaled"]
