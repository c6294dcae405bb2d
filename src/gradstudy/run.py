"""Entry point: ``python -m gradstudy.run [-m] key=value ...``.

One Hydra job is one grid cell, or, under the gradstudy sweeper (``hydra_plugins.gradstudy_sweeper``),
one group of cells that share a program shape, given by the run-only key ``members`` (each member's
overrides). A job composes and validates each cell, trains every seed of its cells in one compiled
program, and writes each cell's folder. A job never raises and never exits; a failure is recorded in the cell's
``meta.json`` and reported by ``gradstudy.callbacks.SummaryCallback`` at the end of the sweep.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from gradstudy.callbacks import summarize_sweep, sweep_of_job
from gradstudy.cells.compat import cell_inputs, compatibility_warnings, data_inputs
from gradstudy.cells.config import canonical, ignored_overrides, register_configs, resolved, seeds_of
from gradstudy.cells.grouping import COMPOSED, program_key
from gradstudy.cells.statistics import applicable
from gradstudy.cells.validate import check_run_keys, validate, validate_against_data
from gradstudy.engine.devices import device_info
from gradstudy.inputs.data import load_dataset
from gradstudy.inputs.datafiles import DataFileError, MissingDataError
from gradstudy.schema import (
    ARM,
    CONFIG,
    LAYERS,
    META,
    STEPS,
    THEORY_INPUTS,
    CellStatus,
    ConfigError,
    conf_dir,
)
from gradstudy.store.files import table_record, write_json, write_table, write_yaml
from gradstudy.store.ids import cell_id, config_hash
from gradstudy.store.locks import CellLock, claim, describe, read_lock
from gradstudy.store.outcomes import classify
from gradstudy.store.provenance import code_hash, provenance
from gradstudy.store.state import cell_state
from gradstudy.store.sweeps import mark_in_sweep


@functools.lru_cache(maxsize=4)
def _dataset(data_yaml: str):
    """Each dataset (one ``data`` node, as YAML) is loaded once per process, however many cells of a sweep use it."""
    return load_dataset(OmegaConf.create(data_yaml))


def _skip_line(cell: str, meta: dict) -> str:
    """What a rerun says about a complete cell it skips, flagging one made by other code."""
    line = f"gradstudy: {cell} is complete, skipped (force=true reruns it)"
    made_by = meta.get("code_hash")
    if made_by != code_hash():
        line += f"; it was made by other code (code_hash {made_by or 'unknown'}, now {code_hash()})"
    return line


@dataclass
class Claim:
    """A cell this process holds the lock of and is about to train."""

    cfg: DictConfig
    cell: str
    cell_dir: Path
    lock: CellLock
    meta: dict
    data_yaml: str = ""
    program: str = ""  # ``grouping.program_key``: cells with equal keys train as one program
    started: float = 0.0  # when its group began training


def _console() -> Console:
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=160)


def run_cell(cfg: DictConfig, arm: str | None = None, sweep: str | None = None) -> str:
    """Run one cell and write its folder; returns the folder ("" when ``study`` or ``results_dir`` leave
    nowhere safe to write). Never raises on a bad config or a failed run.

    ``arm`` is the ``+arm=`` choice that composed ``cfg``, if any: a label kept in ``meta.json``.
    ``sweep`` is the id of the sweep the cell belongs to, for its end-of-sweep summary."""
    return run_cells([(cfg, arm)], sweep)[0]


def run_cells(cells: list[tuple[DictConfig, str | None]], sweep: str | None = None) -> list[str]:
    """Run a group of cells, each given as (config, arm), and write each one's folder; returns the
    folders in order (see ``run_cell``). Never raises on a bad config or a failed run.

    Each cell is checked, locked and recorded on its own: a complete cell is skipped, one that
    another process holds is left out, an invalid one fails alone. The cells left that share a
    program shape (``gradstudy.cells.grouping``) train as one program, in pieces that fit in memory; each
    cell's folder holds exactly what its solo run writes, plus the group it trained in."""
    console = _console()
    outcomes: list[Claim | str] = []
    try:
        for cfg, arm in cells:
            held = {c.cell_dir for c in _claims(outcomes)}
            outcomes.append(_claim(cfg, arm, sweep, console, held))
        by_program: dict[str, list[Claim]] = {}
        for c in _claims(outcomes):
            by_program.setdefault(c.program, []).append(c)
        for group in by_program.values():
            _train_group(group, console)
    except CellInterrupted as stop:
        for c in _claims(outcomes):
            if c.meta["status"] == CellStatus.RUNNING:
                c.meta.update(status=CellStatus.INTERRUPTED, message=f"stopped by {stop.name}")
                write_json(c.cell_dir / META, c.meta)
                console.print(f"[red]gradstudy: {c.cell} interrupted by {stop.name}; a rerun starts it again[/red]")
        raise
    finally:
        for c in _claims(outcomes):
            c.lock.release()
    return [str(c.cell_dir) if isinstance(c, Claim) else c for c in outcomes]


