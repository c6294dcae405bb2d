"""Range and name checks of a composed config, before any data is loaded or any program compiled.

The dataclasses of ``cells.config`` give Hydra the types, so a typo in a key or a non-numeric value
is rejected at composition time. ``validate`` checks what types cannot: names against the
registries and values against their ranges. It imports no jax: the names come from
``cells.options``, ``cells.statistics`` and the numpy-only ``inputs``.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gradstudy.cells import options, schedules, statistics
from gradstudy.cells.config import BOOLEAN_KEYS, BUDGETS, SCHEMA, Config, resolved, seeds_of
from gradstudy.inputs import data, inits
from gradstudy.schema import ConfigError

#: A study is one folder: its name, the cell ids inside it and the sweep markers (``<study>--<cell>``)
#: must each stay within the file system's 255-byte name limit.
MAX_STUDY_NAME = 100
STUDY_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_STUDY_NAME - 1}}}")


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}, got {value!r}")


def _check_choice(key: str, value: str, valid: Any) -> None:
    _check(value in valid, key, f"must be one of {sorted(valid)}", value)


def check_run_keys(cfg: DictConfig) -> None:
    """What must hold before a sweep writes anything: ``budget`` (checked before anything
    interpolates it), ``study`` (one safe folder name) and ``results_dir`` (a folder that can be
    created and written). Raises ConfigError naming the key."""
    budgets = cfg.get("budgets") or {}
    valid = sorted(budgets) if budgets else list(BUDGETS)
    _check(cfg.budget in valid, "budget", f"must be one of {valid}", cfg.budget)
    study = str(cfg.study)
    _check(
        STUDY_NAME.fullmatch(study) is not None,
        "study",
        f"must be one folder name of 1 to {MAX_STUDY_NAME} characters: letters, digits, '.', '_' and '-', "
        "not starting with '.' or '-'",
        study,
    )
    results = Path(str(cfg.results_dir)).expanduser()
    _check(not results.exists() or results.is_dir(), "results_dir", "is a file, not a folder", str(cfg.results_dir))
    existing = next(p for p in (results, *results.absolute().parents) if p.exists())
    _check(
        existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
        "results_dir",
        f"cannot be written ({existing} is not a writable folder)",
        str(cfg.results_dir),
    )


def check_keys(cfg: DictConfig) -> None:
    """Reject keys that the schema does not have (added with ``+``) and required keys that are
    missing (deleted with ``~``); the dataclasses already reject plain typos. Reads key names only,
    so no interpolation is resolved."""
    top = {f.name for f in fields(Config)} | {"hydra"}
    for key in cfg:
        if key not in top:
            raise ConfigError(f"{key}: is not a gradstudy key; top-level keys: {sorted(top - {'hydra'})}")
    for group, schema in SCHEMA.items():
        if group not in cfg:
            raise ConfigError(f"{group}: is required")
        names = {f.name for f in fields(schema)}
        for key in cfg[group]:
            if key not in names:
                raise ConfigError(f"{group}.{key}: is not a key of {group}; its keys: {sorted(names)}")
        for key in names - set(cfg[group]):
            raise ConfigError(f"{group}.{key}: is required (deleted with ~?)")


def _floats(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _floats(v, f"{prefix}{k}.")]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _floats(v, f"{prefix[:-1]}[{i}].")]
    return [(prefix[:-1], node)] if isinstance(node, float) else []


def validate(cfg: DictConfig) -> None:
    """Reject names and values that cannot run. Raises ConfigError naming the key. Imports no jax:
    the names come from ``cells.options``, ``cells.statistics`` and the numpy-only ``inputs``."""
    check_run_keys(cfg)
    check_keys(cfg)
    for key, value in _floats(resolved(cfg)):
        _check(math.isfinite(value), key, "must be a finite number", value)
    for key in BOOLEAN_KEYS:
        value = OmegaConf.select(cfg, key)
        _check(isinstance(value, bool), key, "must be true or false", value)
    for check in (_check_init, _check_act_and_norm, _check_data_model_optim, _check_train, _check_stats):
        check(cfg)


def _check_init(cfg: DictConfig) -> None:
    _check_choice("init.name", cfg.init.name, inits.INITIALIZERS)
    _check_choice("init.mode", cfg.init.mode, inits.FAN_MODES)
    _check_choice("init.distribution", cfg.init.distribution, inits.DISTRIBUTIONS)
    _check(cfg.init.scale > 0, "init.scale", "must be > 0", cfg.init.scale)
    _check(cfg.init.sigma > 0, "init.sigma", "must be > 0", cfg.init.sigma)
    _check(cfg.init.bias_std >= 0, "init.bias_std", "must be >= 0", cfg.init.bias_std)
    _check(cfg.init.sigma_w2 > 0, "init.sigma_w2", "must be > 0", cfg.init.sigma_w2)
    _check(cfg.init.sigma_b2 >= 0, "init.sigma_b2", "must be >= 0", cfg.init.sigma_b2)


def _check_act_and_norm(cfg: DictConfig) -> None:
    _check_choice("act.name", cfg.act.name, options.ACTIVATIONS)
    _check_choice("norm.name", cfg.norm.name, options.NORMS)
    _check_choice("norm.position", cfg.norm.position, options.NORM_POSITIONS)
    _check(0 <= cfg.norm.momentum < 1, "norm.momentum", "must be in [0, 1)", cfg.norm.momentum)
    _check(cfg.norm.epsilon > 0, "norm.epsilon", "must be > 0", cfg.norm.epsilon)


def _check_data_model_optim(cfg: DictConfig) -> None:
    _check_choice("data.name", cfg.data.name, data.DATASETS)
    for key in ("n_train", "n_test"):
        size = cfg.data[key]
        _check(size is None or size >= 1, f"data.{key}", "must be >= 1 or null", size)
    _check(cfg.model.depth >= 1, "model.depth", "must be >= 1 hidden layer", cfg.model.depth)
    _check(cfg.model.width >= 1, "model.width", "must be >= 1 unit", cfg.model.width)
    _check_model(cfg)
    _check_choice("optim.name", cfg.optim.name, options.OPTIMIZERS)
    _check(cfg.optim.lr > 0, "optim.lr", "must be > 0", cfg.optim.lr)
    _check(0 <= cfg.optim.momentum < 1, "optim.momentum", "must be in [0, 1)", cfg.optim.momentum)
    clip = cfg.optim.clip_norm
    _check(clip is None or clip > 0, "optim.clip_norm", "must be > 0 or null", clip)
    _check(cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0 (0: off)", cfg.optim.weight_decay)
    _check_choice("optim.decay_mask", cfg.optim.decay_mask, schedules.DECAY_MASKS)
    _check_schedule(cfg.optim, cfg.train.steps)


def _check_schedule(optim: DictConfig, steps: int) -> None:
    """The keys the chosen schedule reads (the others are ignored, so not checked)."""
    _check_choice("optim.schedule", optim.schedule, schedules.SCHEDULES)
    keys = schedules.SCHEDULES[optim.schedule].keys
    if "warmup_steps" in keys:
        _check(
            0 <= optim.warmup_steps <= steps,
            "optim.warmup_steps",
            f"must be between 0 and train.steps={steps}",
            optim.warmup_steps,
        )
    if "decay_steps" in keys:
        decay = optim.decay_steps
        _check(decay is None or decay >= 1, "optim.decay_steps", "must be >= 1 or null (the whole run)", decay)
        if "warmup_steps" in keys:
            _check(
                schedules.decay_steps(optim, steps) > optim.warmup_steps,
                "optim.warmup_steps",
                f"must be below optim.decay_steps={schedules.decay_steps(optim, steps)} (the decay ends there, "
                "counted from step 0 with the warmup)",
                optim.warmup_steps,
            )
    if "end_lr" in keys:
        _check(optim.end_lr >= 0, "optim.end_lr", "must be >= 0", optim.end_lr)
    if "boundaries" in keys:
        bounds, factors = list(optim.boundaries), list(optim.factors)
        _check(len(bounds) >= 1, "optim.boundaries", "the step schedule needs at least one boundary", bounds)
        _check(
            all(1 <= b < steps for b in bounds) and all(a < b for a, b in itertools.pairwise(bounds)),
            "optim.boundaries",
            f"must be steps in increasing order, each between 1 and train.steps={steps} (excluded)",
            bounds,
        )
        _check(
            len(factors) == len(bounds),
            "optim.factors",
            f"needs one factor per boundary ({len(bounds)})",
            factors,
        )
        _check(all(f >= 0 for f in factors), "optim.factors", "must each be >= 0", factors)


def _check_model(cfg: DictConfig) -> None:
    """The residual net's keys, and the choices that need it (or cannot run on it yet)."""
    model = cfg.model
    _check_choice("model.name", model.name, options.MODELS)
    _check(model.branch_layers >= 1, "model.branch_layers", "must be >= 1 dense layer per branch", model.branch_layers)
    _check_choice("model.branch_scale", model.branch_scale, options.BRANCH_SCALES)
    if model.norm_position is not None:
        _check_choice("model.norm_position", model.norm_position, options.RESIDUAL_NORM_POSITIONS)
    residual = model.name == "resmlp"
    if model.name == "cnn":
        _check_cnn(cfg)
    else:
        _check(
            cfg.init.name != "delta_orthogonal",
            "init",
            f"delta_orthogonal sets a convolution kernel's centre tap: it needs model=cnn, not model={model.name} "
            "(init=orthogonal is its dense form)",
            cfg.init.name,
        )
    if not residual:
        _check(
            model.branch_scale == "one",
            "model.branch_scale",
            "needs model=resmlp (an MLP has no branch)",
            model.branch_scale,
        )
        _check(
            model.norm_position is None,
            "model.norm_position",
            "needs model=resmlp (an MLP uses norm.position)",
            model.norm_position,
        )
        _check(cfg.init.name != "fixup", "init", "fixup scales residual branches: it needs model=resmlp", cfg.init.name)
        return
    _check(
        model.norm_position is None or cfg.norm.name != "none",
        "model.norm_position",
        "places a norm, but norm=none; choose norm=batchnorm or layernorm, or leave it null",
        model.norm_position,
    )
    _check(
        not (model.branch_scale == "rezero" and model.norm_position == "post"),
        "model.branch_scale",
        "rezero keeps the stream free of any norm; with model.norm_position=post use skipinit",
        model.branch_scale,
    )
    _check(
        cfg.init.name != "fixup" or model.branch_layers >= 2,
        "model.branch_layers",
        "init=fixup scales a branch of m layers by depth^(-1/(2m-2)), which needs m >= 2",
        model.branch_layers,
    )
    _check_mlp_only_stats(cfg)


