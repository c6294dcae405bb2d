"""Results on disk: cell ids, the tidy schema, atomic writes, and ``load_study``.

Layout: ``<results_dir>/<study>/<cell-id>/`` holding

* ``config.yaml``: the resolved config (without ``hydra``, ``study``, ``results_dir``, ``force``);
* ``meta.json``: ``status`` (running / complete / failed), the failure message, seeds, diverged
  seeds with their steps, package versions, git hash and device;
* ``curves.parquet``: seed, step, split, metric, value;
* ``layers.parquet``: seed, step, layer, stat, value;
* ``hists.parquet``: seed, step, layer, quantity, bin_left, bin_right, count (empty below the
  ``full`` statistics tier).

Every file is written to a temporary name and renamed, and ``meta.json`` says ``complete`` only
after the tables are in place, so an interrupted cell is never mistaken for a finished one.
This module does not import jax: reading results never needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"

META = "meta.json"
CONFIG = "config.yaml"
CURVES = "curves.parquet"
LAYERS = "layers.parquet"
HISTS = "hists.parquet"
SWEEPS = ".sweeps"

CURVE_COLUMNS = ["seed", "step", "split", "metric", "value"]
LAYER_COLUMNS = ["seed", "step", "layer", "stat", "value"]
HIST_COLUMNS = ["seed", "step", "layer", "quantity", "bin_left", "bin_right", "count"]
TABLE_COLUMNS = {CURVES: CURVE_COLUMNS, LAYERS: LAYER_COLUMNS, HISTS: HIST_COLUMNS}
#: Config groups whose chosen option name becomes a column of ``Study.cells`` and part of the slug.
GROUPS = ("init", "act", "norm", "data", "optim")


# ----- cell ids -------------------------------------------------------------------------------
def config_hash(resolved: dict[str, Any]) -> str:
    """First 10 hex digits of the SHA-256 of the resolved config, keys sorted."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cell_id(resolved: dict[str, Any]) -> str:
    """Readable slug of the cell's choices plus the config hash, e.g. ``he-relu-none-mnist5k-d10w100-sgd-1a2b3c4d5e``.

    The slug comes from the config itself, not from the command line, so the same config maps
    to the same folder whichever launcher, job number or spelling of the overrides produced it.
    """
    model = resolved.get("model", {})
    parts = [str(resolved.get(g, {}).get("name", "")) for g in GROUPS[:4]]
    parts += [f"d{model.get('depth')}w{model.get('width')}", str(resolved.get("optim", {}).get("name", ""))]
    slug = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", part) for part in parts)
    return f"{slug}-{config_hash(resolved)}"


# ----- atomic writes ------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, default=str)))


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(path, lambda p: p.write_text(yaml.safe_dump(data, sort_keys=False)))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    _atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def read_meta(cell_dir: Path) -> dict[str, Any] | None:
    path = Path(cell_dir) / META
    return json.loads(path.read_text()) if path.is_file() else None


def is_complete(cell_dir: Path) -> bool:
    meta = read_meta(cell_dir)
    return meta is not None and meta.get("status") == STATUS_COMPLETE


def mark_in_sweep(results_dir: Path, sweep: str, cell_dir: Path) -> None:
    """Record that ``cell_dir`` belongs to the sweep ``sweep``, so the end-of-sweep summary can list it."""
    marker = Path(results_dir) / SWEEPS / sweep / f"{cell_dir.parent.name}--{cell_dir.name}"
    _atomic_write(marker, lambda p: p.write_text(str(Path(cell_dir).resolve())))


