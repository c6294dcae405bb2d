"""Reading the inference latencies that ``gradstudy.reproduce`` measured (``engine.latency``) beside a
study's cells: only ratios between architectures timed in the same run mean anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

#: The file ``gradstudy.reproduce`` writes beside a study's cells.
LATENCY_FILE = "latency.csv"


def ratios(table: pd.DataFrame, slower: str, faster: str) -> pd.Series:
    """Per round, the latency of ``slower`` over that of ``faster`` (same round, so same moment)."""
    wide = table.pivot_table(index="round", columns="arm", values="seconds_per_example")
    return wide[slower] / wide[faster]


def study_latency(study: Any) -> pd.DataFrame | None:
    """The latency table ``gradstudy.reproduce`` wrote beside a study's cells, or None when there is none."""
    paths = study.cells["path"].dropna() if "path" in study.cells else []
    path = Path(paths.iloc[0]).parent / LATENCY_FILE if len(paths) else None
    return pd.read_csv(path) if path is not None and path.is_file() else None
