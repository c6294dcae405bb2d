"""Claims, papers and the decision rule that turns a measurement's interval into a verdict, and the
helpers the paper modules share to measure one number per seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy import stats as sps

from gradstudy.analysis.convergence import compare_cells, last_per_seed, steps_to_target
from gradstudy.analysis.seeds import log_mean_ci, lower_median, mean_ci
from gradstudy.cells.statistics import Summary
from gradstudy.schema import KEY
from gradstudy.schema import CellKey as Key
from gradstudy.show.figures import FigureSpec
from gradstudy.show.present import Interval
from gradstudy.store.study import Study, cell_keys, rows_of, where_text


class Decision(StrEnum):
    """A claim's verdict (see the package docstring)."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"


SUPPORTED, CONTRADICTED, INCONCLUSIVE = Decision


class Direction(StrEnum):
    """Which side of its threshold a claim says the measured value lies on."""

    ABOVE = "above"
    BELOW = "below"


ABOVE, BELOW = Direction


class MissingCells(LookupError):
    """The study lacks a complete cell that a claim needs."""


@dataclass(frozen=True)
class Measurement:
    """What a claim compares: an estimate with its 95% CI, and the numbers behind it."""

    estimate: float
    low: float
    high: float
    numbers: dict[str, float] = field(default_factory=dict)

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.low, self.high)


@dataclass(frozen=True)
class Claim:
    """One statement of a paper as a test: ``measure(study)`` compared with ``threshold``.

    ``direction`` says on which side of ``threshold`` the claim puts the measured value. ``source`` says where in the paper the claim and its threshold come from.
    """

    key: str
    text: str
    source: str
    measured: str
    direction: Direction
    threshold: float
    measure: Callable[[Study], Measurement]


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: Decision
    measurement: Measurement | None
    note: str = ""


@dataclass(frozen=True)
class Paper:
    name: str
    citation: str
    claims: tuple[Claim, ...]
    #: The paper's own numbers (rows and columns as in the paper) and where they come from.
    paper_table: pd.DataFrame | None
    paper_table_source: str
    #: ``study -> DataFrame`` shaped like ``paper_table``, from our results.
    ours_table: Callable[[Study], pd.DataFrame] | None
    #: The paper's figures, drawn from the study's complete cells.
    figures: tuple[FigureSpec, ...]
    #: What the paper did, and how each budget differs from it.
    setup: str
    differences: dict[str, str]
    #: Arms (``+arm=`` values of the grid) whose inference latency ``gradstudy.reproduce`` times
    #: after training, interleaved in one process (``gradstudy.engine.latency``), for the speed claims.
    latency_arms: tuple[str, ...] = ()


def decide(measurement: Measurement, direction: Direction, threshold: float) -> Decision:
    """The verdict of an interval against a one-sided threshold (see the module docstring).

    Without an interval (a single seed) the verdict is inconclusive. Infinite bounds are allowed:
    steps to a target that some seeds never reach.
    """
    values = (measurement.estimate, measurement.low, measurement.high)
    if any(np.isnan(v) for v in values):
        return INCONCLUSIVE
    above, below = measurement.low > threshold, measurement.high < threshold
    if direction is Direction.ABOVE:
        return SUPPORTED if above else CONTRADICTED if below else INCONCLUSIVE
    return SUPPORTED if below else CONTRADICTED if above else INCONCLUSIVE


def check(claim: Claim, study: Study) -> Verdict:
    """Measure ``claim`` on ``study`` and decide; missing cells make it inconclusive, with a note."""
    try:
        measurement = claim.measure(study)
    except MissingCells as err:
        return Verdict(claim, INCONCLUSIVE, None, f"missing: {err}")
    return Verdict(claim, decide(measurement, claim.direction, claim.threshold), measurement)


# ----- helpers the paper modules share ---------------------------------------------------------
def cell(study: Study, **where: object) -> Key:
    """(study, cell id) of the one complete cell whose config matches ``where`` (keys as in ``Study.cells``, dots as __)."""
    try:
        hits = cell_keys(study.matching(**where))
    except KeyError as err:
        raise MissingCells(err.args[0]) from err
    if len(hits) != 1:
        raise MissingCells(f"{len(hits)} complete cells with {where_text(where)} (expected 1)")
    return hits[0]


def layer_values(study: Study, cell_id: Key, stat: str) -> pd.DataFrame:
    """One statistic of one cell as a (step, seed) x layer table."""
    rows = rows_of(study.layers, cell_id)
    rows = rows[rows["stat"] == stat]
    if rows.empty:
        raise MissingCells(f"no {stat} recorded in {cell_id}")
    return rows.pivot_table(index=["step", "seed"], columns="layer", values="value")


