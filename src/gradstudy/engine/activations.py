"""Activations: a registry from name to the function and what "saturated" and "dead" mean for it.

``saturated`` takes the activation's output h and says, per entry, whether the unit sits on a
flat part of the curve (None when the activation has no such part). ``has_dead_units`` marks the
activations for which a unit with z <= 0 on every example passes no gradient at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Activation:
    fn: Callable[[jax.Array, float], jax.Array]
    default_alpha: float | None = None
    saturated: Callable[[jax.Array], jax.Array] | None = None
    has_dead_units: bool = False
    #: The closed range of a bounded activation's output (its histograms use linear bins over it).
    bounds: tuple[float, float] | None = None
    #: Linear for z > 0 with a kink at 0: a unit whose z <= 0 on a whole batch sits on the other piece.
    rectifier: bool = False
    #: alpha is a parameter that training learns (PReLU), one per layer or per unit, starting at alpha.
    learned_alpha: bool = False

    def applies(self, stat: str) -> bool:
        """Whether ``stat`` means anything for this activation (``saturated_frac``, ``dead_frac``,
        ``negative_frac``, ``prelu_alpha``)."""
        return {
            "saturated_frac": self.saturated is not None,
            "dead_frac": self.has_dead_units,
            "negative_frac": self.rectifier,
            "prelu_alpha": self.learned_alpha,
        }.get(stat, True)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(
        lambda z, a: jax.nn.sigmoid(z), saturated=lambda h: (h < 0.01) | (h > 0.99), bounds=(0.0, 1.0)
    ),
    "tanh": Activation(lambda z, a: jnp.tanh(z), saturated=lambda h: jnp.abs(h) > 0.99, bounds=(-1.0, 1.0)),
    "softsign": Activation(lambda z, a: jax.nn.soft_sign(z), saturated=lambda h: jnp.abs(h) > 0.9, bounds=(-1.0, 1.0)),
    "relu": Activation(lambda z, a: jax.nn.relu(z), has_dead_units=True, rectifier=True),
    "leaky_relu": Activation(lambda z, a: jax.nn.leaky_relu(z, a), default_alpha=0.01, rectifier=True),
    # He et al. 2015: a leaky ReLU whose slope alpha is learned, starting at 0.25.
    "prelu": Activation(
        lambda z, a: jnp.where(z > 0, z, a * z), default_alpha=0.25, rectifier=True, learned_alpha=True
    ),
    "elu": Activation(lambda z, a: jax.nn.elu(z, a), default_alpha=1.0, rectifier=True),
    "selu": Activation(lambda z, a: jax.nn.selu(z), rectifier=True),
    "gelu": Activation(lambda z, a: jax.nn.gelu(z, approximate=False)),
    "swish": Activation(lambda z, a: jax.nn.swish(z)),
    "linear": Activation(lambda z, a: z),
}


def activation_fn(name: str, alpha: float | None = None) -> Callable[[jax.Array], jax.Array]:
    """The activation ``name`` as a one-argument function, with alpha defaulting per activation."""
    act = ACTIVATIONS[name]
    a = act.default_alpha if alpha is None else alpha
    return lambda z: act.fn(z, a)