def _check_mlp_only_stats(cfg: DictConfig) -> None:
    asked = [e for e in cfg.stats.extra if e in statistics.MLP_ONLY]
    _check(
        not asked,
        "stats.extra",
        f"{asked} are per dense layer of an MLP; not available on model={cfg.model.name}",
        asked,
    )


def _check_cnn(cfg: DictConfig) -> None:
    """A convolutional net's keys, its data's image shape, and delta-orthogonal's isometry."""
    model = cfg.model
    _check(
        cfg.data.name in data.IMAGE_LAYOUTS,
        "data.name",
        f"model=cnn needs images; data={cfg.data.name} has no image shape (image datasets: "
        f"{', '.join(data.IMAGE_LAYOUTS)})",
        cfg.data.name,
    )
    _check(model.channels >= 1, "model.channels", "must be >= 1 channel", model.channels)
    _check(
        model.kernel >= 1 and model.kernel % 2 == 1,
        "model.kernel",
        "must be an odd size >= 1: 'same' padding centres the window, and an even one has no centre tap",
        model.kernel,
    )
    _check_choice("model.padding", model.padding, options.CNN_PADDINGS)
    layout = data.IMAGE_LAYOUTS[cfg.data.name]
    patch = model.kernel ** len(layout.spatial) * layout.channels
    _check(
        cfg.init.name != "delta_orthogonal" or patch <= model.channels,
        "model.channels",
        f"init=delta_orthogonal: layer 1 maps data={cfg.data.name}'s {patch}-value patches ({model.kernel}^"
        f"{len(layout.spatial)} positions x {layout.channels} channels) to {model.channels} channels by an orthogonal "
        f"matrix, which has a null space when the patch is larger, so it cannot be an isometry (it needs "
        f"model.channels >= {patch})",
        model.channels,
    )
    _check_mlp_only_stats(cfg)


