"""Optimiser steps against updates computed by hand, frozen layers, and resuming from a
saved optimiser state."""
import numpy as np
import pytest

from dcn_ref.nn import Conv2D, Dense, GlobalAvgPool2D, ReLU, Sequential, SoftmaxCrossEntropy
from dcn_ref.optim import SGD, Adam


def one_param_model(values, grads):
    """A Dense layer whose weight is ``values`` (1, n), with gradient ``grads``."""
    layer = Dense(len(values), 1, bias=False, dtype=np.float64)
    layer.params["weight"][...] = [values]
    layer.grads["weight"][...] = [grads]
    return layer


def weight(layer):
    return layer.params["weight"][0].tolist()


def test_sgd_plain():
    layer = one_param_model([1.0, -2.0], [0.5, -4.0])
    SGD(layer, lr=0.1).step()
    assert weight(layer) == pytest.approx([1.0 - 0.05, -2.0 + 0.4])


def test_sgd_momentum_three_steps_with_a_constant_gradient():
    # v1 = g = 0.5,  v2 = 0.9*0.5 + 0.5 = 0.95,  v3 = 0.9*0.95 + 0.5 = 1.355
    layer = one_param_model([1.0], [0.5])
    sgd = SGD(layer, lr=0.1, momentum=0.9)
    expected = [1.0 - 0.05, 1.0 - 0.05 - 0.095, 1.0 - 0.05 - 0.095 - 0.1355]
    for p in expected:
        sgd.step()
        assert weight(layer) == pytest.approx([p], abs=1e-15)


def test_sgd_nesterov_two_steps():
    # step 1: v = 2, p -= 0.1*(2 + 0.5*2) = 0.3;  grad -> -1
    # step 2: v = 0.5*2 - 1 = 0,  p -= 0.1*(-1 + 0.5*0) = -0.1
    layer = one_param_model([3.0], [2.0])
    sgd = SGD(layer, lr=0.1, momentum=0.5, nesterov=True)
    sgd.step()
    assert weight(layer) == pytest.approx([2.7])
    layer.grads["weight"][...] = -1.0
    sgd.step()
    assert weight(layer) == pytest.approx([2.8])


def test_sgd_weight_decay():
    # g = 1 + 0.1*4 = 1.4, p = 4 - 0.5*1.4 = 3.3; then g = 1 + 0.33 = 1.33, p = 3.3 - 0.665
    layer = one_param_model([4.0], [1.0])
    sgd = SGD(layer, lr=0.5, weight_decay=0.1)
    sgd.step()
    assert weight(layer) == pytest.approx([3.3])
    sgd.step()
    assert weight(layer) == pytest.approx([2.635])


def test_adam_first_steps():
    lr, eps = 0.01, 1e-8
    layer = one_param_model([1.0, 2.0, -3.0], [0.3, -2e-4, 50.0])
    adam = Adam(layer, lr=lr, betas=(0.9, 0.999), eps=eps)
    adam.step()
    # step 1: m_hat = g and v_hat = g^2, so every entry moves by lr against its sign
    g1 = np.array([0.3, -2e-4, 50.0])
    p1 = np.array([1.0, 2.0, -3.0]) - lr * g1 / (np.abs(g1) + eps)
    assert weight(layer) == pytest.approx(p1.tolist(), abs=1e-12)
    assert weight(layer) == pytest.approx([0.99, 2.01, -3.01], abs=1e-6)
    # step 2 with another gradient
    g2 = np.array([-0.1, 1.0, 50.0])
    layer.grads["weight"][...] = [g2]
    adam.step()
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2
    p2 = p1 - lr * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.999 ** 2)) + eps)
    assert weight(layer) == pytest.approx(p2.tolist(), abs=1e-12)


