"""The end-of-sweep summary: one row per cell with final test accuracy over its finite seeds."""

from __future__ import annotations

import pandas as pd

from gradstudy.store import Study


def final_test_accuracy(study: Study) -> pd.DataFrame:
    """Mean and std over seeds of the test accuracy at the last step, diverged seeds left out."""
    curves = study.curves
    test = curves[(curves["split"] == "test") & (curves["metric"] == "accuracy")]
    last_step = test.groupby("cell")["step"].transform("max")
    final = test[test["step"] == last_step]
    return final.groupby("cell")["value"].agg(acc_mean="mean", acc_std="std", n_finite="count").reset_index()


def summary_table(study: Study) -> pd.DataFrame:
    """cell, status, acc_mean, acc_std, n_seeds, n_diverged, path: what the sweep landed."""
    cells = study.cells[["cell", "status", "n_seeds", "n_diverged", "path"]]
    return cells.merge(final_test_accuracy(study), on="cell", how="left")