def _check_train(cfg: DictConfig) -> None:
    _check(cfg.train.steps >= 1, "train.steps", "must be >= 1", cfg.train.steps)
    _check(cfg.train.batch_size >= 1, "train.batch_size", "must be >= 1", cfg.train.batch_size)
    _check(cfg.train.eval_every >= 1, "train.eval_every", "must be >= 1", cfg.train.eval_every)
    seeds_of(cfg)


def _check_stats(cfg: DictConfig) -> None:
    stats, train = cfg.stats, cfg.train
    _check_choice("stats.tier", stats.tier, list(statistics.Tier))
    _check(stats.every >= 1, "stats.every", "must be >= 1", stats.every)
    _check(
        stats.tier == statistics.Tier.NONE or train.eval_every % stats.every == 0,
        "train.eval_every",
        f"must be a multiple of stats.every={stats.every} so that statistics line up with evaluation",
        train.eval_every,
    )
    _check(
        all(s == train.steps or (0 <= s < train.steps and s % train.eval_every == 0) for s in stats.hist_steps),
        "stats.hist_steps",
        f"every step must be 0, a multiple of train.eval_every={train.eval_every} below train.steps, "
        f"or train.steps={train.steps}",
        list(stats.hist_steps),
    )
    _check(stats.hist_bins >= 1, "stats.hist_bins", "must be >= 1", stats.hist_bins)
    span = list(stats.hist_range)
    _check(
        len(span) == 2 and all(isinstance(v, float | int) and 0 < v < math.inf for v in span) and span[0] < span[1],
        "stats.hist_range",
        "must be two finite positive numbers in increasing order, [smallest, largest] magnitude",
        span,
    )
    for extra in stats.extra:
        _check_choice("stats.extra", extra, statistics.EXTRA_STATS)
    per_step = [s.name for s in statistics.recorded("scalars", list(stats.extra))]
    asked = [e for e in stats.extra if e in per_step]
    _check(
        stats.tier != statistics.Tier.NONE or not asked,
        "stats.extra",
        f"{asked} are recorded with the per-layer scalars; they need stats.tier=scalars or full",
        list(stats.extra),
    )
    _check(stats.jacobian_inputs >= 1, "stats.jacobian_inputs", "must be >= 1 example", stats.jacobian_inputs)
    if "shattering" in stats.extra:
        n_test = cfg.data.n_test
        _check(
            n_test is None or n_test >= 2,
            "data.n_test",
            "stats.extra=[shattering] follows a line between the first two test examples: it needs at least 2",
            n_test,
        )
    if "unit_percentiles" in stats.extra:
        units_key = "model.channels" if cfg.model.name == "cnn" else "model.width"
        units = OmegaConf.select(cfg, units_key)
        _check(1 <= stats.units <= units, "stats.units", f"must be between 1 and {units_key}={units}", stats.units)


def validate_against_data(cfg: DictConfig, n_train: int) -> None:
    """Checks that need the dataset's size; still before any compile."""
    if "jacobian_spectrum" in cfg.stats.extra:
        _check(
            cfg.stats.jacobian_inputs <= n_train,
            "stats.jacobian_inputs",
            f"must not exceed the {n_train} training examples of data={cfg.data.name}",
            cfg.stats.jacobian_inputs,
        )
    _check(
        cfg.train.batch_size <= n_train,
        "train.batch_size",
        f"must not exceed the {n_train} training examples of data={cfg.data.name}",
        cfg.train.batch_size,
    )
