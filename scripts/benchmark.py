"""Benchmark: the engine (scan over steps, vmap over seeds) against a naive per-seed Python loop.

Everything runs in one process, interleaved, after a warm-up, and only ratios are reported:

* engine / naive: model-steps per second of the engine (no statistics) over a jitted single-seed
  step called in a Python loop, one seed after another;
* the overhead of the ``scalars`` statistics at ``stats.every=10`` and ``=1``, and of the ``full``
  tier's percentiles at ``stats.every=10``, over no statistics (histograms are taken between
  chunks, at a few chosen steps, so they are not part of the per-step cost);
* the engine's arithmetic rate as a fraction of this machine's measured float32 matmul rate (a chunk
  ends with every seed's evaluation on the full train and test sets, counted in its arithmetic);
* a per-run activation switch (ReLU or ELU chosen by data, what one program for cells of two
  activations needs) against the mean of the two activations' own programs;
* the price of exact seed independence: the engine (every seed in its own ``RUN_GROUP``-seed group,
  one group after another) against one vmap over all of a device's seeds, which is not bitwise
  independent of the other seeds (``gradstudy.engine.program``);
* the residual MLP (``model=resmlp``, ``--res-blocks`` blocks of 2 dense layers: as many
  width x width layers as the MLP) on the same measures: engine over naive loop, statistics
  overhead, share of the matmul peak beside the MLP's.
* the CNN (``model=cnn``, ``--cnn-depth`` convolutions of ``--cnn-channels`` channels, 3x3, on
  8x8 digits, batch 32, a quarter of ``--steps``): the engine (every seed in its own group: a loop
  of plain convolutions) over the naive loop and over one vmap of a device's seeds (batched
  convolutions), and its arithmetic against this machine's measured rate of a plain ``lax.conv`` of
  the same shape.

Each ratio is the median over ``--reps`` repetitions, with the min-max spread.

    python scripts/benchmark.py                # 10 x 100, batch 64, 10 seeds, SGD (the issue's targets)
    python scripts/benchmark.py --width 512 --seeds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from gradstudy.engine.devices import use_host_devices

use_host_devices()

import jax
import jax.numpy as jnp
import numpy as np
from hydra import compose, initialize_config_dir

from gradstudy.cells.config import register_configs
from gradstudy.cells.options import ACTIVATIONS, Activation
from gradstudy.engine.activations import FUNCTIONS
from gradstudy.engine.evaluate import EVAL_BLOCK, eval_blocks
from gradstudy.engine.program import RUN_GROUP, Engine, batch_indices
from gradstudy.engine.step import keep_finite
from gradstudy.inputs.data import load_dataset
from gradstudy.run import conf_dir

#: A per-run activation switch between ReLU and ELU, as a mixed group would compile it: under vmap
#: ``lax.switch`` on a per-run index becomes a select of every branch, which this computes (the
#: condition is data XLA cannot fold).
SWITCH = "relu_or_elu"
ACTIVATIONS[SWITCH] = Activation(has_dead_units=True)
FUNCTIONS[SWITCH] = lambda z, a: jnp.where(z > 1e30, jax.nn.elu(z), jax.nn.relu(z))


def compose_overrides(overrides: list[str]):
    """The config a run with these command-line overrides gets."""
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


#: The residual MLP's overrides (its depth is ``--res-blocks``; ``_config`` reads the marker).
RESIDUAL = ("model=resmlp", "model.branch_layers=2")


def _config(args: argparse.Namespace, *overrides: str):
    depth = args.res_blocks if "model=resmlp" in overrides else args.depth
    batch, steps = args.batch, args.steps
    if "model=cnn" in overrides:
        depth, batch, steps = args.cnn_depth, CNN_BATCH, cnn_steps(args)
    return compose_overrides(
        [
            f"model.depth={depth}",
            f"model.width={args.width}",
            f"train.batch_size={batch}",
            f"train.seeds={args.seeds}",
            f"train.steps={steps}",
            f"train.eval_every={steps}",
            "optim=sgd",
            *overrides,
        ]
    )


#: The CNN's rows: 3x3 convolutions on scikit-learn's 8x8 digits at batch 32, a quarter of the steps.
CNN_BATCH = 32


def cnn_overrides(args: argparse.Namespace) -> tuple[str, ...]:
    return ("model=cnn", f"model.channels={args.cnn_channels}", "data=digits", "act=tanh")


def cnn_steps(args: argparse.Namespace) -> int:
    return max(1, args.steps // 4)


def conv_gflops(args: argparse.Namespace, reps: int = 20) -> float:
    """This machine's measured float32 rate (GFLOP/s) of one plain 3x3 ``lax.conv`` of the CNN's
    hidden shape (a minibatch of 8x8 maps, ``--cnn-channels`` in and out), best of a few timings."""
    c = args.cnn_channels
    x, k = jnp.ones((CNN_BATCH, 8, 8, c), jnp.float32), jnp.ones((3, 3, c, c), jnp.float32)
    f = jax.jit(
        lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )
    f(x, k).block_until_ready()
    best = np.inf
    for _ in range(reps):
        start = time.perf_counter()
        f(x, k).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * CNN_BATCH * 64 * 9 * c * c / best / 1e9


def cnn_flops_per_chunk(args: argparse.Namespace, dataset) -> float:
    """One seed's CNN chunk, as ``flops_per_chunk`` counts it, with a convolution's multiply-adds per
    example (64 positions x 9 taps x c_in x c_out) in place of the weights."""
    c = args.cnn_channels
    per_example = 64 * 9 * (c + (args.cnn_depth - 1) * c * c) + c * dataset.n_classes
    n_eval = len(dataset.y_train) + len(dataset.y_test)
    return 6.0 * CNN_BATCH * per_example * cnn_steps(args) + 2.0 * n_eval * per_example


def engine_runner(args: argparse.Namespace, dataset, *overrides: str, run_group: int = RUN_GROUP) -> Callable[[], None]:
    """One call trains ``args.steps`` steps of every seed in one compiled chunk."""
    engine = Engine(_config(args, *overrides), dataset, run_group=run_group)
    seeds = list(range(args.seeds))
    state = engine.init(seeds)

    def run() -> None:
        nonlocal state  # the chunk consumes (donates) the state it is given
        state, *out = engine.train_chunk(state, seeds, 0, args.steps)
        jax.block_until_ready(out)

    return run


def naive_runner(args: argparse.Namespace, dataset, *overrides: str) -> Callable[[], None]:
    """A jitted single-seed step, called in a Python loop, one seed at a time."""
    engine = Engine(_config(args, "stats=none", *overrides), dataset)
    seeds = list(range(args.seeds))
    stacked = engine.init(seeds)
    states = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(len(seeds))]
    step = jax.jit(lambda state, t, idx: keep_finite(state, *engine.plain_step(state, t, idx)[:2]))
    indices = [jnp.asarray(batch_indices(s, len(dataset.y_train), args.batch, 0, args.steps)) for s in seeds]

    def run() -> None:
        for state, idx in zip(states, indices, strict=True):
            for t in range(args.steps):
                state = step(state, t, idx[t])
            jax.block_until_ready(state)

    return run


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    """This machine's measured float32 matmul rate (GFLOP/s), best of a few timings."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(reps):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _weights(args: argparse.Namespace, n_features: int, n_classes: int, residual: bool = False) -> int:
    square = 2 * args.res_blocks if residual else args.depth - 1
    return n_features * args.width + square * args.width**2 + args.width * n_classes


