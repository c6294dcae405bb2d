"""The training program of one grid cell: every seed in one compiled program.

Shape of the loop (one ``jit`` per chunk length)::

    chunk = scan over groups of k = stats.every steps (
                measured step   (vmap over seeds: update + per-layer statistics),
                scan over k-1 plain steps (vmap over seeds: update only))

The step counter lives outside the vmap. Chunks of ``train.eval_every`` steps come back to Python
for evaluation, progress and writing. A seed whose loss, parameters, batch statistics or optimizer
state turn non-finite is frozen from that step on with ``jnp.where``: it keeps its last finite
state, the first bad step is carried in ``diverged_at``, and the other seeds are untouched.

When JAX has several devices (``gradstudy.devices.use_host_devices`` gives one per CPU core), the
seed axis is sharded across them. The seed list is padded by repeating its last seed until every
device holds the same whole number of groups; the copies are dropped from every output.

Seeds enter only through the initial state (made outside ``jit``, one PRNG key per seed) and the
minibatch indices (drawn in numpy from the seed itself), so new seed values never recompile.

**Seed independence is exact, and that is an empirical property of this XLA CPU build.** A seed's
numbers (curves, per-step losses, layer statistics, histograms) are bitwise the same alone, among
other seeds, and on one or two host devices, because:

* every seed is computed in a vmapped group of exactly ``RUN_GROUP`` seeds, one group after another
  (``lax.map``) on each device: XLA compiles a reduction under ``vmap`` differently depending on the
  batch size (measured: the same row summed in a different order in a batch of 2 and of 4), so the
  group size must never change with the number of seeds or devices;
* evaluation runs each seed by itself (``lax.map`` inside ``shard_map``), at one fixed block shape,
  never as one matmul whose width grows with the number of seeds;
* per-example sums run in a fixed order: each block at a fixed shape, then block after block;
* Adam's bias correction and the global-norm clipping multiply by reciprocals (``gradstudy.optim``):
  XLA compiles ``array / scalar`` differently on one and on several devices.

On 2 CPU cores ``RUN_GROUP = 1`` is as fast as one vmap over a device's seeds at width 100 and about
25% slower at width 512 (``scripts/benchmark.py`` measures it against ``run_group`` = a device's
seeds). ``tests/test_seed_independence.py`` is what guards all this; rerun it after upgrading jax.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gradstudy.activations import ACTIVATIONS, activation_fn
from gradstudy.data import Dataset
from gradstudy.model import build_model, hidden_name
from gradstudy.optim import make_optimizer
from gradstudy.stats import (
    HIST_QUANTITIES,
    INIT_EXTRAS,
    JACOBIAN_EXAMPLES,
    HistBins,
    hist_bins,
    histogram,
    mean_singular_value,
    network_stats,
    stat_names,
)
from gradstudy.store import HIST_REGIONS

#: Evaluation runs over blocks of this many examples (the last one padded with zero weight).
EVAL_BLOCK = 1000
#: Every seed is computed in a vmapped group of exactly this many seeds (see the module docstring).
#: One: on CPU a group of one costs nothing at width 100 and pads nothing.
RUN_GROUP = 1


class TrainState(NamedTuple):
    """Per-seed training state; every leaf has the seeds on its leading axis."""

    params: Any
    batch_stats: Any
    opt_state: Any
    diverged_at: jax.Array  # int32, -1 while the seed is finite


@dataclass(frozen=True)
class TrainResult:
    seeds: list[int]
    eval_steps: np.ndarray  # (n_eval,)
    evals: np.ndarray  # (n_eval, n_seeds, len(EVAL_METRICS))
    stats_steps: np.ndarray  # (n_stats,)
    stats: np.ndarray  # (n_stats, n_seeds, depth, len(stat_names))
    stat_names: tuple[str, ...]
    losses: np.ndarray  # (train.steps, n_seeds): the minibatch loss of every step
    hist_steps: np.ndarray  # (n_hist,)
    #: quantity -> (n_hist, n_seeds, depth, bins.n_bins + len(HIST_REGIONS)) counts
    hist_counts: dict[str, np.ndarray]
    hist_bins: dict[str, HistBins]
    diverged_at: np.ndarray  # (n_seeds,), -1 where the seed never diverged
    state: TrainState  # the final state (a diverged seed's last finite one)
    init_stats: np.ndarray  # (n_seeds, depth, len(init_stat_names)), measured once at step 0
    init_stat_names: tuple[str, ...]


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


def _all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else jnp.array(True)


class Engine:
    """Builds and runs the compiled training program of one cell (config + dataset)."""

    def __init__(self, cfg: Any, dataset: Dataset, devices: list[jax.Device] | None = None, run_group: int = RUN_GROUP):
        self.depth = cfg.model.depth
        self.width = cfg.model.width
        self.batch_size = cfg.train.batch_size
        self.steps = cfg.train.steps
        self.eval_every = cfg.train.eval_every
        self.stats_every = None if cfg.stats.tier == "none" else cfg.stats.every
        self.extra = tuple(cfg.stats.extra)
        self.stat_names = stat_names(cfg.stats.tier, self.extra)
        self.init_stat_names = tuple(e for e in self.extra if e in INIT_EXTRAS)
        self.act_fn = activation_fn(cfg.act.name, cfg.act.alpha)
        self.percentiles = cfg.stats.tier == "full"
        self.hist_steps = sorted(set(cfg.stats.hist_steps)) if cfg.stats.tier == "full" else []
        self.act = ACTIVATIONS[cfg.act.name]
        self.hist_bins = {q: hist_bins(q, self.act, cfg.stats.hist_bins, cfg.stats.hist_range) for q in HIST_QUANTITIES}
        self.model = build_model(cfg, dataset.n_classes)
        self.optimizer = make_optimizer(cfg.optim)
        self.n_train = len(dataset.y_train)
        self.x_train = jnp.asarray(dataset.x_train)
        self.y_train = jnp.asarray(dataset.y_train)
        self._mesh = Mesh(np.array(devices or jax.devices()), ("seeds",))
        self.run_group = run_group
        replicated = NamedSharding(self._mesh, P())
        self.eval_sets = jax.device_put(
            {
                "train": eval_blocks(dataset.x_train, dataset.y_train),
                "test": eval_blocks(dataset.x_test, dataset.y_test),
            },
            replicated,
        )
        self._eval_sizes = np.repeat([len(dataset.y_train), len(dataset.y_test)], 2).astype(np.float64)
        self._chunk = self._per_device(self._chunk_fn, (P("seeds"), P(), P("seeds")))
        self._histograms = self._per_device(self._histograms_fn, (P("seeds"), P("seeds")))
        self._jacobians = jax.jit(self._jacobians_fn)
        self._eval = self._per_device(self._evaluate_fn, (P("seeds"), P()))

    # ----- seeds across devices ---------------------------------------------------------------
    def padded(self, seeds: list[int]) -> list[int]:
        """``seeds`` plus copies of its last seed, so that every device holds the same whole number
        of ``run_group``-seed groups."""
        per_step = self.run_group * self._mesh.size
        n = -(-len(seeds) // per_step) * per_step
        return list(seeds) + [seeds[-1]] * (n - len(seeds))

    def _per_device(self, fn: Callable, in_specs: tuple) -> Callable:
        """``jit`` of ``fn`` run by each device on its own seeds (inputs and outputs seed-first)."""
        return jax.jit(jax.shard_map(fn, mesh=self._mesh, in_specs=in_specs, out_specs=P("seeds"), check_vma=False))

    def _on_devices(self, tree: Any, seed_axis: int = 0) -> Any:
        """Place ``tree`` with its seed axis split across the devices."""
        return jax.device_put(tree, NamedSharding(self._mesh, P(*([None] * seed_axis), "seeds")))

    # ----- state ---------------------------------------------------------------------------
    def init(self, seeds: list[int]) -> TrainState:
        """Initial state of every (padded) seed, one PRNG key per seed, vmapped so each seed has its own fan."""
        keys = jnp.stack([jax.random.PRNGKey(s) for s in self.padded(seeds)])
        example = self.x_train[:1]
        variables = jax.vmap(lambda k: self.model.init(k, example, train=False))(keys)
        params = variables["params"]
        state = TrainState(
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=jax.vmap(self.optimizer.init)(params),
            diverged_at=jnp.full((len(keys),), -1, jnp.int32),
        )
        return self._on_devices(state)

    # ----- one seed, one step ---------------------------------------------------------------
    def _loss(self, params, batch_stats, probes, x, y, collect: bool):
        variables = {"params": params, "batch_stats": batch_stats}
        if probes is not None:
            variables["perturbations"] = probes
        mutable = ["batch_stats", "intermediates"] if collect else ["batch_stats"]
        logits, updates = self.model.apply(variables, x, train=True, mutable=mutable)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates

    def _update(self, state: TrainState, step, loss, grads, batch_stats) -> TrainState:
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _all_finite((params, opt_state, batch_stats))
        alive = state.diverged_at < 0
        keep = finite & alive
        new = jax.tree.map(
            lambda n, o: jnp.where(keep, n, o),
            (params, batch_stats, opt_state),
            (state.params, state.batch_stats, state.opt_state),
        )
        diverged_at = jnp.where(alive & ~finite, step, state.diverged_at)
        return TrainState(*new, diverged_at=diverged_at)

    def plain_step(self, state: TrainState, step, idx) -> tuple[TrainState, jax.Array]:
        """One update of one seed on the minibatch ``idx``; returns the new state and the loss."""
        x, y = self.x_train[idx], self.y_train[idx]
        (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(
            state.params, state.batch_stats, None, x, y, False
        )
        return self._update(state, step, loss, grads, aux.get("batch_stats", {})), loss

    def _probed(self, state: TrainState, idx):
        """Forward and backward pass of one seed with zero probes on every z_l.

        Returns (loss, batch statistics after the pass, parameter gradients, [dL/dz_l], [z_l], [h_l]).
        """
        x, y = self.x_train[idx], self.y_train[idx]
        probes = {f"z{k}": jnp.zeros((idx.shape[0], self.width), self.x_train.dtype) for k in self._layers}
        (loss, aux), (grads, dz) = jax.value_and_grad(self._loss, argnums=(0, 2), has_aux=True)(
            state.params, state.batch_stats, probes, x, y, True
        )
        inter = aux["intermediates"]
        return (
            loss,
            aux.get("batch_stats", {}),
            grads,
            [dz[f"z{k}"] for k in self._layers],
            [inter[f"z{k}"][0] for k in self._layers],
            [inter[f"h{k}"][0] for k in self._layers],
        )

    def measured_step(self, state: TrainState, step, idx) -> tuple[TrainState, jax.Array, jax.Array]:
        """``plain_step`` plus the per-layer statistics, from the same forward and backward pass."""
        loss, batch_stats, grads, dzs, zs, hs = self._probed(state, idx)
        kernel_grads = [grads[hidden_name(k)]["kernel"] for k in self._layers]
        stats = network_stats(kernel_grads, dzs, zs, hs, self.act, self.percentiles, self.extra)
        return self._update(state, step, loss, grads, batch_stats), loss, stats

    @property
    def _layers(self) -> range:
        return range(1, self.depth + 1)

    # ----- all seeds, one chunk ---------------------------------------------------------------
    def _chunk_fn(self, state: TrainState, step0, idx):
        """One device's seeds, group after group: ``_group_chunk`` with the seed axis first
        (idx (n_seeds, length, batch); losses (n_seeds, length); statistics (n_seeds, n_measured, depth, n_stats))."""

        def seed_first(state, idx):
            state, losses, stats = self._group_chunk(state, step0, jnp.swapaxes(idx, 0, 1))
            return state, jnp.swapaxes(losses, 0, 1), jnp.swapaxes(stats, 0, 1)

        return in_groups(seed_first, self.run_group, state, idx)

    def _group_chunk(self, state: TrainState, step0, idx):
        """Run ``idx.shape[0]`` steps from ``step0`` for one group of seeds; idx is (length, n_seeds, batch).

        Returns (state, per-step losses (length, n_seeds), statistics (n_measured, n_seeds, depth, n_stats)).
        """
        plain = jax.vmap(self.plain_step, in_axes=(0, None, 0))
        measured = jax.vmap(self.measured_step, in_axes=(0, None, 0))

        def plain_body(carry, idx_t):
            state, step = carry
            state, loss = plain(state, step, idx_t)
            return (state, step + 1), loss

        def group(carry, idx_g):
            state, step = carry
            state, loss0, stats = measured(state, step, idx_g[0])
            (state, step), losses = jax.lax.scan(plain_body, (state, step + 1), idx_g[1:])
            return (state, step), (jnp.concatenate([loss0[None], losses]), stats)

        length, n_seeds = idx.shape[:2]
        carry = (state, jnp.asarray(step0, jnp.int32))
        empty_stats = jnp.zeros((0, n_seeds, self.depth, len(self.stat_names)), self.x_train.dtype)
        if self.stats_every is None:
            carry, losses = jax.lax.scan(plain_body, carry, idx)
            return carry[0], losses, empty_stats
        k = self.stats_every
        n_full, rem = divmod(length, k)
        losses, stats = [], [empty_stats]
        if n_full:
            groups = idx[: n_full * k].reshape(n_full, k, *idx.shape[1:])
            carry, (group_losses, group_stats) = jax.lax.scan(group, carry, groups)
            losses.append(group_losses.reshape(n_full * k, n_seeds))
            stats.append(group_stats)
        if rem:
            carry, (tail_losses, tail_stats) = group(carry, idx[n_full * k :])
            losses.append(tail_losses)
            stats.append(tail_stats[None])
        return carry[0], jnp.concatenate(losses), jnp.concatenate(stats)

    def train_chunk(
        self, state: TrainState, seeds: list[int], step: int, length: int
    ) -> tuple[TrainState, jax.Array, jax.Array]:
        """Steps [step, step+length) of every seed in one compiled call (no evaluation).

        ``step`` must be a multiple of ``stats.every`` so that measured steps land on its multiples.
        Returns the state, per-step losses (length, n_seeds) and statistics (n_measured, n_seeds, depth, n_stats).
        """
        idx = np.stack([batch_indices(s, self.n_train, self.batch_size, step, length) for s in self.padded(seeds)])
        state, losses, stats = self._chunk(state, step, self._on_devices(idx))
        return state, jnp.swapaxes(losses, 0, 1), jnp.swapaxes(stats, 0, 1)

    def _histograms_fn(self, state: TrainState, idx):
        """Histograms of h_l and delta_l = B * dL/dz_l for every seed and layer, on minibatch ``idx`` (n_seeds, B).

        No update is applied. Returns one array per quantity of ``HIST_QUANTITIES``, each
        (n_seeds, depth, n_bins + len(HIST_REGIONS)), every seed counted in its own fixed bins.
        """

        def per_seed(seed_state, seed_idx):
            _, _, _, dzs, _, hs = self._probed(seed_state, seed_idx)
            values = {"activation": hs, "delta": [seed_idx.shape[0] * dz for dz in dzs]}
            return tuple(jnp.stack([histogram(v, self.hist_bins[q]) for v in values[q]]) for q in HIST_QUANTITIES)

        return in_groups(jax.vmap(per_seed), self.run_group, state, idx)

    def histograms(self, state: TrainState, seeds: list[int], step: int) -> tuple[jax.Array, ...]:
        """Per-layer histograms on the minibatch that step ``step`` trains on (see ``_histograms_fn``)."""
        idx = np.stack([batch_indices(s, self.n_train, self.batch_size, step, 1)[0] for s in self.padded(seeds)])
        return self._histograms(state, self._on_devices(idx))

    def _jacobian_fn(self, state: TrainState, x):
        """``jacobian_sv_mean`` of every hidden layer of one seed on the examples ``x``: (depth, 1)."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        _, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
        zs = [updates["intermediates"][f"z{k}"][0] for k in self._layers]
        kernels = [state.params[hidden_name(k)]["kernel"] for k in self._layers]
        return jnp.stack([mean_singular_value(w, z, self.act_fn) for w, z in zip(kernels, zs, strict=True)])[:, None]

    def _jacobians_fn(self, state: TrainState, x):
        """``_jacobian_fn`` of each seed, one seed at a time."""
        return jax.lax.map(lambda seed_state: self._jacobian_fn(seed_state, x), state)

    def init_stats(self, state: TrainState) -> np.ndarray:
        """The step-0 statistics asked for in ``stats.extra``: (n_seeds, depth, len(init_stat_names))."""
        if not self.init_stat_names:
            return np.zeros((state.diverged_at.shape[0], self.depth, 0))
        # On one device: XLA's CPU eigensolver can hang when its input is split across host devices.
        single = jax.device_put(state, jax.devices()[0])
        return np.asarray(self._jacobians(single, self.x_train[:JACOBIAN_EXAMPLES]))

    # ----- evaluation -------------------------------------------------------------------------
    def _evaluate_seed(self, state: TrainState, sets) -> jax.Array:
        """Summed loss and number correct of one seed on each evaluation set, block after block: (4,)."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}

        def block(totals, xyw):
            x, y, weight = xyw
            logits = self.model.apply(variables, x, train=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            correct = (jnp.argmax(logits, axis=-1) == y).astype(loss.dtype)
            counted = weight > 0
            sums = jnp.stack([jnp.sum(jnp.where(counted, loss, 0)), jnp.sum(jnp.where(counted, correct, 0))])
            return totals + sums, None

        out = []
        for split in ("train", "test"):
            x, y, weight = sets[split]
            totals, _ = jax.lax.scan(block, jnp.zeros(2, x.dtype), (x, y, weight))
            out.append(totals)
        return jnp.concatenate(out)

    def _evaluate_fn(self, state: TrainState, sets) -> jax.Array:
        """``_evaluate_seed`` of each seed on this device, one seed at a time."""
        return jax.lax.map(lambda seed_state: self._evaluate_seed(seed_state, sets), state)

    def evaluate(self, state: TrainState) -> np.ndarray:
        """Mean loss and accuracy of every seed on the full train and test sets: (n_seeds, 4), in ``EVAL_METRICS`` order."""
        return np.asarray(self._eval(state, self.eval_sets), np.float64) / self._eval_sizes

    # ----- the whole run -----------------------------------------------------------------------
    def run(
        self,
        state: TrainState,
        seeds: list[int],
        on_chunk: Callable[[int, float], None] | None = None,
    ) -> TrainResult:
        """Train ``state`` (from ``init(seeds)``) for ``train.steps`` steps, evaluating between chunks.

        ``on_chunk(step, mean_loss)`` is called after each chunk with the number of steps done and
        the mean minibatch loss of the chunk over the seeds still finite.
        """
        eval_steps, evals, stats, losses, hists = [0], [self.evaluate(state)], [], [], []
        init_stats = self.init_stats(state)
        if 0 in self.hist_steps:
            hists.append(self.histograms(state, seeds, 0))
        step = 0
        while step < self.steps:
            length = min(self.eval_every, self.steps - step)
            state, chunk_losses, chunk_stats = self.train_chunk(state, seeds, step, length)
            step += length
            eval_steps.append(step)
            evals.append(self.evaluate(state))
            stats.append(np.asarray(chunk_stats))
            losses.append(np.asarray(chunk_losses))
            if step in self.hist_steps:
                hists.append(self.histograms(state, seeds, step))
            if on_chunk is not None:
                finite = losses[-1][:, np.isfinite(losses[-1]).all(axis=0)]
                on_chunk(step, float(finite.mean()) if finite.size else float("nan"))
        every = self.stats_every
        n = len(seeds)  # drop the padding seeds
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
            state=jax.tree.map(lambda leaf: leaf[:n], state),
            init_stats=init_stats[:n],
            init_stat_names=self.init_stat_names,
        )


def in_groups(fn: Callable, size: int, *args: Any) -> Any:
    """``fn`` (vmapped over a leading axis of ``size`` seeds) applied to one group of seeds at a
    time, so every seed is computed at the same shapes however many seeds a device holds."""

    def split(leaf):
        return leaf.reshape(leaf.shape[0] // size, size, *leaf.shape[1:])

    out = jax.lax.map(lambda group: fn(*group), jax.tree.map(split, args))
    return jax.tree.map(lambda leaf: leaf.reshape(leaf.shape[0] * leaf.shape[1], *leaf.shape[2:]), out)


def eval_blocks(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x``, ``y`` cut into blocks of ``EVAL_BLOCK`` examples, the last one padded with zero weight:
    (n_blocks, EVAL_BLOCK, ...) arrays and the (n_blocks, EVAL_BLOCK) weights."""
    n = len(y)
    pad = -n % EVAL_BLOCK
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.pad(x, ((0, pad), (0, 0)))
    y = np.pad(y, (0, pad))
    blocks = (n + pad) // EVAL_BLOCK
    return x.reshape(blocks, EVAL_BLOCK, -1), y.reshape(blocks, EVAL_BLOCK), weight.reshape(blocks, EVAL_BLOCK)
