"""The scaled-MNIST experiment: ``dcn-ref experiment scaled-mnist`` (see ``run``).

    config.py      the settings of a default and a --quick run
    stages.py      the arms (models and what trains), each a stage resumable epoch by epoch
    checkpoint.py  atomic per-epoch checkpoints, and reading them back
    report.py      the table (mean and spread over seeds), the differences from the
                   controls seed by seed, results.json and results.md
    clock.py       where the whole run stands: stage k of n, time elapsed, time left
    figures.py     training and test curves, and where a deformable model samples

A run writes into its ``out`` folder:

    results.md, results.json       the table and every number, per arm and seed
    models/<arm>-seed<k>.npz       each stage's final model, read by ``Sequential.load``
    checkpoints/<arm>-seed<k>-epoch<NNN>.npz
                                   the model and optimiser state after an epoch (the last
                                   epoch of each stage only, unless keep_checkpoints="all")
    training_curves.png, sampling_<arm>.png (for the deform_cnn arms)

Before every stage it prints where the whole run stands (``clock.RunClock``): stage k of
n, the time elapsed and an estimate of the time left.

Loading a trained model (the architecture comes from ``dcn_ref.models``; a "dcn" arm uses
``Config().dcn_offset_groups`` offset groups; deform_dcnv3 is ``models.dcnv3_cnn()``; a
matched control is ``models.cnn(widths=...)`` with the widths of its weights, e.g.
(41, 81, 162, 162) for cnn_scaled_match_dcn with the default settings)::

    from dcn_ref import models
    model = models.deform_cnn("dcn", offset_groups=4)
    model.load("results/scaled-mnist/models/deform_dcn_all-seed0.npz")

Loading a checkpoint (model and optimiser state, and a "meta" record with the
configuration and the history): ``checkpoint.load(path)`` returns
``(model_state, optimizer_state, meta)``; ``model.load_state_dict(model_state)`` and
``Adam(model).load_state_dict(optimizer_state)`` put them back. ``Sequential.load`` cannot
read a checkpoint directly: its keys carry the "model/" and "optim/" prefixes.
"""
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..data import DataError, load_mnist, scaled_test_set
from ..train import evaluate
from . import checkpoint, clock, figures, report
from .config import Config
from .stages import (ARMS, DEFAULT_ARMS, Arm, ExperimentError, as_batch, epochs_of, forward_ms,
                     images_per_epoch, run_stage, select)

__all__ = ["ARMS", "Arm", "Config", "DEFAULT_ARMS", "ExperimentError", "MAX_SEED", "MAX_SEEDS",
           "run"]

KEEP = ("last", "all")
#: The largest number of seeds a run takes (each seed trains every arm again).
MAX_SEEDS = 1000
#: The largest first seed (NumPy's classic 32-bit seed range).
MAX_SEED = 2**32 - 1


def _subset(images, labels, limit, seed=1234):
    """A fixed random ``limit`` of the digits (all when 0), the same for every run."""
    if not limit or limit >= len(images):
        return images, labels
    keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
    return images[keep], labels[keep]


