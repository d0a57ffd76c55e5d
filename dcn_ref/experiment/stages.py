"""The four training stages of the scaled-MNIST experiment, each resumable epoch by epoch.

    cnn            the plain CNN, from scratch, on normal digits
    deform_offset  deform_cnn("offset") from the trained cnn; only the ConvOffset2D layers
                   and the batch norms train (convolution and dense weights frozen, as in
                   the Keras experiment)
    deform_dcn     deform_cnn("dcn") from the trained cnn; only the offset convolutions of
                   the DeformConv2D layers and the batch norms train
    cnn_scaled     the control the Keras experiment lacks: the trained cnn fine-tuned on the
                   same data with the same budget, every layer trainable

The three fine-tuning stages see the same images in the same order: every training digit
scaled and shifted afresh each epoch, plus a random share of them unscaled.
"""
import math
import time
from typing import NamedTuple

import numpy as np

from .. import models
from ..data import scaled_epoch
from ..nn import BatchNorm2D, ConvOffset2D, SoftmaxCrossEntropy
from ..optim import Adam
from ..train import NonFiniteLoss, train_epoch
from . import checkpoint


class ExperimentError(Exception):
    """The run cannot go on: a one-line reason for the user (exit status 1 or 2)."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


class Stage(NamedTuple):
    name: str
    build: object          # () -> Sequential
    trains: object         # (model) -> list of "layer" / "layer.param" names that train
    epochs: int
    lr: float
    finetune: bool         # start from the trained cnn, train on the fine-tuning data


def _deform_offsets_only(model):
    """The offset layers and batch norms of a deformable model: what the Keras run trained."""
    names = [l.name for l in model if isinstance(l, (ConvOffset2D, BatchNorm2D))]
    for layer in model:
        if "offset_weight" in layer.params:     # DeformConv2D: its offset (and mask) convolution
            names += [f"{layer.name}.{k}" for k in layer.params if k.startswith(("offset_", "mask_"))]
    return names


def _everything(model):
    return [l.name for l in model]


def stages(config):
    seed = config.seed
    return [
        Stage("cnn", lambda: models.cnn(seed=seed), _everything, config.cnn_epochs, config.cnn_lr,
              False),
        Stage("deform_offset", lambda: models.deform_cnn("offset", seed=seed), _deform_offsets_only,
              config.finetune_epochs, config.offset_lr, True),
        Stage("deform_dcn", lambda: models.deform_cnn("dcn", modulated=config.dcn_modulated,
                                                      offset_groups=config.dcn_offset_groups,
                                                      seed=seed),
              _deform_offsets_only, config.finetune_epochs, config.dcn_lr, True),
        Stage("cnn_scaled", lambda: models.cnn(seed=seed), _everything, config.finetune_epochs,
              config.scaled_lr, True),
    ]


def as_batch(images):
    """uint8 digits (N, 28, 28) -> float32 model input (N, 1, 28, 28) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[:, None]


def epoch_data(stage, config, train_images, train_labels, epoch):
    """The (images (n, 1, 28, 28) float32, labels) of one epoch of ``stage``."""
    if not stage.finetune:
        return as_batch(train_images), train_labels
    scaled, _ = scaled_epoch(train_images, config.seed, epoch)
    rng = np.random.default_rng([config.seed, epoch, 1])
    normal = rng.permutation(len(train_images))[:round(config.normal_fraction * len(train_images))]
    images = np.concatenate([scaled, train_images[normal]])
    labels = np.concatenate([train_labels, train_labels[normal]])
    return as_batch(images), labels


def random_shifts(batch, rng, largest):
    """Move every image of ``batch`` (n, 1, H, W) by its own whole-pixel shift, each axis drawn
    uniformly from -largest..largest; pixels moved in from outside are 0 (background)."""
    if largest == 0:
        return batch
    n, _, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (largest, largest), (largest, largest)))
    dy, dx = rng.integers(0, 2 * largest + 1, size=(2, n))
    return np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def cosine_lr(lr, epoch, epochs):
    """The learning rate of ``epoch``: cosine decay from lr to lr/20 over the stage."""
    if epochs <= 1:
        return lr
    return lr / 20 + (lr - lr / 20) * 0.5 * (1 + math.cos(math.pi * epoch / (epochs - 1)))


def run_stage(stage, config, data, folder, start_state=None, log=print, progress=True):
    """Train ``stage`` from its last checkpoint in ``folder`` (or from the start).

    Returns (model, history): history is one record per epoch (loss, accuracy, images/s,
    seconds, lr). Raises ExperimentError for a non-finite loss; the checkpoints of the
    finished epochs stay.
    """
    model = stage.build()
    if stage.finetune:
        model.load_state_dict(start_state, strict=False)
    model.train_only(stage.trains(model))
    optimizer = Adam(model, lr=stage.lr, weight_decay=config.weight_decay)
    history, first = [], 0
    last = checkpoint.latest(folder, stage.name)
    if last is not None:
        state, optim_state, meta = checkpoint.load(last)
        if meta["config"] != config.as_dict():
            raise ExperimentError(f"--resume: {last} was written with other settings "
                                  f"({meta['config']}); use the same options or another --out")
        model.load_state_dict(state)
        optimizer.load_state_dict(optim_state)
        history, first = meta["history"], meta["epoch"]
        if first < stage.epochs:
            log(f"{stage.name}: resuming after epoch {first} ({last.name})")
    loss = SoftmaxCrossEntropy()
    for epoch in range(first, stage.epochs):
        images, labels = epoch_data(stage, config, *data, epoch)
        optimizer.lr = cosine_lr(stage.lr, epoch, stage.epochs)
        rng = np.random.default_rng([config.seed, epoch, 2])
        label = f"{stage.name} {epoch + 1}/{stage.epochs}"
        shift = config.cnn_shift if not stage.finetune else 0
        try:
            stats = train_epoch(model, loss, optimizer, images, labels, config.batch_size, rng,
                                transform=lambda x, r: random_shifts(x, r, shift),
                                progress=progress, label=label)
        except NonFiniteLoss as exc:
            kept = checkpoint.newest(folder)
            raise ExperimentError(
                f"stage {stage.name}, epoch {epoch + 1}, step {exc.step}: the loss is {exc.loss}; "
                f"stopped (last good checkpoint: {kept if kept else 'none yet'})", status=1) from None
        history.append({"epoch": epoch + 1, "loss": stats.loss, "accuracy": stats.accuracy,
                        "images_per_second": stats.images_per_second, "seconds": stats.seconds,
                        "lr": optimizer.lr})
        checkpoint.save(folder, stage.name, epoch + 1, model, optimizer,
                        {"config": config.as_dict(), "history": history})
        if not progress:
            log(f"{label}: loss {stats.loss:.4f}, accuracy {stats.accuracy:.4f}, "
                f"{stats.images_per_second:.0f} img/s")
    return model, history


def forward_ms(model, images, repeat=5):
    """Median time (ms) of a forward pass of ``images`` in eval mode."""
    model.eval()
    model.forward(images)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.forward(images)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))
