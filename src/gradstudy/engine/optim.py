"""Optimizers: a registry from name to the direction of its update, with optional global-norm
clipping, decoupled weight decay and a learning-rate schedule, and every number per-run data.

Adam and the clipping are optax's, with every division by a scalar written as a multiplication by
its reciprocal: XLA compiles ``array / scalar`` differently on one and on several host devices,
which broke bitwise seed independence (``tests/test_seed_independence.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradstudy.cells.options import OPTIMIZERS
from gradstudy.cells.schedules import learning_rate, schedule_numbers


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


#: ``cells.options.OPTIMIZERS`` name -> the direction of its update, from its per-run numbers: what
#: the learning rate then scales (after weight decay, when on).
DIRECTIONS: dict[str, Callable[[dict[str, Any]], optax.GradientTransformation]] = {
    "sgd": lambda h: optax.identity(),
    "momentum": lambda h: optax.trace(decay=h["momentum"]),
    "adam": lambda h: scale_by_adam(),
}


def _is_kernel(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


#: ``optim.decay_mask`` -> which parameters weight decay shrinks (None: all of them).
MASKS: dict[str, Callable[[Any], Any] | None] = {"all": None, "weights": _is_kernel}


def factory(cfg: Any, train_steps: int) -> Callable[..., optax.GradientTransformation]:
    """The optimizer of the ``optim`` node as a function of its per-run numbers (keyword arguments,
    named by ``hyperparameters``): global-norm clipping when ``clip_norm`` is set, the optimizer's
    direction, decoupled weight decay when ``weight_decay`` > 0, then the learning rate, scheduled
    when ``schedule`` is not constant. Only what fixes the program (the optimizer, the schedule, the
    number of step boundaries, whether clipping and decay are on, the decay mask) is read from
    ``cfg`` here; every number is an argument.

    The update is optax's: u = -lr_t * (d_t + weight_decay * p), d_t the direction (the gradient,
    its momentum trace or Adam's normalized moment), lr_t the schedule at the update's count, as
    ``optax.adamw`` and PyTorch's AdamW/SGDW-style decay (the decay is scaled by the learning rate)."""
    names = list(hyperparameters(cfg, train_steps))
    direction, schedule = DIRECTIONS[cfg.name], cfg.get("schedule", "constant")
    decay_mask = MASKS[cfg.get("decay_mask", "weights")] if _decays(cfg) else False

    def build(**h: Any) -> optax.GradientTransformation:
        parts = [] if "clip_norm" not in h else [clip_by_global_norm(h["clip_norm"])]
        parts.append(direction(h))
        if decay_mask is not False:
            parts.append(optax.add_decayed_weights(h["weight_decay"], mask=decay_mask))
        lr = h["lr"]
        if schedule != "constant":
            lr = lambda count: learning_rate(schedule, count.astype(jnp.float32), h["lr"], h, jnp)  # noqa: E731
        parts.append(optax.scale_by_learning_rate(lr))
        return optax.chain(*parts)

    # optax.inject_hyperparams reads the factory's signature to know which numbers to hold per run.
    build.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names])
    return build


def _decays(cfg: Any) -> bool:
    return float(cfg.get("weight_decay", 0.0)) > 0


def hyperparameters(cfg: Any, train_steps: int) -> dict[str, float]:
    """The per-run numbers of the ``optim`` node: the keys its optimizer reads (``OPTIMIZERS``), the
    clip norm when set, the schedule's numbers when it is not constant, the weight decay when on."""
    values = {n: float(cfg[n]) for n in OPTIMIZERS[cfg.name]}
    if cfg.clip_norm is not None:
        values["clip_norm"] = float(cfg.clip_norm)
    if cfg.get("schedule", "constant") != "constant":
        values.update(schedule_numbers(cfg, train_steps))
    if _decays(cfg):
        values["weight_decay"] = float(cfg.weight_decay)
    return values


def make_optimizer(cfg: Any, train_steps: int) -> optax.GradientTransformation:
    """The optimizer of the ``optim`` node (see ``factory``) for a run of ``train_steps`` steps, with
    its numbers held in the optimizer state (``optax.inject_hyperparams``) rather than baked into the
    program: runs of one compiled program can each have their own learning rate, momentum, clip norm,
    schedule numbers and weight decay, and a run's update is bitwise the one with constants
    (``tests/test_engine.py``)."""
    return optax.inject_hyperparams(factory(cfg, train_steps))(**hyperparameters(cfg, train_steps))
