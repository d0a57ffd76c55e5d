"""The capacity-matched controls: their parameter counts (worked out from the layer shapes),
their start as exactly the trained cnn, their recipe, and the report's differences from
the controls; the whole-run progress line; the run's description of its data."""
import json

import numpy as np
import pytest

from dcn_ref import models
from dcn_ref.data import load_mnist
from dcn_ref.experiment import ARMS, DEFAULT_ARMS, Config, _describe_data, report, run
from dcn_ref.experiment.clock import BatchTimes, RunClock, Stage, duration
from dcn_ref.experiment.stages import CONTROLS, _build, select
from dcn_ref.nn import BatchNorm2D, Conv2D, Dense, SoftmaxCrossEntropy
from dcn_ref.optim import Adam
from dcn_ref.train import train_epoch
from idx_writer import idx_of

MATCHED = {"cnn_scaled_match_dcn": ("deform_dcn", "deform_dcn_all"),
           "cnn_scaled_match_offset": ("deform_offset", "deform_offset_all")}
TINY = Config(train_limit=32, test_limit=32, cnn_epochs=1, finetune_epochs=1, batch_size=16,
              curve_test_limit=16)


def count_from_shapes(model):
    """Parameters of a plain cnn from its layers' shapes: a 3x3 convolution C_in*C_out*9
    weights and C_out biases, a batch norm gamma and beta, a dense layer in*out + out."""
    total = 0
    for layer in model:
        if isinstance(layer, Conv2D):
            kh, kw = layer.kernel_size
            total += layer.in_channels * layer.out_channels * kh * kw + layer.out_channels
        elif isinstance(layer, BatchNorm2D):
            total += 2 * layer.channels
        elif isinstance(layer, Dense):
            total += layer.in_features * layer.out_features + layer.out_features
    return total


def deformable_count(kind, groups=Config().dcn_offset_groups):
    """The deformable models' counts by hand: the cnn's 242,250 plus, in front of conv12/21/22
    (inputs of C = 32, 64, 128 channels), ConvOffset2D's 3x3 convolution C -> 2C without bias,
    or DeformConv2D's offset convolution C -> 2*G*9 with bias."""
    if kind == "offset":
        return 242250 + sum(2 * C * C * 9 for C in (32, 64, 128))
    return 242250 + sum(2 * groups * 9 * (C * 9 + 1) for C in (32, 64, 128))


def trained_cnn(seed=3, dtype=np.float32):
    """A cnn with arbitrary "trained" weights and running statistics."""
    rng = np.random.default_rng(seed)
    cnn = models.cnn(seed=seed, dtype=dtype)
    for key, value in cnn.params.items():
        layer, _, name = key.partition(".")
        cnn[layer].params[name][...] = rng.normal(0, 0.2, value.shape)
    for layer in cnn:
        if isinstance(layer, BatchNorm2D):
            layer.state["running_mean"][...] = rng.normal(0, 0.5, layer.channels)
            layer.state["running_var"][...] = rng.uniform(0.5, 2, layer.channels)
    return cnn


@pytest.mark.parametrize("name", MATCHED)
def test_a_matched_control_has_its_arms_parameter_count_within_2_percent(name):
    model = ARMS[name].build(Config())
    counted = count_from_shapes(model)
    assert model.num_params() == counted                  # the code's count agrees
    kind = "dcn" if name.endswith("dcn") else "offset"
    target = deformable_count(kind)
    for arm in MATCHED[name]:                              # the arms it is matched to
        assert ARMS[arm].build(Config()).num_params() == target
    assert abs(counted - target) <= 0.02 * target, (counted, target)
    assert counted > 1.5 * 242250                          # really wider than the cnn
    # every layer widened by about one factor: the widths' ratios to (32, 64, 128, 128) agree
    widths = [layer.out_channels for layer in model if isinstance(layer, Conv2D)]
    ratios = np.array(widths) / np.array([32, 64, 128, 128])
    assert ratios.max() - ratios.min() < 0.05


def test_the_count_formula_and_the_matching_on_other_widths():
    for widths in [(32, 64, 128, 128), (1, 1, 1, 1), (3, 5, 7, 11), (40, 80, 160, 160)]:
        assert models.cnn_num_params(widths) == count_from_shapes(models.cnn(widths=widths))
    # a model of 2% more parameters than a matched width gets widths within 2% of it
    for target in (300_000, 1_000_000):
        assert abs(models.cnn_num_params(models.matched_widths(target)) - target) <= 0.02 * target
    with pytest.raises(ValueError, match=r"num_params: expected an int from 242,250"):
        models.matched_widths(1000)
    with pytest.raises(ValueError, match=r"widths: expected 4 positive ints"):
        models.cnn(widths=(32, 64, 0, 128))


