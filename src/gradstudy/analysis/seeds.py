"""Statistics over seeds: t intervals of means (on the logit scale for fractions, the log scale for
positive means, so that no interval leaves its quantity's range), log-scale intervals of positive
magnitudes, the lower median of censored times with its bootstrap interval, and the healthy seeds of a table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradstudy.cells.statistics import Summary
from gradstudy.schema import KEY, Outcome
from gradstudy.store.study import Study

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def t_half_width(std: np.ndarray | float, n: np.ndarray | float) -> np.ndarray | float:
    """t(0.975, n-1)·s/√n, the half width of the 95% t interval of a mean (NaN where n < 2)."""
    from scipy import stats as sps  # here: the end-of-sweep summary imports this module and needs no scipy

    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = sps.t.ppf(0.975, n - 1) * np.asarray(std, np.float64) / np.sqrt(n)
    return np.where(n > 1, half, np.nan)


def bounded_interval(
    mean: np.ndarray | float, half: np.ndarray | float, summary: Summary
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the interval mean ± half, taken on the scale that keeps it inside the range of
    ``summary``'s quantity: the logit scale for a ``fraction`` (delta method: half / (m(1 − m))), the
    log scale for a ``positive`` mean (half / m); as it is otherwise. A mean on the range's edge
    with no spread (every seed at 0, or at 1) has the interval [mean, mean]."""
    m, h = np.asarray(mean, np.float64), np.asarray(half, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if summary is Summary.FRACTION:
            mid = np.log(m) - np.log1p(-m)
            scaled = h / (m * (1 - m))
            low, high = 1 / (1 + np.exp(-(mid - scaled))), 1 / (1 + np.exp(-(mid + scaled)))
        elif summary is Summary.POSITIVE:
            factor = np.exp(h / m)
            low, high = m / factor, m * factor
        else:
            return m - h, m + h
    edge = h == 0
    return np.where(edge, m, low), np.where(edge, m, high)


def mean_ci(values: np.ndarray | pd.Series, summary: Summary = Summary.ARITHMETIC) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with the 95% t interval over the finite values, on the scale of
    ``summary`` (``bounded_interval``: a ``fraction``'s stays in [0, 1], a ``positive`` one's above 0)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, np.nan, np.nan, 1
    low, high = bounded_interval(mean, t_half_width(x.std(ddof=1), n), summary)
    return mean, float(low), float(high), n


def log_mean_ci(values: np.ndarray | pd.Series) -> tuple[float, float, float, int, int]:
    """(geometric mean, low, high, n, n_zero) of non-negative magnitudes: the 95% t interval of the
    logs of the positive values, mapped back. Exact zeros are counted in ``n_zero`` and left out of
    the logs; when every value is 0 the estimate is 0 (with no interval). NaN and inf are left out."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    n_zero = int((x == 0).sum())
    positive = x[x > 0]
    if len(positive) == 0:
        return (0.0 if n_zero else np.nan), np.nan, np.nan, len(x), n_zero
    mean, low, high, _ = mean_ci(np.log(positive))
    return float(np.exp(mean)), float(np.exp(low)), float(np.exp(high)), len(x), n_zero


def lower_median(times: np.ndarray) -> float:
    """The ⌈n/2⌉-th smallest value: finite exactly when at least half of the values are."""
    t = np.sort(np.asarray(times, np.float64))
    return float(t[(len(t) - 1) // 2]) if len(t) else np.nan


def bootstrap_medians(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``lower_median`` of each of ``BOOTSTRAP_RESAMPLES`` resamples (with replacement) of ``times``."""
    t = np.asarray(times, np.float64)
    resamples = np.sort(t[rng.integers(0, len(t), size=(BOOTSTRAP_RESAMPLES, len(t)))], axis=1)
    return resamples[:, (len(t) - 1) // 2]


def bootstrap_median_ci(times: np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``lower_median`` (inf where resamples do not reach)."""
    if len(times) < 2:
        return np.nan, np.nan
    medians = bootstrap_medians(times, np.random.default_rng(BOOTSTRAP_SEED))
    return tuple(float(q) for q in np.percentile(medians, [2.5, 97.5], method="lower"))


def healthy(table: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The rows of ``table`` that belong to healthy seeds: neither diverged nor collapsed."""
    seeds = study.seeds
    ok = seeds.loc[seeds["outcome"] == Outcome.OK, [*KEY, "seed"]]
    return table.merge(ok, on=[*KEY, "seed"])


def with_keys(table: pd.DataFrame, study: Study) -> pd.DataFrame:
    """``table`` (keyed by study and cell) with the study's varying config keys as its first
    columns, sorted by them (numbers numerically)."""
    keys = study.varying_keys
    order = study.sorted_cells()[[*keys, *KEY]].reset_index(names="_order")
    out = order.merge(table, on=KEY, how="inner").sort_values("_order", kind="stable").drop(columns="_order")
    return out.reset_index(drop=True)


def add_mean_ci(row: dict, name: str, values: pd.Series, summary: Summary = Summary.ARITHMETIC) -> None:
    mean, low, high, n = mean_ci(values, summary)
    row.update({f"{name}_mean": mean, f"{name}_low": low, f"{name}_high": high, f"{name}_n": n})


def add_log_mean_ci(row: dict, name: str, values: pd.Series) -> None:
    mean, low, high, n, n_zero = log_mean_ci(values)
    row.update(
        {f"{name}_gmean": mean, f"{name}_low": low, f"{name}_high": high, f"{name}_n": n, f"{name}_n_zero": n_zero}
    )
