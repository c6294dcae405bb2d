"""Hydra callback: give the sweep an id, then print the summary read back from disk and set the exit code.

A job never raises (Hydra 1.3 would skip ``on_multirun_end``) and never exits (that would stop the
sweep); it records ``failed`` in its ``meta.json``. This callback turns that into the exit status.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: Environment variable carrying the sweep id from the callback to the jobs.
SWEEP_ENV = "GRADSTUDY_SWEEP"


class SummaryCallback(Callback):
    def __init__(self) -> None:
        self.sweep = ""

    def _start(self) -> None:
        self.sweep = uuid.uuid4().hex[:12]
        os.environ[SWEEP_ENV] = self.sweep

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start()

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(config)

    def _finish(self, config: DictConfig) -> None:
        from gradstudy.store import load_study, sweep_cells
        from gradstudy.summary import summary_table

        os.environ.pop(SWEEP_ENV, None)
        cells = sweep_cells(Path(config.results_dir), self.sweep)
        if not cells:
            print("gradstudy: no cell of this sweep reached the results folder", file=sys.stderr)
            sys.exit(1)
        by_study: dict[Path, list[str]] = {}
        for cell in cells:
            by_study.setdefault(cell.parent, []).append(cell.name)
        tables = [summary_table(load_study(study, cells=names)) for study, names in by_study.items()]
        table = pd.concat(tables, ignore_index=True)
        print_summary(table)
        if (table["status"] != "complete").any():
            sys.exit(1)


def print_summary(table: pd.DataFrame) -> None:
    """Print the summary table with rich: one row per cell."""
    from rich.console import Console
    from rich.table import Table

    from gradstudy.summary import accuracy_text, diverged_text

    out = Table(
        title="gradstudy summary",
        caption="test accuracy: mean ± standard deviation over the seeds that did not diverge",
    )
    for column in ("config", "cell", "status", "test accuracy", "diverged", "results"):
        out.add_column(column, overflow="fold")
    for _, row in table.iterrows():
        out.add_row(row["config"], row["cell"], row["status"], accuracy_text(row), diverged_text(row), row["path"])
    Console(width=200).print(out)
