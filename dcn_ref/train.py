"""Training and evaluation loops: seeded mini-batches, one epoch at a time.

    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        stats = train_epoch(model, loss, optimizer, x_train, y_train, 32, rng)
        accuracy = evaluate(model, x_test, y_test)

The batch order of every epoch is one permutation drawn from ``rng``, so a run is a
function of the seed (and the optional ``transform``, which draws from the same rng).
"""
import sys
import time
from typing import NamedTuple

import numpy as np

from .nn._args import positive_int


class NonFiniteLoss(ArithmeticError):
    """The loss of a mini-batch was NaN or infinite; ``step`` is its 1-based index in the epoch."""

    def __init__(self, step, loss):
        super().__init__(f"step {step}: the loss is {loss}")
        self.step = step
        self.loss = loss


class EpochStats(NamedTuple):
    loss: float               # mean training loss over the epoch's images
    accuracy: float           # share of the epoch's images classified right while training
    images_per_second: float
    seconds: float


def minibatches(n, batch_size, rng):
    """Index arrays covering range(n) in a random order drawn from ``rng``; the last batch
    may be smaller."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _check_data(images, labels):
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        got = images.shape if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"images: expected an ndarray of shape (N, C, H, W), got {got}")
    if images.shape[0] == 0:
        raise ValueError(f"images: expected at least one image, got shape {images.shape}")
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels: expected shape ({images.shape[0]},) (one per image), "
                         f"got {labels.shape}")
    return labels


class Progress:
    """A one-line progress bar on stderr, redrawn with a carriage return (at most every
    ``interval`` seconds) and ended with a newline by ``close``."""

    def __init__(self, total, enabled=True, stream=None, width=24, interval=0.1, label=""):
        self.total, self.enabled, self.width, self.interval = total, enabled, width, interval
        self.label = f"{label} " if label else ""
        self.stream = stream if stream is not None else sys.stderr
        self._last = -np.inf

    def update(self, done, loss, accuracy, images_per_second, force=False):
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self.interval):
            return
        self._last = now
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label}[{bar}] {done}/{self.total}  loss {loss:.4f}  acc {accuracy:.3f}"
                          f"  {images_per_second:.0f} img/s")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def train_epoch(model, loss, optimizer, images, labels, batch_size, rng, transform=None,
                progress=True, label=""):
    """One pass over the training set in train mode, one optimiser step per mini-batch.

    Parameters
    ----------
    model : Sequential (or any Layer) mapping (n, C, H, W) images to (n, K) logits.
    loss : SoftmaxCrossEntropy
    optimizer : an optimiser of ``model`` (dcn_ref.optim)
    images : ndarray of shape (N, C, H, W); batches are cast to the model's dtype.
    labels : int ndarray of shape (N,)
    batch_size : int
    rng : numpy Generator, for the batch order (and ``transform``).
    transform : None or f(batch (n, C, H, W), rng) -> batch, e.g. a random augmentation.
    progress : bool, draw a progress bar on stderr.
    label : str, shown before the progress bar.

    Returns
    -------
    EpochStats(loss, accuracy, images_per_second, seconds)

    Raises
    ------
    NonFiniteLoss
        When a mini-batch's loss is NaN or infinite; the parameters are left as they were
        before that mini-batch's step.
    """
    labels = _check_data(images, labels)
    batch_size = positive_int(batch_size, "batch_size")
    model.train()
    bar = Progress(images.shape[0], progress, label=label)
    total_loss = correct = seen = 0
    start = time.perf_counter()
    for step, index in enumerate(minibatches(images.shape[0], batch_size, rng), start=1):
        x = images[index].astype(model.dtype, copy=False)
        if transform is not None:
            x = transform(x, rng)
        batch_loss = loss.forward(model.forward(x), labels[index])
        if not np.isfinite(batch_loss):
            bar.close()
            raise NonFiniteLoss(step, batch_loss)
        model.backward(loss.backward())
        optimizer.step()
        n = len(index)
        seen += n
        total_loss += batch_loss * n
        correct += loss.accuracy * n
        bar.update(seen, total_loss / seen, correct / seen, seen / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    bar.update(seen, total_loss / seen, correct / seen, seen / seconds, force=True)
    bar.close()
    return EpochStats(total_loss / seen, correct / seen, seen / seconds, seconds)


def predict(model, images, batch_size=256):
    """Logits (N, K) of ``images`` (N, C, H, W) in eval mode (the model's mode is restored)."""
    batch_size = positive_int(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    try:
        return np.concatenate([model.forward(images[i:i + batch_size].astype(model.dtype, copy=False))
                               for i in range(0, images.shape[0], batch_size)])
    finally:
        model.train(was_training)


def evaluate(model, images, labels, batch_size=256):
    """The share of ``images`` whose most probable class (eval mode) is their label."""
    labels = _check_data(images, labels)
    return float(np.mean(predict(model, images, batch_size).argmax(axis=1) == labels))
