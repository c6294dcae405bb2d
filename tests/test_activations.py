"""Activations: values, alpha defaults, and what saturated and dead mean for each."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from gradstudy.activations import ACTIVATIONS, activation_fn
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
    rule = ACTIVATIONS[name].saturated
    assert np.all(rule(jnp.array(inside))) and not np.any(rule(jnp.array(outside)))


def test_only_bounded_activations_saturate_and_only_relu_dies():
    assert {n for n, a in ACTIVATIONS.items() if a.saturated is not None} == {"sigmoid", "tanh", "softsign"}
    assert {n for n, a in ACTIVATIONS.items() if a.has_dead_units} == {"relu"}


def test_every_activation_has_a_preset():
    assert {p.stem for p in Path(conf_dir(), "act").glob("*.yaml")} == set(ACTIVATIONS)
