"""Optimizers: a registry from name to an optax builder, with optional global-norm clipping and
per-run hyperparameters.

Adam and the clipping are optax's, with every division by a scalar written as a multiplication by
its reciprocal: XLA compiles ``array / scalar`` differently on one and on several host devices,
which broke bitwise seed independence (``tests/test_seed_independence.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradstudy.cells.options import OPTIMIZERS


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """``optax.scale_by_adam`` with its bias corrections written as multiplications by their reciprocals.

    optax divides every moment by the scalar 1 - b**t. XLA's simplifier rewrites that division into
    a multiplication by the reciprocal in some programs (on one host device) and not in others (on
    two), so the same seed's Adam update differed in its last bit between device counts. Written as
    a multiplication it compiles one way everywhere. It agrees with optax to within float32 rounding
    (``tests/test_engine.py``) and keeps optax's state type.
    """

    def init_fn(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params), nu=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.float32)
        mu_scale, nu_scale = 1 / (1 - b1**step), 1 / (1 - b2**step)
        new = jax.tree.map(lambda m, v: (m * mu_scale) / (jnp.sqrt(v * nu_scale) + eps), mu, nu)
        return new, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` with the rescaling written as one multiplication by
    max_norm / norm (optax divides by the norm), for the same reason as ``scale_by_adam``."""

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.where(norm < max_norm, jnp.ones_like(norm), max_norm / norm)
        return jax.tree.map(lambda t: t * scale.astype(t.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _clipped(clip_norm: float | None, opt: optax.GradientTransformation) -> optax.GradientTransformation:
    return opt if clip_norm is None else optax.chain(clip_by_global_norm(clip_norm), opt)


def sgd(lr: float, clip_norm: float | None = None) -> optax.GradientTransformation:
    return _clipped(clip_norm, optax.sgd(lr))


def momentum(lr: float, momentum: float, clip_norm: float | None = None) -> optax.GradientTransformation:
    return _clipped(clip_norm, optax.sgd(lr, momentum=momentum))


def adam(lr: float, clip_norm: float | None = None) -> optax.GradientTransformation:
    return _clipped(clip_norm, optax.chain(scale_by_adam(), optax.scale_by_learning_rate(lr)))


#: ``cells.options.OPTIMIZERS`` name -> factory whose arguments are the ``optim`` keys that option
#: reads (``make_optimizer`` makes each a per-run hyperparameter), plus ``clip_norm``.
FACTORIES: dict[str, Callable[..., optax.GradientTransformation]] = {"sgd": sgd, "momentum": momentum, "adam": adam}


def hyperparameters(cfg: Any) -> dict[str, float]:
    """The ``optim`` values that the optimizer ``cfg.name`` reads, clip_norm only when it is set."""
    values = {n: float(cfg[n]) for n in OPTIMIZERS[cfg.name]}
    if cfg.clip_norm is not None:
        values["clip_norm"] = float(cfg.clip_norm)
    return values


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """The optimizer of the ``optim`` node (clipped by global norm first when ``clip_norm`` is set),
    with its numbers held in the optimizer state (``optax.inject_hyperparams``) rather than baked into
    the program: runs of one compiled program can each have their own learning rate, momentum and
    clip norm, and a run's update is bitwise the one with constants (``tests/test_engine.py``)."""
    return optax.inject_hyperparams(FACTORIES[cfg.name])(**hyperparameters(cfg))