def test_lr_scale_gives_a_parameter_its_own_rate():
    # two Dense layers, gradient 1 everywhere: plain SGD moves the first by lr and the second,
    # scaled by 0.25, by lr/4; Adam's first step moves each entry by its own rate
    for make, step in ((lambda m: SGD(m, lr=0.2, lr_scale={"b.weight": 0.25}), (0.2, 0.05)),
                       (lambda m: Adam(m, lr=0.2, lr_scale={"b.weight": 0.25}), (0.2, 0.05))):
        model = Sequential([Dense(2, 2, bias=False, dtype=np.float64, name="a"),
                            Dense(2, 2, bias=False, dtype=np.float64, name="b")])
        for layer in model:
            layer.params["weight"][...] = 1.0
            layer.grads["weight"][...] = 1.0
        make(model).step()
        np.testing.assert_allclose(model["a"].params["weight"], 1.0 - step[0], rtol=1e-6)
        np.testing.assert_allclose(model["b"].params["weight"], 1.0 - step[1], rtol=1e-6)


def test_adam_weight_decay_enters_the_gradient():
    # g = 0 + 0.5 * 2 = 1: the first step moves the parameter by lr against it
    layer = one_param_model([2.0], [0.0])
    Adam(layer, lr=0.1, weight_decay=0.5).step()
    assert weight(layer) == pytest.approx([1.9])


@pytest.mark.parametrize("make", [lambda m: SGD(m, 0.1, momentum=0.9), lambda m: Adam(m, 0.01)])
def test_frozen_layers_do_not_move_but_pass_gradients(make):
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 3, 3, rng=0, name="conv"), ReLU(name="relu"),
                        Conv2D(3, 2, 3, rng=1, name="head")])
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    grad = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    model.forward(x)
    grad_x_trainable = model.backward(grad)
    model.set_trainable("head", False)
    frozen = {k: v.copy() for k, v in model.params.items()}
    optimizer = make(model)
    model.forward(x)
    np.testing.assert_array_equal(model.backward(grad), grad_x_trainable)
    optimizer.step()
    np.testing.assert_array_equal(model.params["head.weight"], frozen["head.weight"])
    np.testing.assert_array_equal(model.params["head.bias"], frozen["head.bias"])
    assert not np.array_equal(model.params["conv.weight"], frozen["conv.weight"])
    assert all(not k.startswith("head.") for k in optimizer.state_dict() if "/" in k)


@pytest.mark.parametrize("make", [lambda m: SGD(m, 0.05, momentum=0.9, nesterov=True),
                                  lambda m: Adam(m, 0.01, weight_decay=1e-3)])
def test_resuming_from_saved_states_continues_the_same_run(make, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    loss = SoftmaxCrossEntropy()

    def model():
        return Sequential([Conv2D(1, 3, 3, rng=2, name="conv"), GlobalAvgPool2D(name="pool"),
                           Dense(3, 3, rng=3, name="fc")])

    def step(m, opt):
        loss.forward(m.forward(x), y)
        m.backward(loss.backward())
        opt.step()

    straight = model()
    opt = make(straight)
    for _ in range(4):
        step(straight, opt)

    first = model()
    opt = make(first)
    for _ in range(2):
        step(first, opt)
    first.save(tmp_path / "model.npz")
    np.savez(tmp_path / "optim.npz", **opt.state_dict())
    resumed = model()
    resumed.load(tmp_path / "model.npz")
    opt = make(resumed)
    with np.load(tmp_path / "optim.npz") as f:
        opt.load_state_dict({k: f[k] for k in f.files})
    for _ in range(2):
        step(resumed, opt)
    for key, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[key], value)


