"""From the engine's arrays to a cell's tidy tables, with divergence as data.

A seed that diverged at step s (its update s turned something non-finite) is frozen at the state
after s updates, its *last healthy step*. Its tables are cut there:

* ``curves``: its evaluations up to s, plus one evaluation of the frozen state at step s itself, so
  every seed has an end point;
* ``layers``, ``steps`` and ``hists``: its measurements at steps up to s (the measurement at s is
  taken on the frozen state's forward and backward pass).

No table holds an inf, and none holds a NaN: a non-finite measurement is left out (a histogram
counts such values in its ``nonfinite`` region instead), and so is a statistic that does not apply
to the activation (``saturated_frac`` for ReLU, ``dead_frac`` for tanh). ``seeds`` says, per seed,
whether and when it diverged. This module does not import jax.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gradstudy.cells.spectrum import SPECTRUM_BINS, SPECTRUM_QUANTITY, SPECTRUM_STATS
from gradstudy.schema import (
    CURVE_COLUMNS,
    CURVES,
    EVAL_METRICS,
    HIST_COLUMNS,
    HIST_DTYPES,
    HIST_REGIONS,
    HISTS,
    LAYER_COLUMNS,
    LAYERS,
    SEEDS,
    SPECTRA,
    SPECTRUM_COLUMNS,
    SPECTRUM_DTYPES,
    STEP_COLUMNS,
    STEPS,
    UNIT_COLUMNS,
    UNIT_DTYPES,
    UNITS,
    parse_unit_stat,
)
from gradstudy.store.study import seeds_table


def long_table(
    steps: np.ndarray, values: np.ndarray, seeds: list[int], axes: Iterable[tuple[str, list[Any]]]
) -> pd.DataFrame:
    """Long table of ``values`` with shape (len(steps), len(seeds), *[len(labels) for _, labels in axes])."""
    axes = list(axes)
    names = ["step", "seed"] + [name for name, _ in axes]
    labels = [list(steps), list(seeds)] + [labels for _, labels in axes]
    index = pd.MultiIndex.from_product(labels, names=names)
    frame = pd.DataFrame({"value": np.asarray(values).reshape(-1)}, index=index).reset_index()
    frame["step"] = frame["step"].astype(np.int64)
    frame["seed"] = frame["seed"].astype(np.int64)
    return frame


def _healthy(frame: pd.DataFrame, last_healthy: dict[int, int]) -> pd.DataFrame:
    """Rows at or before each seed's last healthy step, with a finite value."""
    limit = frame["seed"].map(last_healthy)
    value = frame["value"].to_numpy(np.float64)
    return frame[(frame["step"] <= limit) & np.isfinite(value)].reset_index(drop=True)


def curves_table(
    eval_steps: np.ndarray, evals: np.ndarray, seeds: list[int], last_healthy: dict[int, int]
) -> pd.DataFrame:
    """Evaluations up to each seed's last healthy step, and the frozen state's evaluation at that step."""
    frames = [long_table(eval_steps, evals, seeds, [("metric_id", list(range(len(EVAL_METRICS))))])]
    for i, seed in enumerate(seeds):
        step = last_healthy[seed]
        later = np.flatnonzero(eval_steps >= step)
        if step in eval_steps or not len(later):
            continue
        frames.append(
            long_table(
                np.array([step]),
                evals[later[0], i][None, None],
                [seed],
                [("metric_id", list(range(len(EVAL_METRICS))))],
            )
        )
    curves = _healthy(pd.concat(frames, ignore_index=True), last_healthy)
    metric_ids = curves.pop("metric_id").to_numpy()
    curves["split"] = [EVAL_METRICS[i][0] for i in metric_ids]
    curves["metric"] = [EVAL_METRICS[i][1] for i in metric_ids]
    curves["value"] = curves["value"].astype(np.float64)
    return curves.sort_values(["seed", "step", "split", "metric"], kind="stable").reset_index(drop=True)[CURVE_COLUMNS]