def final_values(study: Study, cell_id: Key, split: str, metric: str) -> pd.Series:
    """Per seed, ``split``/``metric`` at its last evaluated step: the end of training, or for a
    diverged seed the evaluation of its frozen state at its last healthy step."""
    values = last_per_seed(rows_of(study.curves, cell_id), split, metric)
    if values.empty:
        raise MissingCells(f"no {split} {metric} curve in {cell_id}")
    return values.droplevel(KEY)


def test_accuracy(study: Study, cell_id: Key) -> pd.Series:
    """Per seed, the final test accuracy of one cell (``final_values``)."""
    return final_values(study, cell_id, "test", "accuracy")


def seeds_table(
    study: Study,
    rows: dict[str, dict[str, object]],
    columns: dict[str, dict[str, object]],
    values: Callable[[Study, Key], pd.Series],
    summary: Summary = Summary.ARITHMETIC,
) -> pd.DataFrame:
    """A paper's table of ours: per row and column label, the mean [95% CI] over seeds of
    ``values`` of the one complete cell matching both the row's and the column's ``where``
    (keys as ``cell`` takes them), or "missing"."""
    table: dict[str, dict[str, str]] = {}
    for column, column_where in columns.items():
        table[column] = {}
        for row, row_where in rows.items():
            try:
                table[column][row] = str(interval_of(values(study, cell(study, **row_where, **column_where)), summary))
            except MissingCells:
                table[column][row] = "missing"
    return pd.DataFrame(table)


def interval_of(values: pd.Series | np.ndarray, summary: Summary = Summary.ARITHMETIC) -> Interval:
    """Mean of per-seed values with its 95% t interval, for a paper's table (``Summary.FRACTION``:
    taken on the logit scale, so an accuracy's stays inside [0, 1])."""
    mean, low, high, _ = mean_ci(values, summary)
    return Interval(mean, low, high)


def of_seeds(values: pd.Series | np.ndarray, **numbers: float) -> Measurement:
    """Mean of per-seed values with its t interval."""
    mean, low, high, n = mean_ci(values)
    return Measurement(mean, low, high, {"mean": mean, "n_seeds": n, **numbers})


def of_seeds_log(values: pd.Series | np.ndarray, **numbers: float) -> Measurement:
    """Geometric mean of per-seed positive values (ratios of magnitudes) with the log-scale t interval."""
    mean, low, high, n, n_zero = log_mean_ci(values)
    return Measurement(mean, low, high, {"geometric mean": mean, "n_seeds": n, "n_zero": n_zero, **numbers})


def ratio(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray, **numbers: float) -> Measurement:
    """gmean(a) / gmean(b) of two independent groups of seeds of positive values, with Welch's 95%
    interval of the difference of the logs mapped back."""
    a, b = (np.asarray(v, np.float64) for v in (a, b))
    logs = difference(np.log(a[np.isfinite(a) & (a > 0)]), np.log(b[np.isfinite(b) & (b > 0)]))
    numbers = {
        "gmean a": float(np.exp(logs.numbers["a"])) if "a" in logs.numbers else np.nan,
        "gmean b": float(np.exp(logs.numbers["b"])) if "b" in logs.numbers else np.nan,
        **numbers,
    }
    return Measurement(*(float(np.exp(v)) for v in (logs.estimate, logs.low, logs.high)), numbers)


def steps_earlier(
    study: Study, cells: dict[str, Key], target: float, metric: str = "accuracy", split: str = "test"
) -> Measurement:
    """Steps to ``target`` of the first of ``cells`` (name -> cell) minus the second's (lower medians,
    bootstrap CI; ``analysis.compare_cells``), with each cell's lower-median steps as numbers."""
    (_, a), (_, b) = cells.items()
    diff = compare_cells(study, a, b, target, metric=metric, split=split)
    times = steps_to_target(study.curves, target, metric=metric, split=split)
    medians = {f"median steps {name}": lower_median(rows_of(times, c)["step"]) for name, c in cells.items()}
    return Measurement(diff["difference"], diff["low"], diff["high"], medians)


def difference(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray, **numbers: float) -> Measurement:
    """mean(a) - mean(b) of two independent groups of seeds, with Welch's 95% t interval."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return Measurement(np.nan, np.nan, np.nan, numbers)
    diff = float(a.mean() - b.mean())
    va, vb = (a.var(ddof=1) / len(a) if len(a) > 1 else np.nan), (b.var(ddof=1) / len(b) if len(b) > 1 else np.nan)
    se = np.sqrt(va + vb)
    means = {"a": float(a.mean()), "b": float(b.mean()), **numbers}
    if not np.isfinite(se):  # a group of one seed: no interval
        return Measurement(diff, np.nan, np.nan, means)
    if se == 0:
        return Measurement(diff, diff, diff, means)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(sps.t.ppf(0.975, dof) * se)
    return Measurement(diff, diff - half, diff + half, means)
