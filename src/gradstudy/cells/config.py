"""Structured config schema (registered in Hydra's ConfigStore) and range checks.

The dataclasses give Hydra the types, so a typo in a key or a non-numeric value is rejected at
composition time. ``validate`` checks what types cannot: names against the registries and values
against their ranges. It runs before any data is loaded or any program compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from gradstudy.cells.schedules import SCHEDULE_KEYS, SCHEDULES
from gradstudy.schema import ConfigError, conf_dir

#: Top-level keys that say where and how to run, not what is run; they are left out of a cell's id.
RUN_KEYS = ("hydra", "study", "results_dir", "force", "check_memory", "budget", "budgets", "members")
#: Config groups whose chosen option (``conf/<group>/<option>.yaml``) lists the keys it uses; the
#: option is named by ``name`` (``tier`` for stats).
OPTION_GROUPS = {
    "init": "name",
    "act": "name",
    "norm": "name",
    "data": "name",
    "model": "name",
    "optim": "name",
    "stats": "tier",
}
#: Keys added after the cell-id schema was fixed, with their defaults: a cell id leaves each out
#: while it keeps its default, so adding a key never renames existing cells.
ADDED_KEYS: dict[str, Any] = {
    "stats.hist_range": [1e-6, 1e3],
    "init.bias_std": 0.0,
    "stats.units": 8,
    "optim.schedule": "constant",
    "optim.weight_decay": 0.0,
    "model.name": "mlp",
    "stats.jacobian_inputs": 4,
}
#: Sizes of the paper presets (``conf/experiment``): each preset holds one set of values per budget.
BUDGETS = ("cpu", "paper", "smoke")


@dataclass
class InitConfig:
    name: str = MISSING
    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "normal"
    sigma: float = 1.0
    bias: float = 0.0
    bias_std: float = 0.0
    sigma_w2: float = 1.0
    sigma_b2: float = 0.0


@dataclass
class ActConfig:
    name: str = MISSING
    alpha: float | None = None
    #: Typed Any so that a non-boolean (``2``, ``yes``) reaches ``validate`` as given instead of
    #: being read as true; the same for every boolean key.
    per_unit: Any = False


@dataclass
class NormConfig:
    name: str = MISSING
    position: str = "before"
    momentum: float = 0.99
    epsilon: float = 1e-5


@dataclass
class DataConfig:
    name: str = MISSING
    standardize: Any = False
    root: str | None = None
    n_train: int | None = None
    n_test: int | None = None


@dataclass
class ModelConfig:
    #: ``cells.options.MODELS``; the keys below ``width`` are the residual net's (``resmlp``).
    name: str = "mlp"
    depth: int = 10
    width: int = 100
    branch_layers: int = 2
    #: null: ``pre`` under a norm; set with ``norm=none``, refused.
    norm_position: str | None = None
    branch_scale: str = "one"
    #: The starting value of a learned branch scale (``skipinit``, ``rezero``).
    branch_init: float = 0.0
    #: A convolutional net's (``cnn``): channels per layer, the odd kernel size, ``CNN_PADDINGS``,
    #: and whether the first convolution has stride 2.
    channels: int = 16
    kernel: int = 3
    padding: str = "same"
    downsample: Any = False


@dataclass
class OptimConfig:
    name: str = MISSING
    lr: float = 0.01
    momentum: float = 0.9
    clip_norm: float | None = None
    #: ``cells.schedules.SCHEDULES``; each reads only its own keys below.
    schedule: str = "constant"
    warmup_steps: int = 0
    #: null: the whole run (``train.steps``).
    decay_steps: int | None = None
    end_lr: float = 0.0
    boundaries: list[int] = field(default_factory=list)
    factors: list[float] = field(default_factory=list)
    #: Decoupled weight decay (0: off), on the parameters ``decay_mask`` names.
    weight_decay: float = 0.0
    decay_mask: str = "weights"


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    seeds: Any = 5
    eval_every: int = 100


@dataclass
class StatsConfig:
    tier: str = MISSING
    every: int = 10
    hist_steps: list[int] = field(default_factory=list)
    hist_bins: int = 50
    #: Magnitudes spanned by the signed-log bins of delta and of unbounded activations.
    hist_range: list[float] = field(default_factory=lambda: [1e-6, 1e3])
    extra: list[str] = field(default_factory=list)
    #: How many units per layer (the first ones) ``unit_percentiles`` follows.
    units: int = 8
    #: ``jacobian_spectrum`` is measured on this many examples (the first ones of the training split).
    jacobian_inputs: int = 4


@dataclass
class Config:
    init: InitConfig = MISSING
    act: ActConfig = MISSING
    norm: NormConfig = MISSING
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    train: TrainConfig = MISSING
    stats: StatsConfig = MISSING
    study: str = "default"
    results_dir: str = "results"
    force: Any = False
    #: Refuse a cell that cannot fit in memory before allocating it (``gradstudy.engine.memory``).
    check_memory: Any = True
    budget: str = "cpu"
    budgets: dict[str, Any] = field(default_factory=dict)
    #: Set by the gradstudy sweeper: the overrides of each cell of a group job (empty: one cell).
    members: list[Any] = field(default_factory=list)


def option_keys(group: str, option: str) -> set[str] | None:
    """The keys that ``conf/<group>/<option>.yaml`` sets: the ones that option uses (None: no such file)."""
    path = Path(conf_dir(), group, f"{option}.yaml")
    if not path.is_file():
        return None
    return set(yaml.safe_load(path.read_text()) or {})


def _optim_keys(optim: dict[str, Any]) -> set[str]:
    """The keys of ``optim`` that its schedule and weight decay read (their own choices, inside the group)."""
    keys = {"schedule", "weight_decay", *SCHEDULES[str(optim.get("schedule", "constant"))].keys}
    return keys | ({"decay_mask"} if float(optim.get("weight_decay", 0.0)) > 0 else set())


#: Groups with choices of their own inside the chosen option: the keys those choices read, added to
#: the option's (``optim.schedule`` reads ``optim.warmup_steps``, ...).
NESTED_KEYS = {"optim": _optim_keys}


def used_keys(group: str, node: dict[str, Any]) -> set[str] | None:
    """The keys of the group node ``node`` that its chosen options read (None: no such option file)."""
    used = option_keys(group, str(node.get(OPTION_GROUPS[group])))
    if used is not None and group in NESTED_KEYS and str(node.get("schedule", "constant")) in SCHEDULES:
        used |= NESTED_KEYS[group](node)
    return used


def canonical(plain: dict[str, Any]) -> dict[str, Any]:
    """The config that identifies a cell: ``plain`` (from ``resolved``) without the keys that the
    chosen options ignore (``optim.momentum`` for SGD, ``act.alpha`` for ReLU, ...) and without
    ``ADDED_KEYS`` that keep their default. Two configs that run the same experiment have the
    same canonical config, and so the same cell id."""
    out: dict[str, Any] = {}
    for key, value in plain.items():
        if isinstance(value, dict):
            used = used_keys(key, value) if key in OPTION_GROUPS else None
            value = {k: v for k, v in value.items() if used is None or k in used}
        out[key] = value
    optim = out.get("optim", {})
    if "decay_steps" in optim and optim["decay_steps"] is None:  # null is the whole run: one id for both spellings
        optim["decay_steps"] = out.get("train", {}).get("steps")
    for dotted, default in ADDED_KEYS.items():
        group, key = dotted.split(".")
        if out.get(group, {}).get(key, default) == default:
            out.get(group, {}).pop(key, None)
    return out


def ignored_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """One line per command-line override of a key that the chosen option ignores (``optim.momentum``
    under ``optim=sgd``): the cell runs, and is identified, without it."""
    lines = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        group, _, sub = key.partition(".")
        if group not in OPTION_GROUPS or not sub or "." in sub or sub == OPTION_GROUPS[group]:
            continue
        option = str(cfg[group][OPTION_GROUPS[group]])
        node = OmegaConf.to_container(cfg[group], resolve=True)
        used = used_keys(group, node)
        if used is not None and sub not in used:
            by = f"{group}={option}"
            if group == "optim" and sub in SCHEDULE_KEYS:
                by = f"optim.schedule={node['schedule']}"
            elif group == "optim" and sub == "decay_mask":
                by = f"optim.weight_decay={node['weight_decay']}"
            lines.append(f"{key} is ignored by {by}: this cell runs, and is identified, without it")
    return lines


def register_configs() -> None:
    """Register the schema so that ``conf/config.yaml`` and every group file are type-checked."""
    ConfigStore.instance().store(name="gradstudy_schema", node=Config)


#: The most seeds one cell may have: each is a run of the cell's compiled program, held in memory.
MAX_SEEDS = 1024
#: Config keys that must be true or false (typed Any in the schema so that ``validate`` sees the value given).
BOOLEAN_KEYS = ("force", "check_memory", "data.standardize", "act.per_unit", "model.downsample")


def seeds_of(cfg: DictConfig) -> list[int]:
    """``train.seeds`` is a count (n → 0..n-1) or an explicit list of seeds."""
    seeds = cfg.train.seeds
    if isinstance(seeds, ListConfig | list | tuple):
        values = list(seeds)
        if not values:
            raise ConfigError("train.seeds: the seed list is empty; give a count (e.g. 5) or a non-empty list")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in values):
            raise ConfigError(f"train.seeds: seeds must be non-negative integers, got {values}")
        if len(values) > MAX_SEEDS:
            raise ConfigError(f"train.seeds: at most {MAX_SEEDS} seeds per cell, got a list of {len(values)}")
        if len(set(values)) != len(values):
            raise ConfigError(f"train.seeds: seeds must be distinct, got {values}")
        return values
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise ConfigError(f"train.seeds: must be a count or a list of integers, got {seeds!r}")
    if seeds < 1:
        raise ConfigError(f"train.seeds: the seed count must be >= 1, got {seeds}")
    if seeds > MAX_SEEDS:
        raise ConfigError(
            f"train.seeds: at most {MAX_SEEDS} seeds per cell (every seed is a run of the cell's program), got {seeds}"
        )
    return list(range(seeds))


#: The schema of each top-level node, for rejecting keys added with ``+`` and required keys deleted with ``~``.
SCHEMA = {
    "init": InitConfig,
    "act": ActConfig,
    "norm": NormConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "stats": StatsConfig,
}


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A stored cell config with each of ``ADDED_KEYS`` it lacks set to its default: a cell written
    before the key existed (``optim.schedule``) ran with the default, and reads so, which keeps a
    study of old and new cells from seeing the key vary. Other absent keys stay absent: the cell's
    options do not use them."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for dotted, default in ADDED_KEYS.items():
        group, key = dotted.split(".")
        if isinstance(out.get(group), dict):
            out[group].setdefault(key, default)
    return out


#: Keys inside a group that choose which other keys of the group are used (``NESTED_KEYS``): a key
#: that is absent exactly where such a choice says so does not vary on its own.
NESTED_CHOICES = {"optim": ("optim.schedule", "optim.weight_decay")}


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without the keys that only say where and how to run."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return {k: v for k, v in container.items() if k not in RUN_KEYS}
