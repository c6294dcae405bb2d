"""Entry point: ``python -m gradstudy.run [-m] key=value ...``.

One Hydra job is one grid cell: compose, validate, train every seed in one compiled program, write
the cell's folder. A job never raises and never exits; a failure is recorded in the cell's
``meta.json`` and reported by ``gradstudy.callbacks.SummaryCallback`` at the end of the sweep.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from gradstudy.callbacks import summarize_sweep, sweep_of_job
from gradstudy.config import (
    ConfigError,
    canonical,
    check_run_keys,
    conf_dir,
    ignored_overrides,
    register_configs,
    resolved,
    seeds_of,
    validate,
    validate_against_data,
)
from gradstudy.datafiles import MissingDataError
from gradstudy.locks import claim, describe, read_lock
from gradstudy.store import (
    ARM,
    CONFIG,
    META,
    OUTCOME_DIVERGED,
    OUTCOME_OK,
    STATUS_COMPLETE,
    STATUS_CORRUPT,
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_RUNNING,
    CellState,
    cell_id,
    cell_state,
    code_hash,
    config_hash,
    mark_in_sweep,
    provenance,
    table_record,
    write_json,
    write_table,
    write_yaml,
)


@functools.lru_cache(maxsize=4)
def _dataset(data_yaml: str):
    """Each dataset (one ``data`` node, as YAML) is loaded once per process, however many cells of a sweep use it."""
    from gradstudy.data import load_dataset

    return load_dataset(OmegaConf.create(data_yaml))


def _train(cfg: DictConfig, cell: str, seeds: list[int], dataset, console: Console):
    """Train every seed of the cell with a progress bar showing the step and the mean loss."""
    from gradstudy.engine import Engine
    from gradstudy.memory import preflight

    engine = Engine(cfg, dataset)
    if cfg.check_memory:
        preflight(engine, cfg, seeds)
    state = engine.init(seeds)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(cell, total=cfg.train.steps, loss=float("nan"))
        result = engine.run(state, seeds, on_chunk=lambda step, loss: progress.update(task, completed=step, loss=loss))
    return result


def _applicable_stats(cfg: DictConfig) -> set[str]:
    """The statistics that mean something for the cell's activation (every recorded one but, e.g., ``dead_frac`` for tanh)."""
    from gradstudy.activations import ACTIVATIONS
    from gradstudy.stats import INIT_EXTRAS, stat_names

    act = ACTIVATIONS[cfg.act.name]
    return {s for s in (*stat_names(cfg.stats.tier, cfg.stats.extra), *INIT_EXTRAS) if act.applies(s)}


def _skip_line(cell: str, meta: dict) -> str:
    """What a rerun says about a complete cell it skips, flagging one made by other code."""
    line = f"gradstudy: {cell} is complete, skipped (force=true reruns it)"
    made_by = meta.get("code_hash")
    if made_by != code_hash():
        line += f"; it was made by other code (code_hash {made_by or 'unknown'}, now {code_hash()})"
    return line