@pytest.mark.parametrize("name", MATCHED)
def test_a_matched_control_starts_as_the_trained_cnn_and_trains_as_the_control(name):
    cnn = trained_cnn()
    model, optimizer = _build(ARMS[name], Config(), cnn.state_dict())
    x = np.random.default_rng(4).random((4, 1, 28, 28), dtype=np.float32)
    # the extra channels are computed but read with zero weights: the cnn's logits
    np.testing.assert_allclose(model.eval().forward(x), cnn.eval().forward(x), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(model.train().forward(x), cnn.train().forward(x), rtol=1e-5,
                               atol=1e-5)
    # the control's recipe: every parameter trains, at the control's rate
    control, control_optimizer = _build(ARMS["cnn_scaled"], Config(), cnn.state_dict())
    assert {n for n, _, _ in model.trainable_parameters()} == set(model.params)
    assert optimizer.lr == control_optimizer.lr == Config().scaled_lr
    assert optimizer.lr_scale == control_optimizer.lr_scale == {}
    assert ARMS[name].finetune and ARMS[name].lr(Config()) == ARMS["cnn_scaled"].lr(Config())


def test_the_narrow_cnn_is_embedded_exactly_and_its_extra_channels_start_to_count():
    cnn = trained_cnn(dtype=np.float64)
    wide = models.cnn(seed=9, dtype=np.float64, widths=(40, 70, 150, 140))
    assert models.load_narrower(wide, cnn.state_dict()) == []
    x = np.random.default_rng(5).random((6, 1, 28, 28))
    np.testing.assert_allclose(wide.eval().forward(x), cnn.eval().forward(x), rtol=1e-12,
                               atol=1e-12)
    # the old channels hold the trained weights; the weights from new into old channels are 0
    np.testing.assert_array_equal(wide["conv21"].params["weight"][:128, :64],
                                  cnn["conv21"].params["weight"])
    assert not wide["conv21"].params["weight"][:128, 64:].any()
    assert not wide["fc1"].params["weight"][:, 128:].any()
    # one step of training moves those zero weights: the extra capacity is used
    labels = np.arange(6) % 10
    train_epoch(wide, SoftmaxCrossEntropy(), Adam(wide, lr=1e-3), x, labels, 6,
                np.random.default_rng(0), progress=False)
    assert wide["fc1"].params["weight"][:, 128:].any()
    assert wide["conv21"].params["weight"][:128, 64:].any()
    with pytest.raises(ValueError, match=r"state: expected conv11.weight no larger than"):
        models.load_narrower(models.cnn(), wide.state_dict())


def test_arm_names_any_case_and_the_command_lines_list():
    from dcn_ref import cli
    assert [a.name for a in select(["ALL"])] == list(ARMS) == [a.name for a in select(["all"])]
    assert [a.name for a in select(["Cnn_Scaled_Match_DCN"])] == ["cnn", "cnn_scaled_match_dcn"]
    assert cli.EXPERIMENT_ARMS == tuple(ARMS)
    assert cli.EXPERIMENT_DEFAULT_ARMS == tuple(DEFAULT_ARMS)
    assert set(CONTROLS) <= set(ARMS)
    text = cli.build_parser()._subparsers._group_actions[0].choices["experiment"].format_help()
    assert all(name in " ".join(text.split()) for name in ARMS)


# -- the report: differences from the controls ----------------------------------------------

def record(name, seed, normal, scaled, params):
    return {"name": name, "seed": seed, "test_accuracy_normal": normal,
            "test_accuracy_scaled": scaled, "params": params}


def test_each_deformable_arm_is_compared_with_the_control_and_its_matched_control():
    results = []
    for seed, bump in ((0, 0.0), (1, 0.01)):
        results += [record("cnn", seed, 0.98, 0.60, 242250),
                    record("cnn_scaled", seed, 0.97 + bump, 0.96, 242250),
                    record("cnn_scaled_match_dcn", seed, 0.975, 0.965 + bump, 387520),
                    record("deform_dcn_all", seed, 0.985, 0.970, 387618),
                    record("deform_dcnv3", seed, 0.980, 0.968, 320782)]  # no match within 2%
    rows = {(r["arm"], r["control"], r["seed"]): (r["normal"], r["scaled"])
            for r in report.differences(results)}
    assert set(rows) == {(arm, control, seed) for seed in (0, 1) for arm, control in [
        ("cnn_scaled_match_dcn", "cnn_scaled"), ("deform_dcn_all", "cnn_scaled"),
        ("deform_dcnv3", "cnn_scaled"), ("deform_dcn_all", "cnn_scaled_match_dcn")]}
    assert rows["deform_dcn_all", "cnn_scaled", 1] == pytest.approx((0.985 - 0.98, 0.97 - 0.96))
    assert rows["deform_dcn_all", "cnn_scaled_match_dcn", 0] == pytest.approx((0.01, 0.005))
    assert rows["deform_dcn_all", "cnn_scaled_match_dcn", 1] == pytest.approx((0.01, -0.005))
    table = report.differences_table(results)
    assert "| deform_dcn_all | cnn_scaled_match_dcn | +0.0100 / +0.0050 | +0.0100 / -0.0050 " \
           "| +0.0100 / +0.0000 |" in table
    assert "| deform_dcnv3 | cnn_scaled_match_dcn |" not in table
    assert report.differences_table(results[:1]) is None     # the cnn alone: nothing to compare


# -- the whole-run clock --------------------------------------------------------------------

def test_the_run_line_counts_stages_and_estimates_from_measured_epochs():
    stages = [Stage("cnn", 0, 2, 100, 10, 20), Stage("cnn_scaled", 0, 1, 150, 10, 20),
              Stage("cnn", 1, 2, 100, 10, 20), Stage("cnn_scaled", 1, 1, 150, 10, 20)]
    guesses = {"cnn": BatchTimes(0.01, 0.002), "cnn_scaled": BatchTimes(0.01, 0.002)}
    clock = RunClock(stages, guesses, started=0.0)
    clock.elapsed = lambda: 75.0
    # nothing measured: the guesses. A cnn stage 2 * (100 * 0.01 + 10 * 0.002) + 20 * 0.002
    # = 2.08 s, a cnn_scaled stage 1 * (1.5 + 0.02) + 0.04 = 1.56 s
    assert clock.stage_seconds(stages[0]) == pytest.approx(2.08)
    assert clock.line(0) == "run: stage 1 of 4 (cnn, seed 0); 1 min elapsed, about 7 s left"
    # the cnn measured: 2 epochs of 100 images in 4 s (0.02 s an image, twice the guess),
    # its evaluation of 20 images in 0.1 s; the unmeasured cnn_scaled is corrected by the
    # same ratios: 0.02 s an image of training, 0.01 of evaluation
    clock.trained("cnn", [{"seconds": 2.0, "images_per_second": 50.0}] * 2)
    clock.evaluated("cnn", 0.1, 20)
    cnn = 2 * (100 * 0.02 + 10 * 0.005) + 20 * 0.005
    scaled = 1 * (150 * 0.02 + 10 * 0.005) + 20 * 0.005
    assert clock.stage_seconds(stages[1]) == pytest.approx(scaled)
    assert clock.stage_seconds(stages[2]) == pytest.approx(cnn)
    left = scaled + cnn + scaled
    assert clock.line(1) == (f"run: stage 2 of 4 (cnn_scaled, seed 0); 1 min elapsed, about "
                             f"{left:.0f} s left")
    assert [duration(s) for s in (0.4, 59.4, 61, 3599, 3600 * 2 + 65)] == [
        "0 s", "59 s", "1 min", "1 h 00 min", "2 h 01 min"]


# -- the data a run describes ---------------------------------------------------------------

def write_mnist(folder, train, test):
    folder.mkdir()
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_of(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_of(labels))
    return folder


def test_the_data_line_says_where_the_digits_come_from(tmp_path):
    shipped = load_mnist()
    line = _describe_data(shipped, None, 5000, 10000)
    assert line == ("training on the 5,000 MNIST training digits shipped with dcn_ref; testing "
                    "on the 10,000 digits of the official MNIST test set, normal and scaled")
    assert _describe_data(shipped, None, 1000, 1000).startswith(
        "training on 1,000 of the 5,000 MNIST training digits shipped with dcn_ref; testing on "
        "1,000 of the 10,000 digits of the official MNIST test set")
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), np.arange(7, dtype=np.uint8)
    foreign = write_mnist(tmp_path / "foreign", digits, digits)
    line = _describe_data(load_mnist(foreign), foreign, 7, 7)
    assert "official" not in line
    assert line == (f"training on the 7 training digits in {foreign}; testing on the 7 test "
                    f"digits in {foreign}, normal and scaled")
    # other training digits, but the official test set: it says so
    official = write_mnist(tmp_path / "official", digits,
                           (shipped.test_images, shipped.test_labels))
    assert _describe_data(load_mnist(official), official, 7, 10000).endswith(
        f"testing on the 10,000 digits of the official MNIST test set (in {official}), "
        f"normal and scaled")


