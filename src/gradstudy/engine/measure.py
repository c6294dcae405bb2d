"""What a measured step records, built as functions of one run's probed pass (``step.Pass``).

* ``layer_statistics``: the per-layer scalars of ``stats.stat_names`` (and percentiles under
  ``stats=full``), handed to ``step.make_step`` as its ``measure``;
* ``histograms``: fixed-bin counts of h_l and delta_l = B * dL/dz_l at chosen steps, no update;
* ``jacobian_statistic``: the step-0 mean singular value of each layer's Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradstudy.engine.activations import Activation
from gradstudy.engine.model import MLP, hidden_name, slope_name
from gradstudy.engine.stats import HistBins, histogram, mean_singular_value, network_stats
from gradstudy.schema import HIST_QUANTITIES
from gradstudy.engine.step import Measure, Pass, TrainState, probed_pass


def layer_statistics(act: Activation, percentiles: bool, extra: Sequence[str], units: int = 0) -> Measure:
    """``measure`` for ``make_step``: the statistics of every hidden layer, (depth, n_stats)."""

    def measure(probed: Pass) -> jax.Array:
        layers = range(1, len(probed.zs) + 1)
        kernel_grads = [probed.grads[hidden_name(k)]["kernel"] for k in layers]
        slopes = [learned_slope(probed.params, k) for k in layers]
        return network_stats(kernel_grads, probed.dzs, probed.zs, probed.hs, act, percentiles, extra, slopes, units)

    return measure


def histograms(
    model: MLP, bins: dict[str, HistBins], x_train: jax.Array, y_train: jax.Array
) -> Callable[[TrainState, jax.Array], tuple[jax.Array, ...]]:
    """``(state, idx) ->`` one (depth, n_bins + len(HIST_REGIONS)) count array per quantity of
    ``HIST_QUANTITIES``, for one run on the training rows ``idx``; no update is applied."""

    def run_histograms(state: TrainState, idx: jax.Array) -> tuple[jax.Array, ...]:
        probed = probed_pass(model, state, x_train[idx], y_train[idx])
        values = {"activation": probed.hs, "delta": [idx.shape[0] * dz for dz in probed.dzs]}
        return tuple(jnp.stack([histogram(v, bins[q]) for v in values[q]]) for q in HIST_QUANTITIES)

    return run_histograms


def learned_slope(params: Any, layer: int) -> jax.Array | None:
    """Hidden layer ``layer``'s learned activation slope (PReLU's alpha), or None without one."""
    return params.get(slope_name(layer), {}).get("alpha")


def jacobian_statistic(
    model: MLP, act: Activation, alpha: float | None
) -> Callable[[TrainState, jax.Array], jax.Array]:
    """``(state, x) ->`` ``jacobian_sv_mean`` of every hidden layer of one run on the examples x:
    (depth, 1). A learned slope enters at its current value."""
    fixed = act.default_alpha if alpha is None else alpha

    def run_jacobians(state: TrainState, x: jax.Array) -> jax.Array:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
        values = []
        for k in range(1, model.depth + 1):
            slope = learned_slope(state.params, k)
            a = fixed if slope is None else slope
            z = updates["intermediates"][f"z{k}"][0]
            values.append(mean_singular_value(state.params[hidden_name(k)]["kernel"], z, lambda v, a=a: act.fn(v, a)))
        return jnp.stack(values)[:, None]

    return run_jacobians
