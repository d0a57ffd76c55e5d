"""The arms of the scaled-MNIST experiment, each trained as a stage resumable epoch by epoch.

    cnn                the plain CNN, from scratch, on normal digits (every other arm starts
                       from it)
    cnn_scaled         the control: the trained cnn fine-tuned, every layer trainable
    cnn_scaled_match_dcn, cnn_scaled_match_offset
                       capacity-matched controls: the control widened (every layer's
                       channels by one factor, models.matched_widths) to the parameter
                       count of the "dcn" or the "offset" deformable model, started as
                       exactly the trained cnn (models.load_narrower) and fine-tuned as
                       the control is. What a deformable arm gains over them is not
                       explained by its extra parameters alone
    deform_offset      deform_cnn("offset"): only the ConvOffset2D layers and the batch norms
                       train (convolution and dense weights frozen, as in the Keras experiment)
    deform_dcn         deform_cnn("dcn"): only the offset convolutions of the DeformConv2D
                       layers and the batch norms train
    deform_offset_all  deform_cnn("offset") with every layer trainable: the same freedom as
                       the control
    deform_dcn_all     deform_cnn("dcn") with every layer trainable
    deform_dcnv3       dcnv3_cnn(): InternImage's DCNv3 block as a residual layer in front
                       of conv21 and conv22 (see models.dcnv3_cnn for why there), every
                       layer trainable; it starts as exactly the trained cnn. Not in the
                       default run (it is the slowest arm): --models deform_dcnv3 or all

Every fine-tuned arm sees the same images in the same order for the same number of epochs:
every training digit scaled and shifted afresh each epoch, plus a random share of them
unscaled. In the "_all" arms the weights shared with the cnn train at the control's
learning rate and the offset parameters at the rate of their offsets-only arm. Every
fine-tuned arm starts from the trained cnn: the "dcn" and DCNv3 arms and the matched
controls as exactly that cnn (offsets zero; extra channels that nothing reads yet), the
"offset" arms nearly (their offset layers start from small random weights, as in Keras).

An arm is a row of ``ARMS``; a new one (e.g. another deformable block in place of conv21
and conv22) is a build function, a choice of trainable parameters and learning rates, and
(when it is not a cnn with extra layers) how it starts from the trained cnn.
"""
import math
import time
from typing import NamedTuple

import numpy as np

from .. import models
from ..data import scaled_epoch
from ..nn import BatchNorm2D, ConvOffset2D, SoftmaxCrossEntropy
from ..optim import Adam
from ..train import NonFiniteLoss, evaluate, train_epoch
from . import checkpoint