def flops_per_chunk(args: argparse.Namespace, dataset, residual: bool = False) -> float:
    """One seed's chunk: forward plus backward of every step's minibatch (about 6 flops per weight
    per example), then the forward pass over every (padded) evaluation block of both splits that
    ends it (2 flops per weight per example)."""
    weights = _weights(args, dataset.n_features, dataset.n_classes, residual)
    blocks = sum(
        len(eval_blocks(x, y)[1]) for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test))
    )
    return 6.0 * args.batch * weights * args.steps + 2.0 * blocks * EVAL_BLOCK * weights


#: (label, numerator, denominators): each ratio divides a timing by the mean of the others, rep by rep.
RATIOS = (
    ("engine / naive loop (speed-up)", "naive", ("engine",)),
    ("one vmap per device / engine (time)", "one_vmap", ("engine",)),
    ("stats.every=10 / no stats (time)", "stats_every_10", ("engine",)),
    ("stats.every=1 / no stats (time)", "stats_every_1", ("engine",)),
    ("full, every=10 / no stats (time)", "full_every_10", ("engine",)),
    ("relu|elu switch / mean(relu, elu)", "act_switch", ("engine", "elu")),
    ("resmlp: engine / naive loop", "res_naive", ("res_engine",)),
    ("resmlp: stats.every=10 / no stats", "res_stats_10", ("res_engine",)),
    ("cnn: engine / naive loop", "cnn_naive", ("cnn_engine",)),
    ("cnn: one vmap per device / engine", "cnn_one_vmap", ("cnn_engine",)),
)


