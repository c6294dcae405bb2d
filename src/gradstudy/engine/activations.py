"""Activations as jax functions, by name: ``(z, alpha) -> h``. What each one *is* (its flat regions,
dead units, range, default alpha) lives in ``cells.options.ACTIVATIONS`` under the same name."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gradstudy.cells.options import ACTIVATIONS

Fn = Callable[[jax.Array, float], jax.Array]

FUNCTIONS: dict[str, Fn] = {
    "sigmoid": lambda z, a: jax.nn.sigmoid(z),
    "tanh": lambda z, a: jnp.tanh(z),
    "softsign": lambda z, a: jax.nn.soft_sign(z),
    "relu": lambda z, a: jax.nn.relu(z),
    "leaky_relu": lambda z, a: jax.nn.leaky_relu(z, a),
    "prelu": lambda z, a: jnp.where(z > 0, z, a * z),
    "elu": lambda z, a: jax.nn.elu(z, a),
    "selu": lambda z, a: jax.nn.selu(z),
    "gelu": lambda z, a: jax.nn.gelu(z, approximate=False),
    "swish": lambda z, a: jax.nn.swish(z),
    "linear": lambda z, a: z,
}


def activation_fn(name: str, alpha: float | None = None) -> Callable[[jax.Array], jax.Array]:
    """The activation ``name`` as a one-argument function, with alpha defaulting per activation."""
    fn, a = FUNCTIONS[name], ACTIVATIONS[name].alpha(alpha)
    return lambda z: fn(z, a)


def saturated(name: str, h: jax.Array) -> jax.Array:
    """Per entry of h, whether it sits outside the activation's ``saturation`` range (it must have one)."""
    lo, hi = ACTIVATIONS[name].saturation
    return (h < lo) | (h > hi)
