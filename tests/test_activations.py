"""Activations: values, alpha defaults, and what saturated and dead mean for each."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradstudy.cells.options import ACTIVATIONS
from gradstudy.engine.activations import FUNCTIONS, activation_fn, saturated
from gradstudy.run import conf_dir


def test_values_and_alpha():
    z = jnp.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(activation_fn("leaky_relu")(z), [-0.02, 0, 3], rtol=1e-6)
    np.testing.assert_allclose(activation_fn("leaky_relu", 0.1)(z), [-0.2, 0, 3], rtol=1e-6)
    np.testing.assert_allclose(activation_fn("elu")(z), [np.expm1(-2), 0, 3], rtol=1e-6)
    np.testing.assert_allclose(activation_fn("selu")(jnp.array([1.0])), [1.0507009873554805], rtol=1e-6)
    np.testing.assert_allclose(activation_fn("softsign")(z), [-2 / 3, 0, 0.75], rtol=1e-6)
    np.testing.assert_allclose(activation_fn("linear")(z), z)


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("sigmoid", [0.005, 0.995], [0.02, 0.5, 0.98]),
        ("tanh", [-0.995, 0.999], [0.98, 0.0]),
        ("softsign", [-0.95, 0.91], [0.89, 0.0]),
    ],
)
def test_saturation_rules(name, inside, outside):
    assert np.all(saturated(name, jnp.array(inside))) and not np.any(saturated(name, jnp.array(outside)))


def test_only_bounded_activations_saturate_and_only_relu_dies():
    assert {n for n, a in ACTIVATIONS.items() if a.saturation is not None} == {"sigmoid", "tanh", "softsign"}
    assert {n for n, a in ACTIVATIONS.items() if a.has_dead_units} == {"relu"}


def test_every_activation_has_a_preset():
    assert {p.stem for p in Path(conf_dir(), "act").glob("*.yaml")} == set(ACTIVATIONS)


def test_every_activation_has_a_jax_function():
    assert set(FUNCTIONS) == set(ACTIVATIONS)


def test_prelu_slope_gradient_matches_finite_differences(tiny_cfg):
    """The gradient of the loss with respect to each layer's learned slope (one per layer, and one per
    unit) against central differences, in float64."""
    from gradstudy.engine.model import slope_name
    from gradstudy.engine.program import Engine
    from gradstudy.engine.step import loss_fn
    from gradstudy.inputs.data import load_dataset

    for per_unit in (False, True):
        cfg = tiny_cfg("act=prelu", f"act.per_unit={str(per_unit).lower()}", "act.alpha=0.3", "init=he")
        dataset = load_dataset(cfg.data)
        engine = Engine(cfg, dataset)
        params = jax.tree.map(lambda a: np.asarray(a[0], np.float64), engine.init([0]).params)
        assert params[slope_name(1)]["alpha"].shape == ((cfg.model.width,) if per_unit else ())
        x, y = np.asarray(dataset.x_train[:32], np.float64), np.asarray(dataset.y_train[:32])
        with jax.enable_x64(True):

            def loss(p):
                return loss_fn(engine.model, p, {}, None, x, y, False)[0]

            grads = jax.grad(loss)(params)
            for layer in (1, cfg.model.depth):
                name = slope_name(layer)
                alpha = params[name]["alpha"]
                for unit in [()] if not per_unit else [(0,), (3,)]:
                    step = np.zeros_like(alpha)
                    step[unit] = 1e-6

                    def moved(sign, name=name, alpha=alpha, step=step):
                        return float(loss({**params, name: {"alpha": alpha + sign * step}}))

                    numeric = (moved(1) - moved(-1)) / 2e-6
                    assert float(np.asarray(grads[name]["alpha"])[unit]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