class ExperimentError(Exception):
    """The run cannot go on: a one-line reason for the user (exit status 1 or 2)."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


class Arm(NamedTuple):
    """One model of the experiment and how it trains."""
    name: str
    description: str
    build: object          # (config) -> Sequential, initialised from config.seed
    trains: object         # (model) -> list of "layer" / "layer.param" names that train
    lr: object             # (config) -> the stage's learning rate (Adam, cosine decay)
    offset_lr: object      # None, or (config) -> the learning rate of the offset parameters
    finetune: bool         # start from the trained cnn, train on the fine-tuning data
    start: object = None   # (model, cnn state_dict) -> None: how a fine-tuned arm starts from
                           # the trained cnn; None: load the layers it shares by name


def offset_params(model):
    """The "layer.param" names of a model's offset parameters: every parameter of its
    ConvOffset2D layers, the offset (and mask) convolution of its DeformConv2D layers."""
    names = []
    for layer in model:
        for key in layer.params:
            if isinstance(layer, ConvOffset2D) or key.startswith(("offset_", "mask_")):
                names.append(f"{layer.name}.{key}")
    return names


def _offsets_only(model):
    """The offset parameters and batch norms of a deformable model: what the Keras run trained."""
    return offset_params(model) + [l.name for l in model if isinstance(l, BatchNorm2D)]


def _everything(model):
    return [l.name for l in model]


def _cnn(config):
    return models.cnn(seed=config.seed)


def _offset(config):
    return models.deform_cnn("offset", seed=config.seed)


def _dcnv3(config):
    return models.dcnv3_cnn(seed=config.seed)


def _dcn(config):
    return models.deform_cnn("dcn", modulated=config.dcn_modulated,
                             offset_groups=config.dcn_offset_groups, seed=config.seed)


def _matched(build):
    """A build function: the cnn widened to the parameter count of the model ``build`` makes."""
    def wide_cnn(config):
        widths = models.matched_widths(build(config).num_params())
        return models.cnn(seed=config.seed, widths=widths)
    return wide_cnn


def _load_shared(model, cnn_state):
    model.load_state_dict(cnn_state, strict=False)


ARMS = {arm.name: arm for arm in [
    Arm("cnn", "plain CNN trained on normal digits", _cnn, _everything,
        lambda c: c.cnn_lr, None, False),
    Arm("cnn_scaled", "the cnn fine-tuned, every layer trainable (the control)", _cnn,
        _everything, lambda c: c.scaled_lr, None, True),
    Arm("cnn_scaled_match_dcn", "the control widened (every layer's channels by one factor) "
        "to the parameter count of deform_dcn and deform_dcn_all, its extra channels unread "
        "at the start; fine-tuned as the control", _matched(_dcn), _everything,
        lambda c: c.scaled_lr, None, True, models.load_narrower),
    Arm("cnn_scaled_match_offset", "the control widened to the parameter count of "
        "deform_offset and deform_offset_all, likewise", _matched(_offset), _everything,
        lambda c: c.scaled_lr, None, True, models.load_narrower),
    Arm("deform_offset", "Keras-style ConvOffset2D layers before conv12/21/22; only the "
        "offsets and batch norms fine-tuned", _offset, _offsets_only, lambda c: c.offset_lr,
        None, True),
    Arm("deform_dcn", "conv12/21/22 as DeformConv2D; only the offset convolutions and batch "
        "norms fine-tuned", _dcn, _offsets_only, lambda c: c.dcn_lr, None, True),
    Arm("deform_offset_all", "deform_offset with every layer fine-tuned (offsets at "
        "deform_offset's rate, the rest at the control's)", _offset, _everything,
        lambda c: c.scaled_lr, lambda c: c.offset_lr, True),
    Arm("deform_dcn_all", "deform_dcn with every layer fine-tuned (offsets at deform_dcn's "
        "rate, the rest at the control's)", _dcn, _everything, lambda c: c.scaled_lr,
        lambda c: c.dcn_lr, True),
    Arm("deform_dcnv3", "DCNv3 blocks (InternImage) in front of conv21/22, starting as the "
        "identity; every layer fine-tuned (offsets and point weights at deform_dcn's rate, "
        "the rest at the control's)", _dcnv3, _everything, lambda c: c.scaled_lr,
        lambda c: c.dcn_lr, True),
]}

#: The arms of a run without --models: the plain CNN, the control and the deformable model
#: with the same freedom, which one seed runs within 15 minutes on 2 cores. The Keras
#: recipe ``deform_offset`` (about 9 minutes more: its offset layers cost 3.4 times the
#: multiply-adds of the whole CNN) runs when asked for.
DEFAULT_ARMS = ("cnn", "cnn_scaled", "deform_dcn_all")


#: The controls the deformable arms are compared with in the report: the control, and the
#: matched controls (each paired with the deformable arms whose parameter count it matches).
CONTROLS = ("cnn_scaled", "cnn_scaled_match_dcn", "cnn_scaled_match_offset")


def select(names):
    """The arms ``names`` (a list of arm names, or ["all"]; any case) in table order; "cnn"
    is always included, since every other arm starts from it."""
    names = [n.strip().lower() for n in names if n.strip()]
    names = list(ARMS) if names == ["all"] else names
    unknown = [n for n in names if n not in ARMS]
    if unknown or not names:
        raise ExperimentError(f"--models: expected names from {', '.join(ARMS)} (or 'all'), "
                              f"got {', '.join(unknown) or 'nothing'}")
    return [ARMS[n] for n in ARMS if n in names or n == "cnn"]


def epochs_of(arm, config):
    return config.finetune_epochs if arm.finetune else config.cnn_epochs


def images_per_epoch(arm, config, n_train):
    """How many images an epoch of ``arm`` trains on, out of ``n_train`` digits."""
    if not arm.finetune:
        return n_train
    return n_train + round(config.normal_fraction * n_train)


def as_batch(images):
    """uint8 digits (N, 28, 28) -> float32 model input (N, 1, 28, 28) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[:, None]


def epoch_data(arm, config, train_images, train_labels, epoch):
    """The (images (n, 1, 28, 28) float32, labels) of one epoch of ``arm``."""
    if not arm.finetune:
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


def _build(arm, config, start_state):
    """(model, optimiser) of ``arm`` before its first epoch."""
    model = arm.build(config)
    if arm.finetune:
        (arm.start or _load_shared)(model, start_state)
    model.train_only(arm.trains(model))
    scale = {}
    if arm.offset_lr is not None:
        scale = {name: arm.offset_lr(config) / arm.lr(config) for name in offset_params(model)}
    optimizer = Adam(model, lr=arm.lr(config), weight_decay=config.weight_decay, lr_scale=scale)
    return model, optimizer


