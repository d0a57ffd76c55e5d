"""The experiment's command line against unusable input (one line on stderr, exit status 2,
nothing trained), resuming past damaged checkpoints, several seeds, and the arms."""
import json

import numpy as np
import pytest

from dcn_ref import cli, models
from dcn_ref.experiment import ARMS, Config, ExperimentError, checkpoint, run
from dcn_ref.experiment.stages import _build, offset_params, run_stage
from idx_writer import idx_of

TINY = Config(train_limit=32, test_limit=32, cnn_epochs=2, finetune_epochs=1, batch_size=16,
              curve_test_limit=16)


def quiet(*args):
    pass


def one_line_error(capsys, argv, starts):
    try:
        status = cli.main(argv)
    except SystemExit as exit:                  # argparse's own errors
        status = exit.code
    captured = capsys.readouterr()
    assert status == 2, captured
    assert captured.err.startswith(starts), captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def mnist_folder(path, n_train=4, n_test=4, label=3, shape=(28, 28)):
    path.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (path / f"{prefix}-images-idx3-ubyte").write_bytes(
            idx_of(rng.integers(0, 256, (n,) + shape, dtype=np.uint8)))
        (path / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_of(np.full(n, label, np.uint8)))
    return path


def experiment_argv(out, *args):
    return ["experiment", "scaled-mnist", "--quick", "--no-progress", "--out", str(out), *args]


# -- the command line ---------------------------------------------------------------------

def test_version_and_unknown_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    from dcn_ref import __version__
    assert capsys.readouterr().out.strip() == f"dcn-ref {__version__}"
    for argv in (["--bogus"], ["experiment", "scaled-mnist", "--bogus"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "unrecognized arguments: --bogus" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2 and "expected a command" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (("--seeds", "0"), "--seeds: expected an int from 1 to 1000, got 0"),
    (("--seeds", "1001"), "--seeds: expected an int from 1 to 1000, got 1001"),
    (("--seeds", "x"), "argument --seeds: expected an int, got 'x'"),
    (("--seeds", "2.5"), "argument --seeds: expected an int, got '2.5'"),
    (("--keep-checkpoints", "some"), "argument --keep-checkpoints: invalid choice"),
    (("--models", "cnn,bogus"), "--models: expected names from cnn, cnn_scaled"),
    (("--models", ""), "--models: expected names from"),
    (("--seed", "-1"), "--seed: expected an int from 0 to 4294967295, got -1"),
    (("--seed", "4294967296"), "--seed: expected an int from 0 to 4294967295, got 4294967296"),
])
def test_bad_numbers_and_names(capsys, tmp_path, args, message):
    err = one_line_error(capsys, experiment_argv(tmp_path / "out", *args), "dcn-ref experiment")
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["bench", "--repeat", "0"], "dcn-ref bench: --repeat: expected an int from 1 to 1000, got 0"),
    (["bench", "--threads", "0"], "dcn-ref bench: --threads: expected 1.."),
    (["download-mnist", "DIR", "--timeout", "nan"],
     "dcn-ref download-mnist: --timeout: expected a number of seconds above 0 and at most 3600"),
    (["download-mnist", "DIR", "--timeout", "3601"],
     "dcn-ref download-mnist: --timeout: expected a number of seconds above 0 and at most 3600"),
    (["gradcheck", "--tol", "1e400"], "dcn-ref gradcheck: --tol: expected a positive finite"),
])
def test_every_subcommand_bounds_its_numbers(capsys, tmp_path, argv, message):
    argv = [str(tmp_path / "d") if a == "DIR" else a for a in argv]
    assert message in one_line_error(capsys, argv, message.split(":")[0])
    assert not (tmp_path / "d").exists()


def test_a_failed_run_leaves_no_folder_it_created_and_keeps_the_others(tmp_path):
    missing = tmp_path / "missing"
    nested = tmp_path / "new" / "nested"
    with pytest.raises(ExperimentError, match="--data: "):
        run(TINY, nested, data_dir=missing, log=quiet, progress=False, models=["cnn"])
    assert not (tmp_path / "new").exists()               # both levels it created are gone
    empty = tmp_path / "empty"                            # a folder the user made: it stays
    empty.mkdir()
    earlier = tmp_path / "earlier"                        # a folder of earlier results: untouched
    (earlier / "models").mkdir(parents=True)
    (earlier / "results.md").write_text("earlier")
    for out in (empty, earlier):
        with pytest.raises(ExperimentError, match="--data: "):
            run(TINY, out, data_dir=missing, log=quiet, progress=False, models=["cnn"])
    assert empty.is_dir() and list(empty.iterdir()) == []
    assert sorted(p.name for p in earlier.iterdir()) == ["models", "results.md"]


