"""``load_study``: the results folder of one or more studies read into tidy tables (``Study``).

A study is ``<results_dir>/<study>/<cell-id>/`` folders (``gradstudy.schema`` names their files).
Only complete cells' tables are read; every cell with a ``meta.json`` is listed with its state.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gradstudy.cells.config import NESTED_CHOICES, with_defaults
from gradstudy.cells.schedules import learning_rates
from gradstudy.schema import (
    ARM,
    CELL_INFO,
    CONFIG,
    GROUPS,
    LAYERS,
    META,
    SEEDS,
    SPECTRUM_COLUMNS,
    STEPS,
    TABLE_COLUMNS,
    UNIT_COLUMNS,
    CellKey,
    CellStatus,
    Outcome,
)
from gradstudy.store.outcomes import classify
from gradstudy.store.provenance import machine_fingerprint
from gradstudy.store.state import CellState, cell_state

#: Columns ``Study.seeds`` adds to the stored seeds table (``store.outcomes``).
SEED_OUTCOME_COLUMNS = ["collapsed_at", "outcome"]


@dataclass(frozen=True)
class Study:
    """Tidy tables of one or more studies; every table has ``study`` and ``cell`` columns, and a cell
    is identified by the pair (two studies may hold the same cell id)."""

    cells: pd.DataFrame
    curves: pd.DataFrame
    layers: pd.DataFrame
    hists: pd.DataFrame
    #: The stored seeds table with each seed's ``outcome`` and ``collapsed_at`` (``store.outcomes``).
    seeds: pd.DataFrame
    steps: pd.DataFrame
    #: ``stats.extra=[unit_percentiles]``: z percentiles of single units (empty when not recorded).
    units: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=["study", "cell", *UNIT_COLUMNS])
    )
    #: ``stats.extra=[jacobian_spectrum]``: the Jacobian spectrum's moments (empty when not recorded).
    spectra: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=["study", "cell", *SPECTRUM_COLUMNS])
    )

    def __post_init__(self) -> None:
        """A study built by hand (a test, a notebook) without the outcome columns gets them: a seed
        is ``diverged`` when it has a ``diverged_at``, else ``ok``; no seed has collapsed."""
        seeds, cells = self.seeds, self.cells
        if "outcome" not in seeds.columns:
            diverged = seeds["diverged_at"].notna() if "diverged_at" in seeds.columns else pd.Series(False, seeds.index)
            seeds = seeds.assign(
                collapsed_at=pd.array([None] * len(seeds), dtype="Int64"),
                outcome=[Outcome.DIVERGED if d else Outcome.OK for d in diverged],
            )
            object.__setattr__(self, "seeds", seeds)
        if "n_collapsed" not in cells.columns:
            object.__setattr__(self, "cells", cells.assign(n_collapsed=0))

    @property
    def varying_keys(self) -> list[str]:
        """The config keys whose values differ across cells (see ``varying_keys``), the choices an
        ``arm`` makes among them: what a table starts with and a notebook groups by."""
        return varying_keys(self.cells)

    @property
    def label_keys(self) -> list[str]:
        """The varying keys less those a varying ``arm`` fixes: the fewest keys that name each cell,
        for figure labels and the summary (``arm=relu_he``, not ``arm=relu_he, act=relu, init=he``)."""
        return varying_keys(self.cells, under_arm=False)

    def sorted_cells(self) -> pd.DataFrame:
        """``cells`` sorted by its label keys (numbers numerically), then by study and cell."""
        keys = self.label_keys
        return self.cells.sort_values([*keys, "study", "cell"], kind="stable", na_position="last").reset_index(
            drop=True
        )

    def subset(self, keys: Iterable[CellKey]) -> Study:
        """The part of the study that concerns the cells ``keys`` ((study, cell id) pairs)."""
        keep = pd.MultiIndex.from_tuples(list(keys), names=["study", "cell"])

        def part(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[pd.MultiIndex.from_frame(frame[["study", "cell"]]).isin(keep)] if len(frame) else frame

        return Study(**{f.name: part(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def complete(self) -> Study:
        """The complete cells."""
        return self.subset(cell_keys(self.cells[self.cells["status"] == CellStatus.COMPLETE]))

    def matching(self, **where: object) -> pd.DataFrame:
        """The rows of ``cells`` of the complete cells whose config matches ``where``: a value or a
        list of values per key, with dots written as ``__`` (``model__depth=[8, 16]``). An unknown
        key raises ``KeyError``."""
        chosen = self.cells[self.cells["status"] == CellStatus.COMPLETE]
        for key, value in where.items():
            column = key.replace("__", ".")
            if column not in chosen.columns:
                raise KeyError(f"no config key {column} in this study")
            chosen = chosen[chosen[column].isin(value if isinstance(value, list) else [value])]
        return chosen

    def select(self, **where: object) -> Study:
        """The part of the study that concerns the complete cells matching ``where`` (see ``matching``)."""
        return self.subset(cell_keys(self.matching(**where)))


def where_text(where: dict[str, object]) -> str:
    """``where`` of ``Study.matching`` as the reader writes it: ``model.depth=8, act=relu``."""
    return ", ".join(f"{k.replace('__', '.')}={v}" for k, v in where.items())


def cell_keys(frame: pd.DataFrame) -> list[CellKey]:
    """(study, cell) of every row of ``frame``, in order."""
    return list(zip(frame["study"], frame["cell"], strict=True))


def rows_of(frame: pd.DataFrame, key: CellKey) -> pd.DataFrame:
    """The rows of ``frame`` that belong to the cell ``key``."""
    return frame[(frame["study"] == key[0]) & (frame["cell"] == key[1])]


def varying_keys(cells: pd.DataFrame, under_arm: bool = True) -> list[str]:
    """The config keys whose values differ across ``cells``, in column order.

    A group's own keys are left out under that group's varying choice, because the choice already
    says them (``init.scale`` under ``init=xavier,he``), and so are the keys a varying choice inside
    the group fixes (``optim.warmup_steps`` under ``optim.schedule=constant,warmup_cosine``:
    ``cells.config.NESTED_CHOICES``). A key that is null in some cells and set in others varies
    (``optim.clip_norm=null,1``). The choices an arm makes (an arm is a named
    bundle of choices, ``+arm=tanh_xavier,relu_he``) are kept when they vary, so a table can be
    grouped by ``act`` or ``init``; ``under_arm=False`` leaves out whatever a varying arm fixes, so
    that ``arm`` alone names the cell in a label."""
    config = [c for c in cells.columns if c not in CELL_INFO]
    varying = [c for c in config if cells[c].astype(str).nunique(dropna=False) > 1]

    def fixed_by(choice: str, key: str) -> bool:
        return (
            choice in varying
            and cells.groupby(choice, dropna=False)[key].agg(lambda v: v.astype(str).nunique(dropna=False)).max() <= 1
        )

    def implied(key: str) -> bool:
        if key == ARM:
            return False
        group = key.split(".")[0]
        choices = [group, *(c for c in NESTED_CHOICES.get(group, ()) if c != key)] if "." in key else []
        return (not under_arm and fixed_by(ARM, key)) or any(fixed_by(choice, key) for choice in choices)

    return [c for c in varying if not implied(c)]


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _read_config(cell_dir: Path) -> dict[str, Any]:
    """The cell's ``config.yaml``; empty when missing or unreadable (the cell's state says why)."""
    try:
        config = yaml.safe_load((cell_dir / CONFIG).read_text()) if (cell_dir / CONFIG).is_file() else {}
    except (OSError, yaml.YAMLError):
        return {}
    return with_defaults(config) if isinstance(config, dict) else {}


def _cell_row(study: str, cell_dir: Path, state: CellState, config: dict[str, Any]) -> dict[str, Any]:
    meta = state.meta
    row: dict[str, Any] = {"study": study, "cell": cell_dir.name, ARM: meta.get(ARM)}
    row.update({g: config.get(g, {}).get("name") for g in GROUPS})
    flat = _flatten(config)
    row.update(
        {
            k: (str(v) if isinstance(v, list) else v)
            for k, v in flat.items()
            if k.split(".")[0] not in GROUPS or not k.endswith(".name")
        }
    )
    row["status"] = state.status
    row["reason"] = state.reason or None
    row["outcome"] = meta.get("outcome", Outcome.OK) if state.status == CellStatus.COMPLETE else None
    row["n_seeds"] = len(meta.get("seeds", []))
    row["n_diverged"] = len(meta.get("diverged", {}))
    row["n_collapsed"] = 0
    row["code_hash"] = meta.get("code_hash")
    row["machine"] = machine_fingerprint(meta)
    row["path"] = str(cell_dir)
    return row


def seeds_table(seeds: list[int], diverged: dict[int, int], steps: int) -> pd.DataFrame:
    """seed, diverged_at (null when healthy), last_healthy_step (``steps`` when healthy)."""
    return pd.DataFrame(
        {
            "seed": pd.array(seeds, dtype="int64"),
            "diverged_at": pd.array([diverged.get(s) for s in seeds], dtype="Int64"),
            "last_healthy_step": pd.array([diverged.get(s, steps) for s in seeds], dtype="int64"),
        }
    )


def _seeds_from_meta(config: dict[str, Any], meta: dict[str, Any]) -> pd.DataFrame:
    """The seeds table of a cell written before ``seeds.parquet`` existed, from its ``meta.json``."""
    diverged = {int(seed): int(step) for seed, step in meta.get("diverged", {}).items()}
    return seeds_table([int(s) for s in meta.get("seeds", [])], diverged, config["train"]["steps"])


def _read_table(cell_dir: Path, name: str, study: str, meta: dict[str, Any], config: dict[str, Any]) -> pd.DataFrame:
    path = cell_dir / name
    if path.is_file():
        frame = pd.read_parquet(path)
    elif name == SEEDS:
        frame = _seeds_from_meta(config, meta)
    else:
        frame = pd.DataFrame(columns=TABLE_COLUMNS[name])
    if name == STEPS and "lr" not in frame.columns:  # written before steps.parquet recorded it
        rates = learning_rates(config["optim"], int(config["train"]["steps"])).astype("float32")
        frame["lr"] = rates[frame["step"].to_numpy(dtype=int)]
    frame.insert(0, "cell", cell_dir.name)
    frame.insert(0, "study", study)
    return frame


def _with_outcomes(read: dict[str, pd.DataFrame], row: dict[str, Any], config: dict[str, Any]) -> None:
    """Each seed's outcome and ``collapsed_at`` in ``read[SEEDS]``, and the cell's outcome and
    ``n_collapsed`` in ``row``, from the cell's own tables (``store.outcomes``)."""
    seeds = read[SEEDS]
    diverged = {int(s): int(d) for s, d in zip(seeds["seed"], seeds["diverged_at"], strict=True) if pd.notna(d)}
    data = str(config.get("data", {}).get("name"))
    collapsed, outcome = classify([int(s) for s in seeds["seed"]], diverged, read[LAYERS], read[STEPS], data)
    seeds["collapsed_at"] = pd.array([collapsed.get(int(s)) for s in seeds["seed"]], dtype="Int64")
    seeds["outcome"] = [
        Outcome.DIVERGED if s in diverged else Outcome.COLLAPSED if s in collapsed else Outcome.OK
        for s in seeds["seed"].astype(int)
    ]
    row["outcome"] = outcome
    row["n_collapsed"] = len(collapsed)


