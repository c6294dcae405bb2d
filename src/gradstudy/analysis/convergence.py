"""From a study's tidy tables to tidy answers: convergence speed, final metrics, gradient profiles.

Statistics, chosen so that every answer is well defined:

* **means** come with a t interval, mean ± t(0.975, n-1)·s/√n (NaN when n = 1), taken on the logit
  scale for accuracies and on the log scale for losses and areas (the delta method), so that an
  interval never leaves [0, 1] or goes below 0;
* **positive magnitudes** (norms, standard deviations and their ratios) are summarized on the log
  scale: the geometric mean with the t interval of the logs mapped back, which never goes negative.
  A value that is exactly 0 (float32 underflow, or a dead layer: ``dead_frac`` tells which) has no
  logarithm; it is counted (``_n_zero``), never silently dropped, and the estimate is 0 when every
  value is 0;
* **steps to target**: a seed that never reaches the target is right-censored (its time is +inf, not
  dropped). A cell's figure is the *lower* median over seeds (the ⌈n/2⌉-th smallest time), finite
  exactly when at least half of the seeds reach the target, with a percentile bootstrap interval
  (2,000 resamples of the seeds, fixed rng seed);
* **diverged and collapsed seeds** (``Study.seeds``, ``store.outcomes``) are left out of final
  metrics, loss AUC and steps to target (n is reported, with the numbers diverged and collapsed).
  A cell none of whose seeds is healthy has outcome ``diverged`` or ``collapsed`` and no final metrics.

Every table is keyed by (study, cell) and starts with the study's varying config keys, sorted by them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradstudy.analysis.seeds import (
    BOOTSTRAP_SEED,
    add_mean_ci,
    bootstrap_median_ci,
    bootstrap_medians,
    healthy,
    lower_median,
    with_keys,
)
from gradstudy.cells.statistics import Summary
from gradstudy.schema import KEY, CellKey, CellStatus
from gradstudy.store.study import Study, rows_of


def minibatch_curves(steps: pd.DataFrame) -> pd.DataFrame:
    """The per-step minibatch losses (``Study.steps``) as curve rows: split ``minibatch``, metric ``loss``."""
    return (
        steps.rename(columns={"loss": "value"}).assign(split="minibatch", metric="loss").astype({"value": np.float64})
    )


def curves_of(study: Study, split: str) -> pd.DataFrame:
    """The curve rows that ``split`` reads: the per-step minibatch losses, or the evaluations."""
    return minibatch_curves(study.steps) if split == "minibatch" else study.curves


def steps_to_target(curves: pd.DataFrame, target: float, metric: str = "accuracy", split: str = "test") -> pd.DataFrame:
    """Per cell and seed: the first evaluated step where ``metric`` on ``split`` reaches ``target``.

    Accuracy reaches a target from below (>=), loss from above (<=). ``split="minibatch"`` reads
    rows from ``minibatch_curves`` (one per step). Columns: study, cell, seed, step (+inf when
    censored), reached, last_step (the seed's last recorded step).
    """
    rows = curves[(curves["metric"] == metric) & (curves["split"] == split)]
    if rows.empty:
        return pd.DataFrame(columns=[*KEY, "seed", "step", "reached", "last_step"])
    hit = rows["value"] >= target if metric == "accuracy" else rows["value"] <= target
    by = [*KEY, "seed"]
    first = rows[hit].groupby(by)["step"].min()
    out = rows.groupby(by)["step"].max().rename("last_step").to_frame()
    out["step"] = first.reindex(out.index).astype(np.float64).fillna(np.inf)
    out["reached"] = np.isfinite(out["step"])
    return out.reset_index()[[*by, "step", "reached", "last_step"]]


def last_per_seed(curves: pd.DataFrame, split: str, metric: str) -> pd.Series:
    """Per (study, cell, seed), ``split``/``metric`` at the seed's last evaluated step: the end of
    training, or for a diverged seed the evaluation of its frozen state at its last healthy step."""
    rows = curves[(curves["split"] == split) & (curves["metric"] == metric)]
    return rows.sort_values("step").groupby([*KEY, "seed"])["value"].last()


def final_accuracy(study: Study, split: str = "train") -> pd.DataFrame:
    """Each cell's mean over seeds of ``split`` accuracy at each seed's last evaluation (a diverged
    seed's frozen state counts as it stands): study, cell, accuracy, n_seeds."""
    last = last_per_seed(study.curves, split, "accuracy").reset_index()
    return last.groupby(KEY)["value"].agg(accuracy="mean", n_seeds="count").reset_index()


def final_metrics(study: Study) -> pd.DataFrame:
    """Per cell and healthy seed, each split/metric at the end of training (diverged seeds have no row)."""
    curves = healthy(study.curves, study)
    if curves.empty:
        return pd.DataFrame(columns=[*KEY, "seed"])
    at_end = curves[curves["step"] == curves.groupby(KEY)["step"].transform("max")]
    wide = at_end.pivot_table(index=[*KEY, "seed"], columns=["split", "metric"], values="value")
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    return wide.reset_index()


def loss_auc(study: Study) -> pd.DataFrame:
    """Per cell and healthy seed: the trapezoid area under the (evaluated) training-loss curve, over steps."""
    rows = healthy(study.curves, study)
    rows = rows[(rows["split"] == "train") & (rows["metric"] == "loss")].sort_values("step")
    if rows.empty:
        return pd.DataFrame(columns=[*KEY, "seed", "train_loss_auc"])
    auc = rows.groupby([*KEY, "seed"]).apply(lambda g: float(np.trapezoid(g["value"], g["step"])), include_groups=False)
    return auc.rename("train_loss_auc").reset_index()


def convergence_table(study: Study, target: float, metric: str = "accuracy", split: str = "test") -> pd.DataFrame:
    """One row per complete cell: its outcome; steps to ``target`` over the healthy seeds (lower
    median and bootstrap CI, n reached of n healthy); area under the training loss and final
    train/test loss and accuracy (mean and t CI over the healthy seeds); n diverged and n collapsed.
    ``split="minibatch"`` (with ``metric="loss"``) times the per-step minibatch loss.
    """
    times = healthy(steps_to_target(curves_of(study, split), target, metric, split), study)
    finals = final_metrics(study)
    aucs = loss_auc(study)
    rows = []
    for _, cell in study.cells[study.cells["status"] == CellStatus.COMPLETE].iterrows():
        key = (cell["study"], cell["cell"])
        seed_times = rows_of(times, key)["step"].to_numpy(np.float64)
        low, high = bootstrap_median_ci(seed_times)
        row = {
            "study": key[0],
            "cell": key[1],
            "outcome": cell["outcome"],
            "target": target,
            "steps_to_target": lower_median(seed_times),
            "steps_low": low,
            "steps_high": high,
            "n_reached": int(np.isfinite(seed_times).sum()),
            "n_healthy": len(seed_times),
        }
        row["reached"] = row["n_reached"] * 2 >= row["n_healthy"] > 0
        add_mean_ci(row, "train_loss_auc", rows_of(aucs, key)["train_loss_auc"], Summary.POSITIVE)
        cell_finals = rows_of(finals, key)
        for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            values = cell_finals[column] if column in cell_finals else pd.Series(dtype=float)
            add_mean_ci(row, column, values, Summary.FRACTION if column.endswith("accuracy") else Summary.POSITIVE)
        row["n_seeds"] = int(cell["n_seeds"])
        row["n_diverged"] = int(cell["n_diverged"])
        row["n_collapsed"] = int(cell["n_collapsed"])
        rows.append(row)
    return with_keys(pd.DataFrame(rows), study) if rows else pd.DataFrame(columns=[*KEY, "outcome"])


def compare_cells(
    study: Study,
    cell_a: str | CellKey,
    cell_b: str | CellKey,
    target: float,
    metric: str = "accuracy",
    split: str = "test",
) -> dict[str, float]:
    """Steps to target of ``cell_a`` minus ``cell_b``, with a percentile-bootstrap 95% CI.

    A cell is a (study, cell id) pair, or a cell id alone when one study holds it. Every seed
    counts, a diverged one as never reaching a target it had not reached before diverging. The
    seeds of each cell are resampled independently. A negative difference means ``cell_a`` gets
    there first; an infinite bound means that in some resamples a cell never does.
    """
    times = steps_to_target(curves_of(study, split), target, metric, split)

    def seed_times(cell: str | CellKey) -> np.ndarray:
        rows = times[times["cell"] == cell] if isinstance(cell, str) else rows_of(times, cell)
        if rows.empty:
            raise KeyError(f"no curves for {cell}")
        if rows["study"].nunique() > 1:
            raise KeyError(f"{cell} is in several studies ({sorted(rows['study'].unique())}): pass (study, cell)")
        return rows["step"].to_numpy(np.float64)

    a, b = seed_times(cell_a), seed_times(cell_b)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    with np.errstate(invalid="ignore"):
        diffs = bootstrap_medians(a, rng) - bootstrap_medians(b, rng)
        diff = lower_median(a) - lower_median(b)
    diffs = diffs[~np.isnan(diffs)]  # inf - inf: neither reaches in that resample
    low, high = np.percentile(diffs, [2.5, 97.5], method="lower") if len(diffs) else (np.nan, np.nan)
    return {"cell_a": cell_a, "cell_b": cell_b, "difference": float(diff), "low": float(low), "high": float(high)}
