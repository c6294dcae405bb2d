"""The compiled training program of one group of runs: init, the scanned chunk, the run loop.

A *run* is one seed of one cell. Cells whose programs have the same shape (``gradstudy.cells.grouping``)
train as one program, their runs on one leading "runs" axis: what differs between them is data on
that axis, never part of the program. Each run's initial parameters are made outside ``jit`` by its
own cell's initializer; its learning rate, momentum and clip norm live in its optimizer state
(``gradstudy.engine.optim``); its minibatches are drawn in numpy from its seed. A cell trained alone is a
group of one.

Shape of the loop (one ``jit`` per chunk length)::

    chunk = (in the first chunk only) evaluate every run on the full train and test sets,
            scan over groups of k = stats.every steps (
                measured step   (vmap over runs: update + per-layer statistics),
                scan over k-1 plain steps (vmap over runs: update only)),
            then evaluate every run on the full train and test sets

The step counter lives outside the vmap. Chunks of ``train.eval_every`` steps come back to Python
for progress and writing. The update, the divergence mask and the statistics are ``gradstudy.engine.step``
and ``gradstudy.engine.measure``; evaluation is ``gradstudy.engine.evaluate``.

When JAX has several devices (``gradstudy.engine.devices.use_host_devices`` gives one per CPU core), the
runs axis is sharded across them. The runs are padded by repeating the last run until every device
holds the same whole number of groups; the copies are dropped from every output, and nothing is
padded when the runs divide evenly.

**Run independence is exact, and that is an empirical property of this XLA CPU build.** A run's
numbers (curves, per-step losses, layer statistics, histograms) are bitwise the same alone, among
other runs of its cell or of other cells, and on one or two host devices, because:

* every run is computed in a vmapped group of exactly ``RUN_GROUP`` runs, one group after another
  (``lax.map``) on each device: XLA compiles a reduction under ``vmap`` differently depending on the
  batch size (measured: the same row summed in a different order in a batch of 2 and of 4), so the
  group size must never change with the number of runs or devices;
* evaluation runs each run by itself (``lax.map``), at one fixed block shape, never as one matmul
  whose width grows with the number of runs;
* per-example sums run in a fixed order: each block at a fixed shape, then block after block;
* Adam's bias correction and the global-norm clipping multiply by reciprocals (``gradstudy.engine.optim``):
  XLA compiles ``array / scalar`` differently on one and on several devices.

On 2 CPU cores ``RUN_GROUP = 1`` is as fast as one vmap over a device's runs at width 100 and about
25% slower at width 512 (``scripts/benchmark.py`` measures it against ``run_group`` = a device's
runs). ``tests/test_seed_independence.py`` is what guards all this; rerun it after upgrading jax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from omegaconf import OmegaConf

from gradstudy.cells.spectrum import spectrum_method, spectrum_steps
from gradstudy.cells.statistics import (
    JACOBIAN_EXAMPLES,
    SHATTER_POINTS,
    HistBins,
    Schedule,
    Tier,
    hist_bins,
    recorded,
)
from gradstudy.engine.evaluate import eval_sets, evaluate_run, set_sizes
from gradstudy.engine.measure import hist_counter, init_statistics, layer_statistics, line_through_data
from gradstudy.engine.model import build_model, initial_constants
from gradstudy.engine.optim import make_optimizer
from gradstudy.engine.spectrum import spectrum_program
from gradstudy.engine.step import TrainState, keep_finite, make_step
from gradstudy.inputs.data import Dataset
from gradstudy.inputs.inits import initial_variables
from gradstudy.schema import HIST_QUANTITIES, HIST_REGIONS

#: Every run is computed in a vmapped group of exactly this many runs (see the module docstring).
#: One: on CPU a group of one costs nothing at width 100 and pads nothing.
RUN_GROUP = 1
#: The name of the mesh axis that the runs are split along.
RUNS = "runs"
#: One run's variable shapes per model structure, shared by every engine of the process.
_VARIABLE_SHAPES: dict[str, Any] = {}


@dataclass(frozen=True)
class TrainResult:
    seeds: list[int]
    eval_steps: np.ndarray  # (n_eval,)
    evals: np.ndarray  # (n_eval, n_runs, len(EVAL_METRICS))
    stats_steps: np.ndarray  # (n_stats,)
    stats: np.ndarray  # (n_stats, n_runs, depth, len(stat_names))
    stat_names: tuple[str, ...]
    losses: np.ndarray  # (train.steps, n_runs): the minibatch loss of every step
    hist_steps: np.ndarray  # (n_hist,)
    #: quantity -> (n_hist, n_runs, depth, bins.n_bins + len(HIST_REGIONS)) counts
    hist_counts: dict[str, np.ndarray]
    hist_bins: dict[str, HistBins]
    diverged_at: np.ndarray  # (n_runs,), -1 where the run never diverged
    state: TrainState  # the final state (a diverged run's last finite one), as numpy arrays
    init_stats: np.ndarray  # (n_runs, depth, len(init_stat_names)), measured once at step 0
    init_stat_names: tuple[str, ...]
    #: ``stats.extra=[jacobian_spectrum]`` (``cells.spectrum``): its method (None: not measured),
    #: steps, (n_spec, n_runs, depth, len(SPECTRUM_STATS)) moments and (n_spec, n_runs, depth, bins
    #: + regions) counts of the squared singular values (no bins for an estimate).
    spectrum_method: str | None = None
    spectrum_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    spectrum: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0)))
    spectrum_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.int32))

    def runs(self, start: int, stop: int) -> TrainResult:
        """The result of runs [start, stop) alone: one cell's seeds out of a group's."""
        cut = slice(start, stop)
        return replace(
            self,
            seeds=self.seeds[cut],
            evals=self.evals[:, cut],
            stats=self.stats[:, cut],
            losses=self.losses[:, cut],
            hist_counts={q: counts[:, cut] for q, counts in self.hist_counts.items()},
            diverged_at=self.diverged_at[cut],
            state=jax.tree.map(lambda leaf: leaf[cut], self.state),
            init_stats=self.init_stats[cut],
            spectrum=self.spectrum[:, cut],
            spectrum_counts=self.spectrum_counts[:, cut],
        )

    def split(self, sizes: Sequence[int]) -> list[TrainResult]:
        """One result per cell of a group whose cells have ``sizes`` runs each, in order."""
        edges = np.cumsum([0, *sizes])
        assert edges[-1] == len(self.seeds), "the sizes must cover every run"
        return [self.runs(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def batch_indices(seed: int, n_train: int, batch_size: int, start: int, length: int) -> np.ndarray:
    """Minibatch indices for steps [start, start+length) of one seed: shape (length, batch_size).

    Each epoch is a fresh permutation drawn from (seed, epoch) alone, cut into n_train // batch_size
    minibatches (the remainder is left out of that epoch).
    """
    per_epoch = n_train // batch_size
    steps = np.arange(start, start + length)
    epochs, positions = np.divmod(steps, per_epoch)
    out = np.empty((length, batch_size), np.int32)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_train)[: per_epoch * batch_size]
        rows = epochs == epoch
        out[rows] = perm.reshape(per_epoch, batch_size)[positions[rows]]
    return out


class Engine:
    """The compiled programs of one program shape (a config and a dataset), for any set of runs of
    the cells that share it. ``cfg`` is any of those cells' configs: only what fixes the program's
    shape is read from it, plus its initializer and optimizer values for ``init(seeds)``."""

    def __init__(self, cfg: Any, dataset: Dataset, devices: list[jax.Device] | None = None, run_group: int = RUN_GROUP):
        self.cfg = cfg
        self.depth = cfg.model.depth
        self.steps = cfg.train.steps
        self.eval_every = cfg.train.eval_every
        self.batch_size = cfg.train.batch_size
        tier, extra, units = Tier(cfg.stats.tier), tuple(cfg.stats.extra), cfg.stats.units
        model = cfg.model.get("name", "mlp")
        step_stats, init_stats = recorded(tier, extra, model=model), recorded(tier, extra, Schedule.INIT, model)
        self.stats_every = None if tier is Tier.NONE else cfg.stats.every
        self.stat_names = tuple(name for s in step_stats for name in s.names(units))
        self.init_stat_names = tuple(s.name for s in init_stats)
        self.hist_steps = sorted(set(cfg.stats.hist_steps)) if tier is Tier.FULL else []
        self.hist_bins = {
            q: hist_bins(q, cfg.act.name, cfg.stats.hist_bins, cfg.stats.hist_range) for q in HIST_QUANTITIES
        }
        self.n_classes = dataset.n_classes
        self.model = build_model(cfg, dataset.n_classes)
        self.n_train = len(dataset.y_train)
        self._example = np.asarray(dataset.x_train[:1])  # the input that fixes the parameter shapes at init
        self.x_train = jnp.asarray(dataset.x_train)
        self.y_train = jnp.asarray(dataset.y_train)
        self._mesh = Mesh(np.array(devices or jax.devices()), (RUNS,))
        self.run_group = run_group
        self.eval_sets = jax.device_put(eval_sets(dataset), NamedSharding(self._mesh, P()))
        self._eval_sizes = set_sizes(dataset)
        # The template optimizer: runs read their hyperparameters from their own optimizer state.
        optimizer = make_optimizer(cfg.optim, cfg.train.steps)
        self.plain_step = make_step(self.model, optimizer, self.x_train, self.y_train)
        line = None
        if any(s.name == "shattering" for s in step_stats):
            line = (self.model, *line_through_data(dataset.x_test, dataset.y_test, SHATTER_POINTS))
        measure = layer_statistics(step_stats, cfg.act.name, units, line)
        self.measured_step = make_step(self.model, optimizer, self.x_train, self.y_train, measure)
        self._run_hist_counts = hist_counter(self.model, self.hist_bins, self.x_train, self.y_train)
        self._run_init_stats = init_statistics(self.model, init_stats, cfg.act.name, cfg.act.alpha)
        runs, shared = P(RUNS), P()
        self._chunk = self._per_device(self._chunk_fn, (runs, shared, shared, runs, shared), donate=True)
        self._hist_counts = self._per_device(self._hist_counts_fn, (runs, runs))
        self._init_stats = jax.jit(lambda state, x: jax.lax.map(lambda run: self._run_init_stats(run, x), state))
        self.spectrum_method, self.spectrum_steps = None, []
        if recorded(tier, extra, Schedule.SPECTRUM, model):
            units = int(np.prod(self.model.hidden_shape(1)[1:]))
            self.spectrum_method = spectrum_method(self.depth, dataset.n_features, units)
            self.spectrum_steps = spectrum_steps(self.steps, self.hist_steps)
            self._spectrum_inputs = self.x_train[: cfg.stats.jacobian_inputs]
            n_examples = self._spectrum_inputs.shape[0]
            run_spectrum = spectrum_program(self.model, self.spectrum_method, dataset.n_features, n_examples)
            self._spectrum = jax.jit(lambda state, x: jax.lax.map(lambda run: run_spectrum(run, x), state))

    # ----- runs across devices ----------------------------------------------------------------
    def padded(self, seeds: Sequence[int]) -> list[int]:
        """``seeds`` (one per run) plus copies of the last, so that every device holds the same whole
        number of ``run_group``-run groups."""
        return list(seeds) + [seeds[-1]] * self._padding(len(seeds))

    def _padding(self, n_runs: int) -> int:
        per_step = self.run_group * self._mesh.size
        return -n_runs % per_step

    def _per_device(self, fn: Callable, in_specs: tuple, donate: bool = False) -> Callable:
        """``jit`` of ``fn`` run by each device on its own runs (inputs and outputs runs-first);
        ``donate`` hands the first argument's buffers (the training state) to the outputs."""
        mapped = jax.shard_map(fn, mesh=self._mesh, in_specs=in_specs, out_specs=P(RUNS), check_vma=False)
        return jax.jit(mapped, donate_argnums=(0,) if donate else ())

    def _on_devices(self, tree: Any, run_axis: int = 0) -> Any:
        """Place ``tree`` with its runs axis split across the devices."""
        return jax.device_put(tree, NamedSharding(self._mesh, P(*([None] * run_axis), RUNS)))

    # ----- state ------------------------------------------------------------------------------
    def init(self, seeds: Sequence[int]) -> TrainState:
        """The initial state of this engine's own cell for ``seeds`` (padded); see ``init_runs``."""
        return self.init_runs([(self.cfg, seeds)])

    def init_runs(self, cells: Sequence[tuple[Any, Sequence[int]]]) -> TrainState:
        """The initial state of every run of ``cells`` ((config, seeds) of cells sharing this program),
        in order, padded with copies of the last run and placed on the devices. Made outside ``jit``."""
        # Joined and padded in numpy: each eager jax operation would be one more program to load.
        states = [jax.tree.map(np.asarray, self._init_cell(cfg, seeds)) for cfg, seeds in cells]
        state = jax.tree.map(lambda *leaves: np.concatenate(leaves), *states)
        pad = self._padding(state.diverged_at.shape[0])
        if pad:
            state = jax.tree.map(lambda leaf: np.concatenate([leaf, np.repeat(leaf[-1:], pad, axis=0)]), state)
        return self._on_devices(state)

    def abstract_state(self, n_runs: int) -> TrainState:
        """The shapes, dtypes and placement of ``init_runs``'s state for ``n_runs`` runs (padded),
        allocating nothing: what the memory preflight lowers the programs with."""
        variables = self._variable_shapes()
        params = variables["params"]
        one = TrainState(
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=jax.eval_shape(make_optimizer(self.cfg.optim, self.cfg.train.steps).init, params),
            diverged_at=jax.ShapeDtypeStruct((), np.int32),
        )
        n = n_runs + self._padding(n_runs)
        sharding = NamedSharding(self._mesh, P(RUNS))
        return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((n, *leaf.shape), leaf.dtype, sharding=sharding), one)

    def _init_cell(self, cfg: Any, seeds: Sequence[int]) -> TrainState:
        """One cell's runs: its own initializer's values for each seed (``inputs.inits.initial_variables``,
        drawn in numpy) and its own optimizer hyperparameters."""
        optimizer = make_optimizer(cfg.optim, cfg.train.steps)
        shapes = self._variable_shapes()
        constants = initial_constants(cfg)
        each = [initial_variables(cfg.init, shapes, s, constants) for s in seeds]
        variables = jax.tree.map(lambda *leaves: np.stack(leaves), *each)
        params = variables["params"]
        return TrainState(
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=jax.vmap(optimizer.init)(params),
            diverged_at=np.full((len(seeds),), -1, np.int32),
        )

    def _variable_shapes(self) -> dict[str, Any]:
        """The shapes and dtypes of one run's variables, from the model's ``init`` traced once per
        process and structure (``model``, ``norm`` and ``act`` nodes, input and class count), never compiled."""
        key = (
            "\n".join(
                [
                    *(OmegaConf.to_yaml(self.cfg[node], resolve=True) for node in ("model", "norm", "act")),
                    str(self._example.shape),
                ]
            )
            + f"\n{self.n_classes}"
        )
        if key not in _VARIABLE_SHAPES:
            _VARIABLE_SHAPES[key] = jax.eval_shape(
                lambda: self.model.init(jax.random.PRNGKey(0), self._example, train=False)
            )
        return _VARIABLE_SHAPES[key]

    # ----- all runs, one chunk ----------------------------------------------------------------
    def _chunk_fn(self, state: TrainState, step0, first, idx, sets):
        """One device's runs: when ``first``, every run evaluated by itself before training (the
        step-0 evaluation, in this program rather than one of its own: one program fewer to trace,
        compile and load); then training group after group (``_group_chunk`` with the runs axis
        first: idx (n_runs, length, batch)), then every run evaluated by itself. Returns (state,
        losses (n_runs, length), statistics (n_runs, n_measured, depth, n_stats), summed metrics
        before (zeros unless ``first``) and after (n_runs, 4))."""

        def run_first(state, idx):
            state, losses, stats = self._group_chunk(state, step0, jnp.swapaxes(idx, 0, 1))
            return state, jnp.swapaxes(losses, 0, 1), jnp.swapaxes(stats, 0, 1)

        evaluate = partial(self._evaluate_fn, sets=sets)
        nothing = jax.eval_shape(evaluate, state)
        before = jax.lax.cond(first, evaluate, lambda _: jnp.zeros(nothing.shape, nothing.dtype), state)
        state, losses, stats = in_groups(run_first, self.run_group, state, idx)
        return state, losses, stats, before, evaluate(state)

    def _group_chunk(self, state: TrainState, step0, idx):
        """Run ``idx.shape[0]`` steps from ``step0`` for one group of runs; idx is (length, n_runs, batch).

        Returns (state, per-step losses (length, n_runs), statistics (n_measured, n_runs, depth, n_stats)).
        """
        plain = jax.vmap(self.plain_step, in_axes=(0, None, 0))
        measured = jax.vmap(self.measured_step, in_axes=(0, None, 0))

        def plain_body(carry, idx_t):
            state, step = carry
            new, keep, loss, _ = plain(state, step, idx_t)
            return (keep_finite(state, new, keep), step + 1), loss

        def group(carry, idx_g):
            state, step = carry
            new, keep, loss0, stats = measured(state, step, idx_g[0])
            state = keep_finite(state, new, keep)
            (state, step), losses = jax.lax.scan(plain_body, (state, step + 1), idx_g[1:])
            return (state, step), (jnp.concatenate([loss0[None], losses]), stats)

        length, n_runs = idx.shape[:2]
        carry = (state, jnp.asarray(step0, jnp.int32))
        empty_stats = jnp.zeros((0, n_runs, self.depth, len(self.stat_names)), self.x_train.dtype)
        if self.stats_every is None:
            carry, losses = jax.lax.scan(plain_body, carry, idx)
            return carry[0], losses, empty_stats
        k = self.stats_every
        n_full, rem = divmod(length, k)
        losses, stats = [], [empty_stats]
        if n_full:
            groups = idx[: n_full * k].reshape(n_full, k, *idx.shape[1:])
            carry, (group_losses, group_stats) = jax.lax.scan(group, carry, groups)
            losses.append(group_losses.reshape(n_full * k, n_runs))
            stats.append(group_stats)
        if rem:
            carry, (tail_losses, tail_stats) = group(carry, idx[n_full * k :])
            losses.append(tail_losses)
            stats.append(tail_stats[None])
        return carry[0], jnp.concatenate(losses), jnp.concatenate(stats)

    def train_chunk(
        self, state: TrainState, seeds: Sequence[int], step: int, length: int, evaluate_first: bool = False
    ) -> tuple[TrainState, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Steps [step, step+length) of every run in one compiled call, then their evaluation.

        ``seeds`` holds each run's seed. ``state`` is consumed (its buffers are donated). ``step``
        must be a multiple of ``stats.every`` so that measured steps land on its multiples. Returns
        the state, per-step losses (length, n_runs), statistics (n_measured, n_runs, depth, n_stats),
        and the evaluation (n_runs, 4) in ``EVAL_METRICS`` order before the chunk (when
        ``evaluate_first``, else None) and after it, all padded runs included.
        """
        idx = np.stack([batch_indices(s, self.n_train, self.batch_size, step, length) for s in self.padded(seeds)])
        state, losses, stats, before, after = self._chunk(
            state, step, evaluate_first, self._on_devices(idx), self.eval_sets
        )
        return (
            state,
            np.swapaxes(np.asarray(losses), 0, 1),
            np.swapaxes(np.asarray(stats), 0, 1),
            self._means(before) if evaluate_first else None,
            self._means(after),
        )

    def _hist_counts_fn(self, state: TrainState, idx):
        return in_groups(jax.vmap(self._run_hist_counts), self.run_group, state, idx)

    def hist_counts(self, state: TrainState, seeds: Sequence[int], step: int) -> tuple[jax.Array, ...]:
        """Per-layer histograms of h_l and delta_l on the minibatch that step ``step`` trains on, no
        update applied: one (n_runs, depth, n_bins + len(HIST_REGIONS)) array per ``HIST_QUANTITIES``."""
        idx = np.stack([batch_indices(s, self.n_train, self.batch_size, step, 1)[0] for s in self.padded(seeds)])
        return self._hist_counts(state, self._on_devices(idx))

    def init_stats(self, state: TrainState) -> np.ndarray:
        """The step-0 statistics asked for in ``stats.extra``: (n_runs, depth, len(init_stat_names))."""
        if not self.init_stat_names:
            return np.zeros((state.diverged_at.shape[0], self.depth, 0))
        # On one device: XLA's CPU eigensolver can hang when its input is split across host devices.
        single = jax.device_put(state, jax.devices()[0])
        return np.asarray(self._init_stats(single, self.x_train[:JACOBIAN_EXAMPLES]))

    def spectrum(self, state: TrainState) -> tuple[np.ndarray, np.ndarray]:
        """The Jacobian spectrum of every run (``cells.spectrum``): moments (n_runs, depth, 3) and
        counts (n_runs, depth, bins + regions, or 0 for an estimate)."""
        single = jax.device_put(state, jax.devices()[0])  # as init_stats: the eigensolver on one device
        moments, counts = self._spectrum(single, self._spectrum_inputs)
        return np.asarray(moments), np.asarray(counts)

    # ----- evaluation -------------------------------------------------------------------------
    def _evaluate_fn(self, state: TrainState, sets) -> jax.Array:
        """``evaluate_run`` of each run on this device, one run at a time."""
        return jax.lax.map(lambda run: evaluate_run(self.model, run, sets), state)

    def _means(self, sums: jax.Array) -> np.ndarray:
        """Mean loss and accuracy of every run on the full train and test sets from their sums: (n_runs, 4), in ``EVAL_METRICS`` order."""
        return np.asarray(sums, np.float64) / self._eval_sizes

    # ----- the whole run ----------------------------------------------------------------------
    def run(
        self,
        state: TrainState,
        seeds: Sequence[int],
        on_chunk: Callable[[int, float], None] | None = None,
    ) -> TrainResult:
        """Train ``state`` (from ``init`` or ``init_runs``; consumed) for ``train.steps`` steps.

        ``seeds`` holds each run's seed. ``on_chunk(step, mean_loss)`` is called after each chunk
        with the number of steps done and the mean minibatch loss of the chunk over the runs still
        finite.
        """
        eval_steps, evals, stats, losses, hists = [0], [], [], [], []
        init_stats = self.init_stats(state)
        spectra = [self.spectrum(state)] if 0 in self.spectrum_steps else []
        if 0 in self.hist_steps:
            hists.append(self.hist_counts(state, seeds, 0))
        step = 0
        while step < self.steps:
            length = min(self.eval_every, self.steps - step)
            state, chunk_losses, chunk_stats, before, after = self.train_chunk(
                state, seeds, step, length, evaluate_first=step == 0
            )
            step += length
            eval_steps.append(step)
            evals.extend([after] if before is None else [before, after])
            stats.append(np.asarray(chunk_stats))
            losses.append(np.asarray(chunk_losses))
            if step in self.hist_steps:
                hists.append(self.hist_counts(state, seeds, step))
            if step in self.spectrum_steps:
                spectra.append(self.spectrum(state))
            if on_chunk is not None:
                finite = losses[-1][:, np.isfinite(losses[-1]).all(axis=0)]
                on_chunk(step, float(finite.mean()) if finite.size else float("nan"))
        every = self.stats_every
        n = len(seeds)  # drop the padding runs
        hist_counts = {
            q: np.stack([np.asarray(h[i])[:n] for h in hists])
            if hists
            else np.zeros((0, n, self.depth, self.hist_bins[q].n_bins + len(HIST_REGIONS)), np.int32)
            for i, q in enumerate(HIST_QUANTITIES)
        }
        return TrainResult(
            seeds=list(seeds),
            eval_steps=np.asarray(eval_steps),
            evals=np.stack(evals)[:, :n],
            stats_steps=np.arange(0, self.steps, every) if every else np.zeros(0, np.int64),
            stats=np.concatenate(stats)[:, :n],
            stat_names=self.stat_names,
            losses=np.concatenate(losses)[:, :n],
            hist_steps=np.asarray([s for s in self.hist_steps if s in eval_steps], np.int64),
            hist_counts=hist_counts,
            hist_bins=self.hist_bins,
            diverged_at=np.asarray(state.diverged_at)[:n],
            state=jax.tree.map(lambda leaf: np.asarray(leaf)[:n], state),
            init_stats=init_stats[:n],
            init_stat_names=self.init_stat_names,
            **self._spectra(spectra, n),
        )

    def _spectra(self, spectra: list[tuple[np.ndarray, np.ndarray]], n: int) -> dict[str, Any]:
        """The ``TrainResult`` fields of the spectra measured during ``run``, for its first n runs."""
        if not spectra:
            return {}
        return {
            "spectrum_method": self.spectrum_method,
            "spectrum_steps": np.asarray(self.spectrum_steps, np.int64),
            "spectrum": np.stack([m[:n] for m, _ in spectra]),
            "spectrum_counts": np.stack([c[:n] for _, c in spectra]),
        }


def in_groups(fn: Callable, size: int, *args: Any) -> Any:
    """``fn`` (vmapped over a leading axis of ``size`` runs) applied to one group of runs at a
    time, so every run is computed at the same shapes however many runs a device holds."""

    def split(leaf):
        return leaf.reshape(leaf.shape[0] // size, size, *leaf.shape[1:])

    out = jax.lax.map(lambda group: fn(*group), jax.tree.map(split, args))
    return jax.tree.map(lambda leaf: leaf.reshape(leaf.shape[0] * leaf.shape[1], *leaf.shape[2:]), out)
