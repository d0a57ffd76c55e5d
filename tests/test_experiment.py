"""The scaled-MNIST experiment end to end: the --quick run, its exported models, resume after
a kill, and its errors."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dcn_ref import models
from dcn_ref.data import load_mnist
from dcn_ref.experiment import DEFAULT_ARMS, Config, ExperimentError, run
from dcn_ref.experiment import checkpoint
from dcn_ref.experiment.stages import as_batch

KEYS = {"name", "seed", "test_accuracy_normal", "test_accuracy_scaled", "params",
        "train_seconds", "forward_ms_batch32", "model_file"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "experiment.md"


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
    assert [m["name"] for m in models] == list(DEFAULT_ARMS)
    assert [m["seed"] for m in models] == [0] * len(DEFAULT_ARMS)
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
    params = {"cnn": 242250, "cnn_scaled": 242250, "deform_offset": 242250 + offset,
              "deform_dcn_all": 242250 + dcn}
    assert [m["params"] for m in models] == [params[m["name"]] for m in models]
    # even two epochs on 1,000 digits beat guessing (0.1) by far on normal digits
    assert models[0]["test_accuracy_normal"] > 0.5
    for name in ("results.md", "training_curves.png", "sampling_deform_dcn_all.png"):
        assert (out / name).stat().st_size > 1000, name
    md = (out / "results.md").read_text()
    assert "| deform_dcn_all |" in md and "unscaled" in md
    assert "| cnn |" in stdout                      # the table is printed too
    # no line is the broken-off end of the one before it
    assert not [line for line in md.splitlines() if line.startswith((",", ".", ";", ")"))]
    assert "Figures: `training_curves.png`, `sampling_deform_dcn_all.png`." in md
    # the whole run's progress: a line before each stage, the data it was given first
    lines = stdout.splitlines()
    assert lines[0].startswith("scaled MNIST: training on 1,000 of the 5,000 MNIST training "
                               "digits shipped with dcn_ref; testing on 1,000 of the 10,000 "
                               "digits of the official MNIST test set")
    runs = [line for line in lines if line.startswith("run: ")]
    assert [line.split(";")[0] for line in runs] == [
        f"run: stage {k + 1} of 3 ({name}, seed 0)" for k, name in enumerate(DEFAULT_ARMS)]
    assert all(line.endswith(" left") and " elapsed, about " in line for line in runs)
    # by default only the last epoch of each stage keeps its checkpoint (cnn has 2 epochs)
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.npz"))
    assert kept == sorted(f"{name}-seed0-epoch{2 if name == 'cnn' else 1:03d}.npz"
                          for name in DEFAULT_ARMS)
    assert not list((out / "checkpoints").glob("*.part"))
    # every epoch's history holds the test-curve accuracies
    history = results["history"]["deform_dcn_all-seed0"]
    assert len(history) == 1 and 0 <= history[0]["test_accuracy_scaled"] <= 1


def _docs_snippet():
    """The Python block of docs/experiment.md that loads a trained model."""
    text = DOCS.read_text()
    start = text.index("```python", text.index("<!-- load-model-snippet -->")) + len("```python")
    return text[start:text.index("```", start)]


def test_the_docs_snippet_loads_an_exported_model_with_its_reported_accuracy(quick_run):
    out, _ = quick_run
    snippet = _docs_snippet().replace("results/scaled-mnist", str(out))
    namespace = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    model = namespace["model"]
    # the loaded model classifies the test digits as the run reported: the first 1,000-digit
    # subset of --quick, drawn as the experiment draws it
    results = json.loads((out / "results.json").read_text())
    record = next(m for m in results["models"] if m["name"] == "deform_dcn_all")
    mnist = load_mnist()
    keep = np.sort(np.random.default_rng(1234).permutation(len(mnist.test_images))[:1000])
    logits = model.eval().forward(as_batch(mnist.test_images[keep]))
    accuracy = float(np.mean(logits.argmax(axis=1) == mnist.test_labels[keep]))
    assert accuracy == pytest.approx(record["test_accuracy_normal"], abs=1e-12)


def test_a_checkpoint_loads_as_the_module_docstring_says(quick_run):
    out, _ = quick_run
    state, optim_state, meta = checkpoint.load(out / "checkpoints" / "deform_dcn_all-seed0-epoch001.npz")
    model = models.deform_cnn("dcn", offset_groups=meta["config"]["dcn_offset_groups"])
    model.load_state_dict(state)
    exported = models.deform_cnn("dcn", offset_groups=4)
    exported.load(out / "models" / "deform_dcn_all-seed0.npz")
    for key, value in exported.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value)
    assert meta["stage"] == "deform_dcn_all-seed0" and meta["epoch"] == 1


def test_resume_after_a_kill_ends_with_the_same_numbers(quick_run, tmp_path):
    reference_out, _ = quick_run
    out = tmp_path / "killed"
    arms = ("cnn", "cnn_scaled")        # a resumed stage and one after it, the two cheapest
    process = experiment("--out", str(out), "--models", ",".join(arms), start_new_session=True)
    first = out / "checkpoints" / "cnn-seed0-epoch001.npz"
    deadline = time.time() + 600
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), "the run never finished its first epoch"
    os.killpg(process.pid, signal.SIGKILL)           # no chance to clean up
    process.wait()
    assert not (out / "results.json").exists()
    status, stdout, stderr = finish(experiment("--out", str(out), "--models", ",".join(arms),
                                               "--resume"))
    assert status == 0, stdout + stderr
    assert "cnn-seed0: resuming after epoch 1" in stdout
    assert numbers(out) == [row for row in numbers(reference_out) if row[0] in arms]


def test_an_existing_run_is_not_overwritten_without_resume(quick_run):
    out, _ = quick_run
    status, stdout, stderr = finish(experiment("--out", str(out)))
    assert status == 2
    assert "already holds checkpoints of a run; pass --resume" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_resume_with_other_settings_is_refused(quick_run, tmp_path):
    out, _ = quick_run
    with pytest.raises(ExperimentError, match=r"--resume: .* was written with other settings"):
        run(dataclasses.replace(Config.quick(), cnn_lr=1e-3), out, resume=True,
            log=lambda *a: None, progress=False)


def test_unusable_data_exits_2_with_one_line_and_no_empty_output_folder(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03broken")
    status, stdout, stderr = finish(experiment("--out", str(tmp_path / "out"), "--data", str(tmp_path)))
    assert status == 2
    assert stderr.startswith("dcn-ref experiment: --data:") and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def at_most_4_gib():
    """In the child: an address-space limit, so that a regression (a list of 10**20 seeds)
    ends in a MemoryError instead of filling the machine's memory."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.parametrize("args, message", [
    (("experiment", "scaled-mnist", "--quick", "--seeds", "99999999999999999999"),
     "dcn-ref experiment: --seeds: expected an int from 1 to 1000, got 99999999999999999999"),
    (("experiment", "scaled-mnist", "--quick", "--seed", "99999999999999999999"),
     "dcn-ref experiment: --seed: expected an int from 0 to 4294967295, got 99999999999999999999"),
    (("bench", "--repeat", "99999999999999999999"),
     "dcn-ref bench: --repeat: expected an int from 1 to 1000, got 99999999999999999999"),
    (("download-mnist", "DIR", "--timeout", "1e10"),
     "dcn-ref download-mnist: --timeout: expected a number of seconds above 0 and at most 3600, "
     "got 10000000000.0"),
])
def test_huge_counts_exit_2_with_one_line_at_once(tmp_path, args, message):
    # as the README runs it: the console script, no --quiet; refused before any work
    script = Path(sys.executable).with_name("dcn-ref")
    assert script.exists(), f"no console script at {script}: pip install -e . installs it"
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [root, os.environ.get("PYTHONPATH")])))
    args = [str(tmp_path / "d") if a == "DIR" else a for a in args]
    result = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=env, preexec_fn=at_most_4_gib)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [message]
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []     # no results folder, no download


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")  # the lr of 1e30 does that
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # a healthy cnn stage, then a learning rate for the control that blows its weights up at once
    # (huge steps on the deformable models' offsets do not: far samples read the border)
    config = Config(train_limit=64, test_limit=64, cnn_epochs=1, finetune_epochs=1,
                    scaled_lr=1e30)
    with pytest.raises(ExperimentError, match=r"stage cnn_scaled, seed 0, epoch 1, step \d+: the "
                                              r"loss is (nan|inf); stopped \(last good "
                                              r"checkpoint: .*cnn-seed0-epoch001.npz\)") as info:
        run(config, tmp_path, log=lambda *a: None, progress=False, models=["cnn", "cnn_scaled"])
    assert info.value.status == 1
    assert checkpoint.latest(tmp_path / "checkpoints", "cnn_scaled-seed0") is None
    good = checkpoint.latest(tmp_path / "checkpoints", "cnn-seed0")
    assert good is not None and good.name == "cnn-seed0-epoch001.npz"
    state, _, meta = checkpoint.load(good)
    assert meta["epoch"] == 1 and all(np.isfinite(v).all() for v in state.values())