def layers_table(
    stats_steps: np.ndarray,
    stats: np.ndarray,
    stat_names: Sequence[str],
    init_stats: np.ndarray,
    init_stat_names: Sequence[str],
    seeds: list[int],
    applicable: set[str],
    last_healthy: dict[int, int],
) -> pd.DataFrame:
    """Per-layer statistics up to each seed's last healthy step, only those that apply, only finite ones."""
    layers = list(range(1, stats.shape[2] + 1))
    frames = [long_table(stats_steps, stats, seeds, [("layer", layers), ("stat", list(stat_names))])]
    if init_stat_names:
        frames.append(
            long_table(
                np.zeros(1, np.int64), init_stats[None], seeds, [("layer", layers), ("stat", list(init_stat_names))]
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table = _healthy(table[table["stat"].isin(applicable)], last_healthy)
    table["value"] = table["value"].astype(np.float64)
    return table[LAYER_COLUMNS]


def steps_table(losses: np.ndarray, seeds: list[int], last_healthy: dict[int, int], lr: np.ndarray) -> pd.DataFrame:
    """The minibatch loss (float32) and the learning rate ``lr[step]`` (float32) of every step of
    every seed, up to its last healthy step."""
    table = _healthy(long_table(np.arange(losses.shape[0]), losses, seeds, []), last_healthy)
    table = table.rename(columns={"value": "loss"})
    table["loss"] = table["loss"].astype(np.float32)
    table["lr"] = np.asarray(lr, np.float32)[table["step"].to_numpy()]
    return table.sort_values(["seed", "step"], kind="stable").reset_index(drop=True)[STEP_COLUMNS]


def hists_table(
    hist_steps: np.ndarray,
    counts: dict[str, np.ndarray],
    edges: dict[str, tuple[np.ndarray, np.ndarray]],
    seeds: list[int],
    last_healthy: dict[int, int],
) -> pd.DataFrame:
    """Histogram counts per (seed, step, layer, quantity): one row per bin (region ``bin``, with its
    edges) and one per ``HIST_REGIONS`` count (null edges), up to each seed's last healthy step."""
    frames = []
    for quantity, array in counts.items():
        left, right = edges[quantity]
        n_bins = len(left)
        slots = list(range(array.shape[-1]))
        frame = long_table(hist_steps, array, seeds, [("layer", list(range(1, array.shape[2] + 1))), ("slot", slots)])
        slot = frame.pop("slot").to_numpy()
        is_bin = slot < n_bins
        frame["quantity"] = quantity
        frame["region"] = np.where(
            is_bin, "bin", np.asarray(("bin", *HIST_REGIONS), dtype=object)[np.maximum(slot - n_bins + 1, 0)]
        )
        frame["bin_left"] = np.where(is_bin, left[np.minimum(slot, n_bins - 1)], np.nan)
        frame["bin_right"] = np.where(is_bin, right[np.minimum(slot, n_bins - 1)], np.nan)
        frames.append(frame)
    if not frames or not len(hist_steps):
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in HIST_DTYPES.items()})
    table = pd.concat(frames, ignore_index=True)
    table = table[table["step"] <= table["seed"].map(last_healthy)].rename(columns={"value": "count"})
    return table.astype(HIST_DTYPES).reset_index(drop=True)[HIST_COLUMNS]


def units_table(layers: pd.DataFrame) -> pd.DataFrame:
    """The ``unit_stat`` rows of a long layers table as (seed, step, layer, unit, stat, value)."""
    parsed = layers["stat"].map(parse_unit_stat)
    rows = layers[parsed.notna()]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in UNIT_DTYPES.items()})
    unit, stat = zip(*parsed[parsed.notna()], strict=True)
    frame = rows.assign(unit=np.asarray(unit, np.int64), stat=list(stat))
    return frame.astype(UNIT_DTYPES).reset_index(drop=True)[UNIT_COLUMNS]


def spectra_table(
    steps: np.ndarray, moments: np.ndarray, method: str, seeds: list[int], last_healthy: dict[int, int]
) -> pd.DataFrame:
    """The Jacobian spectrum's moments (``cells.spectrum``) up to each seed's last healthy step, finite
    ones only (an estimate has no variance or maximum below the last layer), with their method."""
    layers = list(range(1, moments.shape[2] + 1))
    table = long_table(steps, moments, seeds, [("layer", layers), ("stat", list(SPECTRUM_STATS))])
    table = _healthy(table, last_healthy).assign(method=method)
    return table.astype(SPECTRUM_DTYPES)[SPECTRUM_COLUMNS]


def cell_tables(
    result: Any, applicable: set[str], steps: int, lr: np.ndarray
) -> tuple[dict[str, pd.DataFrame], dict[int, int]]:
    """Every table of a cell from an ``engine.program.TrainResult`` and the learning rate of each of
    its ``steps`` steps; also returns {diverged seed: step}."""
    seeds = result.seeds
    diverged = {seed: int(step) for seed, step in zip(seeds, result.diverged_at, strict=True) if step >= 0}
    last_healthy = {seed: diverged.get(seed, steps) for seed in seeds}
    edges = {q: bins.edges() for q, bins in result.hist_bins.items()}
    layers = layers_table(
        result.stats_steps,
        result.stats,
        result.stat_names,
        result.init_stats,
        result.init_stat_names,
        seeds,
        applicable,
        last_healthy,
    )
    tables = {
        CURVES: curves_table(result.eval_steps, result.evals, seeds, last_healthy),
        LAYERS: layers[layers["stat"].map(parse_unit_stat).isna()].reset_index(drop=True),
        STEPS: steps_table(result.losses, seeds, last_healthy, lr),
        HISTS: hists_table(result.hist_steps, result.hist_counts, edges, seeds, last_healthy),
        SEEDS: seeds_table(seeds, diverged, steps),
    }
    if result.spectrum_method is not None:  # only cells that measure the spectrum have the table
        tables[SPECTRA] = spectra_table(
            result.spectrum_steps, result.spectrum, result.spectrum_method, seeds, last_healthy
        )
        if result.spectrum_counts.shape[-1]:  # the exact method's bins, beside the other histograms
            counts = {SPECTRUM_QUANTITY: result.spectrum_counts}
            bins = hists_table(
                result.spectrum_steps, counts, {SPECTRUM_QUANTITY: SPECTRUM_BINS.edges()}, seeds, last_healthy
            )
            tables[HISTS] = pd.concat([tables[HISTS], bins], ignore_index=True)
    if any(parse_unit_stat(name) for name in result.stat_names):  # only cells that follow units have the table
        tables[UNITS] = units_table(layers)
    return tables, diverged
