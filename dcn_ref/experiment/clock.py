"""The clock of a whole run: which stage of how many, the time spent, and the time left.

A run is a list of stages (an arm with a seed), each some epochs of training and an
evaluation. Before every stage the run prints one line:

    run: stage 4 of 15 (cnn_scaled_match_dcn, seed 0); 9 min elapsed, about 1 h 42 min left

The time left adds, for every stage still to run, its epochs times the arm's time an epoch
(training, and the test-curve digits evaluated after it) and the arm's final evaluation of
the test digits. Both come from the arm's own measured times once it has trained or been
evaluated (its epochs' ``seconds`` in the history, also those read back from checkpoints
on resume); an arm not measured yet is estimated from one training batch timed while
the kernels were prepared (``time_batch``), corrected by how far that guess was off for
the arms measured so far. The estimate is therefore rough until the first stage of every
arm has run, and good from the second seed on.
"""
import time
from typing import NamedTuple

import numpy as np


class Stage(NamedTuple):
    """One stage of the run, for the clock: the arm's name, the seed, the number of epochs,
    the images an epoch trains on and the images evaluated after each epoch and at the end."""
    arm: str
    seed: int
    epochs: int
    images: int
    curve_images: int
    test_images: int


class BatchTimes(NamedTuple):
    """Seconds an image of a training step (forward and backward) and of an evaluation
    (forward in eval mode), from one timed batch."""
    train: float
    evaluate: float


def time_batch(model, images, repeat=1):
    """BatchTimes of ``model`` on ``images`` (n, 1, H, W), the fastest of ``repeat`` passes;
    its kernels should be compiled already. Leaves the model in eval mode."""
    n = len(images)
    train = evaluate = float("inf")
    for _ in range(repeat):
        model.train()
        start = time.perf_counter()
        model.backward(np.ones_like(model.forward(images)))
        train = min(train, time.perf_counter() - start)
        model.eval()
        start = time.perf_counter()
        model.forward(images)
        evaluate = min(evaluate, time.perf_counter() - start)
    return BatchTimes(train / n, evaluate / n)


def duration(seconds):
    """``seconds`` for a person: "40 s", "12 min", "1 h 05 min"."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class RunClock:
    """Elapsed and estimated remaining time of a run of ``stages`` (a list of Stage, in
    order), given ``batch_times`` ({arm: BatchTimes}) for the arms not measured yet."""

    def __init__(self, stages, batch_times, started=None):
        self.stages = list(stages)
        self.batch_times = dict(batch_times)
        self.started = time.perf_counter() if started is None else started
        self.train_per_image = {}        # arm -> measured seconds an image of training
        self.eval_per_image = {}         # arm -> measured seconds an image of evaluation

    def trained(self, arm, history):
        """Record the epochs of ``history`` (records with "seconds" and
        "images_per_second") as measurements of ``arm``'s training speed."""
        seconds = sum(h["seconds"] for h in history)
        images = sum(h["seconds"] * h["images_per_second"] for h in history)
        if seconds > 0 and images > 0:
            self.train_per_image[arm] = seconds / images

    def evaluated(self, arm, seconds, images):
        """Record an evaluation of ``images`` that took ``seconds``."""
        if seconds > 0 and images > 0:
            self.eval_per_image[arm] = seconds / images

    def _rate(self, arm, measured, guess):
        """Measured seconds an image of ``arm``, or the batch guess times the mean ratio
        of measured to guessed over the arms measured so far (1 while there are none)."""
        if arm in measured:
            return measured[arm]
        ratios = [measured[a] / guess(a) for a in measured
                  if a in self.batch_times and guess(a) > 0]
        correction = sum(ratios) / len(ratios) if ratios else 1.0
        return guess(arm) * correction if arm in self.batch_times else 0.0

    def stage_seconds(self, stage):
        """The estimated seconds of a whole ``stage``."""
        train = self._rate(stage.arm, self.train_per_image, lambda a: self.batch_times[a].train)
        evaluate = self._rate(stage.arm, self.eval_per_image,
                              lambda a: self.batch_times[a].evaluate)
        return (stage.epochs * (stage.images * train + stage.curve_images * evaluate)
                + stage.test_images * evaluate)

    def elapsed(self):
        return time.perf_counter() - self.started

    def line(self, k):
        """The line printed before stage ``k`` (0-based) starts."""
        stage = self.stages[k]
        left = sum(self.stage_seconds(s) for s in self.stages[k:])
        return (f"run: stage {k + 1} of {len(self.stages)} ({stage.arm}, seed {stage.seed}); "
                f"{duration(self.elapsed())} elapsed, about {duration(left)} left")
