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
seed axis is sharded across them; the seed list is padded to a multiple of the device count by
repeating its last seed, and the copies are dropped from every output.

Seeds enter only through the initial state (made outside ``jit``, one PRNG key per seed) and the
minibatch indices (drawn in numpy from the seed itself), so new seed values never recompile and a
seed's numbers do not depend on which other seeds share its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradstudy.activations import ACTIVATIONS, activation_fn
from gradstudy.data import Dataset
from gradstudy.model import build_model, hidden_name
from gradstudy.optim import make_optimizer
from gradstudy.stats import (
    HIST_QUANTITIES,
    INIT_EXTRAS,
    JACOBIAN_EXAMPLES,
    histograms,
    mean_singular_value,
    network_stats,
    stat_names,
)

#: Evaluation runs over blocks of this many examples (the last one padded), one compile per cell.
EVAL_BLOCK = 1000
EVAL_METRICS = (("train", "loss"), ("train", "accuracy"), ("test", "loss"), ("test", "accuracy"))


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
    hist_steps: np.ndarray  # (n_hist,)
    hist_counts: np.ndarray  # (n_hist, n_seeds, depth, len(HIST_QUANTITIES), n_bins)
    hist_edges: np.ndarray  # (n_hist, len(HIST_QUANTITIES), n_bins + 1)
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

    def __init__(self, cfg: Any, dataset: Dataset):
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
        self.hist_bins = cfg.stats.hist_bins
        self.act = ACTIVATIONS[cfg.act.name]
        self.model = build_model(cfg, dataset.n_classes)
        self.optimizer = make_optimizer(cfg.optim)
        self.n_train = len(dataset.y_train)
        self.x_train = jnp.asarray(dataset.x_train)
        self.y_train = jnp.asarray(dataset.y_train)
        self.eval_sets = {
            "train": (dataset.x_train, dataset.y_train),
            "test": (dataset.x_test, dataset.y_test),
        }
        devices = jax.devices()
        self._mesh = Mesh(np.array(devices), ("seeds",)) if len(devices) > 1 else None
        self._chunk = jax.jit(self._chunk_fn)
        self._histograms = jax.jit(self._histograms_fn)
        self._jacobians = jax.jit(jax.vmap(self._jacobian_fn, in_axes=(0, None)))
        self._eval = jax.jit(jax.vmap(self._eval_block, in_axes=(0, 0, None, None, None)))

    # ----- seeds across devices ---------------------------------------------------------------
    def padded(self, seeds: list[int]) -> list[int]:
        """``seeds`` plus copies of its last seed, up to a multiple of the device count."""
        n_devices = 1 if self._mesh is None else self._mesh.size
        return list(seeds) + [seeds[-1]] * (-len(seeds) % n_devices)

    def _on_devices(self, tree: Any, seed_axis: int = 0) -> Any:
        """Place ``tree`` with its seed axis split across the devices (a no-op on one device)."""
        if self._mesh is None:
            return tree
        spec = PartitionSpec(*([None] * seed_axis), "seeds")
        return jax.device_put(tree, NamedSharding(self._mesh, spec))

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
        probes = {f"z{l}": jnp.zeros((idx.shape[0], self.width), self.x_train.dtype) for l in self._layers}
        (loss, aux), (grads, dz) = jax.value_and_grad(self._loss, argnums=(0, 2), has_aux=True)(
            state.params, state.batch_stats, probes, x, y, True
        )
        inter = aux["intermediates"]
        return (
            loss,
            aux.get("batch_stats", {}),
            grads,
            [dz[f"z{l}"] for l in self._layers],
            [inter[f"z{l}"][0] for l in self._layers],
            [inter[f"h{l}"][0] for l in self._layers],
        )

    def measured_step(self, state: TrainState, step, idx) -> tuple[TrainState, jax.Array, jax.Array]:
        """``plain_step`` plus the per-layer statistics, from the same forward and backward pass."""
        loss, batch_stats, grads, dzs, zs, hs = self._probed(state, idx)
        kernel_grads = [grads[hidden_name(l)]["kernel"] for l in self._layers]
        stats = network_stats(kernel_grads, dzs, zs, hs, self.act, self.percentiles, self.extra)
        return self._update(state, step, loss, grads, batch_stats), loss, stats

    @property
    def _layers(self) -> range:
        return range(1, self.depth + 1)

    # ----- all seeds, one chunk ---------------------------------------------------------------
    def _chunk_fn(self, state: TrainState, step0, idx):
        """Run ``idx.shape[0]`` steps from ``step0``; idx is (length, n_seeds, batch).

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
        idx = np.stack(
            [batch_indices(s, self.n_train, self.batch_size, step, length) for s in self.padded(seeds)], axis=1
        )
        return self._chunk(state, step, self._on_devices(idx, seed_axis=1))

    def _histograms_fn(self, state: TrainState, idx):
        """Histograms of h_l and delta_l = B * dL/dz_l for every seed and layer, on minibatch ``idx`` (n_seeds, B).

        No update is applied. Returns counts (n_seeds, depth, n_quantities, n_bins) and edges (n_quantities, n_bins + 1).
        """

        def per_seed(seed_state, seed_idx):
            _, _, _, dzs, _, hs = self._probed(seed_state, seed_idx)
            deltas = seed_idx.shape[0] * jnp.stack(dzs)
            return jnp.stack(hs).reshape(self.depth, -1), deltas.reshape(self.depth, -1)

        values = dict(zip(HIST_QUANTITIES, jax.vmap(per_seed)(state, idx), strict=True))
        counts, edges = zip(*(histograms(values[q], self.hist_bins) for q in HIST_QUANTITIES), strict=True)
        return jnp.stack(counts, axis=2), jnp.stack(edges)

    def histograms(self, state: TrainState, seeds: list[int], step: int) -> tuple[jax.Array, jax.Array]:
        """Per-layer histograms on the minibatch that step ``step`` trains on (see ``_histograms_fn``)."""
        idx = np.stack([batch_indices(s, self.n_train, self.batch_size, step, 1)[0] for s in self.padded(seeds)])
        return self._histograms(state, self._on_devices(idx))

    def _jacobian_fn(self, state: TrainState, x):
        """``jacobian_sv_mean`` of every hidden layer of one seed on the examples ``x``: (depth, 1)."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        _, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
        zs = [updates["intermediates"][f"z{l}"][0] for l in self._layers]
        kernels = [state.params[hidden_name(l)]["kernel"] for l in self._layers]
        return jnp.stack([mean_singular_value(w, z, self.act_fn) for w, z in zip(kernels, zs, strict=True)])[:, None]

    def init_stats(self, state: TrainState) -> np.ndarray:
        """The step-0 statistics asked for in ``stats.extra``: (n_seeds, depth, len(init_stat_names))."""
        if not self.init_stat_names:
            return np.zeros((state.diverged_at.shape[0], self.depth, 0))
        # On one device: XLA's CPU eigensolver can hang when its input is split across host devices.
        single = jax.device_put(state, jax.devices()[0])
        return np.asarray(self._jacobians(single, self.x_train[:JACOBIAN_EXAMPLES]))

    # ----- evaluation -------------------------------------------------------------------------
    def _eval_block(self, params, batch_stats, x, y, weight):
        logits = self.model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(loss.dtype)
        return jnp.sum(loss * weight), jnp.sum(correct * weight)

    def evaluate(self, state: TrainState) -> np.ndarray:
        """Mean loss and accuracy of every seed on the full train and test sets: (n_seeds, 4)."""
        columns = []
        for x, y in self.eval_sets.values():
            totals = 0.0
            for start in range(0, len(y), EVAL_BLOCK):
                xb, yb = x[start : start + EVAL_BLOCK], y[start : start + EVAL_BLOCK]
                pad = EVAL_BLOCK - len(yb)
                weight = np.concatenate([np.ones(len(yb), np.float32), np.zeros(pad, np.float32)])
                xb = np.pad(xb, ((0, pad), (0, 0)))
                yb = np.pad(yb, (0, pad))
                loss_sum, correct = self._eval(state.params, state.batch_stats, xb, yb, weight)
                totals = totals + np.stack([np.asarray(loss_sum), np.asarray(correct)], axis=-1)
            columns.append(totals / len(y))
        return np.concatenate(columns, axis=-1)

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
        eval_steps, evals, stats, hists = [0], [self.evaluate(state)], [], []
        init_stats = self.init_stats(state)
        if 0 in self.hist_steps:
            hists.append(self.histograms(state, seeds, 0))
        step = 0
        while step < self.steps:
            length = min(self.eval_every, self.steps - step)
            state, losses, chunk_stats = self.train_chunk(state, seeds, step, length)
            step += length
            eval_steps.append(step)
            evals.append(self.evaluate(state))
            stats.append(np.asarray(chunk_stats))
            if step in self.hist_steps:
                hists.append(self.histograms(state, seeds, step))
            if on_chunk is not None:
                losses = np.asarray(losses)
                finite = losses[:, np.isfinite(losses).all(axis=0)]
                on_chunk(step, float(finite.mean()) if finite.size else float("nan"))
        every = self.stats_every
        n = len(seeds)  # drop the padding seeds
        n_q = len(HIST_QUANTITIES)
        return TrainResult(
            seeds=list(seeds),
            eval_steps=np.asarray(eval_steps),
            evals=np.stack(evals)[:, :n],
            stats_steps=np.arange(0, self.steps, every) if every else np.zeros(0, np.int64),
            stats=np.concatenate(stats)[:, :n],
            stat_names=self.stat_names,
            hist_steps=np.asarray([s for s in self.hist_steps if s in eval_steps], np.int64),
            hist_counts=np.stack([np.asarray(c)[:n] for c, _ in hists])
            if hists
            else np.zeros((0, n, self.depth, n_q, self.hist_bins)),
            hist_edges=np.stack([np.asarray(e) for _, e in hists]) if hists else np.zeros((0, n_q, self.hist_bins + 1)),
            diverged_at=np.asarray(state.diverged_at)[:n],
            state=jax.tree.map(lambda leaf: leaf[:n], state),
            init_stats=init_stats[:n],
            init_stat_names=self.init_stat_names,
        )