def _claims(outcomes: list[Claim | str]) -> list[Claim]:
    return [c for c in outcomes if isinstance(c, Claim)]


def _claim(
    cfg: DictConfig, arm: str | None, sweep: str | None, console: Console, held: set[Path] = frozenset()
) -> Claim | str:
    """Check a cell, record it in its sweep and take its lock. Returns the claim of a cell to train,
    or its folder when there is nothing to train here ("" when there is nowhere safe to write).
    ``held``: the folders this group already claimed (two members that compose to one config)."""
    try:
        check_run_keys(cfg)
    except ConfigError as err:  # nowhere safe to record it: say so, write nothing
        console.print(f"[red]gradstudy: not run: {err}[/red]")
        return ""
    full, plain, cell, failure = _identify(cfg)
    cell_dir = Path(cfg.results_dir) / cfg.study / cell
    previous = cell_state(cell_dir)
    complete = previous is not None and previous.status == CellStatus.COMPLETE
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
    if cell_dir in held:
        console.print(
            f"gradstudy: {cell}: listed twice in this group (two members compose to the same config); it trains once"
        )
        return str(cell_dir)
    lock = _lock(cfg, cell, cell_dir, console)
    if lock is None:
        return str(cell_dir)
    if previous is not None and previous.status in (CellStatus.CORRUPT, CellStatus.INTERRUPTED):
        console.print(f"gradstudy: {cell} was {previous.status} ({previous.reason}); running it again")
    meta = {"study": cfg.study, "cell": cell, ARM: arm, "status": CellStatus.RUNNING, "seeds": [], "diverged": {}}
    c = Claim(cfg, cell, cell_dir, lock, {**meta, "config": full})
    try:
        _prepare(c, plain, failure, console)
    except Exception as err:
        _fail(c, err, console)
        lock.release()
        return str(cell_dir)
    return c


def _identify(cfg: DictConfig) -> tuple[dict, dict, str, Exception | None]:
    """The cell's resolved and canonical configs, its id, and why it cannot run (None when it can).
    A config whose interpolations cannot resolve still gets an id, so its failure is recorded."""
    try:
        full = resolved(cfg)
        plain = canonical(full)
        cell = cell_id(plain)
    except Exception as err:
        return {}, {}, f"unresolved-{config_hash({'yaml': OmegaConf.to_yaml(cfg)})}", err
    try:
        validate(cfg)
    except Exception as err:
        return full, plain, cell, err
    return full, plain, cell, None


def _lock(cfg: DictConfig, cell: str, cell_dir: Path, console: Console) -> CellLock | None:
    """The cell's lock, unless another process holds it or finished the cell meanwhile."""
    lock = claim(cell_dir)
    if lock is None:
        console.print(f"gradstudy: {cell} is running in {describe(read_lock(cell_dir) or {})}; left alone")
        return None
    # This process holds the lock: look again (another process may have finished the cell meanwhile).
    latest = cell_state(cell_dir)
    if latest is not None and latest.status == CellStatus.COMPLETE and not cfg.force:
        lock.release()
        console.print(_skip_line(cell, latest.meta))
        return None
    return lock


def _prepare(c: Claim, plain: dict, failure: Exception | None, console: Console) -> None:
    """Write the cell's config and its running ``meta.json``: seeds, dataset checks, warnings, the
    theory's inputs and provenance. Raises what makes the cell fail."""
    cfg, meta = c.cfg, c.meta
    if plain:  # the config the cell would run, also kept for a failed one
        write_yaml(c.cell_dir / CONFIG, plain)
    if failure is not None:
        raise failure
    meta["seeds"] = seeds_of(cfg)
    c.data_yaml = OmegaConf.to_yaml(cfg.data, resolve=True)
    c.program = program_key(meta["config"])
    dataset = _dataset(c.data_yaml)
    validate_against_data(cfg, len(dataset.y_train))
    inputs = data_inputs(dataset)
    meta["warnings"] = compatibility_warnings(cfg, inputs)
    for warning in meta["warnings"]:
        console.print(f"gradstudy: {c.cell}: warning: {warning}")
    meta[THEORY_INPUTS] = cell_inputs(cfg, inputs)
    meta.update(provenance(), device=device_info())
    write_json(c.cell_dir / META, meta)


