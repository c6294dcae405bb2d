"""Cell locks with a heartbeat, so that two sweeps never train the same cell and a dead one is told
from a live one.

A process claims a cell by creating ``<cell>/.lock`` exclusively (``O_CREAT | O_EXCL``), holding its
host, pid, start time, a random token and a heartbeat time that a background thread refreshes every
``HEARTBEAT_S`` seconds (a compiled chunk can run for minutes without returning to Python). A lock
is stale when its heartbeat is older than ``STALE_S`` seconds, or when its process is gone on this
host; a stale lock is taken over by writing a new one beside it and renaming it into place, then
reading it back to check that this process won. Exclusive creation and rename are atomic on a local
file system; on NFS they are weaker (create-exclusive needs NFSv3+, and two hosts can both see a
stale lock), so keep one launcher per study there or accept that a cell may rarely train twice.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK = ".lock"
#: Seconds between heartbeats.
HEARTBEAT_S = 10.0
#: A heartbeat older than this means the process holding the lock is gone (or hung).
STALE_S = 120.0
#: An unreadable lock younger than this is taken to be one that is being written, not a damaged one.
FRESH_S = 5.0


def read_lock(cell_dir: Path) -> dict[str, Any] | None:
    """The lock of ``cell_dir``, or None when there is none or it cannot be read."""
    try:
        info = json.loads((Path(cell_dir) / LOCK).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live(info: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a lock's holder is alive: a fresh heartbeat, and on this host a running pid."""
    if info is None:
        return False
    now = time.time() if now is None else now
    if now - float(info.get("heartbeat", 0)) > STALE_S:
        return False
    if info.get("host") == socket.gethostname():
        return _alive(int(info.get("pid", -1)))
    return True


def describe(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid')} on host {info.get('host')}"


@dataclass
class CellLock:
    """A claimed cell; ``release()`` stops the heartbeat and removes the lock if it is still ours."""

    cell_dir: Path
    info: dict[str, Any]
    _stop: threading.Event
    _thread: threading.Thread

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S)
        current = read_lock(self.cell_dir)
        if current is not None and current.get("token") == self.info["token"]:
            (self.cell_dir / LOCK).unlink(missing_ok=True)


def _write(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(f"{LOCK}.{info['token']}")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _beat(cell_dir: Path, info: dict[str, Any], stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        current = read_lock(cell_dir)
        if current is None or current.get("token") != info["token"]:
            return  # taken over: the cell is no longer ours to keep alive
        _write(cell_dir / LOCK, {**info, "heartbeat": time.time()})


def _create(path: Path, written: Path) -> bool:
    """Create the lock ``path`` with the content of ``written``; False when it already exists.

    A hard link of the written file creates it with its content in one step. A lock created empty
    and written afterwards reads as damaged, hence stale, to a process that looks in between, and
    both would train the cell; on a file system without hard links that window is closed by
    ``_being_written`` instead."""
    try:
        os.link(written, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network and FUSE file systems)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(written.read_text())
        return True


def _being_written(path: Path) -> bool:
    """An unreadable lock younger than ``FRESH_S``: another process may be writing it right now."""
    if read_lock(path.parent) is not None:
        return False
    try:
        return time.time() - path.stat().st_mtime < FRESH_S
    except FileNotFoundError:
        return False


def claim(cell_dir: Path) -> CellLock | None:
    """Claim ``cell_dir`` for this process; None when a live process holds it."""
    path = Path(cell_dir) / LOCK
    now = time.time()
    info = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": now,
        "heartbeat": now,
        "token": uuid.uuid4().hex,
    }
    tmp = path.with_name(f"{LOCK}.{info['token']}")
    tmp.write_text(json.dumps(info))
    try:
        if not _create(path, tmp):
            if _being_written(path) or is_live(read_lock(cell_dir)):
                return None
            _write(path, info)  # take over a stale lock, then check that no other process did too
            time.sleep(0.05)
            current = read_lock(cell_dir)
            if current is None or current.get("token") != info["token"]:
                return None
    finally:
        tmp.unlink(missing_ok=True)
    stop = threading.Event()
    thread = threading.Thread(target=_beat, args=(Path(cell_dir), info, stop), daemon=True, name="gradstudy-heartbeat")
    thread.start()
    return CellLock(Path(cell_dir), info, stop, thread)
