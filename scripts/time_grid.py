"""Time a whole grid command as a user runs it: ``python scripts/time_grid.py [--runs 5] [--cold]``.

Each run is a fresh process of ``python -m gradstudy.run -m <grid>`` writing into a fresh results
folder, so no cell is skipped. Warm runs share a compile and dataset cache filled by one untimed run
first; cold runs (``--cold``) each start from an empty cache. Prints the median wall time with its
range and the whole command's rate in model-steps per second (cells x seeds x steps / wall), to set
beside ``scripts/benchmark.py``'s engine rate; ``--efficiency`` times that engine between the runs
and prints the whole command's rate over it.

``--floor`` times, in this process and after a warm-up, only the compute of the grid: each group of
cells that shares a program (``gradstudy.cells.grouping``) trained by ``Engine.run``, statistics and
evaluations included. Their sum is what no whole command can beat on this machine; over the engine's
rate it bounds the efficiency any whole command can reach.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_GRID = ["init=xavier,he", "act=relu,elu"]


def run_once(grid: list[str], cache: Path, results: Path) -> float:
    env = {**os.environ, "GRADSTUDY_CACHE_DIR": str(cache), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradstudy.run",
            "-m",
            *grid,
            f"results_dir={results}",
            "hydra.sweep.dir=" + str(results / "multirun"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the grid failed:\n{done.stderr[-3000:]}")
    return wall


def model_steps(grid: list[str], seeds: int, steps: int) -> int:
    cells = 1
    for override in grid:
        cells *= len(override.split("=", 1)[1].split(","))
    return cells * seeds * steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Time a whole grid command as a user runs it, each run a fresh process writing a fresh results "
        "folder; prints the median wall time with its range and the model-steps per second.",
    )
    parser.add_argument("--runs", type=int, default=5, help="How many timed runs (default 5).")
    parser.add_argument("--cold", action="store_true", help="Start every run from an empty compile and dataset cache.")
    parser.add_argument(
        "--seeds", type=int, default=5, help="The grid's train.seeds (default: the default config's 5)."
    )
    parser.add_argument(
        "--steps", type=int, default=1000, help="The grid's train.steps (default: the default config's 1000)."
    )
    parser.add_argument(
        "grid", nargs="*", default=DEFAULT_GRID, help="The sweep's overrides (default: the quickstart grid)."
    )
    parser.add_argument(
        "--efficiency",
        action="store_true",
        help="Also time scripts/benchmark.py's single-cell engine between the runs, and print the ratio.",
    )
    parser.add_argument(
        "--floor", action="store_true", help="Time only the grid's training compute, in this process, and stop."
    )
    args = parser.parse_args()
    if args.floor:
        compute_floor(args.grid, args.runs)
        return
    engine = engine_timer() if args.efficiency else None
    engine_rates = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shared = root / "cache"
        if not args.cold:
            run_once(args.grid, shared, root / "warmup")
        walls = []
        for i in range(args.runs):
            cache = root / f"cache{i}" if args.cold else shared
            walls.append(run_once(args.grid, cache, root / f"results{i}"))
            print(f"run {i + 1}: {walls[-1]:.1f} s", flush=True)
            if engine is not None:
                engine_rates.extend(engine() for _ in range(3))
    median = statistics.median(walls)
    rate = model_steps(args.grid, args.seeds, args.steps) / median
    print(
        f"{'cold' if args.cold else 'warm'} cache, {args.runs} runs of python -m gradstudy.run -m {' '.join(args.grid)}: "
        f"median {median:.1f} s [{min(walls):.1f}, {max(walls):.1f}]; {rate:,.0f} model-steps/s for the whole command"
    )
    if engine_rates:
        engine_rate = statistics.median(engine_rates)
        ratios = [model_steps(args.grid, args.seeds, args.steps) / w / engine_rate for w in walls]
        print(
            f"single-cell engine (scripts/benchmark.py: 10 x 100, batch 64, 10 seeds, 200 steps): median "
            f"{engine_rate:,.0f} model-steps/s over {len(engine_rates)} timings between the runs; whole-command "
            f"efficiency median {statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"
        )


def compute_floor(grid: list[str], reps: int) -> None:
    """Print the median over ``reps`` timings of each program group's ``Engine.run`` and their sum."""
    import itertools

    import benchmark

    from gradstudy.cells.config import resolved, seeds_of
    from gradstudy.cells.grouping import program_key
    from gradstudy.engine.program import Engine
    from gradstudy.inputs.data import load_dataset

    values = [[f"{key}={v}" for v in choices.split(",")] for key, choices in (o.split("=", 1) for o in grid)]
    cells = [benchmark.compose_overrides(list(combo)) for combo in itertools.product(*values)]
    groups: dict[str, list] = {}
    for cfg in cells:
        groups.setdefault(program_key(resolved(cfg)), []).append(cfg)
    total = 0.0
    for members in groups.values():
        engine = Engine(members[0], load_dataset(members[0].data))
        seeds = [s for cfg in members for s in seeds_of(cfg)]

        def run(engine=engine, members=members, seeds=seeds) -> float:
            state = engine.init_runs([(cfg, seeds_of(cfg)) for cfg in members])
            start = time.perf_counter()
            engine.run(state, seeds)
            return time.perf_counter() - start

        run()  # compile
        median = statistics.median(run() for _ in range(reps))
        total += median
        print(f"{len(members)} cells, {len(seeds)} runs ({members[0].act.name}): {median:.2f} s", flush=True)
    print(
        f"compute floor of {len(cells)} cells in {len(groups)} programs: {total:.2f} s (median of {reps} per program)"
    )


def engine_timer():
    """A function that times one call of ``scripts/benchmark.py``'s engine (no statistics) and
    returns its model-steps per second, in this process, between the grid's runs."""
    import benchmark

    bench_args = argparse.Namespace(depth=10, width=100, batch=64, seeds=10, steps=200)
    dataset = benchmark.load_dataset(benchmark._config(bench_args).data)
    run = benchmark.engine_runner(bench_args, dataset, "stats=none")
    run()  # compile

    def timed() -> float:
        start = time.perf_counter()
        run()
        return bench_args.seeds * bench_args.steps / (time.perf_counter() - start)

    return timed


if __name__ == "__main__":
    main()