def _has_cells(path: Path) -> bool:
    """Whether ``path`` holds cell folders: a ``meta.json``, or tables without one (a corrupt cell)."""
    return any(
        any((child / name).is_file() for name in (META, *TABLE_COLUMNS)) for child in path.iterdir() if child.is_dir()
    )


def _study_dirs(path: Path) -> list[Path]:
    """``path`` itself when it holds cells, else the studies inside it."""
    if _has_cells(path):
        return [path]
    return sorted(child for child in path.iterdir() if child.is_dir() and _has_cells(child))


def _numeric(column: pd.Series) -> pd.Series:
    """A config column as numbers when every value is a number (None allowed), else as it is."""
    if column.dtype != object:
        return column
    values = column.dropna()
    if len(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return pd.to_numeric(column)
    return column


def load_study(
    path: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], cells: Iterable[str] | None = None
) -> Study:
    """Read a study folder, a folder of studies, or a list of either into tidy DataFrames.

    ``cells`` limits the result to those cell ids. The tables are read only from complete cells;
    ``cells`` lists every cell that has a ``meta.json``, with its ``status``, and has the config
    keys as typed columns (numbers numeric).
    """
    roots = [Path(path)] if isinstance(path, str | os.PathLike) else [Path(p) for p in path]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"no results folder at {root}")
    wanted = None if cells is None else set(cells)
    rows: list[dict[str, Any]] = []
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLE_COLUMNS}
    seen: set[Path] = set()
    for study_dir in (d for root in roots for d in _study_dirs(root)):
        if study_dir.resolve() in seen:
            continue
        seen.add(study_dir.resolve())
        for cell_dir in sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if wanted is not None and cell_dir.name not in wanted:
                continue
            state = cell_state(cell_dir)
            if state is None:
                continue
            study = state.meta.get("study", study_dir.name)
            config = _read_config(cell_dir)
            read = {}
            if state.status == CellStatus.COMPLETE:
                try:
                    read = {name: _read_table(cell_dir, name, study, state.meta, config) for name in tables}
                except Exception as err:  # a table that passed its checks and still does not read
                    state = CellState(CellStatus.CORRUPT, f"{cell_dir}: {type(err).__name__}: {err}", state.meta)
                    read = {}
            row = _cell_row(study, cell_dir, state, config)
            if read:
                _with_outcomes(read, row, config)
                for name, frame in read.items():
                    tables[name].append(frame)
            rows.append(row)

    def concat(name: str) -> pd.DataFrame:
        frames = [f for f in tables[name] if not f.empty]
        if not frames:
            extra = SEED_OUTCOME_COLUMNS if name == SEEDS else []
            return pd.DataFrame(columns=["study", "cell", *TABLE_COLUMNS[name], *extra])
        return pd.concat(frames, ignore_index=True)

    cells_frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["study", "cell", ARM, *GROUPS, *CELL_INFO[2:]])
    cells_frame = cells_frame.apply(_numeric)
    return Study(cells=cells_frame, **{name.split(".")[0]: concat(name) for name in TABLE_COLUMNS})