def _prepare_out(out):
    """``out`` as a Path of a writable folder (created if missing), or ExperimentError; and
    the folders this call created, the innermost first."""
    if str(out).strip() == "":
        raise ExperimentError("--out: expected a folder, got an empty path")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out: {out} is a file, expected a folder (new or of a run)")
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise ExperimentError(f"--out: cannot create the folder {out} "
                              f"({exc.strerror or type(exc).__name__})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ExperimentError(f"--out: cannot write into the folder {out} (permission denied)")
    return out, created


def _remove_empty(folders):
    """Remove each of ``folders`` (in order) that exists and is empty; never anything else."""
    for folder in folders:
        try:
            folder.rmdir()              # only ever removes an empty folder
        except OSError:
            pass


def _load_data(data_dir):
    try:
        mnist = load_mnist(data_dir)
    except DataError as exc:
        raise ExperimentError(f"--data: {exc}") from None
    return mnist


def _is_official_test_set(mnist):
    """Whether ``mnist``'s test digits are the official MNIST test set (the one shipped with
    dcn_ref, whose files have the official checksums)."""
    official = load_mnist()
    return (np.array_equal(mnist.test_images, official.test_images)
            and np.array_equal(mnist.test_labels, official.test_labels))


def _describe_data(mnist, data_dir, n_train, n_test):
    """One line on the digits a run uses: ``n_train`` of ``mnist``'s training digits and
    ``n_test`` of its test digits, from ``data_dir`` (None: the digits shipped with dcn_ref)."""
    train_total, test_total = len(mnist.train_images), len(mnist.test_images)
    if data_dir is None:
        train = f"the {train_total:,} MNIST training digits shipped with dcn_ref"
    else:
        train = f"the {train_total:,} training digits in {data_dir}"
    if data_dir is None or _is_official_test_set(mnist):
        test = f"the {test_total:,} digits of the official MNIST test set"
        test += "" if data_dir is None else f" (in {data_dir})"
    else:
        test = f"the {test_total:,} test digits in {data_dir}"

    def some(n, total, which):
        return which if n == total else f"{n:,} of {which}"

    return (f"training on {some(n_train, train_total, train)}; testing on "
            f"{some(n_test, test_total, test)}, normal and scaled")


def _warm_up(arms, config, log, wait=3.0):
    """Run each kind of model once on two blank digits, so that kernels compile here and not
    inside the first timed epoch; say so when that takes longer than ``wait`` seconds (the
    first run on a machine compiles for a minute or two; later runs read the cache). Then
    time one training batch of each: returns {arm name: clock.BatchTimes}."""
    fired = []

    def say():
        fired.append(True)
        log("preparing the kernels: a first run on this machine compiles them (a minute or "
            "two on 2 cores; cached for later runs) ...")

    note = threading.Timer(wait, say)
    note.daemon = True
    started = time.perf_counter()
    note.start()
    times = {}
    for arm in arms:
        if arm.build in times:
            continue
        model = arm.build(config)
        x = np.zeros((2, 1, 28, 28), model.dtype)
        model.train()
        model.backward(np.ones_like(model.forward(x)))
        model.eval()
        model.forward(x)
        batch = np.zeros((config.batch_size, 1, 28, 28), model.dtype)
        times[arm.build] = clock.time_batch(model, batch)
    note.cancel()
    if fired:
        log(f"kernels ready after {time.perf_counter() - started:.0f} s")
    return {arm.name: times[arm.build] for arm in arms}


def _export(path, model):
    """Write ``model.state_dict()`` as a plain .npz (what ``Sequential.load`` reads), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        np.savez(f, **model.state_dict())


def run(config, out, data_dir=None, resume=False, log=print, progress=True, command=None,
        models=DEFAULT_ARMS, seeds=1, keep_checkpoints="last"):
    """Train, evaluate and report the arms ``models`` with ``seeds`` seeds; return the list
    of result records (one per arm and seed).

    Parameters
    ----------
    config : Config
        ``config.seed`` (0 to ``MAX_SEED``) is the first seed, the others follow it.
    out : str or Path
        The folder for results, models, checkpoints and figures.
    data_dir : str, Path or None
        A folder of MNIST IDX files; None: the digits shipped with dcn_ref.
    resume : bool
        Continue the run in ``out`` from its newest usable checkpoints.
    models : sequence of str
        Arm names (see ``ARMS``; any case) or ["all"]; "cnn" always trains (the others
        start from it).
    seeds : int
        The number of seeds, 1 to ``MAX_SEEDS``.
    keep_checkpoints : str
        "last" (each stage's last epoch) or "all".

    Raises
    ------
    ExperimentError
        With the exit status to use, when an argument or the data is unusable, ``out``
        holds another run's checkpoints without ``resume``, or a loss turns non-finite. A
        run that fails removes the folders it created and left empty, and nothing else.
    """
    started = time.perf_counter()
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ExperimentError(f"--seeds: expected an int from 1 to {MAX_SEEDS}, got {seeds!r}")
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ExperimentError(f"--seed: expected an int from 0 to {MAX_SEED}, got {seed!r}")
    if keep_checkpoints not in KEEP:
        raise ExperimentError(f"--keep-checkpoints: expected one of {', '.join(KEEP)}, "
                              f"got {keep_checkpoints!r}")
    arms = select(models)
    out, created = _prepare_out(out)
    made_here = [out / name for name in ("checkpoints", "models") if not (out / name).exists()]
    try:
        return _run(config, out, data_dir, resume, log, progress, command, arms, seeds,
                    keep_checkpoints, started)
    except BaseException:               # an error, Ctrl-C: leave no empty folder behind
        _remove_empty(made_here + created)
        raise


def _run(config, out, data_dir, resume, log, progress, command, arms, seeds,
         keep_checkpoints, started):
    folder = out / "checkpoints"
    resumed = checkpoint.any_in(folder)
    if resumed and not resume:
        raise ExperimentError(f"--out: {out} already holds checkpoints of a run; pass --resume "
                              f"to continue it, or choose another --out")
    for name in checkpoint.remove_partial(folder):
        log(f"removed {name}, a checkpoint left half-written by an interrupted run")
    mnist = _load_data(data_dir)
    train = _subset(mnist.train_images, mnist.train_labels, config.train_limit)
    test_images, test_labels = _subset(mnist.test_images, mnist.test_labels, config.test_limit)
    scaled_test, _ = scaled_test_set(test_images)
    description = _describe_data(mnist, data_dir, len(train[0]), len(test_images))
    seed_list = [config.seed + k for k in range(seeds)]
    log(f"scaled MNIST: {description}; arms {', '.join(a.name for a in arms)}; "
        f"seed{'s' if seeds > 1 else ''} {', '.join(map(str, seed_list))}; output in {out}")
    batch_times = _warm_up(arms, config, log)

    normal, scaled = as_batch(test_images), as_batch(scaled_test)
    n_curve = min(config.curve_test_limit or len(test_labels), len(test_labels))
    curve = (normal[:n_curve], scaled[:n_curve], test_labels[:n_curve])
    timer = clock.RunClock(
        [clock.Stage(arm.name, seed, epochs_of(arm, config),
                        images_per_epoch(arm, config, len(train[0])), 2 * n_curve,
                        2 * len(test_labels))
         for seed in seed_list for arm in arms], batch_times, started)
    results, histories, first_models = [], {}, {}
    total = len(arms) * len(seed_list)
    for s, seed in enumerate(seed_list):
        seeded = config.__class__(**{**config.as_dict(), "seed": seed})
        cnn_state = None
        for a, arm in enumerate(arms):
            k = s * len(arms) + a
            log(timer.line(k))
            model, history = run_stage(arm, seeded, train, folder, cnn_state, log=log,
                                       progress=progress, label=f"stage {k + 1}/{total}",
                                       curve=curve, keep=keep_checkpoints)
            timer.trained(arm.name, history)
            if arm.name == "cnn":
                cnn_state = model.state_dict()
            stage = checkpoint.stage_name(arm.name, seed)
            evaluating = time.perf_counter()
            accuracy_normal = evaluate(model, normal, test_labels)
            accuracy_scaled = evaluate(model, scaled, test_labels)
            timer.evaluated(arm.name, time.perf_counter() - evaluating, 2 * len(test_labels))
            _export(out / "models" / f"{stage}.npz", model)
            results.append({
                "name": arm.name, "seed": seed,
                "test_accuracy_normal": accuracy_normal,
                "test_accuracy_scaled": accuracy_scaled,
                "params": int(model.num_params()),
                "train_seconds": float(sum(h["seconds"] for h in history)),
                "forward_ms_batch32": forward_ms(model, normal[:32]),
                "model_file": f"models/{stage}.npz",
            })
            histories[stage] = history
            if seed == seed_list[0]:
                first_models[arm.name] = model

    log("evaluated on normal and scaled test digits; drawing the figures")
    figures.training_curves(out / "training_curves.png",
                            {a.name: [histories[checkpoint.stage_name(a.name, seed)]
                                      for seed in seed_list] for a in arms}, seed_list)
    for name, model in first_models.items():
        if figures.has_sampling_points(model):
            figures.sampling_figure(out / f"sampling_{name}.png", model, scaled_test[:4],
                                    f"{name}: where conv22 units sample on scaled test digits "
                                    f"(729 points a unit; seed {seed_list[0]})")
    seconds = time.perf_counter() - started
    command = command or "dcn-ref " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report.write(out, config, results, histories, description, command, seconds, resumed)
    log("")
    log(report.table(results))
    compared = report.differences_table(results)
    if compared is not None:
        log("\nEach seed, each arm minus its controls (accuracy normal / scaled):\n" + compared)
    log(f"\n{report.duration(seconds, resumed)}; results.md, results.json, models/ and figures "
        f"in {out}")
    return results
