"""Results on disk: cell ids, the tidy schema, atomic writes, and ``load_study``.

Layout: ``<results_dir>/<study>/<cell-id>/`` holding

* ``config.yaml``: the cell's canonical config (``gradstudy.config.canonical``: what the cell id hashes);
* ``meta.json``: ``status`` (running / complete / failed), ``outcome`` of a complete cell (ok, or
  diverged when every seed diverged), the failure message, seeds, diverged seeds with their steps,
  the full resolved config, package versions, git hash, ``code_hash`` and device;
* ``curves.parquet``: seed, step, split, metric, value (evaluations);
* ``steps.parquet``: seed, step, loss (the float32 minibatch loss of every step);
* ``layers.parquet``: seed, step, layer, stat, value;
* ``hists.parquet``: seed, step, layer, quantity, region, bin_left, bin_right, count (empty below
  the ``full`` statistics tier);
* ``seeds.parquet``: seed, diverged_at (null when healthy), last_healthy_step.

Every file is written to a temporary name and renamed, and ``meta.json`` says ``complete`` only
after the tables are in place, so an interrupted cell is never mistaken for a finished one.
This module does not import jax: reading results never needs it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
#: A cell whose files do not prove themselves: an unreadable ``meta.json``, or a table that is
#: missing or differs from the size, row count or SHA-256 its ``meta.json`` lists. A rerun redoes it.
STATUS_CORRUPT = "corrupt"
#: A cell whose run stopped before it finished: stopped by SIGINT/SIGTERM, or ``running`` with no
#: live process holding its lock (killed, or its machine went away). A rerun redoes it.
STATUS_INTERRUPTED = "interrupted"
#: A complete cell's outcome: ``ok`` when at least one seed trained to the end, else ``diverged``.
OUTCOME_OK = "ok"
OUTCOME_DIVERGED = "diverged"

META = "meta.json"
CONFIG = "config.yaml"
CURVES = "curves.parquet"
LAYERS = "layers.parquet"
HISTS = "hists.parquet"
SEEDS = "seeds.parquet"
STEPS = "steps.parquet"
UNITS = "units.parquet"
SWEEPS = ".sweeps"

CURVE_COLUMNS = ["seed", "step", "split", "metric", "value"]
LAYER_COLUMNS = ["seed", "step", "layer", "stat", "value"]
HIST_DTYPES = {
    "seed": "int64",
    "step": "int64",
    "layer": "int64",
    "quantity": "object",
    "region": "object",
    "bin_left": "float64",
    "bin_right": "float64",
    "count": "int64",
}
HIST_COLUMNS = list(HIST_DTYPES)
SEED_COLUMNS = ["seed", "diverged_at", "last_healthy_step"]
STEP_COLUMNS = ["seed", "step", "loss"]
UNIT_DTYPES = {
    "seed": "int64",
    "step": "int64",
    "layer": "int64",
    "unit": "int64",
    "stat": "object",
    "value": "float64",
}
UNIT_COLUMNS = list(UNIT_DTYPES)
TABLE_COLUMNS = {
    CURVES: CURVE_COLUMNS,
    LAYERS: LAYER_COLUMNS,
    HISTS: HIST_COLUMNS,
    SEEDS: SEED_COLUMNS,
    STEPS: STEP_COLUMNS,
    UNITS: UNIT_COLUMNS,
}
#: Split and metric of each column of the engine's evaluations.
EVAL_METRICS = (("train", "loss"), ("train", "accuracy"), ("test", "loss"), ("test", "accuracy"))
#: Counts stored beside the bins of every histogram: exactly 0, inside the range's lower end,
#: past its upper end, NaN or inf (``gradstudy.stats.HistBins``).
HIST_REGIONS = ("zero", "below", "above", "nonfinite")
#: Config groups whose chosen option name becomes a column of ``Study.cells`` and part of the slug.
GROUPS = ("init", "act", "norm", "data", "optim")
#: The ``+arm=`` choice of a paper preset, kept in ``meta.json`` and as a column of ``Study.cells``.
ARM = "arm"


def unit_stat(unit: int, q: int) -> str:
    """How the engine names unit ``unit``'s ``q``-th percentile of z among a layer's statistics
    (``stats.extra=[unit_percentiles]``); the tables writer moves these rows to ``UNITS``."""
    return f"unit{unit}:z_p{q}"


def parse_unit_stat(name: str) -> tuple[int, str] | None:
    """(unit, stat) of a ``unit_stat`` name, or None for any other statistic."""
    head, _, stat = name.partition(":")
    return (int(head[len("unit") :]), stat) if stat and head.startswith("unit") else None


# ----- cell ids -------------------------------------------------------------------------------
def config_hash(config: dict[str, Any]) -> str:
    """First 10 hex digits of the SHA-256 of ``config``, keys sorted."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cell_id(canonical: dict[str, Any]) -> str:
    """Readable slug of the cell's choices plus the hash of its canonical config
    (``gradstudy.config.canonical``), e.g. ``he-relu-none-mnist5k-d10w100-sgd-1a2b3c4d5e``.

    The slug comes from the config itself, not from the command line, so the same config maps
    to the same folder whichever launcher, job number or spelling of the overrides produced it.
    """
    model = canonical.get("model", {})
    parts = [str(canonical.get(g, {}).get("name", "")) for g in GROUPS[:4]]
    parts += [f"d{model.get('depth')}w{model.get('width')}", str(canonical.get("optim", {}).get("name", ""))]
    slug = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", part) for part in parts)
    return f"{slug}-{config_hash(canonical)}"


