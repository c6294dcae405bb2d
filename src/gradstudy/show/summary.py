"""The end-of-sweep summary: one row per cell with final test accuracy over its healthy seeds."""

from __future__ import annotations

import pandas as pd

from gradstudy.analysis.convergence import final_metrics
from gradstudy.schema import KEY
from gradstudy.show.present import label_of
from gradstudy.store.study import Study


def summary_table(study: Study) -> pd.DataFrame:
    """study, cell, config, status, reason (why a cell failed or is corrupt), outcome, n_seeds, n_diverged, diverged_steps, path, acc_mean, acc_std, acc_n;
    one row per cell, sorted by the study's varying keys.

    ``config`` names the cell by its varying keys (``optim.lr=0.3``). The accuracy is the test
    accuracy at the end of training over the seeds that did not diverge (mean and standard
    deviation); ``diverged_steps`` is the (first, last) step at which a seed diverged.
    """
    keys = study.varying_keys
    cells = study.sorted_cells()
    cells = cells.assign(config=[label_of(row, keys, named=True) for _, row in cells.iterrows()])
    cells = cells[[*KEY, "config", "status", "reason", "outcome", "n_seeds", "n_diverged", "path"]]
    finals = final_metrics(study)
    if "test_accuracy" not in finals:
        finals = finals.assign(test_accuracy=pd.Series(dtype=float))
    accuracy = finals.groupby(KEY)["test_accuracy"].agg(acc_mean="mean", acc_std="std", acc_n="count").reset_index()
    diverged = study.seeds.dropna(subset=["diverged_at"]).groupby(KEY)["diverged_at"].agg(["min", "max"])
    steps = pd.DataFrame(
        [(*key, (int(r["min"]), int(r["max"]))) for key, r in diverged.iterrows()], columns=[*KEY, "diverged_steps"]
    )
    return cells.merge(accuracy, on=KEY, how="left").merge(steps, on=KEY, how="left")


def diverged_text(row: pd.Series) -> str:
    """``0/5``, or ``diverged 4/4 (steps 3–19)`` with the range of steps at which seeds diverged."""
    text = f"{row['n_diverged']}/{row['n_seeds']}"
    if not row["n_diverged"] or not isinstance(row["diverged_steps"], tuple):
        return text
    first, last = row["diverged_steps"]
    steps = f"step {first}" if first == last else f"steps {first}–{last}"
    return f"{'diverged ' if row['outcome'] == 'diverged' else ''}{text} ({steps})"


def accuracy_text(row: pd.Series) -> str:
    """``mean ± sd (n=…)`` of the healthy seeds' final test accuracy, ``-`` when there is none."""
    if pd.isna(row["acc_mean"]):
        return "-"
    sd = 0.0 if pd.isna(row["acc_std"]) else row["acc_std"]
    return f"{row['acc_mean']:.4f} ± {sd:.4f} (n={int(row['acc_n'])})"