def sweep_cells(results_dir: Path, sweep: str) -> list[Path]:
    """The cell folders that ``mark_in_sweep`` recorded for ``sweep``."""
    folder = Path(results_dir) / SWEEPS / sweep
    return sorted(Path(p.read_text()) for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


# ----- tidy tables from arrays -----------------------------------------------------------------
def _keep_until_diverged(frame: pd.DataFrame, diverged: dict[int, int]) -> pd.DataFrame:
    """Drop each diverged seed's rows after its divergence step."""
    if not diverged:
        return frame
    limit = frame["seed"].map(diverged).fillna(np.inf)
    return frame[frame["step"] <= limit].reset_index(drop=True)


def tidy(
    steps: np.ndarray, values: np.ndarray, seeds: list[int], axes: Iterable[tuple[str, list[Any]]], diverged: dict[int, int]
) -> pd.DataFrame:
    """Long table of ``values`` with shape (len(steps), len(seeds), *[len(labels) for _, labels in axes])."""
    axes = list(axes)
    names = ["step", "seed"] + [name for name, _ in axes]
    labels = [list(steps), list(seeds)] + [labels for _, labels in axes]
    index = pd.MultiIndex.from_product(labels, names=names)
    frame = pd.DataFrame({"value": np.asarray(values, np.float64).reshape(-1)}, index=index).reset_index()
    frame["step"] = frame["step"].astype(np.int64)
    frame["seed"] = frame["seed"].astype(np.int64)
    return _keep_until_diverged(frame, diverged)


# ----- provenance ---------------------------------------------------------------------------------
def provenance() -> dict[str, Any]:
    """Package versions, git hash of the code and the device, for ``meta.json``."""
    import subprocess
    from importlib import metadata

    versions = {}
    for pkg in ("gradstudy", "jax", "jaxlib", "flax", "optax", "hydra-core", "numpy", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        git_hash = git.stdout.strip() if git.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        git_hash = None
    import jax

    device = jax.devices()[0]
    return {
        "versions": versions,
        "git_hash": git_hash,
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
    }


# ----- loading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    """Tidy tables of one or more studies; every table has ``study`` and ``cell`` columns."""

    cells: pd.DataFrame
    curves: pd.DataFrame
    layers: pd.DataFrame
    hists: pd.DataFrame


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _cell_row(study: str, cell_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    config = yaml.safe_load((cell_dir / CONFIG).read_text()) if (cell_dir / CONFIG).is_file() else {}
    row: dict[str, Any] = {"study": study, "cell": cell_dir.name}
    row.update({g: config.get(g, {}).get("name") for g in GROUPS})
    flat = _flatten(config)
    row.update({k: (str(v) if isinstance(v, list) else v) for k, v in flat.items() if k.split(".")[0] not in GROUPS or not k.endswith(".name")})
    row["status"] = meta.get("status")
    row["n_seeds"] = len(meta.get("seeds", []))
    row["n_diverged"] = len(meta.get("diverged", {}))
    row["path"] = str(cell_dir)
    return row


def _read_table(cell_dir: Path, name: str, columns: list[str], study: str) -> pd.DataFrame:
    path = cell_dir / name
    frame = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=columns)
    frame.insert(0, "cell", cell_dir.name)
    frame.insert(0, "study", study)
    return frame


def _has_cells(path: Path) -> bool:
    return any((child / META).is_file() for child in path.iterdir() if child.is_dir())


def _study_dirs(path: Path) -> list[Path]:
    """``path`` itself when it holds cells, else the studies inside it."""
    if _has_cells(path):
        return [path]
    return sorted(child for child in path.iterdir() if child.is_dir() and _has_cells(child))


def load_study(path: str | os.PathLike[str], cells: Iterable[str] | None = None) -> Study:
    """Read a study folder (or a folder of studies) into tidy DataFrames.

    ``cells`` limits the result to those cell ids. Curves and layer statistics are read only from
    complete cells; ``cells`` lists every cell that has a ``meta.json``, with its ``status``.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no results folder at {root}")
    wanted = None if cells is None else set(cells)
    rows: list[dict[str, Any]] = []
    tables: dict[str, list[pd.DataFrame]] = {CURVES: [], LAYERS: [], HISTS: []}
    for study_dir in _study_dirs(root):
        for cell_dir in sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            meta = read_meta(cell_dir)
            if meta is None or (wanted is not None and cell_dir.name not in wanted):
                continue
            study = meta.get("study", study_dir.name)
            rows.append(_cell_row(study, cell_dir, meta))
            if meta.get("status") == STATUS_COMPLETE:
                for name, frames in tables.items():
                    frames.append(_read_table(cell_dir, name, TABLE_COLUMNS[name], study))

    def concat(name: str) -> pd.DataFrame:
        frames = [f for f in tables[name] if not f.empty]
        if not frames:
            return pd.DataFrame(columns=["study", "cell", *TABLE_COLUMNS[name]])
        return pd.concat(frames, ignore_index=True)

    cells_frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["study", "cell", *GROUPS, "status", "n_seeds", "n_diverged"])
    return Study(cells=cells_frame, curves=concat(CURVES), layers=concat(LAYERS), hists=concat(HISTS))
