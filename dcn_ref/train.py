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
from tqdm.auto import tqdm

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


def progress_bar(total, enabled=True, label="", file=None):
    """A tqdm progress bar over ``total`` images (``tqdm.auto``: a widget in a notebook, a
    line on stderr in a terminal) with elapsed time, ETA and rate; a no-op when not
    ``enabled``."""
    return tqdm(total=total, desc=label or None, unit="img", disable=not enabled,
                file=file if file is not None else sys.stderr, dynamic_ncols=True,
                mininterval=0.2, leave=True)


def train_epoch(model, loss, optimizer, images, labels, batch_size, rng, transform=None,
                progress=True, label=""):
    """One pass over the training set in train mode, one optimiser step per mini-batch.

    Parameters
    ----------
    model : Layer
        A Sequential (or any Layer) mapping (n, C, H, W) images to (n, K) logits.
    loss : SoftmaxCrossEntropy
    optimizer : Optimizer
        An optimiser of ``model`` (dcn_ref.optim).
    images : ndarray of shape (N, C, H, W)
        Batches are cast to the model's dtype.
    labels : int ndarray of shape (N,)
    batch_size : int
    rng : numpy Generator
        For the batch order (and ``transform``).
    transform : callable or None
        ``f(batch, rng) -> batch`` on (n, C, H, W) batches, e.g. a random augmentation.
    progress : bool
        Draw a progress bar (tqdm: elapsed time, ETA, images/s, loss, accuracy).
    label : str
        Shown before the progress bar.

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
    total_loss = correct = seen = 0
    start = time.perf_counter()
    with progress_bar(images.shape[0], progress, label) as bar:
        for step, index in enumerate(minibatches(images.shape[0], batch_size, rng), start=1):
            x = images[index].astype(model.dtype, copy=False)
            if transform is not None:
                x = transform(x, rng)
            batch_loss = loss.forward(model.forward(x), labels[index])
            if not np.isfinite(batch_loss):
                raise NonFiniteLoss(step, batch_loss)
            model.backward(loss.backward())
            optimizer.step()
            n = len(index)
            seen += n
            total_loss += batch_loss * n
            correct += loss.accuracy * n
            bar.set_postfix_str(f"loss {total_loss / seen:.4f}, acc {correct / seen:.3f}",
                                refresh=False)
            bar.update(n)
    seconds = time.perf_counter() - start
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
    """The share of ``images`` whose most probable class (eval mode) is their label.

    Raises ValueError when ``images`` hold NaN or infinite values, or ``labels`` are not
    integers in 0..K-1 for the model's K classes."""
    labels = _check_data(images, labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    if not np.isfinite(images).all():
        raise ValueError(f"images: expected finite values, got "
                         f"{np.count_nonzero(~np.isfinite(images))} NaN or infinite ones")
    logits = predict(model, images, batch_size)
    classes = logits.shape[1]
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise ValueError(f"labels: expected class indices in 0..{classes - 1}, got {labels[bad[0]]} "
                         f"at index {bad[0]} ({bad.size} out of range)")
    return float(np.mean(logits.argmax(axis=1) == labels))
