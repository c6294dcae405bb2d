"""The end-of-sweep summary: one row per cell with final test accuracy over its finite seeds."""

from __future__ import annotations

import pandas as pd

from gradstudy.analysis import final_metrics
from gradstudy.store import Study


def summary_table(study: Study) -> pd.DataFrame:
    """cell, status, n_seeds, n_diverged, path, acc_mean, acc_std: what the sweep landed.

    The accuracy is the test accuracy at the cell's last step, over the seeds that did not diverge.
    """
    cells = study.cells[["cell", "status", "n_seeds", "n_diverged", "path"]]
    finals = final_metrics(study.curves) if not study.curves.empty else pd.DataFrame(columns=["cell", "test_accuracy"])
    accuracy = finals.groupby("cell")["test_accuracy"].agg(acc_mean="mean", acc_std="std").reset_index()
    return cells.merge(accuracy, on="cell", how="left")
