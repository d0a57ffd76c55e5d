"""The training loop: seeded batches, a tiny run that learns, evaluation, the progress line."""
import re

import numpy as np
import pytest

from dcn_ref import models
from dcn_ref.nn import BatchNorm2D, SoftmaxCrossEntropy
from dcn_ref.optim import Adam
from dcn_ref.train import evaluate, minibatches, predict, progress_bar, train_epoch


def strokes(n, size=12, seed=0):
    """n images (n, 1, size, size) of four classes: a horizontal bar, a vertical bar and
    the two diagonals, shifted at random by up to 2 pixels, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = 0.1 * rng.standard_normal((n, 1, size, size))
    r = np.arange(3, size - 3)
    for i, label in enumerate(labels):
        dy, dx = rng.integers(-2, 3, 2)
        rows, cols = {0: (np.full_like(r, size // 2), r), 1: (r, np.full_like(r, size // 2)),
                      2: (r, r), 3: (r, r[::-1])}[label]
        images[i, 0, rows + dy, cols + dx] += 1.0
    return images.astype(np.float32), labels


def test_minibatches_cover_every_index_once_in_a_seeded_order():
    batches = list(minibatches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    again = list(minibatches(10, 4, np.random.default_rng(0)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    rng = np.random.default_rng(0)
    epoch1, epoch2 = np.concatenate(list(minibatches(10, 4, rng))), np.concatenate(list(minibatches(10, 4, rng)))
    assert not np.array_equal(epoch1, epoch2)


def tiny_run(epochs):
    """cnn() trained on 200 stroke images; the BatchNorms' momentum is 0.5 instead of 0.99
    so that their running statistics settle within the 10 steps of an epoch."""
    images, labels = strokes(200)
    model = models.cnn(seed=0)
    for layer in model:
        if isinstance(layer, BatchNorm2D):
            layer.momentum = 0.5
    loss, optimizer, rng = SoftmaxCrossEntropy(), Adam(model, lr=3e-3), np.random.default_rng(0)
    before = loss.forward(predict(model, images), labels)
    stats = [train_epoch(model, loss, optimizer, images, labels, 20, rng, progress=False)
             for _ in range(epochs)]
    return model, before, stats


def test_a_tiny_run_learns():
    model, before, stats = tiny_run(2)
    images, labels = strokes(200)
    after = SoftmaxCrossEntropy().forward(predict(model, images), labels)
    assert before > 2.0                     # about ln 10: the untrained model guesses
    assert after < 0.1 * before
    assert stats[1].loss < stats[0].loss and stats[1].accuracy > 0.9
    assert stats[0].images_per_second > 0
    assert evaluate(model, *strokes(100, seed=1)) > 0.9


def test_a_run_is_a_function_of_its_seed():
    first, _, _ = tiny_run(1)
    again, _, _ = tiny_run(1)
    for key, value in first.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)


def test_transform_sees_every_batch_and_evaluate_restores_the_mode():
    images, labels = strokes(30)
    model = models.cnn(seed=0)
    seen = []

    def flip(batch, rng):
        seen.append(len(batch))
        return batch[:, :, :, ::-1]

    train_epoch(model, SoftmaxCrossEntropy(), Adam(model), images, labels, 8,
                np.random.default_rng(0), transform=flip, progress=False)
    assert seen == [8, 8, 8, 6]
    assert model.training
    evaluate(model, images, labels)
    assert model.training and all(layer.training for layer in model)


def test_progress_bar(capsys):
    images, labels = strokes(10)
    model = models.cnn(seed=0)
    train_epoch(model, SoftmaxCrossEntropy(), Adam(model), images, labels, 5,
                np.random.default_rng(0), progress=True, label="stage 1/4 cnn")
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    # tqdm's line: label, count, elapsed<ETA, rate, and our loss and accuracy
    assert last.startswith("stage 1/4 cnn: 100%") and "10/10 [" in last
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?img/s, loss [\d.]+, acc [\d.]+\]", last), last
    train_epoch(model, SoftmaxCrossEntropy(), Adam(model), images, labels, 5,
                np.random.default_rng(0), progress=False)
    assert capsys.readouterr().err == ""


def test_progress_bar_is_tqdm_auto():
    import tqdm.auto
    with progress_bar(4, enabled=False) as bar:
        assert isinstance(bar, tqdm.auto.tqdm)


def test_evaluate_refuses_labels_out_of_range_and_non_finite_images():
    model = models.cnn()
    images = np.zeros((3, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0..9, got 10 at index 1"):
        evaluate(model, images, np.array([0, 10, 2]))
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0..9, got -1 at index 0"):
        evaluate(model, images, np.array([-1, 0, 2]))
    with pytest.raises(ValueError, match=r"labels: expected integer class indices, got dtype float64"):
        evaluate(model, images, np.array([0.0, 1.0, 2.0]))
    images[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"images: expected finite values, got 1 NaN or infinite"):
        evaluate(model, images, np.array([0, 1, 2]))


def test_data_arguments():
    model = models.cnn()
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\) \(one per image\), got \(2,\)"):
        evaluate(model, np.zeros((3, 1, 8, 8), np.float32), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"images: expected an ndarray of shape \(N, C, H, W\), got \(3, 8, 8\)"):
        evaluate(model, np.zeros((3, 8, 8), np.float32), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"batch_size: expected a positive int, got 0"):
        train_epoch(model, SoftmaxCrossEntropy(), Adam(model), np.zeros((3, 1, 8, 8), np.float32),
                    np.zeros(3, int), 0, np.random.default_rng(0))


def test_a_non_finite_loss_stops_the_epoch_before_its_step():
    from dcn_ref.train import NonFiniteLoss
    images, labels = strokes(64)
    model = models.cnn(seed=0)
    optimizer = Adam(model, lr=1e-3)
    images = images.copy()
    images[40] = np.nan                  # the batch holding image 40 has a NaN loss
    rng = np.random.default_rng(0)
    order = np.concatenate(list(minibatches(64, 16, np.random.default_rng(0))))
    bad_step = int(np.nonzero(order == 40)[0][0]) // 16 + 1
    before = None
    with pytest.raises(NonFiniteLoss) as info:
        # record the parameters before each step so we can check the bad step did not move them
        def snapshot(x, _rng):
            nonlocal before
            before = {k: v.copy() for k, v in model.params.items()}
            return x
        train_epoch(model, SoftmaxCrossEntropy(), optimizer, images, labels, 16, rng,
                    transform=snapshot, progress=False)
    assert info.value.step == bad_step and np.isnan(info.value.loss)
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