def _ratio_line(name: str, ratios: list[float]) -> str:
    return f"{name:<34} median {statistics.median(ratios):6.3f}   spread [{min(ratios):.3f}, {max(ratios):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Time the engine against a naive per-seed loop, the statistics tiers, a per-run activation "
        "switch, one vmap over a device's seeds, and the engine's arithmetic against the measured matmul peak, "
        "all in this process and interleaved; prints ratios only (median and spread over the repetitions).",
    )
    parser.add_argument("--depth", type=int, default=10, help="Hidden layers of the benchmarked MLP (default 10).")
    parser.add_argument("--width", type=int, default=100, help="Units per hidden layer (default 100).")
    parser.add_argument("--batch", type=int, default=64, help="Minibatch size (default 64).")
    parser.add_argument("--seeds", type=int, default=10, help="Seeds trained together (default 10).")
    parser.add_argument("--steps", type=int, default=200, help="Steps per timed call (default 200).")
    parser.add_argument("--reps", type=int, default=7, help="Repetitions of every timing (default 7).")
    parser.add_argument(
        "--res-blocks",
        type=int,
        default=None,
        help="Blocks of the benchmarked residual MLP, 2 dense layers each (default: half of --depth).",
    )
    parser.add_argument("--cnn-depth", type=int, default=8, help="Convolutions of the benchmarked CNN (default 8).")
    parser.add_argument("--cnn-channels", type=int, default=16, help="Channels of the benchmarked CNN (default 16).")
    args = parser.parse_args()
    args.res_blocks = args.res_blocks or max(1, args.depth // 2)

    dataset = load_dataset(_config(args).data)
    cnn = cnn_overrides(args)
    digits = load_dataset(_config(args, *cnn).data)
    variants = {
        "naive": naive_runner(args, dataset),
        "engine": engine_runner(args, dataset, "stats=none"),
        "one_vmap": engine_runner(args, dataset, "stats=none", run_group=-(-args.seeds // jax.device_count())),
        "stats_every_10": engine_runner(args, dataset, "stats=scalars", "stats.every=10"),
        "stats_every_1": engine_runner(args, dataset, "stats=scalars", "stats.every=1"),
        "full_every_10": engine_runner(args, dataset, "stats=full", "stats.every=10", "stats.hist_steps=[]"),
        "elu": engine_runner(args, dataset, "stats=none", "act=elu"),
        "act_switch": engine_runner(args, dataset, "stats=none", f"act.name={SWITCH}"),
        "res_naive": naive_runner(args, dataset, *RESIDUAL),
        "res_engine": engine_runner(args, dataset, "stats=none", *RESIDUAL),
        "res_stats_10": engine_runner(args, dataset, "stats=scalars", "stats.every=10", *RESIDUAL),
        "cnn_naive": naive_runner(args, digits, *cnn),
        "cnn_engine": engine_runner(args, digits, "stats=none", *cnn),
        "cnn_one_vmap": engine_runner(args, digits, "stats=none", *cnn, run_group=-(-args.seeds // jax.device_count())),
    }
    for run in variants.values():  # warm-up: compile and first touch
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    model_steps = args.seeds * args.steps
    peak = matmul_gflops()
    achieved = args.seeds * flops_per_chunk(args, dataset) / statistics.median(times["engine"]) / 1e9
    res_achieved = args.seeds * flops_per_chunk(args, dataset, True) / statistics.median(times["res_engine"]) / 1e9
    print(
        f"{args.depth} hidden x {args.width}, batch {args.batch}, {args.seeds} seeds, {args.steps} steps, "
        f"{args.reps} interleaved reps, device {jax.devices()[0].device_kind}"
    )
    for name, samples in times.items():
        print(
            f"{name:<16} median {statistics.median(samples):7.3f} s  ({model_steps / statistics.median(samples):9.0f} model-steps/s)"
        )
    for label, numerator, denominators in RATIOS:
        samples = zip(times[numerator], *(times[d] for d in denominators), strict=True)
        print(_ratio_line(label, [n / statistics.fmean(ds) for n, *ds in samples]))
    print(f"matmul peak {peak:8.1f} GFLOP/s; engine {achieved:6.1f} GFLOP/s = {achieved / peak:.1%} of peak")
    print(
        f"resmlp ({args.res_blocks} blocks x 2 layers): {res_achieved:6.1f} GFLOP/s = {res_achieved / peak:.1%} of peak, "
        f"{100 * (res_achieved - achieved) / peak:+.1f} points against the MLP"
    )
    conv_peak = conv_gflops(args)
    cnn_achieved = args.seeds * cnn_flops_per_chunk(args, digits) / statistics.median(times["cnn_engine"]) / 1e9
    print(
        f"cnn ({args.cnn_depth} x {args.cnn_channels} channels, 3x3, 8x8 digits, batch {CNN_BATCH}, {cnn_steps(args)} steps): "
        f"plain lax.conv {conv_peak:6.1f} GFLOP/s ({conv_peak / peak:.1%} of the matmul peak); "
        f"engine {cnn_achieved:6.1f} GFLOP/s = {cnn_achieved / conv_peak:.1%} of the conv rate"
    )


if __name__ == "__main__":
    main()
