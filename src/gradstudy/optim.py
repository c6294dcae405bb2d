"""Optimizers: a registry from name to an optax builder, with optional global-norm clipping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

OPTIMIZERS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    "sgd": lambda cfg: optax.sgd(cfg.lr),
    "momentum": lambda cfg: optax.sgd(cfg.lr, momentum=cfg.momentum),
    "adam": lambda cfg: optax.adam(cfg.lr),
}


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """The optimizer of the ``optim`` node, clipped by global norm first when ``clip_norm`` is set."""
    opt = OPTIMIZERS[cfg.name](cfg)
    if cfg.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt
