"""The classic papers as machine-checked claims on a study's results.

Each paper module (one per preset in ``conf/experiment``) defines a ``PAPER``: its claims, the numbers
the paper reports (with the table or figure they come from), its figures, and how a budget differs
from the paper's own setup. A claim measures one number per seed from the files of a study, takes
the mean and its 95% t interval over seeds, and compares that interval with a threshold fixed in the
module (with its source) before any run:

* **supported**: the whole interval is on the claimed side of the threshold;
* **contradicted**: the whole interval is on the other side;
* **inconclusive**: the interval straddles the threshold, or the cells it needs are missing.

Ratios of positive magnitudes (gradient and activation spreads) are measured on the log scale: the
geometric mean over seeds with the t interval of the logs mapped back (``of_seeds_log``), and a
ratio of two groups' geometric means with Welch's interval on the logs (``ratio``).

A cell is a (study, cell id) pair. A cell whose seeds all diverged is complete like any other: its
seeds' last healthy evaluations stand as their final values, so a diverging arm counts as
untrained, never as missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from gradstudy.analysis.convergence import compare_cells, log_mean_ci, lower_median, mean_ci, steps_to_target
from gradstudy.schema import CellKey as Key
from gradstudy.show.figures import FigureSpec
from gradstudy.show.present import Interval
from gradstudy.store.study import Study, cell_keys, rows_of

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"


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

    ``direction`` is "below" when the claim says the measured value is below ``threshold``, "above"
    when above. ``source`` says where in the paper the claim and its threshold come from.
    """

    key: str
    text: str
    source: str
    measured: str
    direction: str
    threshold: float
    measure: Callable[[Study], Measurement]


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str
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


def decide(measurement: Measurement, direction: str, threshold: float) -> str:
    """The verdict of an interval against a one-sided threshold (see the module docstring).

    Without an interval (a single seed) the verdict is inconclusive. Infinite bounds are allowed:
    steps to a target that some seeds never reach.
    """
    values = (measurement.estimate, measurement.low, measurement.high)
    if any(np.isnan(v) for v in values):
        return INCONCLUSIVE
    above, below = measurement.low > threshold, measurement.high < threshold
    if direction == "above":
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
    cells = study.cells[study.cells["status"] == "complete"]
    mask = pd.Series(True, index=cells.index)
    for key, value in where.items():
        column = key.replace("__", ".")
        if column not in cells.columns:
            raise MissingCells(f"no cell with {column}={value}")
        mask &= cells[column] == value
    hits = cell_keys(cells[mask])
    if len(hits) != 1:
        wanted = ", ".join(f"{k.replace('__', '.')}={v}" for k, v in where.items())
        raise MissingCells(f"{len(hits)} complete cells with {wanted} (expected 1)")
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
    rows = rows_of(study.curves, cell_id)
    rows = rows[(rows["split"] == split) & (rows["metric"] == metric)]
    if rows.empty:
        raise MissingCells(f"no {split} {metric} curve in {cell_id}")
    return rows.sort_values("step").groupby("seed")["value"].last()


def interval_of(values: pd.Series | np.ndarray) -> Interval:
    """Mean of per-seed values with its 95% t interval, for a paper's table."""
    mean, low, high, _ = mean_ci(values)
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


def papers() -> dict[str, Paper]:
    """Every paper, by preset name."""
    from gradstudy.papers import (
        chapter11,
        clevert2015,
        glorot2010,
        he2015,
        ioffe2015,
        klambauer2017,
        schoenholz2017,
    )

    modules = (glorot2010, he2015, clevert2015, ioffe2015, klambauer2017, schoenholz2017, chapter11)
    return {m.PAPER.name: m.PAPER for m in modules}
