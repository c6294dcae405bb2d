"""Weight initializers: a registry from name to a builder of a ``jax.nn.initializers`` function.

Every builder takes the ``init`` config node, so ``init.scale``, ``init.mode`` and
``init.distribution`` override a preset (``init=he init.mode=fan_avg``). The presets themselves
live in ``conf/init/<name>.yaml``; adding an initializer is one entry here plus one YAML file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.nn import initializers as jinit

Initializer = Callable[..., jax.Array]

FAN_MODES = ("fan_in", "fan_out", "fan_avg")
#: JAX's meanings: "normal" is untruncated, "truncated_normal" is rescaled so that the
#: variance is still scale/fan after cutting at two standard deviations.
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


def variance_scaling(cfg: Any) -> Initializer:
    """Var(W) = scale / fan, with fan chosen by ``mode``: Xavier, He, LeCun and Glorot's "standard"."""
    return jinit.variance_scaling(cfg.scale, cfg.mode, cfg.distribution)


def orthogonal(cfg: Any) -> Initializer:
    """A (semi-)orthogonal matrix times the gain ``init.scale``."""
    return jinit.orthogonal(scale=cfg.scale)


def gaussian(cfg: Any) -> Initializer:
    """N(0, sigma^2) whatever the fan: the "bad" initialization of the textbooks."""
    return jinit.normal(stddev=cfg.sigma)


INITIALIZERS: dict[str, Callable[[Any], Initializer]] = {
    "xavier": variance_scaling,
    "xavier_normal": variance_scaling,
    "he": variance_scaling,
    "he_uniform": variance_scaling,
    "lecun": variance_scaling,
    "lecun_uniform": variance_scaling,
    "standard": variance_scaling,
    "orthogonal": orthogonal,
    "normal": gaussian,
}


def kernel_init(cfg: Any) -> Initializer:
    """The weight initializer named by ``cfg.name`` with the node's parameters."""
    return INITIALIZERS[cfg.name](cfg)


def bias_init(cfg: Any) -> Initializer:
    """Biases start at the constant ``init.bias`` (0 unless configured)."""
    return jinit.constant(cfg.bias)