def _restore(arm, config, start_state, folder, stage, log):
    """(model, optimiser, history, path) from the newest usable checkpoint of ``stage`` in
    ``folder``, or from the start; a checkpoint that cannot be used is named, renamed to
    "<name>.unusable" (kept for a look, out of the way of the epoch's new checkpoint) and
    skipped."""
    def skip(path, reason):
        aside = path.with_name(path.name + ".unusable")
        path.replace(aside)
        log(f"{stage}: skipping checkpoint {reason}; renamed it {aside.name}")

    for path in checkpoint.candidates(folder, stage):
        try:
            state, optim_state, meta = checkpoint.load(path, stage)
        except checkpoint.CheckpointError as exc:
            skip(path, exc)
            continue
        if meta["config"] != config.as_dict():
            raise ExperimentError(f"--resume: {path} was written with other settings "
                                  f"({meta['config']}); use the same options or another --out")
        model, optimizer = _build(arm, config, start_state)
        try:
            model.load_state_dict(state)
            optimizer.load_state_dict(optim_state)
        except ValueError as exc:
            skip(path, f"{path.name}: it does not fit the model ({exc})")
            continue
        return model, optimizer, meta["history"], path
    model, optimizer = _build(arm, config, start_state)
    return model, optimizer, [], None


def run_stage(arm, config, data, folder, start_state=None, log=print, progress=True,
              label="", curve=None, keep="last"):
    """Train ``arm`` (with ``config.seed``) from its last usable checkpoint in ``folder``.

    Parameters
    ----------
    arm : Arm
    config : Config
    data : (images (N, 28, 28) uint8, labels (N,)) the training digits.
    folder : Path of the checkpoints.
    start_state : the trained cnn's state_dict, for a fine-tuning arm.
    label : str, shown before the progress bar (e.g. "stage 2/4").
    curve : None or ((normal (n, 1, 28, 28), scaled, labels)): test digits evaluated after
        every epoch, for the test-accuracy curve.
    keep : "last" (delete a stage's older checkpoints once its next is written) or "all".

    Returns (model, history): history is one record per epoch (loss, accuracy, images/s,
    seconds, lr, and the curve's test accuracies). Raises ExperimentError for a non-finite
    loss; the checkpoints of the finished epochs stay.
    """
    stage = checkpoint.stage_name(arm.name, config.seed)
    epochs = epochs_of(arm, config)
    model, optimizer, history, last = _restore(arm, config, start_state, folder, stage, log)
    first = len(history)
    if last is not None and first < epochs:
        log(f"{stage}: resuming after epoch {first} ({last.name})")
    loss = SoftmaxCrossEntropy()
    for epoch in range(first, epochs):
        images, labels = epoch_data(arm, config, *data, epoch)
        optimizer.lr = cosine_lr(arm.lr(config), epoch, epochs)
        rng = np.random.default_rng([config.seed, epoch, 2])
        text = f"{label} {arm.name} seed {config.seed} epoch {epoch + 1}/{epochs}".strip()
        shift = config.cnn_shift if not arm.finetune else 0
        try:
            stats = train_epoch(model, loss, optimizer, images, labels, config.batch_size, rng,
                                transform=lambda x, r: random_shifts(x, r, shift),
                                progress=progress, label=text)
        except NonFiniteLoss as exc:
            kept = checkpoint.newest(folder)
            raise ExperimentError(
                f"stage {arm.name}, seed {config.seed}, epoch {epoch + 1}, step {exc.step}: the "
                f"loss is {exc.loss}; stopped (last good checkpoint: "
                f"{kept if kept else 'none yet'})", status=1) from None
        record = {"epoch": epoch + 1, "loss": stats.loss, "accuracy": stats.accuracy,
                  "images_per_second": stats.images_per_second, "seconds": stats.seconds,
                  "lr": optimizer.lr}
        if curve is not None:
            normal, scaled, curve_labels = curve
            record["test_accuracy_normal"] = evaluate(model, normal, curve_labels)
            record["test_accuracy_scaled"] = evaluate(model, scaled, curve_labels)
        history.append(record)
        checkpoint.save(folder, stage, epoch + 1, model, optimizer,
                        {"config": config.as_dict(), "history": history})
        if keep == "last":
            checkpoint.remove_older(folder, stage, epoch + 1)
        if not progress:
            log(f"{text}: loss {stats.loss:.4f}, accuracy {stats.accuracy:.4f}, "
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
