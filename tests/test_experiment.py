"""The scaled-MNIST experiment end to end: the --quick run, resume after a kill, and its errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dcn_ref.experiment import Config, ExperimentError, run
from dcn_ref.experiment import checkpoint

KEYS = {"name", "test_accuracy_normal", "test_accuracy_scaled", "params", "train_seconds",
        "forward_ms_batch32"}


def experiment(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "dcn_ref", "experiment", "scaled-mnist",
                             "--quick", "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def numbers(out_dir):
    """What must not depend on interruptions: everything but the timings."""
    results = json.loads((Path(out_dir) / "results.json").read_text())
    return [(m["name"], m["test_accuracy_normal"], m["test_accuracy_scaled"], m["params"])
            for m in results["models"]]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    status, stdout, stderr = finish(experiment("--out", str(out)))
    assert status == 0, stdout + stderr
    return out, stdout


def test_quick_run_writes_results_and_figures(quick_run):
    out, stdout = quick_run
    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    assert [m["name"] for m in models] == ["cnn", "cnn_scaled", "deform_offset", "deform_dcn"]
    for m in models:
        assert set(m) >= KEYS
        assert 0.0 <= m["test_accuracy_normal"] <= 1.0 and 0.0 <= m["test_accuracy_scaled"] <= 1.0
        assert m["train_seconds"] > 0 and m["forward_ms_batch32"] > 0
    # parameter counts worked out by hand: the cnn's 242,250 plus the offset layers in front
    # of conv12/21/22, whose inputs have C = 32, 64, 128 channels. ConvOffset2D: a 3x3
    # convolution C -> 2C without bias; DeformConv2D with G offset groups: a 3x3 convolution
    # C -> 2*G*9 with bias.
    G = Config().dcn_offset_groups
    offset = sum(2 * C * C * 9 for C in (32, 64, 128))
    dcn = sum(2 * G * 9 * (C * 9 + 1) for C in (32, 64, 128))
    assert [m["params"] for m in models] == [242250, 242250, 242250 + offset, 242250 + dcn]
    # even two epochs on 1,000 digits beat guessing (0.1) by far on normal digits
    assert models[0]["test_accuracy_normal"] > 0.5
    for name in ("results.md", "training_curves.png", "sampling_deform_offset.png",
                 "sampling_deform_dcn.png"):
        assert (out / name).stat().st_size > 1000, name
    md = (out / "results.md").read_text()
    assert "| deform_dcn |" in md and "unscaled" in md
    assert "| cnn |" in stdout                      # the table is printed too
    stages = {p.name.split("-")[0] for p in (out / "checkpoints").glob("*.npz")}
    assert stages == {"cnn", "deform_offset", "deform_dcn", "cnn_scaled"}
    assert not list((out / "checkpoints").glob("*.part"))


def test_resume_after_a_kill_ends_with_the_same_numbers(quick_run, tmp_path):
    reference_out, _ = quick_run
    out = tmp_path / "killed"
    process = experiment("--out", str(out), start_new_session=True)
    first = out / "checkpoints" / "cnn-epoch001.npz"
    deadline = time.time() + 600
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), "the run never finished its first epoch"
    os.killpg(process.pid, signal.SIGKILL)           # no chance to clean up
    process.wait()
    assert not (out / "results.json").exists()
    status, stdout, stderr = finish(experiment("--out", str(out), "--resume"))
    assert status == 0, stdout + stderr
    assert "resuming after epoch 1" in stdout
    assert numbers(out) == numbers(reference_out)


def test_an_existing_run_is_not_overwritten_without_resume(quick_run):
    out, _ = quick_run
    status, stdout, stderr = finish(experiment("--out", str(out)))
    assert status == 2
    assert "already holds checkpoints of a run; pass --resume" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_resume_with_other_settings_is_refused(quick_run, tmp_path):
    out, _ = quick_run
    with pytest.raises(ExperimentError, match=r"--resume: .* was written with other settings"):
        run(Config.quick(seed=5), out, resume=True, log=lambda *a: None, progress=False)


def test_unusable_data_exits_2_with_one_line(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03broken")
    status, stdout, stderr = finish(experiment("--out", str(tmp_path / "out"), "--data", str(tmp_path)))
    assert status == 2
    assert stderr.startswith("dcn-ref experiment: --data:") and len(stderr.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")  # the lr of 1e30 does that
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # healthy stages, then a learning rate for the control that blows its weights up at once
    # (huge steps on the deformable models' offsets do not: far samples read the border)
    config = Config(train_limit=64, test_limit=64, cnn_epochs=1, finetune_epochs=1,
                    scaled_lr=1e30)
    with pytest.raises(ExperimentError, match=r"stage cnn_scaled, epoch 1, step \d+: the loss "
                                              r"is (nan|inf); stopped \(last good checkpoint: "
                                              r".*deform_dcn-epoch001.npz\)") as info:
        run(config, tmp_path, log=lambda *a: None, progress=False)
    assert info.value.status == 1
    assert checkpoint.latest(tmp_path / "checkpoints", "cnn_scaled") is None
    good = checkpoint.latest(tmp_path / "checkpoints", "cnn")
    assert good is not None and good.name == "cnn-epoch001.npz"
    state, _, meta = checkpoint.load(good)
    assert meta["epoch"] == 1 and all(np.isfinite(v).all() for v in state.values())