def run_cell(cfg: DictConfig, arm: str | None = None, sweep: str | None = None) -> str:
    """Run one cell and write its folder; returns the folder ("" when ``study`` or ``results_dir`` leave
    nowhere safe to write). Never raises on a bad config or a failed run.

    ``arm`` is the ``+arm=`` choice that composed ``cfg``, if any: a label kept in ``meta.json``.
    ``sweep`` is the id of the sweep the cell belongs to, for its end-of-sweep summary."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=160)
    try:
        check_run_keys(cfg)
    except ConfigError as err:  # nowhere safe to record it: say so, write nothing
        console.print(f"[red]gradstudy: not run: {err}[/red]")
        return ""
    try:
        full = resolved(cfg)
        plain = canonical(full)
        cell = cell_id(plain)
    except Exception as err:  # an interpolation that cannot resolve: still record the failure
        full = plain = {}
        cell = f"unresolved-{config_hash({'yaml': OmegaConf.to_yaml(cfg)})}"
        failure: Exception | None = err
    else:
        try:
            validate(cfg)
            failure = None
        except Exception as err:
            failure = err
    cell_dir = Path(cfg.results_dir) / cfg.study / cell
    previous = cell_state(cell_dir)
    complete = previous is not None and previous.status == STATUS_COMPLETE
    rejected = f"{failure}; the complete cell was left as it is" if failure is not None and complete else None
    try:
        cell_dir.mkdir(parents=True, exist_ok=True)
        if sweep:
            mark_in_sweep(Path(cfg.results_dir), sweep, cell_dir, rejected)
    except OSError as err:
        console.print(f"[red]gradstudy: not run: results_dir: cannot create {cell_dir}: {err}[/red]")
        return ""
    if rejected is not None:  # an invalid run never touches a complete cell, even with force=true
        console.print(f"[red]gradstudy: {cell}: not run: {rejected}[/red]")
        return str(cell_dir)
    if complete and not cfg.force:
        console.print(_skip_line(cell, previous.meta))
        return str(cell_dir)
    lock = claim(cell_dir)
    if lock is None:
        console.print(f"gradstudy: {cell} is running in {describe(read_lock(cell_dir) or {})}; left alone")
        return str(cell_dir)
    try:
        return _run_claimed(cfg, cell, cell_dir, previous, full, plain, failure, arm, console)
    finally:
        lock.release()


def _run_claimed(
    cfg: DictConfig,
    cell: str,
    cell_dir: Path,
    previous: CellState | None,
    full: dict,
    plain: dict,
    failure: Exception | None,
    arm: str | None,
    console: Console,
) -> str:
    """``run_cell`` once this process holds the cell's lock: look again (another process may have
    finished it meanwhile), then train and write it. ``previous`` is the state before the claim."""
    latest = cell_state(cell_dir)
    if latest is not None and latest.status == STATUS_COMPLETE and not cfg.force:
        console.print(_skip_line(cell, latest.meta))
        return str(cell_dir)
    if previous is not None and previous.status in (STATUS_CORRUPT, STATUS_INTERRUPTED):
        console.print(f"gradstudy: {cell} was {previous.status} ({previous.reason}); running it again")
    meta = {
        "study": cfg.study,
        "cell": cell,
        ARM: arm,
        "status": STATUS_RUNNING,
        "seeds": [],
        "diverged": {},
        "config": full,
    }
    started = time.time()
    try:
        if plain:  # the config the cell would run, also kept for a failed one
            write_yaml(cell_dir / CONFIG, plain)
        if failure is not None:
            raise failure
        meta["seeds"] = seeds_of(cfg)
        dataset = _dataset(OmegaConf.to_yaml(cfg.data, resolve=True))
        validate_against_data(cfg, len(dataset.y_train))
        meta.update(provenance())
        write_json(cell_dir / META, meta)
        result = _train(cfg, cell, meta["seeds"], dataset, console)
        from gradstudy.tables import cell_tables

        tables, diverged = cell_tables(result, _applicable_stats(cfg), cfg.train.steps)
        for name, frame in tables.items():
            write_table(cell_dir / name, frame)
        meta["tables"] = {name: table_record(cell_dir / name) for name in tables}
        outcome = OUTCOME_DIVERGED if len(diverged) == len(meta["seeds"]) else OUTCOME_OK
        meta.update(status=STATUS_COMPLETE, outcome=outcome, diverged=diverged, wall_s=round(time.time() - started, 2))
        write_json(cell_dir / META, meta)
        if diverged:
            console.print(
                f"gradstudy: {cell}: {len(diverged)} of {len(meta['seeds'])} seed(s) diverged, at steps {diverged}"
            )
    except CellInterrupted as stop:
        meta.update(status=STATUS_INTERRUPTED, message=f"stopped by {stop.name}")
        write_json(cell_dir / META, meta)
        console.print(f"[red]gradstudy: {cell} interrupted by {stop.name}; a rerun starts it again[/red]")
        raise
    except Exception as err:
        message = str(err) if isinstance(err, ConfigError | MissingDataError) else f"{type(err).__name__}: {err}"
        meta.update(status=STATUS_FAILED, message=message, traceback=traceback.format_exc())
        write_json(cell_dir / META, meta)
        console.print(f"[red]gradstudy: cell {cell} failed: {message}[/red]")
    return str(cell_dir)


class CellInterrupted(BaseException):
    """SIGINT or SIGTERM arrived while a cell ran (a BaseException, so that no job code swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _interrupt(signum: int, frame: object) -> None:
    raise CellInterrupted(signum)


register_configs()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def main(cfg: DictConfig) -> str:
    from gradstudy.cache import enable_compile_cache
    from gradstudy.devices import use_host_devices

    use_host_devices()
    logging.getLogger("jax").setLevel(logging.WARNING)
    enable_compile_cache()
    hydra_cfg = HydraConfig.get()
    for warning in ignored_overrides(cfg, list(hydra_cfg.overrides.task)):
        print(f"gradstudy: warning: {warning}", file=sys.stderr)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    sweep = sweep_of_job()
    try:
        return run_cell(cfg, arm=hydra_cfg.runtime.choices.get(ARM), sweep=sweep)
    except CellInterrupted as stop:  # the sweep stops here: summary so far, then 128 + the signal
        if sweep:
            summarize_sweep(Path(cfg.results_dir), sweep)
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    # Run the task function of the importable module, not of ``__main__``: launchers that pickle it
    # into other processes (joblib, submitit) import it by its module name.
    from gradstudy.run import main as importable_main

    importable_main()
