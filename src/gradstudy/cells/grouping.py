"""Which cells of a sweep can train as one compiled program, and in what groups.

Pure Python on resolved configs (no jax): the Hydra sweeper (``hydra_plugins.gradstudy_sweeper``)
uses it to hand each job one group, and ``gradstudy.run`` to check a group it was given.

Two cells share a program when everything that fixes the program's shapes and code is equal
(``program_key``): the model and normalization, all of the data, the batch size, step count and
evaluation interval, the optimizer kind, whether clipping is on, the learning-rate schedule (and its
number of step boundaries), whether weight decay is on and on what, every statistics key, and the
activation (with its alpha). What may differ is data on the program's runs axis: the initializer
and its parameters (values made outside ``jit``), the learning rate, momentum, clip norm, schedule
numbers and weight decay (per-run optimizer state), and the seeds. Grouping by activation rather than switching it per run
is measured in ``scripts/benchmark.py`` (``act_switch``).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import Any, TypeVar

from gradstudy.cells.config import canonical

T = TypeVar("T")

#: The ``model`` keys that are initial values, not shapes (a learned branch multiplier's start).
MODEL_VALUE_KEYS = ("branch_init",)
#: The ``train`` keys that fix the program (``seeds`` does not: seeds are runs).
TRAIN_SHAPE_KEYS = ("batch_size", "steps", "eval_every")
#: (config without its ``hydra`` node, ``+arm=`` choice) of each cell the sweeper composed, by the
#: cell's overrides: a group job that runs in the sweeper's own process (Hydra's basic launcher)
#: takes its members from here instead of composing them again; a job elsewhere composes them.
COMPOSED: dict[tuple[str, ...], tuple[Any, str | None]] = {}


def program_key(plain: dict[str, Any]) -> str:
    """What must be equal for two cells to share one program, from a cell's resolved config
    (``cells.config.resolved``), as a string. Keys that the chosen options ignore (``act.alpha`` for ReLU)
    never split a group."""
    cell = canonical(plain)
    optim = cell["optim"]
    shape = {
        "model": {k: v for k, v in cell["model"].items() if k not in MODEL_VALUE_KEYS},
        "norm": cell["norm"],
        "data": cell["data"],
        "act": cell["act"],
        "stats": cell["stats"],
        "train": {k: cell["train"][k] for k in TRAIN_SHAPE_KEYS},
        "optim": {
            "name": optim["name"],
            "clipped": optim.get("clip_norm") is not None,
            "schedule": optim.get("schedule", "constant"),
            "boundaries": len(optim.get("boundaries", [])),
            "decay_mask": optim.get("decay_mask") if optim.get("weight_decay", 0.0) > 0 else None,
        },
    }
    return json.dumps(shape, sort_keys=True, default=str)


def group_by_key(items: Sequence[T], keys: Sequence[Hashable | None], max_size: int) -> list[list[T]]:
    """``items`` grouped by equal ``keys`` (None: an item alone), in order of first appearance,
    each group cut into pieces of at most ``max_size``."""
    groups: dict[Hashable, list[T]] = {}
    order: list[list[T]] = []
    for item, key in zip(items, keys, strict=True):
        if key is None:
            order.append([item])
            continue
        if key not in groups or len(groups[key]) >= max_size:
            groups[key] = []
            order.append(groups[key])
        groups[key].append(item)
    return order
