"""From a study's tidy tables to tidy answers: convergence speed, final metrics, gradient profiles.

Statistics, chosen so that every answer is well defined:

* **means** come with a t interval, mean ± t(0.975, n-1)·s/√n (NaN when n = 1);
* **steps to target**: a seed that never reaches the target is right-censored (its time is +inf, not
  dropped). A cell's figure is the *lower* median over seeds (the ⌈n/2⌉-th smallest time), finite
  exactly when at least half of the seeds reach the target, with a percentile bootstrap interval
  (2,000 resamples of the seeds, fixed rng seed);
* **diverged seeds** are left out of final-metric means (n is reported). Their curves stop at the
  divergence step, so a target they had not reached by then counts as never reached.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from gradstudy.store import Study

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def mean_ci(values: np.ndarray | pd.Series) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with the 95% t interval over the finite values."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, np.nan, np.nan, 1
    half = float(sps.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


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


def _final_step(curves: pd.DataFrame) -> pd.Series:
    """Each cell's last evaluated step (the end of training)."""
    return curves.groupby("cell")["step"].max()


def steps_to_target(
    curves: pd.DataFrame, target: float, metric: str = "accuracy", split: str = "test"
) -> pd.DataFrame:
    """Per cell and seed: the first evaluated step where ``metric`` on ``split`` reaches ``target``.

    Accuracy reaches a target from below (>=), loss from above (<=). Columns: cell, seed, step
    (+inf when censored), reached, last_step (the seed's last evaluated step).
    """
    rows = curves[(curves["metric"] == metric) & (curves["split"] == split)]
    if rows.empty:
        return pd.DataFrame(columns=["cell", "seed", "step", "reached", "last_step"])
    hit = rows["value"] >= target if metric == "accuracy" else rows["value"] <= target
    first = rows[hit].groupby(["cell", "seed"])["step"].min()
    out = rows.groupby(["cell", "seed"])["step"].max().rename("last_step").to_frame()
    out["step"] = first.reindex(out.index).astype(np.float64).fillna(np.inf)
    out["reached"] = np.isfinite(out["step"])
    return out.reset_index()[["cell", "seed", "step", "reached", "last_step"]]


def _finite_seeds(curves: pd.DataFrame) -> pd.DataFrame:
    """Rows of the seeds that reached their cell's final step (the ones that did not diverge)."""
    last = curves.groupby(["cell", "seed"])["step"].transform("max")
    return curves[last == curves["cell"].map(_final_step(curves))]


def final_metrics(curves: pd.DataFrame) -> pd.DataFrame:
    """Per cell and seed, each split/metric at the cell's final step (diverged seeds have no row)."""
    finite = _finite_seeds(curves)
    at_end = finite[finite["step"] == finite["cell"].map(_final_step(curves))]
    wide = at_end.pivot_table(index=["cell", "seed"], columns=["split", "metric"], values="value")
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    return wide.reset_index()


def loss_auc(curves: pd.DataFrame) -> pd.DataFrame:
    """Per cell and (non-diverged) seed: the trapezoid area under the training-loss curve, over steps."""
    rows = _finite_seeds(curves)
    rows = rows[(rows["split"] == "train") & (rows["metric"] == "loss")].sort_values("step")
    auc = rows.groupby(["cell", "seed"]).apply(
        lambda g: float(np.trapezoid(g["value"], g["step"])), include_groups=False
    )
    return auc.rename("train_loss_auc").reset_index()


def _add_mean_ci(row: dict, name: str, values: pd.Series) -> None:
    mean, low, high, n = mean_ci(values)
    row.update({f"{name}_mean": mean, f"{name}_low": low, f"{name}_high": high, f"{name}_n": n})