def _fail(c: Claim, err: Exception, console: Console) -> None:
    """Record the cell as failed, with the message and traceback."""
    message = (
        str(err) if isinstance(err, ConfigError | MissingDataError | DataFileError) else f"{type(err).__name__}: {err}"
    )
    c.meta.update(status=CellStatus.FAILED, message=message, traceback="".join(traceback.format_exception(err)))
    write_json(c.cell_dir / META, c.meta)
    console.print(f"[red]gradstudy: cell {c.cell} failed: {message}[/red]")


def _train_group(claims: list[Claim], console: Console) -> None:
    """Train cells that share one program together, in pieces that fit in memory; a piece that hits
    an error runs its cells one by one, so that a failing cell fails alone."""
    try:
        engine = _engine(claims[0])
        pieces, too_big = _fitting(engine, claims)
    except Exception as err:
        _one_by_one(claims, err, console)
        return
    for c, err in too_big:
        _fail(c, err, console)
    for piece in pieces:
        _stop_if_signalled()
        try:
            results = _train(engine, piece, console)
        except Exception as err:
            _one_by_one(piece, err, console)
            continue
        for c, result in zip(piece, results, strict=True):
            _stop_if_signalled()
            try:
                _write(c, result, console)
            except Exception as err:
                _fail(c, err, console)


def _one_by_one(claims: list[Claim], err: Exception, console: Console) -> None:
    """After ``err`` in a group: fail a lone cell, or run each cell of the group by itself."""
    if len(claims) == 1:
        _fail(claims[0], err, console)
        return
    console.print(
        f"[red]gradstudy: a group of {len(claims)} cells failed ({type(err).__name__}: {err}); "
        "running its cells one by one[/red]"
    )
    for c in claims:
        _train_group([c], console)


def _fitting(engine, claims: list[Claim]) -> tuple[list[list[Claim]], list[tuple[Claim, Exception]]]:
    """``claims`` cut in halves until every piece fits in memory (``gradstudy.engine.memory``), and the
    cells that do not fit even alone, each with its ``OutOfMemory``."""
    from gradstudy.engine.memory import OutOfMemory, preflight

    if not any(c.cfg.check_memory for c in claims):
        return [claims], []
    try:
        preflight(engine, claims[0].cfg, [s for c in claims for s in c.meta["seeds"]])
    except OutOfMemory as err:
        if len(claims) == 1:
            return [], [(claims[0], err)]
        half = len(claims) // 2
        first, second = _fitting(engine, claims[:half]), _fitting(engine, claims[half:])
        return first[0] + second[0], first[1] + second[1]
    return [claims], []


def _train(engine, claims: list[Claim], console: Console) -> list:
    """Train every seed of ``claims`` in one program, with a progress bar of the step and mean loss;
    returns each cell's ``TrainResult``."""
    group = {"id": config_hash({"cells": [c.cell for c in claims]}), "size": len(claims)}
    for c in claims:
        c.meta["group"] = group
        c.started = time.time()
        if len(claims) > 1:
            console.print(f"gradstudy: {c.cell}: training in group {group['id']} of {len(claims)} cells (one program)")
    seeds = [s for c in claims for s in c.meta["seeds"]]
    state = engine.init_runs([(c.cfg, c.meta["seeds"]) for c in claims])
    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
    )
    label = claims[0].cell if len(claims) == 1 else f"group {group['id']}: {len(claims)} cells, {len(seeds)} runs"
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=engine.steps, loss=float("nan"))

        def on_chunk(step: int, loss: float) -> None:
            _stop_if_signalled()
            progress.update(task, completed=step, loss=loss)

        result = engine.run(state, seeds, on_chunk=on_chunk)
    return result.split([len(c.meta["seeds"]) for c in claims])


