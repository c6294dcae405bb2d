"""A cell folder's state, from its ``meta.json`` checked against its files and its lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradstudy.schema import CURVES, LAYERS, TABLE_COLUMNS, CellStatus
from gradstudy.store.files import CorruptCell, read_meta, table_record

#: Tables every complete cell has; cells written before ``seeds``/``steps``/``hists`` existed may lack those.
REQUIRED_TABLES = (CURVES, LAYERS)


def verify_cell(cell_dir: Path, meta: dict[str, Any]) -> None:
    """Raise ``CorruptCell`` unless the complete cell's tables match what ``meta.json`` lists
    (byte size, row count, SHA-256). A cell written before the tables were listed passes when its
    required tables read."""
    import pyarrow.parquet as pq

    listed = meta.get("tables")
    if listed is None:
        for name in REQUIRED_TABLES:
            try:
                pq.read_metadata(Path(cell_dir) / name)
            except Exception as err:
                raise CorruptCell(f"{Path(cell_dir) / name}: {type(err).__name__}: {err}") from err
        return
    for name, expected in listed.items():
        path = Path(cell_dir) / name
        if not path.is_file():
            raise CorruptCell(f"{path}: missing (meta.json lists it)")
        try:
            found = table_record(path)
        except Exception as err:
            raise CorruptCell(f"{path}: {type(err).__name__}: {err}") from err
        for field in ("bytes", "rows", "sha256"):
            if found[field] != expected.get(field):
                raise CorruptCell(f"{path}: {field} {found[field]} where meta.json says {expected.get(field)}")


@dataclass(frozen=True)
class CellState:
    """A cell folder's state: ``status`` (running, failed, corrupt or complete), why it is failed or
    corrupt, and its ``meta.json`` (empty when unreadable)."""

    status: str
    reason: str
    meta: dict[str, Any]


def cell_state(cell_dir: Path) -> CellState | None:
    """The state of the cell in ``cell_dir``, checking a complete cell's files; None when the folder
    holds neither ``meta.json`` nor any table (a cell about to be claimed). A folder with tables but
    no ``meta.json`` is corrupt: its results cannot prove themselves. Never raises on a damaged cell."""
    try:
        meta = read_meta(cell_dir)
    except CorruptCell as err:
        return CellState(CellStatus.CORRUPT, str(err), {})
    if meta is None:
        tables = [name for name in TABLE_COLUMNS if (Path(cell_dir) / name).is_file()]
        return CellState(CellStatus.CORRUPT, f"meta.json missing; {len(tables)} tables present", {}) if tables else None
    if meta.get("status") == CellStatus.COMPLETE:
        try:
            verify_cell(cell_dir, meta)
        except CorruptCell as err:
            return CellState(CellStatus.CORRUPT, str(err), meta)
    if meta.get("status") == CellStatus.RUNNING:
        from gradstudy.store.locks import describe, is_live, read_lock

        lock = read_lock(cell_dir)
        if is_live(lock):
            return CellState(CellStatus.RUNNING, f"running in {describe(lock)}", meta)
        gone = (
            f"its process ({describe(lock)}) stopped without finishing"
            if lock
            else "its process stopped without finishing"
        )
        return CellState(CellStatus.INTERRUPTED, gone, meta)
    return CellState(str(meta.get("status")), str(meta.get("message", "")), meta)
