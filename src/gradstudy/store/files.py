"""Atomic, verified writes: every file goes to a temporary name beside its place and is renamed
into it, so an interrupted write never leaves a partial file; what ``meta.json`` lists of a table."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gradstudy.schema import META


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """The mode a new file gets under the user's umask (``mkstemp`` alone would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` to a temporary file beside ``path``, then rename it into place.
    A failed write (a full disk) leaves neither the temporary file nor a partial ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _file_mode())
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, default=str)))


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda p: p.write_text(yaml.safe_dump(data, sort_keys=False)))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def table_record(path: Path) -> dict[str, Any]:
    """What ``meta.json`` lists for a written table: its byte size, row count and SHA-256."""
    import pyarrow.parquet as pq

    data = Path(path).read_bytes()
    return {"bytes": len(data), "rows": pq.read_metadata(path).num_rows, "sha256": hashlib.sha256(data).hexdigest()}


def read_meta(cell_dir: Path) -> dict[str, Any] | None:
    """The cell's ``meta.json``; None when there is none. Raises ``CorruptCell`` naming the file
    when it is not a JSON object."""
    path = Path(cell_dir) / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCell(f"{path}: not readable as JSON ({err})") from err
    if not isinstance(meta, dict):
        raise CorruptCell(f"{path}: not a JSON object")
    return meta


class CorruptCell(ValueError):
    """A cell's files do not prove themselves; the message names the file and the reason."""
