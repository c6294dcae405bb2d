"""Entry point: ``python -m gradstudy.run [-m] key=value ...``.

One Hydra job is one grid cell: compose, validate, train every seed in one compiled program, write
the cell's folder. A job never raises and never exits; a failure is recorded in the cell's
``meta.json`` and reported by ``gradstudy.callbacks.SummaryCallback`` at the end of the sweep.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import traceback
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradstudy.callbacks import SWEEP_ENV
from gradstudy.config import ConfigError, register_configs, resolved, seeds_of, validate, validate_against_data
from gradstudy.datafiles import MissingDataError
from gradstudy.store import (
    CONFIG,
    CURVE_COLUMNS,
    CURVES,
    HIST_COLUMNS,
    HISTS,
    LAYER_COLUMNS,
    LAYERS,
    META,
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_RUNNING,
    cell_id,
    config_hash,
    is_complete,
    mark_in_sweep,
    provenance,
    tidy,
    write_json,
    write_table,
    write_yaml,
)


def conf_dir() -> str:
    """``conf/`` inside an installed wheel, else the repository's top-level ``conf/``."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parents[1] / "conf")


@functools.lru_cache(maxsize=4)
def _dataset(data_yaml: str):
    """Each dataset (one ``data`` node, as YAML) is loaded once per process, however many cells of a sweep use it."""
    from gradstudy.data import load_dataset

    return load_dataset(OmegaConf.create(data_yaml))


def _train(cfg: DictConfig, cell: str, seeds: list[int], dataset, console: Console):
    """Train every seed of the cell with a progress bar showing the step and the mean loss."""
    from gradstudy.engine import Engine

    engine = Engine(cfg, dataset)
    state = engine.init(seeds)
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(cell, total=cfg.train.steps, loss=float("nan"))
        result = engine.run(state, seeds, on_chunk=lambda step, loss: progress.update(task, completed=step, loss=loss))
    return result


def _tables(result, depth: int) -> tuple[dict[str, pd.DataFrame], dict[int, int]]:
    """The cell's tidy tables from the engine's arrays, each diverged seed cut at its step."""
    from gradstudy.engine import EVAL_METRICS
    from gradstudy.stats import HIST_QUANTITIES

    seeds = result.seeds
    diverged = {seed: int(step) for seed, step in zip(seeds, result.diverged_at) if step >= 0}
    layer_axis = ("layer", list(range(1, depth + 1)))
    curves = tidy(result.eval_steps, result.evals, seeds, [("metric_id", list(range(len(EVAL_METRICS))))], diverged)
    metric_ids = curves.pop("metric_id")
    curves["split"] = [EVAL_METRICS[i][0] for i in metric_ids]
    curves["metric"] = [EVAL_METRICS[i][1] for i in metric_ids]
    layers = tidy(result.stats_steps, result.stats, seeds, [layer_axis, ("stat", list(result.stat_names))], diverged)
    if result.init_stat_names:
        at_init = tidy(np.zeros(1, np.int64), result.init_stats[None], seeds,
                       [layer_axis, ("stat", list(result.init_stat_names))], {})
        layers = pd.concat([layers, at_init], ignore_index=True)
    n_bins = result.hist_counts.shape[-1]
    hists = tidy(
        result.hist_steps,
        result.hist_counts,
        seeds,
        [layer_axis, ("quantity", list(HIST_QUANTITIES)), ("bin", list(range(n_bins)))],
        diverged,
    )
    # edges: (n_hist, n_quantities, n_bins + 1), indexed by position in hist_steps and HIST_QUANTITIES
    step_pos = hists["step"].map({step: i for i, step in enumerate(result.hist_steps)}).to_numpy(np.int64)
    q_pos = hists["quantity"].map({q: i for i, q in enumerate(HIST_QUANTITIES)}).to_numpy(np.int64)
    bins = hists["bin"].to_numpy(np.int64)
    hists["bin_left"] = result.hist_edges[step_pos, q_pos, bins]
    hists["bin_right"] = result.hist_edges[step_pos, q_pos, bins + 1]
    hists = hists.rename(columns={"value": "count"})
    hists["count"] = hists["count"].astype(np.int64)
    return {
        CURVES: curves[CURVE_COLUMNS],
        LAYERS: layers[LAYER_COLUMNS],
        HISTS: hists[HIST_COLUMNS],
    }, diverged


def run_cell(cfg: DictConfig) -> str:
    """Run one cell and write its folder; returns the folder. Never raises on a bad config or a failed run."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=160)
    try:
        plain = resolved(cfg)
        cell = cell_id(plain)
    except Exception as err:  # an interpolation that cannot resolve: still record the failure
        plain = {}
        cell = f"unresolved-{config_hash({'yaml': OmegaConf.to_yaml(cfg)})}"
        failure: Exception | None = err
    else:
        failure = None
    cell_dir = Path(cfg.results_dir) / cfg.study / cell
    cell_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get(SWEEP_ENV):
        mark_in_sweep(Path(cfg.results_dir), os.environ[SWEEP_ENV], cell_dir)
    if failure is None and is_complete(cell_dir) and not cfg.force:
        console.print(f"gradstudy: {cell} is complete, skipped (force=true reruns it)")
        return str(cell_dir)
    meta = {"study": cfg.study, "cell": cell, "status": STATUS_RUNNING, "seeds": [], "diverged": {}}
    started = time.time()
    try:
        if failure is not None:
            raise failure
        write_yaml(cell_dir / CONFIG, plain)
        validate(cfg)
        meta["seeds"] = seeds_of(cfg)
        dataset = _dataset(OmegaConf.to_yaml(cfg.data, resolve=True))
        validate_against_data(cfg, len(dataset.y_train))
        meta.update(provenance())
        write_json(cell_dir / META, meta)
        result = _train(cfg, cell, meta["seeds"], dataset, console)
        tables, diverged = _tables(result, cfg.model.depth)
        for name, frame in tables.items():
            write_table(cell_dir / name, frame)
        meta.update(status=STATUS_COMPLETE, diverged=diverged, wall_s=round(time.time() - started, 2))
        write_json(cell_dir / META, meta)
        if diverged:
            console.print(f"gradstudy: {cell}: {len(diverged)} seed(s) diverged at steps {diverged}")
    except Exception as err:
        message = str(err) if isinstance(err, ConfigError | MissingDataError) else f"{type(err).__name__}: {err}"
        meta.update(status=STATUS_FAILED, message=message, traceback=traceback.format_exc())
        write_json(cell_dir / META, meta)
        console.print(f"[red]gradstudy: cell {cell} failed: {message}[/red]")
    return str(cell_dir)


register_configs()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def main(cfg: DictConfig) -> str:
    from gradstudy.cache import enable_compile_cache
    from gradstudy.devices import use_host_devices

    use_host_devices()
    logging.getLogger("jax").setLevel(logging.WARNING)
    enable_compile_cache()
    return run_cell(cfg)


if __name__ == "__main__":
    main()
