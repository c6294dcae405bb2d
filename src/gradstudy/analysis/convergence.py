"""From a study's tidy tables to tidy answers: convergence speed, final metrics, gradient profiles.

Statistics, chosen so that every answer is well defined:

* **means** come with a t interval, mean ± t(0.975, n-1)·s/√n (NaN when n = 1);
* **positive magnitudes** (norms, standard deviations and their ratios) are summarized on the log
  scale: the geometric mean with the t interval of the logs mapped back, which never goes negative.
  A value that is exactly 0 (float32 underflow, or a dead layer: ``dead_frac`` tells which) has no
  logarithm; it is counted (``_n_zero``), never silently dropped, and the estimate is 0 when every
  value is 0;
* **steps to target**: a seed that never reaches the target is right-censored (its time is +inf, not
  dropped). A cell's figure is the *lower* median over seeds (the ⌈n/2⌉-th smallest time), finite
  exactly when at least half of the seeds reach the target, with a percentile bootstrap interval
  (2,000 resamples of the seeds, fixed rng seed);
* **diverged seeds** (``Study.seeds``) are left out of final metrics, loss AUC and steps to target
  (n is reported, with the number diverged). A cell whose seeds all diverged has outcome
  ``diverged`` and no final metrics.

Every table is keyed by (study, cell) and starts with the study's varying config keys, sorted by them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradstudy.schema import CellKey
from gradstudy.store.study import Study, rows_of

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: The columns that identify a cell: its study and its cell id.
KEY = ["study", "cell"]


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
    from scipy import stats as sps  # here: the end-of-sweep summary imports this module and needs no scipy

    half = float(sps.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


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
    """The rows of ``table`` that belong to seeds that did not diverge."""
    seeds = study.seeds
    ok = seeds.loc[seeds["diverged_at"].isna(), [*KEY, "seed"]]
    return table.merge(ok, on=[*KEY, "seed"])


def with_keys(table: pd.DataFrame, study: Study) -> pd.DataFrame:
    """``table`` (keyed by study and cell) with the study's varying config keys as its first
    columns, sorted by them (numbers numerically)."""
    keys = study.varying_keys
    order = study.sorted_cells()[[*keys, *KEY]].reset_index(names="_order")
    out = order.merge(table, on=KEY, how="inner").sort_values("_order", kind="stable").drop(columns="_order")
    return out.reset_index(drop=True)


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


def _add_mean_ci(row: dict, name: str, values: pd.Series) -> None:
    mean, low, high, n = mean_ci(values)
    row.update({f"{name}_mean": mean, f"{name}_low": low, f"{name}_high": high, f"{name}_n": n})


def _add_log_mean_ci(row: dict, name: str, values: pd.Series) -> None:
    mean, low, high, n, n_zero = log_mean_ci(values)
    row.update(
        {f"{name}_gmean": mean, f"{name}_low": low, f"{name}_high": high, f"{name}_n": n, f"{name}_n_zero": n_zero}
    )


def convergence_table(study: Study, target: float, metric: str = "accuracy", split: str = "test") -> pd.DataFrame:
    """One row per complete cell: its outcome; steps to ``target`` over the healthy seeds (lower
    median and bootstrap CI, n reached of n healthy); area under the training loss and final
    train/test loss and accuracy (mean and t CI over the healthy seeds); n diverged.
    ``split="minibatch"`` (with ``metric="loss"``) times the per-step minibatch loss.
    """
    times = healthy(steps_to_target(curves_of(study, split), target, metric, split), study)
    finals = final_metrics(study)
    aucs = loss_auc(study)
    rows = []
    for _, cell in study.cells[study.cells["status"] == "complete"].iterrows():
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
        _add_mean_ci(row, "train_loss_auc", rows_of(aucs, key)["train_loss_auc"])
        cell_finals = rows_of(finals, key)
        for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            _add_mean_ci(row, column, cell_finals[column] if column in cell_finals else pd.Series(dtype=float))
        row["n_seeds"] = int(cell["n_seeds"])
        row["n_diverged"] = int(cell["n_diverged"])
        rows.append(row)
    return with_keys(pd.DataFrame(rows), study) if rows else pd.DataFrame(columns=[*KEY, "outcome"])


def phase_layers(study: Study) -> pd.DataFrame:
    """Layer rows of two phases, the one definition every table and figure uses:

    * ``start``: step 0, every seed;
    * ``end``: each seed's last measured step: the end of training, or for a seed that diverged its
      last healthy step (the state it was frozen in). ``ended_early`` marks those seeds, so a
      reader can tell a trained network from one that blew up at step 10.
    """
    layers = study.layers
    start = layers[layers["step"] == 0].assign(phase="start")
    end = layers[layers["step"] == layers.groupby([*KEY, "seed"])["step"].transform("max")].assign(phase="end")
    phased = pd.concat([start, end], ignore_index=True)
    diverged = study.seeds.loc[study.seeds["diverged_at"].notna(), [*KEY, "seed"]].assign(_diverged=True)
    phased = phased.merge(diverged, on=[*KEY, "seed"], how="left")
    phased["ended_early"] = (phased["phase"] == "end") & phased.pop("_diverged").fillna(False).astype(bool)
    return phased


def end_steps_text(phased: pd.DataFrame) -> str:
    """How the ``end`` rows of ``phase_layers`` are timed, for a caption: ``step 40``, or the range
    of the seeds that ended early."""
    end = phased[phased["phase"] == "end"]
    if end.empty:
        return "no seed has an end"
    trained = end.loc[~end["ended_early"], "step"]
    early = end.loc[end["ended_early"]].drop_duplicates([*KEY, "seed"])["step"]
    parts = [f"step {int(trained.max())}"] if len(trained) else []
    if len(early):
        span = f"{int(early.min())}" if early.min() == early.max() else f"{int(early.min())}–{int(early.max())}"
        parts.append(f"step {span} for the {len(early)} seed(s) that diverged (their last healthy step)")
    return "; ".join(parts)


#: Statistics that are positive magnitudes: summarized on the log scale.
MAGNITUDES = ("grad_norm", "delta_std")


def gradient_table(study: Study) -> pd.DataFrame:
    """One row per cell, phase (start/end, ``phase_layers``) and layer: geometric mean and log-scale
    CI of ``grad_norm`` and ``delta_std`` (with the count of exact zeros), mean saturated and dead
    fractions (where they apply), and the cell's first-to-last layer ratios (geometric mean and CI
    over seeds; below 1 the gradients shrink on their way down to the input). ``step`` is the latest
    step of the phase's rows; ``n_ended_early`` counts the seeds whose ``end`` is their last healthy
    step before divergence.
    """
    phased = phase_layers(study)
    if phased.empty:
        return pd.DataFrame()
    wide = phased.pivot(index=[*KEY, "phase", "step", "seed", "ended_early", "layer"], columns="stat", values="value")
    wide = wide.reindex(columns=[*MAGNITUDES, "saturated_frac", "dead_frac"]).reset_index()
    rows = []
    for (study_name, cell, phase, layer), g in wide.groupby([*KEY, "phase", "layer"]):
        row = {
            "study": study_name,
            "cell": cell,
            "phase": phase,
            "step": int(g["step"].max()),
            "n_ended_early": int(g["ended_early"].sum()),
            "layer": int(layer),
        }
        for stat in MAGNITUDES:
            _add_log_mean_ci(row, stat, g[stat])
        for stat in ("saturated_frac", "dead_frac"):
            row[stat] = float(g[stat].mean()) if g[stat].notna().any() else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    ratios = []
    for (study_name, cell, phase), g in wide.groupby([*KEY, "phase"]):
        first, last = g[g["layer"] == g["layer"].min()], g[g["layer"] == g["layer"].max()]
        row = {"study": study_name, "cell": cell, "phase": phase}
        for stat in MAGNITUDES:
            with np.errstate(divide="ignore", invalid="ignore"):
                per_seed = first.set_index("seed")[stat] / last.set_index("seed")[stat]
            _add_log_mean_ci(row, f"{stat}_ratio", per_seed)
        ratios.append(row)
    return with_keys(table.merge(pd.DataFrame(ratios), on=[*KEY, "phase"]), study)


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