def test_unusable_out_folders(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(capsys, experiment_argv(a_file), f"dcn-ref experiment: --out: {a_file} is a file")
    one_line_error(capsys, experiment_argv(a_file / "below"),
                   f"dcn-ref experiment: --out: cannot create the folder {a_file / 'below'}")
    one_line_error(capsys, experiment_argv(""), "dcn-ref experiment: --out: expected a folder, "
                                                "got an empty path")


@pytest.mark.parametrize("case, fragment", [
    ({"n_train": 0}, "train-images-idx3-ubyte: expected at least one image, found 0"),
    ({"n_test": 0}, "t10k-images-idx3-ubyte: expected at least one image, found 0"),
    ({"label": 10}, "train-labels-idx1-ubyte: expected labels in 0..9, found 10"),
    ({"shape": (28, 27)}, "expected images of shape (N, 28, 28)"),
])
def test_data_folders_are_validated_before_any_training(capsys, tmp_path, case, fragment):
    data = mnist_folder(tmp_path / "data", **case)
    err = one_line_error(capsys, experiment_argv(tmp_path / "out", "--data", str(data)),
                         "dcn-ref experiment: --data: ")
    assert fragment in err
    assert not checkpoint.any_in(tmp_path / "out" / "checkpoints")


def test_unusable_download_folders_and_urls(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(capsys, ["download-mnist", str(a_file)],
                   f"dcn-ref download-mnist: dir: {a_file} is a file")
    one_line_error(capsys, ["download-mnist", str(a_file / "below")],
                   f"dcn-ref download-mnist: dir: cannot create the folder {a_file / 'below'}")
    one_line_error(capsys, ["download-mnist", ""], "dcn-ref download-mnist: dir: expected a folder")
    for url in ("ftp://example.org/mnist/", "http://", "not a url", "http://[::1/"):
        one_line_error(capsys, ["download-mnist", str(tmp_path / "d"), "--url", url],
                       "dcn-ref download-mnist: --url: ")
    assert not (tmp_path / "d").exists()
    one_line_error(capsys, ["download-mnist", str(tmp_path / "d"), "--timeout", "inf"],
                   "dcn-ref download-mnist: --timeout: ")


# -- resuming past damaged checkpoints ----------------------------------------------------

def _damage(path, how):
    """Replace the checkpoint ``path`` by a damaged one."""
    good = path.read_bytes()
    if how == "truncated":
        path.write_bytes(good[:len(good) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "a directory":
        path.unlink()
        path.mkdir()
    else:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays["meta"]))
        if how == "unreadable meta":
            arrays["meta"] = np.array("{not json")
        elif how == "another stage":
            arrays["meta"] = np.array(json.dumps({**meta, "stage": "cnn-seed7"}))
        elif how == "wrong shape":
            key = next(k for k in arrays if k.startswith("model/conv11.weight"))
            arrays[key] = np.zeros((3, 3))
        elif how == "object array":
            key = next(k for k in arrays if k.startswith("model/"))
            arrays[key] = np.array([None, 1], dtype=object)
        np.savez(path, **arrays)


@pytest.mark.parametrize("how", ["truncated", "empty", "unreadable meta", "another stage",
                                 "wrong shape", "object array", "a directory"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, how):
    data = (np.random.default_rng(0).integers(0, 256, (32, 28, 28), dtype=np.uint8),
            np.arange(32) % 10)
    folder = tmp_path / "checkpoints"
    logged = []
    reference, history = run_stage(ARMS["cnn"], TINY, data, folder, log=quiet, progress=False,
                                   keep="all")
    assert len(history) == 2
    _damage(checkpoint.path_for(folder, "cnn-seed0", 2), how)
    resumed, history = run_stage(ARMS["cnn"], TINY, data, folder, log=logged.append,
                                 progress=False)
    assert any(line.startswith("cnn-seed0: skipping checkpoint cnn-seed0-epoch002.npz")
               for line in logged), logged
    assert "cnn-seed0: resuming after epoch 1 (cnn-seed0-epoch001.npz)" in logged
    # the second epoch was trained again from the first one's checkpoint: the same weights
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "cnn-seed0-epoch001.npz"
    path.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(checkpoint.CheckpointError, match=r"cnn-seed0-epoch001.npz: "):
        checkpoint.load(path)
    with pytest.raises(ValueError):           # a CheckpointError is a ValueError
        checkpoint.load(path)


def test_a_leftover_part_file_does_not_survive_resume(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    part = folder / ".cnn-seed0-epoch010.npz.abc123.part"
    part.write_bytes(b"half")
    logged = []
    with pytest.raises(ExperimentError, match="--data: "):     # stops before training
        run(Config(train_limit=16, test_limit=16, cnn_epochs=1, finetune_epochs=1),
            tmp_path, resume=True, log=logged.append, progress=False,
            models=["cnn"], data_dir=tmp_path / "missing")
    assert not part.exists()
    assert any(".cnn-seed0-epoch010.npz.abc123.part" in line for line in logged)


# -- seeds, arms, checkpoints kept ---------------------------------------------------------

def test_two_seeds_give_each_seed_and_mean_and_std(tmp_path):
    results = run(TINY, tmp_path, log=quiet, progress=False, models=["cnn_scaled"], seeds=2,
                  keep_checkpoints="all")
    assert [(r["name"], r["seed"]) for r in results] == [("cnn", 0), ("cnn_scaled", 0),
                                                          ("cnn", 1), ("cnn_scaled", 1)]
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    row = next(s for s in summary if s["name"] == "cnn_scaled")
    values = [r["test_accuracy_scaled"] for r in results if r["name"] == "cnn_scaled"]
    assert row["seeds"] == [0, 1]
    assert row["test_accuracy_scaled_mean"] == pytest.approx((values[0] + values[1]) / 2)
    # the sample standard deviation of two values is |a - b| / sqrt(2)
    assert row["test_accuracy_scaled_std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    md = (tmp_path / "results.md").read_text()
    assert f"{row['test_accuracy_scaled_mean']:.4f} ± {row['test_accuracy_scaled_std']:.4f}" in md
    # keep_checkpoints="all": both epochs of each cnn stage
    assert checkpoint.path_for(tmp_path / "checkpoints", "cnn-seed1", 1).is_file()
    assert checkpoint.path_for(tmp_path / "checkpoints", "cnn-seed1", 2).is_file()
    # the seeds differ: their cnn starts differ
    m0, m1 = models.cnn(), models.cnn()
    m0.load(tmp_path / "models" / "cnn-seed0.npz")
    m1.load(tmp_path / "models" / "cnn-seed1.npz")
    assert not np.array_equal(m0.params["fc1.weight"], m1.params["fc1.weight"])


@pytest.mark.parametrize("name, lr_of_offsets", [("deform_offset_all", "offset_lr"),
                                                  ("deform_dcn_all", "dcn_lr")])
def test_the_all_layer_arms_train_everything_offsets_at_their_own_rate(name, lr_of_offsets):
    config = Config()
    start = models.cnn().state_dict()
    model, optimizer = _build(ARMS[name], config, start)
    trainable = {n for n, _, _ in model.trainable_parameters()}
    assert trainable == set(model.params)                       # every parameter trains
    offsets = offset_params(model)
    assert offsets and set(offsets) < trainable
    assert optimizer.lr == config.scaled_lr                     # the control's rate ...
    for key in offsets:                                         # ... and the offsets' own
        assert optimizer.lr * optimizer.lr_scale[key] == pytest.approx(getattr(config, lr_of_offsets))
    assert set(optimizer.lr_scale) == set(offsets)
    # the weights shared with the cnn start from it
    np.testing.assert_array_equal(model.params["conv21.weight"], start["conv21.weight"])


def test_a_slow_first_call_is_announced_and_a_fast_one_is_not():
    from dcn_ref.experiment import _warm_up
    import time

    def slow_build(config):
        time.sleep(1.0)                                        # a first call that takes a while
        return models.cnn(seed=config.seed)

    logged = []
    _warm_up([ARMS["cnn"]._replace(build=slow_build)], TINY, logged.append, wait=0.01)
    assert logged[0].startswith("preparing the kernels: a first run on this machine compiles")
    assert logged[1].startswith("kernels ready after")
    logged.clear()
    _warm_up([ARMS["cnn"]], TINY, logged.append, wait=1e6)
    assert logged == []


def test_the_downloader_refuses_unusable_folders_and_urls(tmp_path):
    from dcn_ref.data import download_mnist
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"dest_dir: expected a folder, got .*a_file' \(a file\)"):
        download_mnist(a_file)
    with pytest.raises(ValueError, match=r"dest_dir: cannot create the folder .*a_file/below"):
        download_mnist(a_file / "below")
    for url in ("ftp://host/", "http://", "http://host:99999/", "no url"):
        with pytest.raises(ValueError, match=r"base_url: expected "):
            download_mnist(tmp_path / "d", base_url=url)
    assert not (tmp_path / "d").exists()