# ----- atomic writes ------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """The mode a new file gets under the user's umask (``mkstemp`` alone would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
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
    _atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, default=str)))


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(path, lambda p: p.write_text(yaml.safe_dump(data, sort_keys=False)))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    _atomic_write(path, lambda p: frame.to_parquet(p, index=False))


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
    has no ``meta.json``. Never raises on a damaged cell."""
    try:
        meta = read_meta(cell_dir)
    except CorruptCell as err:
        return CellState(STATUS_CORRUPT, str(err), {})
    if meta is None:
        return None
    if meta.get("status") == STATUS_COMPLETE:
        try:
            verify_cell(cell_dir, meta)
        except CorruptCell as err:
            return CellState(STATUS_CORRUPT, str(err), meta)
    if meta.get("status") == STATUS_RUNNING:
        from gradstudy.locks import describe, is_live, read_lock

        lock = read_lock(cell_dir)
        if is_live(lock):
            return CellState(STATUS_RUNNING, f"running in {describe(lock)}", meta)
        gone = (
            f"its process ({describe(lock)}) stopped without finishing"
            if lock
            else "its process stopped without finishing"
        )
        return CellState(STATUS_INTERRUPTED, gone, meta)
    return CellState(str(meta.get("status")), str(meta.get("message", "")), meta)


def is_complete(cell_dir: Path) -> bool:
    state = cell_state(cell_dir)
    return state is not None and state.status == STATUS_COMPLETE


def mark_in_sweep(results_dir: Path, sweep: str, cell_dir: Path, rejected: str | None = None) -> None:
    """Record that ``cell_dir`` belongs to the sweep ``sweep``, so the end-of-sweep summary can list
    it; ``rejected`` records a run that was refused without touching the cell (an invalid config
    aimed at a complete cell), so that the sweep still exits non-zero."""
    marker = Path(results_dir) / SWEEPS / sweep / f"{cell_dir.parent.name}--{cell_dir.name}"
    _atomic_write(marker, lambda p: p.write_text(str(Path(cell_dir).resolve())))
    if rejected is not None:
        _atomic_write(marker.with_name(marker.name + REJECTED), lambda p: p.write_text(rejected))


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
        "code_hash": code_hash(),
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
    }


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """First 12 hex digits of the SHA-256 of the package's Python sources and the ``conf/`` YAML files
    (relative paths and contents, in sorted order): the code that made a cell, with or without git."""
    from gradstudy.config import conf_dir

    digest = hashlib.sha256()
    for root, pattern in ((Path(__file__).parent, "*.py"), (Path(conf_dir()), "*.yaml")):
        for path in sorted(root.rglob(pattern)):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# ----- loading --------------------------------------------------------------------------------------
#: Columns of ``Study.cells`` that describe the cell's run and files, not its config.
CELL_INFO = ("study", "cell", "status", "reason", "outcome", "n_seeds", "n_diverged", "code_hash", "path")


@dataclass(frozen=True)
class Study:
    """Tidy tables of one or more studies; every table has ``study`` and ``cell`` columns, and a cell
    is identified by the pair (two studies may hold the same cell id)."""

    cells: pd.DataFrame
    curves: pd.DataFrame
    layers: pd.DataFrame
    hists: pd.DataFrame
    seeds: pd.DataFrame
    steps: pd.DataFrame
    #: ``stats.extra=[unit_percentiles]``: z percentiles of single units (empty when not recorded).
    units: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=["study", "cell", *UNIT_COLUMNS])
    )

    @property
    def varying_keys(self) -> list[str]:
        """The config keys whose values differ across cells (see ``varying_keys``)."""
        return varying_keys(self.cells)

    def sorted_cells(self) -> pd.DataFrame:
        """``cells`` sorted by its varying keys (numbers numerically), then by study and cell."""
        keys = self.varying_keys
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
        return self.subset(cell_keys(self.cells[self.cells["status"] == STATUS_COMPLETE]))

    def select(self, **where: object) -> Study:
        """The complete cells whose config matches ``where``: a value or a list of values per key,
        with dots written as ``__`` (``model__depth=[8, 16]``). An unknown key raises ``KeyError``."""
        chosen = self.cells[self.cells["status"] == STATUS_COMPLETE]
        for key, value in where.items():
            column = key.replace("__", ".")
            if column not in chosen.columns:
                raise KeyError(f"no config key {column} in this study")
            chosen = chosen[chosen[column].isin(value if isinstance(value, list) else [value])]
        return self.subset(cell_keys(chosen))


#: A cell is identified by its study and its cell id.
CellKey = tuple[str, str]


def cell_keys(frame: pd.DataFrame) -> list[CellKey]:
    """(study, cell) of every row of ``frame``, in order."""
    return list(zip(frame["study"], frame["cell"], strict=True))


def rows_of(frame: pd.DataFrame, key: CellKey) -> pd.DataFrame:
    """The rows of ``frame`` that belong to the cell ``key``."""
    return frame[(frame["study"] == key[0]) & (frame["cell"] == key[1])]


def varying_keys(cells: pd.DataFrame) -> list[str]:
    """The config keys whose values differ across ``cells``, in column order.

    A key that a varying choice fixes is left out, because the choice already says it: a group's own
    keys under that group's choice (``init.scale`` under ``init=xavier,he``), and anything an arm
    fixes under ``+arm=`` (an arm is a named bundle of choices, so ``arm`` stands for its ``act``,
    ``init`` and ``norm``)."""
    config = [c for c in cells.columns if c not in CELL_INFO]
    varying = [c for c in config if cells[c].astype(str).nunique() > 1]

    def fixed_by(choice: str, key: str) -> bool:
        return (
            choice in varying
            and cells.groupby(choice, dropna=False)[key].agg(lambda v: v.astype(str).nunique()).max() <= 1
        )

    def implied(key: str) -> bool:
        if key == ARM:
            return False
        return fixed_by(ARM, key) or ("." in key and fixed_by(key.split(".")[0], key))

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
    return config if isinstance(config, dict) else {}


def _cell_row(study: str, cell_dir: Path, state: CellState) -> dict[str, Any]:
    meta = state.meta
    config = _read_config(cell_dir)
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
    row["outcome"] = meta.get("outcome", OUTCOME_OK) if state.status == STATUS_COMPLETE else None
    row["n_seeds"] = len(meta.get("seeds", []))
    row["n_diverged"] = len(meta.get("diverged", {}))
    row["code_hash"] = meta.get("code_hash")
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


def _seeds_from_meta(cell_dir: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """The seeds table of a cell written before ``seeds.parquet`` existed, from its ``meta.json``."""
    config = _read_config(cell_dir)
    diverged = {int(seed): int(step) for seed, step in meta.get("diverged", {}).items()}
    return seeds_table([int(s) for s in meta.get("seeds", [])], diverged, config["train"]["steps"])


def _read_table(cell_dir: Path, name: str, study: str, meta: dict[str, Any]) -> pd.DataFrame:
    path = cell_dir / name
    if path.is_file():
        frame = pd.read_parquet(path)
    elif name == SEEDS:
        frame = _seeds_from_meta(cell_dir, meta)
    else:
        frame = pd.DataFrame(columns=TABLE_COLUMNS[name])
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
            if state.status == STATUS_COMPLETE:
                try:
                    read = {name: _read_table(cell_dir, name, study, state.meta) for name in tables}
                except Exception as err:  # a table that passed its checks and still does not read
                    state = CellState(STATUS_CORRUPT, f"{cell_dir}: {type(err).__name__}: {err}", state.meta)
                else:
                    for name, frame in read.items():
                        tables[name].append(frame)
            rows.append(_cell_row(study, cell_dir, state))

    def concat(name: str) -> pd.DataFrame:
        frames = [f for f in tables[name] if not f.empty]
        if not frames:
            return pd.DataFrame(columns=["study", "cell", *TABLE_COLUMNS[name]])
        return pd.concat(frames, ignore_index=True)

    cells_frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["study", "cell", ARM, *GROUPS, *CELL_INFO[2:]])
    cells_frame = cells_frame.apply(_numeric)
    return Study(cells=cells_frame, **{name.split(".")[0]: concat(name) for name in TABLE_COLUMNS})
