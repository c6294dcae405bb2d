"""What a measured step records, built as functions of one run's probed pass (``step.Pass``).

* ``layer_statistics``: the per-layer values of the step statistics (``cells.statistics``), handed
  to ``step.make_step`` as its ``measure``;
* ``hist_counter``: fixed-bin counts of h_l and delta_l = B * dL/dz_l at chosen steps, no update;
* ``init_statistics``: the statistics measured once, at step 0 (``jacobian_sv_mean``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradstudy.cells.options import ACTIVATIONS
from gradstudy.cells.statistics import HistBins, LayerView, Stat
from gradstudy.engine.activations import FUNCTIONS
from gradstudy.engine.model import Model, hidden_name, layer_kernels, learned_slopes
from gradstudy.engine.stats import histogram, network_stats
from gradstudy.engine.step import Measure, Pass, TrainState, probed_pass
from gradstudy.schema import HIST_QUANTITIES


def layer_statistics(
    stats: Sequence[Stat], act_name: str, units: int = 0, line: tuple[Any, jax.Array, jax.Array] | None = None
) -> Measure:
    """``measure`` for ``make_step``: the values of ``stats`` for every hidden layer, (depth, n_values).
    ``line`` (model, inputs, labels): the points along which ``shattering`` follows the gradients,
    passed forward and back with the run's current parameters (under batch norm, normalized with
    the minibatch's batch statistics: ``line_gradients``), in the same program."""

    def measure(probed: Pass) -> jax.Array:
        blocks = probed.blocks
        if line is not None:
            model, x, y = line
            state = TrainState(probed.params, probed.batch_stats, None, None)
            blocks = {**blocks, "line_grads": line_gradients(model, state, probed.x, x, y)}
        # a residual block's kernels as one row: its grad_norm is the norm of the whole branch
        kernel_grads = layer_kernels(probed.grads)
        slopes = learned_slopes(probed.params, probed.zs.shape[0])
        return network_stats(stats, act_name, kernel_grads, probed.dzs, probed.zs, probed.hs, slopes, units, blocks)

    return measure


def line_gradients(model: Any, state: TrainState, batch: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """dL/dz_l at the points ``x`` of the line (labels ``y``), (depth, points, width), with the
    network as it trains on ``batch``: a batch norm normalizes the points with the minibatch's
    batch statistics. Normalized by their own, a line of nearly equal inputs would divide by their
    tiny spread and look shattered at any depth."""
    rows = jnp.concatenate([batch, x])
    # the minibatch rows only set the batch statistics: no line point's gradient depends on their labels
    labels = jnp.concatenate([jnp.full((batch.shape[0],), y[0]), y])
    mask = (jnp.arange(rows.shape[0]) < batch.shape[0])[:, None]
    return probed_pass(model, state, rows, labels, mask).dzs[:, batch.shape[0] :]


def line_through_data(x_test: Any, y_test: Any, points: int) -> tuple[jax.Array, jax.Array]:
    """``points`` evenly spaced inputs from the first test example to the second (both included),
    each labelled with the first's class: the line ``shattering`` follows."""
    t = np.linspace(0.0, 1.0, points, dtype=np.float64)[:, None]
    a, b = np.asarray(x_test[0], np.float64), np.asarray(x_test[1], np.float64)
    x = ((1 - t) * a + t * b).astype(np.float32)
    return jnp.asarray(x), jnp.full((points,), int(y_test[0]), jnp.int32)


def hist_counter(
    model: Model, bins: dict[str, HistBins], x_train: jax.Array, y_train: jax.Array
) -> Callable[[TrainState, jax.Array], tuple[jax.Array, ...]]:
    """``(state, idx) ->`` one (depth, n_bins + len(HIST_REGIONS)) count array per quantity of
    ``HIST_QUANTITIES``, for one run on the training rows ``idx``; no update is applied."""

    def run_counts(state: TrainState, idx: jax.Array) -> tuple[jax.Array, ...]:
        probed = probed_pass(model, state, x_train[idx], y_train[idx])
        values = {"activation": probed.hs, "delta": idx.shape[0] * probed.dzs}
        return tuple(jax.vmap(lambda v, q=q: histogram(v, bins[q]))(values[q]) for q in HIST_QUANTITIES)

    return run_counts


def init_statistics(
    model: Model, stats: Sequence[Stat], act_name: str, alpha: float | None
) -> Callable[[TrainState, jax.Array], jax.Array]:
    """``(state, x) ->`` the step-0 ``stats`` of every hidden layer of one run on the examples x:
    (depth, len(stats)). A learned slope enters at its current value."""
    act, fn = ACTIVATIONS[act_name], FUNCTIONS[act_name]
    fixed = act.alpha(alpha)

    def run_init_stats(state: TrainState, x: jax.Array) -> jax.Array:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
        slopes, rows = learned_slopes(state.params, model.depth), []
        for k in range(1, model.depth + 1):
            a = fixed if slopes is None else slopes[k - 1]
            z = updates["intermediates"]["z"][0][k - 1]
            act_slope = jax.jvp(lambda v, a=a: fn(v, a), (z,), (jnp.ones_like(z),))[1]
            view = LayerView(jnp, act, z, kernel=state.params[hidden_name(k)]["kernel"], act_slope=act_slope)
            rows.append(jnp.stack([value for s in stats for value in s.values(view)]))
        return jnp.stack(rows)

    return run_init_stats
