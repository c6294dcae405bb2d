"""Sweep membership: each job drops a marker per cell in ``<results_dir>/.sweeps/<id>/``, so the
end-of-sweep summary lists this sweep's cells, resumed ones included."""

from __future__ import annotations

from pathlib import Path

from gradstudy.schema import SWEEPS
from gradstudy.store.files import atomic_write


def mark_in_sweep(results_dir: Path, sweep: str, cell_dir: Path, rejected: str | None = None) -> None:
    """Record that ``cell_dir`` belongs to the sweep ``sweep``, so the end-of-sweep summary can list
    it; ``rejected`` records a run that was refused without touching the cell (an invalid config
    aimed at a complete cell), so that the sweep still exits non-zero."""
    marker = Path(results_dir) / SWEEPS / sweep / f"{cell_dir.parent.name}--{cell_dir.name}"
    atomic_write(marker, lambda p: p.write_text(str(Path(cell_dir).resolve())))
    if rejected is not None:
        atomic_write(marker.with_name(marker.name + REJECTED), lambda p: p.write_text(rejected))


#: Suffix of the marker that holds why a run of the sweep was refused.
REJECTED = ".rejected"


def _sweep_markers(results_dir: Path, sweep: str) -> list[Path]:
    folder = Path(results_dir) / SWEEPS / sweep
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def sweep_cells(results_dir: Path, sweep: str) -> list[Path]:
    """The cell folders that ``mark_in_sweep`` recorded for ``sweep``."""
    return [Path(p.read_text()) for p in _sweep_markers(results_dir, sweep) if not p.name.endswith(REJECTED)]


def sweep_rejections(results_dir: Path, sweep: str) -> dict[str, str]:
    """{cell marker: why the run was refused} for the runs of ``sweep`` that left their cell alone."""
    return {
        p.name[: -len(REJECTED)]: p.read_text() for p in _sweep_markers(results_dir, sweep) if p.name.endswith(REJECTED)
    }
