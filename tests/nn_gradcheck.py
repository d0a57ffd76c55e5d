"""Finite-difference checks of a layer's backward, input and every parameter, for the tests
of the channels-last layers and the DCNv3/DCNv4 blocks."""
import numpy as np

from dcn_ref.gradcheck import numerical_vjp, rel_error


def layer_gradient_errors(layer, x, seed=0, eps=1e-6):
    """{name: relative error} of ``layer.backward`` against centred differences of
    sum(g * layer.forward(.)) for a random g, for "input" and every parameter (float64)."""
    out = layer.forward(x)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    analytic_input = layer.backward(g)
    analytic = {name: grad.copy() for name, grad in layer.grads.items()}
    errors = {"input": rel_error(analytic_input, numerical_vjp(layer.forward, x, g, eps))}
    for name, param in layer.params.items():
        saved = param.copy()

        def f(value, param=param):
            param[...] = value
            return layer.forward(x)

        numeric = numerical_vjp(f, saved, g, eps)
        param[...] = saved
        errors[name] = rel_error(analytic[name], numeric)
    return errors


def assert_gradients_match(layer, x, tol=1e-6, seed=0):
    errors = layer_gradient_errors(layer, x, seed)
    bad = {k: f"{v:.1e}" for k, v in errors.items() if not v <= tol}
    assert not bad, f"{layer.name}: gradients off (relative error): {bad}"
    return errors
