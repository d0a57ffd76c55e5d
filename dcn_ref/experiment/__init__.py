"""The scaled-MNIST experiment: ``dcn-ref experiment scaled-mnist`` (see ``run``).

    config.py      the settings of a default and a --quick run
    stages.py      the four training stages, resumable epoch by epoch
    checkpoint.py  atomic per-epoch checkpoints
    report.py      the table, results.json and results.md
    figures.py     training curves and the sampling locations of the deformable models
"""
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..data import DataError, load_mnist, scaled_test_set
from ..train import evaluate
from . import checkpoint, figures, report
from .config import Config
from .stages import ExperimentError, as_batch, forward_ms, run_stage, stages

__all__ = ["Config", "ExperimentError", "run"]


def _subset(images, labels, limit, seed=1234):
    """A fixed random ``limit`` of the digits (all when 0), the same for every run."""
    if not limit or limit >= len(images):
        return images, labels
    keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
    return images[keep], labels[keep]


def run(config, out, data_dir=None, resume=False, log=print, progress=True, command=None):
    """Train, evaluate and report every model; return the list of result records.

    Raises ExperimentError (with the exit status to use) when the data is unusable, ``out``
    holds another run's checkpoints without ``resume``, or a loss turns non-finite.
    """
    started = time.perf_counter()
    out = Path(out)
    folder = out / "checkpoints"
    resumed = checkpoint.any_in(folder)
    if resumed and not resume:
        raise ExperimentError(f"--out: {out} already holds checkpoints of a run; pass --resume "
                              f"to continue it, or choose another --out")
    try:
        mnist = load_mnist(data_dir)
    except DataError as exc:
        raise ExperimentError(f"--data: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    train = _subset(mnist.train_images, mnist.train_labels, config.train_limit)
    test_images, test_labels = _subset(mnist.test_images, mnist.test_labels, config.test_limit)
    scaled_test, _ = scaled_test_set(test_images)
    source = f"the MNIST files in {data_dir}" if data_dir else "the 5,000 MNIST training digits shipped with dcn_ref"
    description = (f"{len(train[0]):,} training digits ({source}), {len(test_images):,} test "
                   f"digits of the official MNIST test set, normal and scaled")
    log(f"scaled MNIST: {description}; output in {out}")

    trained, histories = {}, {}
    for stage in stages(config):
        start = trained["cnn"].state_dict() if stage.finetune else None
        trained[stage.name], histories[stage.name] = run_stage(
            stage, config, train, folder, start, log=log, progress=progress)

    log("evaluating on normal and scaled test digits")
    normal, scaled = as_batch(test_images), as_batch(scaled_test)
    results = []
    for name in report.MODEL_ORDER:
        model = trained[name]
        results.append({
            "name": name,
            "test_accuracy_normal": evaluate(model, normal, test_labels),
            "test_accuracy_scaled": evaluate(model, scaled, test_labels),
            "params": int(model.num_params()),
            "train_seconds": float(sum(h["seconds"] for h in histories[name])),
            "forward_ms_batch32": forward_ms(model, normal[:32]),
        })
    figures.training_curves(out / "training_curves.png", histories)
    for name in ("deform_offset", "deform_dcn"):
        figures.sampling_figure(out / f"sampling_{name}.png", trained[name], scaled_test[:4],
                                f"{name}: where one conv22 unit samples (729 points) on scaled "
                                f"test digits")
    seconds = time.perf_counter() - started
    command = command or "dcn-ref " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report.write(out, config, results, histories, description, command, seconds, resumed)
    log("")
    log(report.table(results))
    log(f"\n{report.duration(seconds, resumed)}; results.md, results.json and figures in {out}")
    return results