def convergence_table(
    study: Study, target: float, metric: str = "accuracy", split: str = "test"
) -> pd.DataFrame:
    """One row per complete cell: steps to ``target`` (lower median and bootstrap CI, n reached),
    area under the training loss, final train/test loss and accuracy (mean and t CI), n diverged.
    """
    times = steps_to_target(study.curves, target, metric, split)
    finals = final_metrics(study.curves)
    aucs = loss_auc(study.curves)
    rows = []
    for _, cell in study.cells[study.cells["status"] == "complete"].iterrows():
        seed_times = times.loc[times["cell"] == cell["cell"], "step"].to_numpy()
        low, high = bootstrap_median_ci(seed_times)
        row = {
            "cell": cell["cell"],
            "target": target,
            "steps_to_target": lower_median(seed_times),
            "steps_low": low,
            "steps_high": high,
            "n_reached": int(np.isfinite(seed_times).sum()),
            "n_seeds": len(seed_times),
        }
        row["reached"] = row["n_reached"] * 2 >= row["n_seeds"] > 0
        _add_mean_ci(row, "train_loss_auc", aucs.loc[aucs["cell"] == cell["cell"], "train_loss_auc"])
        cell_finals = finals[finals["cell"] == cell["cell"]]
        for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            _add_mean_ci(row, column, cell_finals[column] if column in cell_finals else pd.Series(dtype=float))
        row["n_diverged"] = int(cell["n_diverged"])
        rows.append(row)
    return pd.DataFrame(rows)


def _phase_layers(layers: pd.DataFrame) -> pd.DataFrame:
    """Rows at step 0 (phase "start") and at each cell's last measured step of its finite seeds ("end")."""
    finite_last = layers.groupby(["cell", "seed"])["step"].transform("max")
    cell_last = layers.groupby("cell")["step"].transform("max")
    start = layers[layers["step"] == 0].assign(phase="start")
    end = layers[(layers["step"] == cell_last) & (finite_last == cell_last)].assign(phase="end")
    return pd.concat([start, end], ignore_index=True)


def gradient_table(study: Study) -> pd.DataFrame:
    """One row per cell, phase (start/end) and layer: mean and CI of ``grad_norm`` and ``delta_std``,
    mean saturated and dead fractions, and the cell's first-to-last layer ratios (mean and CI over seeds;
    below 1 the gradients shrink on their way down to the input).
    """
    phased = _phase_layers(study.layers)
    if phased.empty:
        return pd.DataFrame()
    wide = phased.pivot(index=["cell", "phase", "step", "seed", "layer"], columns="stat", values="value")
    wide = wide.reindex(columns=["grad_norm", "delta_std", "saturated_frac", "dead_frac"]).reset_index()
    rows = []
    for (cell, phase, layer), g in wide.groupby(["cell", "phase", "layer"]):
        row = {"cell": cell, "phase": phase, "step": int(g["step"].iloc[0]), "layer": int(layer)}
        for stat in ("grad_norm", "delta_std"):
            _add_mean_ci(row, stat, g[stat])
        for stat in ("saturated_frac", "dead_frac"):
            row[stat] = float(g[stat].mean()) if g[stat].notna().any() else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    ratios = []
    for (cell, phase), g in wide.groupby(["cell", "phase"]):
        first, last = g[g["layer"] == g["layer"].min()], g[g["layer"] == g["layer"].max()]
        row = {"cell": cell, "phase": phase}
        for stat in ("grad_norm", "delta_std"):
            per_seed = first.set_index("seed")[stat] / last.set_index("seed")[stat]
            mean, low, high, _ = mean_ci(per_seed)
            row.update({f"{stat}_ratio": mean, f"{stat}_ratio_low": low, f"{stat}_ratio_high": high})
        ratios.append(row)
    return table.merge(pd.DataFrame(ratios), on=["cell", "phase"])


def compare_cells(
    study: Study, cell_a: str, cell_b: str, target: float, metric: str = "accuracy", split: str = "test"
) -> dict[str, float]:
    """Steps to target of ``cell_a`` minus ``cell_b``, with a percentile-bootstrap 95% CI.

    The seeds of each cell are resampled independently. A negative difference means ``cell_a``
    gets there first; an infinite bound means that in some resamples a cell never does.
    """
    times = steps_to_target(study.curves, target, metric, split)
    a = times.loc[times["cell"] == cell_a, "step"].to_numpy()
    b = times.loc[times["cell"] == cell_b, "step"].to_numpy()
    if len(a) == 0 or len(b) == 0:
        raise KeyError(f"no curves for {cell_a if len(a) == 0 else cell_b}")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    with np.errstate(invalid="ignore"):
        diffs = bootstrap_medians(a, rng) - bootstrap_medians(b, rng)
        diff = lower_median(a) - lower_median(b)
    diffs = diffs[~np.isnan(diffs)]  # inf - inf: neither reaches in that resample
    low, high = np.percentile(diffs, [2.5, 97.5], method="lower") if len(diffs) else (np.nan, np.nan)
    return {"cell_a": cell_a, "cell_b": cell_b, "difference": float(diff), "low": float(low), "high": float(high)}
