"""Studies from Python: ``sweep`` runs a grid in this process and returns its ``Study``, ``run_cell``
runs one cell, ``write_report`` writes a study's report.

They go through what the command line goes through: Hydra's compose API on ``conf/``, the same
expansion of sweeps (``cells.expand``, zipped keys too), validation, the planner that trains the cells
sharing a program as one (``run.run_cells``), the locks, the store and the summary. So a cell made
here is bitwise the one ``python -m gradstudy.run`` makes, in the same folder, and a rerun skips it.
Nothing here exits the interpreter or leaves Hydra's global state behind: it runs in a notebook, as
often as wanted. Bad input raises ``ConfigError`` naming the key, before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from gradstudy.cells.config import SCHEMA, register_configs
from gradstudy.cells.expand import expand
from gradstudy.cells.validate import validate
from gradstudy.schema import ARM, ConfigError, conf_dir
from gradstudy.store.study import Study, load_study

#: Overrides as the command line writes them (``["init=xavier,he", "act=relu"]``), or a mapping of
#: key to a value or a list of values to sweep (``{"init": ["xavier", "he"], "optim.lr": 0.1}``).
#: A key whose value is itself a list (``optim.boundaries``) takes a list of plain values as its
#: value and a list of lists as a sweep.
Overrides = Sequence[str] | Mapping[str, Any]
#: The keys whose value is a list (``cells.config`` types them ``list[...]``).
LIST_KEYS = {
    f"{group}.{f.name}" for group, schema in SCHEMA.items() for f in fields(schema) if str(f.type).startswith("list")
}


def _text(value: Any) -> str:
    """A value as a Hydra override writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def override_strings(overrides: Overrides) -> list[str]:
    """``overrides`` as Hydra override strings: a mapping's list becomes a sweep (``key=a,b``). An
    empty list, or one that is not a list of plain values, raises ``ConfigError`` naming its key."""
    if not isinstance(overrides, Mapping):
        if isinstance(overrides, str):
            raise ConfigError(f"overrides: give a list of override strings or a dict, not the string {overrides!r}")
        return [str(o) for o in overrides]
    out = []
    for key, value in overrides.items():
        if key.lstrip("+~") in LIST_KEYS and isinstance(value, list | tuple):
            value = list(value) if value and all(isinstance(v, list | tuple) for v in value) else [list(value)]
        if isinstance(value, list | tuple):
            if not value:
                raise ConfigError(f"{key}: an empty list sweeps nothing; give at least one value")
            out.append(f"{key}=" + ",".join(_text(v) for v in value))
        else:
            out.append(f"{key}={_text(value)}")
    return out


@contextlib.contextmanager
def _hydra() -> Iterator[None]:
    """Hydra initialized on ``conf/`` for the duration, and cleared after (inside a running Hydra
    app, that app's initialization is used and left as it is)."""
    register_configs()
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        yield


def _compose(overrides: list[str]) -> tuple[DictConfig, str | None]:
    """One cell's config and its ``+arm=`` choice, composed as the command line composes it."""
    try:
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"{' '.join(overrides)}: {err}") from err
    arm = cfg.hydra.runtime.choices.get(ARM)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, arm


def plan(
    overrides: Overrides = (),
    study: str = "default",
    results_dir: str | os.PathLike[str] = "results",
    zip: Sequence[str] = (),  # noqa: A002 (the sweeper's key of the same name)
) -> list[tuple[DictConfig, str | None]]:
    """Every cell of the grid, composed and validated, as (config, arm) pairs; nothing is written.
    Raises ``ConfigError`` naming the key of the first cell that cannot run."""
    strings = [*override_strings(overrides), f"study={study}", f"results_dir={Path(results_dir)}"]
    try:
        cells = expand(strings, zip)
    except (HydraException, ValueError) as err:
        raise ConfigError(str(err)) from err
    with _hydra():
        composed = [_compose(cell) for cell in cells]
    for cfg, _ in composed:
        validate(cfg)
    return composed


def sweep(
    overrides: Overrides = (),
    study: str = "default",
    results_dir: str | os.PathLike[str] = "results",
    zip: Sequence[str] = (),  # noqa: A002 (the sweeper's key of the same name)
    summary: bool = True,
) -> Study:
    """Run the grid ``overrides`` describes, in this process, and return ``load_study`` of its study
    folder. ``zip`` pairs the sweeps of those keys element by element (``hydra.sweeper.zip``).

    Cells that are complete are skipped, as on the command line; a cell that fails while running
    is recorded ``failed`` in its ``meta.json`` and the others go on (look at ``Study.cells.status``).
    ``summary`` prints the command line's end-of-sweep table."""
    from gradstudy.analysis.comparability import grid_warnings
    from gradstudy.callbacks import print_summary
    from gradstudy.engine.compile_cache import enable_compile_cache
    from gradstudy.engine.devices import use_host_devices
    from gradstudy.run import run_cells
    from gradstudy.show.summary import summary_table

    cells = plan(overrides, study, results_dir, zip)
    use_host_devices()  # no effect once JAX has started: a run's numbers do not depend on the device count
    enable_compile_cache()
    folders = [Path(f) for f in run_cells(cells) if f]
    result = load_study(Path(results_dir) / study)
    if summary and folders:
        swept = load_study(Path(results_dir) / study, cells=[f.name for f in folders])
        print_summary(summary_table(swept))
        for warning in grid_warnings(swept):
            print(f"gradstudy: warning: {warning}", file=sys.stderr)
    return result


def run_cell(
    overrides: Overrides = (), study: str = "default", results_dir: str | os.PathLike[str] = "results"
) -> Path:
    """Run one cell (no sweeps in ``overrides``) and return its folder."""
    cells = plan(overrides, study, results_dir)
    if len(cells) != 1:
        raise ConfigError(f"overrides: run_cell runs one cell, these make {len(cells)}; use gradstudy.sweep")
    from gradstudy.run import run_cells

    (folder,) = run_cells(cells)
    return Path(folder)


def write_report(study: Study | str | os.PathLike[str] | Sequence[str | os.PathLike[str]], **options: Any) -> Path:
    """``report.write_report`` for a ``Study`` (its cells' study folders) or for folders."""
    from gradstudy.report import write_report as write

    if isinstance(study, Study):
        folders = sorted({Path(p).parent for p in study.cells["path"]})
        if not folders:
            raise FileNotFoundError("this Study has no cells to report")
        return write(folders[0] if len(folders) == 1 else folders, **options)
    return write(study, **options)