def _write(c: Claim, result, console: Console) -> None:
    """Write a trained cell's tables, then its meta marked complete."""
    from gradstudy.cells.schedules import learning_rates
    from gradstudy.store.tables import cell_tables

    meta, cfg = c.meta, c.cfg
    tables, diverged = cell_tables(
        result,
        applicable(cfg.act.name, cfg.stats.tier, cfg.stats.extra, cfg.stats.units, cfg.model.name),
        cfg.train.steps,
        learning_rates(cfg.optim, cfg.train.steps),
    )
    for name, frame in tables.items():
        write_table(c.cell_dir / name, frame)
    meta["tables"] = {name: table_record(c.cell_dir / name) for name in tables}
    collapsed, outcome = classify(meta["seeds"], diverged, tables[LAYERS], tables[STEPS], cfg.data.name)
    wall_s = round(time.time() - c.started, 2)
    meta.update(status=CellStatus.COMPLETE, outcome=outcome, diverged=diverged, collapsed=collapsed, wall_s=wall_s)
    write_json(c.cell_dir / META, meta)
    if diverged:
        console.print(
            f"gradstudy: {c.cell}: {len(diverged)} of {len(meta['seeds'])} seed(s) diverged, at steps {diverged}"
        )
    if collapsed:
        console.print(
            f"gradstudy: {c.cell}: {len(collapsed)} of {len(meta['seeds'])} seed(s) collapsed (no gradient, loss at "
            f"chance), from steps {collapsed}"
        )


_ENGINES: dict[str, object] = {}


def _engine(c: Claim):
    """The engine of the claim's program, built once per process: its programs are traced once,
    however many groups of that shape the process trains."""
    from gradstudy.engine.program import Engine

    if c.program not in _ENGINES:
        _ENGINES[c.program] = Engine(c.cfg, _dataset(c.data_yaml))
    return _ENGINES[c.program]


class CellInterrupted(BaseException):
    """SIGINT or SIGTERM arrived while a cell ran (a BaseException, so that no job code swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


_SIGNALLED: list[int] = []


def _interrupt(signum: int, frame: object) -> None:
    """Raise ``CellInterrupted``, and remember the signal: a raise that lands inside a garbage
    collector callback (JAX has one) or a ``__del__`` is printed and dropped by Python, and the
    run would otherwise carry on as if no signal had come."""
    _SIGNALLED.append(signum)
    raise CellInterrupted(signum)


def _stop_if_signalled() -> None:
    """Raise ``CellInterrupted`` for a signal whose own raise was swallowed (see ``_interrupt``)."""
    if _SIGNALLED:
        raise CellInterrupted(_SIGNALLED[0])


register_configs()


def _member(config_name: str, overrides: list[str]) -> tuple[DictConfig, str | None]:
    """One cell of a group job, composed from its own overrides (Hydra's compose API, inside the
    running app), and its ``+arm=`` choice; in the sweeper's own process, the sweeper's composition."""
    from hydra import compose

    composed = COMPOSED.pop(tuple(overrides), None)
    if composed is not None:
        return composed
    cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    arm = cfg.hydra.runtime.choices.get(ARM)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, arm


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def main(cfg: DictConfig) -> list[str]:
    from gradstudy.engine.compile_cache import enable_compile_cache
    from gradstudy.engine.devices import use_host_devices

    use_host_devices()
    logging.getLogger("jax").setLevel(logging.WARNING)
    enable_compile_cache()
    hydra_cfg = HydraConfig.get()
    members = OmegaConf.to_container(cfg.members)
    # The job's own config is its first cell's (the sweeper gives a group job that cell's overrides).
    cells = [(cfg, hydra_cfg.runtime.choices.get(ARM))]
    if members:  # a group job of the gradstudy sweeper: one cell per member's overrides
        with open_dict(cfg):
            cfg.members = []
        cells += [_member(hydra_cfg.job.config_name, m) for m in members[1:]]
    else:
        members = [list(hydra_cfg.overrides.task)]
    ignored = (
        w for (cell, _), overrides in zip(cells, members, strict=True) for w in ignored_overrides(cell, overrides)
    )
    for warning in dict.fromkeys(ignored):  # once per job, however many of its cells it concerns
        print(f"gradstudy: warning: {warning}", file=sys.stderr)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    sweep = sweep_of_job()
    try:
        return run_cells(cells, sweep=sweep)
    except CellInterrupted as stop:  # the sweep stops here: summary so far, then 128 + the signal
        if sweep:
            summarize_sweep(Path(cfg.results_dir), sweep)
        # Straight out, without the interpreter's teardown: a signal that lands while XLA compiles
        # leaves the backend in a state whose teardown segfaults (exit -11 instead of 128 + signal).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + stop.signum)


def command() -> None:
    """``main`` as the whole of a process (``python -m gradstudy.run``, ``gradstudy run``)."""
    try:
        main()
    finally:
        # The interpreter's garbage collections at exit walk every object JAX made in the run (about
        # 0.4 s) and free nothing that outlives the process; frozen objects are left out of them.
        gc.freeze()


if __name__ == "__main__":
    # Run the task function of the importable module, not of ``__main__``: launchers that pickle it
    # into other processes (joblib, submitit) import it by its module name.
    from gradstudy.run import command

    command()
