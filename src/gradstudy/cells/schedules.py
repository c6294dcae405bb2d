"""Learning-rate schedules: a registry from ``optim.schedule`` to the keys it reads and its formula.

Each formula is written once for any array module (``xp``: numpy or jax.numpy), so that the engine
trains with it (``engine.optim``, in float32, inside the program) and the tables record it
(``learning_rates``, in float64) without a second copy. The formulas are optax's schedules
(``tests/test_optim.py`` compares them), rewritten so that every number may be per-run data: optax's
own check ``decay_steps > 0`` cannot run on a traced value, and ``cells.validate`` does it instead.

A schedule's numbers reach it as a mapping (``numbers``): ``warmup_steps``, ``decay_steps``,
``end_lr``, and ``boundary_<i>``/``factor_<i>`` for the step schedule. ``lr`` is the peak (the
starting value, or the value after warmup).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np


def _constant(t: Any, lr: Any, numbers: Mapping[str, Any], xp: ModuleType) -> Any:
    return lr * xp.ones_like(t)


def _cosine_from(t: Any, lr: Any, end_lr: Any, length: Any, xp: ModuleType) -> Any:
    """optax.cosine_decay_schedule: from ``lr`` at t = 0 to ``end_lr`` at t = length, then flat."""
    done = xp.clip(t, 0, length) / length
    return end_lr + (lr - end_lr) * 0.5 * (1 + xp.cos(math.pi * done))


def _cosine(t: Any, lr: Any, numbers: Mapping[str, Any], xp: ModuleType) -> Any:
    return _cosine_from(t, lr, numbers["end_lr"], numbers["decay_steps"], xp)


def _warmup_cosine(t: Any, lr: Any, numbers: Mapping[str, Any], xp: ModuleType) -> Any:
    """optax.warmup_cosine_decay_schedule from 0: linear up to ``lr`` over the warmup, then cosine
    down to ``end_lr`` at ``decay_steps`` (counted from step 0, warmup included)."""
    warmup = numbers["warmup_steps"]
    rising = lr * t / xp.maximum(warmup, 1)
    falling = _cosine_from(t - warmup, lr, numbers["end_lr"], numbers["decay_steps"] - warmup, xp)
    return xp.where(t < warmup, rising, falling)


def _linear(t: Any, lr: Any, numbers: Mapping[str, Any], xp: ModuleType) -> Any:
    """optax.linear_schedule: a straight line from ``lr`` to ``end_lr`` at ``decay_steps``, then flat."""
    done = xp.clip(t, 0, numbers["decay_steps"]) / numbers["decay_steps"]
    return lr + (numbers["end_lr"] - lr) * done


def _step(t: Any, lr: Any, numbers: Mapping[str, Any], xp: ModuleType) -> Any:
    """optax.piecewise_constant_schedule: from each boundary on, the rate is multiplied by its factor."""
    rate = lr * xp.ones_like(t)
    for i in range(n_boundaries(numbers)):
        rate = xp.where(t >= numbers[f"boundary_{i}"], rate * numbers[f"factor_{i}"], rate)
    return rate


@dataclass(frozen=True)
class Schedule:
    """A schedule's formula and the ``optim`` keys it reads (the others are ignored, and left out of
    the cell's id)."""

    formula: Callable[[Any, Any, Mapping[str, Any], ModuleType], Any]
    keys: tuple[str, ...]


#: ``optim.schedule`` -> its formula and keys. Adding a schedule is one entry and one function.
SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(_constant, ()),
    "cosine": Schedule(_cosine, ("decay_steps", "end_lr")),
    "warmup_cosine": Schedule(_warmup_cosine, ("warmup_steps", "decay_steps", "end_lr")),
    "linear": Schedule(_linear, ("decay_steps", "end_lr")),
    "step": Schedule(_step, ("boundaries", "factors")),
}
#: Every key some schedule reads.
SCHEDULE_KEYS = tuple(dict.fromkeys(k for s in SCHEDULES.values() for k in s.keys))
#: ``optim.decay_mask``: which parameters weight decay shrinks (``weights``: the dense layers' kernels,
#: not biases, normalization scales and offsets or learned activation slopes).
DECAY_MASKS = ("all", "weights")


def n_boundaries(numbers: Mapping[str, Any]) -> int:
    return sum(1 for key in numbers if key.startswith("boundary_"))


def decay_steps(optim: Any, train_steps: int) -> int:
    """``optim.decay_steps``, or the whole run when it is null."""
    return int(train_steps if optim.get("decay_steps") is None else optim["decay_steps"])


def schedule_numbers(optim: Any, train_steps: int) -> dict[str, float]:
    """The numbers the schedule ``optim.schedule`` reads, as floats by name (per-run data in the engine)."""
    keys = SCHEDULES[optim["schedule"]].keys
    numbers: dict[str, float] = {}
    if "warmup_steps" in keys:
        numbers["warmup_steps"] = float(optim["warmup_steps"])
    if "decay_steps" in keys:
        numbers["decay_steps"] = float(decay_steps(optim, train_steps))
    if "end_lr" in keys:
        numbers["end_lr"] = float(optim["end_lr"])
    if "boundaries" in keys:
        for i, (boundary, factor) in enumerate(zip(optim["boundaries"], optim["factors"], strict=True)):
            numbers[f"boundary_{i}"] = float(boundary)
            numbers[f"factor_{i}"] = float(factor)
    return numbers


def learning_rate(schedule: str, t: Any, lr: Any, numbers: Mapping[str, Any], xp: ModuleType = np) -> Any:
    """The learning rate of update ``t`` (0 for the first) under ``schedule``."""
    return SCHEDULES[schedule].formula(t, lr, numbers, xp)


def learning_rates(optim: Any, train_steps: int) -> np.ndarray:
    """The learning rate of every step of a run (float64), as the engine applies it."""
    t = np.arange(train_steps, dtype=np.float64)
    return learning_rate(optim["schedule"], t, float(optim["lr"]), schedule_numbers(optim, train_steps))
