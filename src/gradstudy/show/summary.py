"""The end-of-sweep summary: one row per cell with final test accuracy over its healthy seeds, and
the seeds that diverged or collapsed."""

from __future__ import annotations

import pandas as pd

from gradstudy.analysis.convergence import final_metrics
from gradstudy.schema import KEY, Outcome
from gradstudy.show.present import label_of
from gradstudy.store.study import Study


def summary_table(study: Study) -> pd.DataFrame:
    """study, cell, config, status, reason (why a cell failed or is corrupt), outcome, n_seeds,
    n_diverged, n_collapsed, diverged_steps, collapsed_steps, path, acc_mean, acc_std, acc_n; one
    row per cell, sorted by the study's varying keys.

    ``config`` names the cell by its varying keys (``optim.lr=0.3``). The accuracy is the test
    accuracy at the end of training over the healthy seeds, those that neither diverged nor
    collapsed (mean and standard deviation); ``diverged_steps`` is the (first, last) step at which
    a seed diverged, ``collapsed_steps`` the same for the steps from which seeds collapsed.
    """
    keys = study.label_keys
    cells = study.sorted_cells()
    cells = cells.assign(config=[label_of(row, keys, named=True) for _, row in cells.iterrows()])
    cells = cells[[*KEY, "config", "status", "reason", "outcome", "n_seeds", "n_diverged", "n_collapsed", "path"]]
    finals = final_metrics(study)
    if "test_accuracy" not in finals:
        finals = finals.assign(test_accuracy=pd.Series(dtype=float))
    accuracy = finals.groupby(KEY)["test_accuracy"].agg(acc_mean="mean", acc_std="std", acc_n="count").reset_index()
    out = cells.merge(accuracy, on=KEY, how="left")
    for column in ("diverged_at", "collapsed_at"):
        span = study.seeds.dropna(subset=[column]).groupby(KEY)[column].agg(["min", "max"])
        steps = pd.DataFrame(
            [(*key, (int(r["min"]), int(r["max"]))) for key, r in span.iterrows()],
            columns=[*KEY, f"{column.split('_')[0]}_steps"],
        )
        out = out.merge(steps, on=KEY, how="left")
    return out


def _lost_text(row: pd.Series, outcome: Outcome, count: str, steps: str, at: str) -> str:
    text = f"{row[count]}/{row['n_seeds']}"
    if not row[count] or not isinstance(row[steps], tuple):
        return text
    first, last = row[steps]
    span = f"{at}step {first}" if first == last else f"{at}steps {first}–{last}"
    return f"{outcome.value + ' ' if row['outcome'] == outcome else ''}{text} ({span})"


def diverged_text(row: pd.Series) -> str:
    """``0/5``, or ``diverged 4/4 (steps 3–19)`` with the range of steps at which seeds diverged."""
    return _lost_text(row, Outcome.DIVERGED, "n_diverged", "diverged_steps", "")


def collapsed_text(row: pd.Series) -> str:
    """``0/5``, or ``collapsed 3/3 (from steps 80–360)`` with the range of steps from which seeds collapsed."""
    return _lost_text(row, Outcome.COLLAPSED, "n_collapsed", "collapsed_steps", "from ")


def accuracy_text(row: pd.Series) -> str:
    """``mean ± sd (n=…)`` of the healthy seeds' final test accuracy, ``-`` when there is none."""
    if pd.isna(row["acc_mean"]):
        return "-"
    sd = 0.0 if pd.isna(row["acc_std"]) else row["acc_std"]
    return f"{row['acc_mean']:.4f} ± {sd:.4f} (n={int(row['acc_n'])})"