def test_optimizer_arguments():
    layer = one_param_model([1.0], [1.0])
    with pytest.raises(ValueError, match=r"lr: expected a positive number, got 0"):
        SGD(layer, lr=0)
    for bad in (np.inf, np.nan):
        with pytest.raises(ValueError, match=r"lr: expected a (finite|positive) number, got (inf|nan)"):
            SGD(layer, lr=bad)
        with pytest.raises(ValueError, match=r"lr: expected a (finite|positive) number, got (inf|nan)"):
            Adam(layer, lr=bad)
    with pytest.raises(ValueError, match=r"weight_decay: expected a finite number, got inf"):
        SGD(layer, weight_decay=np.inf)
    with pytest.raises(ValueError, match=r"eps: expected a finite number, got inf"):
        Adam(layer, eps=np.inf)
    with pytest.raises(ValueError, match=r"lr_scale: expected parameter names of the model, got 'nope'"):
        SGD(layer, lr_scale={"nope": 0.5})
    with pytest.raises(ValueError, match=r"lr_scale: expected a finite positive factor for 'weight', got inf"):
        SGD(layer, lr_scale={"weight": np.inf})
    with pytest.raises(ValueError, match=r"nesterov: expected momentum > 0 with Nesterov, got momentum 0"):
        SGD(layer, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\]: expected a number in \[0, 1\), got 1.5"):
        Adam(layer, betas=(0.9, 1.5))
    adam = Adam(layer)
    with pytest.raises(ValueError, match=r"state_dict: expected keys 'kind/parameter' .* got 'velocity/weight'"):
        adam.load_state_dict({"velocity/weight": np.zeros((1, 1))})
    with pytest.raises(ValueError, match=r"state_dict: expected shape \(1, 1\) for 'm/weight', got \(2,\)"):
        adam.load_state_dict({"m/weight": np.zeros(2)})


def test_a_frozen_parameter_stays_put_while_the_rest_of_its_layer_trains():
    # the dcn fine-tuning: DeformConv2D's main weight frozen, its offset convolution trained
    from dcn_ref.nn import DeformConv2D
    rng = np.random.default_rng(0)
    model = Sequential([DeformConv2D(2, 3, rng=1, dtype=np.float64, name="dc"),
                        GlobalAvgPool2D(name="pool"), Dense(3, 2, rng=2, dtype=np.float64, name="fc")])
    model["dc"].params["offset_weight"][...] = rng.normal(0, 0.1, model["dc"].params["offset_weight"].shape)
    assert model.set_trainable(["dc.weight", "dc.bias", "fc"], False) == ["dc.weight", "dc.bias", "fc"]
    assert [n for n, _, _ in model.trainable_parameters()] == ["dc.offset_weight", "dc.offset_bias"]
    before = {k: v.copy() for k, v in model.params.items()}
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(rng.standard_normal((2, 2, 5, 5))), np.array([0, 1]))
    model.backward(loss.backward())
    assert not model.grads["dc.weight"].any() and model.grads["dc.offset_weight"].any()
    SGD(model, lr=0.5).step()
    after = model.params
    for name in ("dc.weight", "dc.bias", "fc.weight", "fc.bias"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert not np.array_equal(after["dc.offset_weight"], before["dc.offset_weight"])
    model.set_trainable("dc.weight", True)
    assert "dc.weight" in [n for n, _, _ in model.trainable_parameters()]
    with pytest.raises(ValueError, match=r"name: expected a parameter of layer 'dc' from .*got 'nope'"):
        model.set_trainable("dc.nope", False)


def test_train_only_trains_exactly_the_named_layers_and_parameters():
    # the dcn fine-tuning of the experiment: whole batch norms, and only the offset
    # convolution inside each DeformConv2D; everything else frozen
    from dcn_ref import models
    model = models.deform_cnn("dcn", seed=0)
    model["conv12"].params["offset_weight"][...] = 0.0
    trained = model.train_only(["conv12.offset_weight", "conv12.offset_bias", "conv12_bn"])
    assert trained == ["conv12.offset_weight", "conv12.offset_bias", "conv12_bn.gamma",
                       "conv12_bn.beta"]
    before = {k: v.copy() for k, v in model.params.items()}
    rng = np.random.default_rng(0)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(rng.random((4, 1, 28, 28), dtype=np.float32)), np.arange(4))
    model.backward(loss.backward())
    Adam(model, lr=1e-2).step()
    moved = {k for k, v in model.params.items() if not np.array_equal(v, before[k])}
    assert moved == set(trained)               # the zero offsets really leave zero
    with pytest.raises(ValueError, match=r"names: expected layer names from .*got unknown \['nope.w'\]"):
        model.train_only(["nope.w"])