def test_a_run_on_other_data_records_counts_and_describes_that_data(tmp_path):
    rng = np.random.default_rng(1)
    digits = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), np.arange(12, dtype=np.uint8) % 10
    data = write_mnist(tmp_path / "data", digits, digits)
    logged = []
    run(TINY, tmp_path / "out", data_dir=data, log=logged.append, progress=False,
        models=["cnn_scaled", "cnn_scaled_match_dcn"])
    assert logged[0].startswith(f"scaled MNIST: training on the 12 training digits in {data}; "
                                f"testing on the 12 test digits in {data}, normal and scaled")
    runs = [line.split(";")[0] for line in logged if line.startswith("run: ")]
    assert runs == ["run: stage 1 of 3 (cnn, seed 0)", "run: stage 2 of 3 (cnn_scaled, seed 0)",
                    "run: stage 3 of 3 (cnn_scaled_match_dcn, seed 0)"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    params = {m["name"]: m["params"] for m in results["models"]}
    assert params == {"cnn": 242250, "cnn_scaled": 242250,
                      "cnn_scaled_match_dcn": count_from_shapes(
                          ARMS["cnn_scaled_match_dcn"].build(TINY))}
    assert {s["name"]: s["params"] for s in results["summary"]} == params
    assert {(d["arm"], d["control"]) for d in results["differences"]} == {
        ("cnn_scaled_match_dcn", "cnn_scaled")}
    assert str(data) in results["data"] and "official" not in results["data"]
    assert all(m["forward_ms_batch32"] > 0 for m in results["models"])
