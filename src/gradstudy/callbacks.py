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

#: The sweep id reaches the jobs through the environment where they inherit it, and through a file
#: in Hydra's sweep (or run) folder, which every job of the sweep can read wherever it runs (cluster
#: nodes share it, and may not inherit the environment).
SWEEP_FILE = ".gradstudy_sweep"
SWEEP_ENV = "GRADSTUDY_SWEEP"


def hydra_output_dir(config: DictConfig, multirun: bool) -> Path:
    """Hydra's sweep folder (``-m``) or run folder, from a config that holds the ``hydra`` node."""
    return Path(str(config.hydra.sweep.dir if multirun else config.hydra.run.dir))


def sweep_of_job() -> str | None:
    """The sweep id of the running Hydra job: from the environment when the job inherited it (jobs in
    this process, joblib workers), else from the file in its sweep (or run) folder (cluster nodes).
    The environment comes first because two sweeps started in the same second share Hydra's folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get(SWEEP_ENV):
        return os.environ[SWEEP_ENV]
    hydra_cfg = HydraConfig.get()
    folder = Path(str(hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else hydra_cfg.run.dir))
    path = folder / SWEEP_FILE
    return path.read_text().strip() if path.is_file() else None


class SummaryCallback(Callback):
    def __init__(self) -> None:
        self.sweep = ""

    def _start(self, config: DictConfig, multirun: bool) -> None:
        """Stop before anything is written when ``budget``, ``study`` or ``results_dir`` cannot work:
        one line naming the key, exit status 2 (an exception here would only become a warning)."""
        from gradstudy.cells.validate import check_run_keys
        from gradstudy.schema import ConfigError

        try:
            check_run_keys(config)
        except ConfigError as err:
            print(f"gradstudy: {err}", file=sys.stderr)
            sys.exit(2)
        self.sweep = uuid.uuid4().hex[:12]
        os.environ[SWEEP_ENV] = self.sweep
        folder = hydra_output_dir(config, multirun)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SWEEP_FILE).write_text(self.sweep)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config, multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config, multirun=True)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(config)

    def _finish(self, config: DictConfig) -> None:
        """Print the summary and exit 1 unless every cell is complete. Never raises: anything that
        goes wrong reading the results is printed and counts as a failure."""
        os.environ.pop(SWEEP_ENV, None)
        try:
            ok = self._summarize(config)
        except Exception as err:
            print(
                f"gradstudy: the end-of-sweep summary could not be made: {type(err).__name__}: {err}", file=sys.stderr
            )
            ok = False
        if not ok:
            sys.exit(1)

    def _summarize(self, config: DictConfig) -> bool:
        return summarize_sweep(Path(config.results_dir), self.sweep)


def summarize_sweep(results_dir: Path, sweep: str) -> bool:
    """Print the summary of the cells ``sweep`` touched; True when each is complete or running in
    another live process (the state table in docs/reliability.md), and no run was refused."""
    from gradstudy.analysis.comparability import grid_warnings
    from gradstudy.schema import CellStatus
    from gradstudy.show.summary import summary_table
    from gradstudy.store.study import load_study
    from gradstudy.store.sweeps import sweep_cells, sweep_rejections

    cells = sweep_cells(results_dir, sweep)
    rejections = sweep_rejections(results_dir, sweep)
    if not cells:
        print("gradstudy: no cell of this sweep reached the results folder", file=sys.stderr)
        return False
    by_study: dict[Path, list[str]] = {}
    for cell in cells:
        by_study.setdefault(cell.parent, []).append(cell.name)
    studies = [load_study(study, cells=names) for study, names in by_study.items()]
    table = pd.concat([summary_table(study) for study in studies], ignore_index=True)
    print_summary(table)
    for warning in dict.fromkeys(w for study in studies for w in grid_warnings(study)):
        print(f"gradstudy: warning: {warning}", file=sys.stderr)
    for cell, why in rejections.items():
        print(f"gradstudy: a run of {cell} was refused: {why}", file=sys.stderr)
    return bool(table["status"].isin([CellStatus.COMPLETE, CellStatus.RUNNING]).all()) and not rejections


def print_summary(table: pd.DataFrame) -> None:
    """Print the summary table with rich: one row per cell."""
    from rich.console import Console
    from rich.table import Table

    from gradstudy.show.summary import accuracy_text, collapsed_text, diverged_text

    collapsed = bool(table["n_collapsed"].fillna(0).any())
    out = Table(
        title="gradstudy summary",
        caption="test accuracy: mean ± standard deviation over the seeds that did not diverge"
        + (" or collapse (no gradient left, loss at chance)" if collapsed else ""),
    )
    columns = [
        "config",
        "cell",
        "status",
        "test accuracy",
        "diverged",
        *(["collapsed"] if collapsed else []),
        "results",
    ]
    for column in columns:
        out.add_column(column, overflow="fold")
    for _, row in table.iterrows():
        status = row["status"] if pd.isna(row["reason"]) else f"{row['status']}: {row['reason']}"
        lost = [diverged_text(row), *([collapsed_text(row)] if collapsed else [])]
        out.add_row(row["config"], row["cell"], status, accuracy_text(row), *lost, row["path"])
    Console(width=200).print(out)
