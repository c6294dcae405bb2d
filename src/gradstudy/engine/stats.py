"""The in-jit side of the statistics (``cells.statistics`` holds each one's record and computation):
the order statistic the percentiles use, every hidden layer's statistics of one step, and the
fixed-bin histogram counts."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from gradstudy.cells.options import ACTIVATIONS
from gradstudy.cells.statistics import BinKind, HistBins, LayerView, Stat
from gradstudy.schema import HIST_REGIONS


def order_statistic(values: jax.Array, k: int, iterations: int = 40) -> jax.Array:
    """The k-th smallest entry of ``values`` (1-based): the q-th percentile for k = ceil(q·n/100),
    numpy's ``inverted_cdf`` method.

    Found by bisection on the value, then snapped to the entry itself. XLA's CPU sort is about ten
    times slower than these vectorized comparisons, and this runs inside the training loop.
    """
    flat = values.reshape(-1)
    span = jnp.max(flat) - jnp.min(flat)
    lo, hi = jnp.min(flat) - span - 1, jnp.max(flat)  # count(flat <= lo) < k <= count(flat <= hi)

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        enough = jnp.sum(flat <= mid) >= k
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    _, hi = jax.lax.fori_loop(0, iterations, halve, (lo, hi))
    return jnp.max(jnp.where(flat <= hi, flat, -jnp.inf))


def network_stats(
    stats: Sequence[Stat],
    act_name: str,
    kernel_grads: Sequence[jax.Array],
    dloss_dzs: jax.Array,
    zs: jax.Array,
    hs: jax.Array,
    slopes: jax.Array | None,
    units: int = 0,
    blocks: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """The values of ``stats`` for every hidden layer: shape (depth, n_values), in order.

    ``dloss_dzs``, ``zs`` and ``hs`` are stacked over layers, (depth, B, width), dL/dz being the
    gradient of the *mean* minibatch loss; ``kernel_grads`` the layers' kernel gradients in runs of
    layers stacked on a leading axis (``model.layer_kernels``); ``slopes`` each layer's learned
    activation slope (PReLU) stacked over layers, or None; ``blocks`` a residual block's branch,
    incoming stream and multiplier (``LayerView`` fields), stacked over blocks.

    Each run of layers is computed by one ``vmap``: XLA compiles each statistic once per run, not
    once per layer.
    """
    act = ACTIVATIONS[act_name]
    blocks = blocks or {}

    def one_layer(g, d, z, h, a, block):
        view = LayerView(jnp, act, z, h, kernel_grad=g, dloss_dz=d, slope=a, units=units, kth=order_statistic, **block)
        return jnp.stack([value for s in stats for value in s.values(view)])

    rows, start = [], 0
    for grads in kernel_grads:
        cut = slice(start, start + grads.shape[0])
        slope = None if slopes is None else slopes[cut]
        args = (grads, dloss_dzs[cut], zs[cut], hs[cut], slope, {k: v[cut] for k, v in blocks.items()})
        rows.append(jax.vmap(one_layer, in_axes=(0, 0, 0, 0, None if slope is None else 0, 0))(*args))
        start = cut.stop
    return jnp.concatenate(rows)


def histogram(values: jax.Array, bins: HistBins) -> jax.Array:
    """Counts of ``values`` (any shape) in ``bins``, then the ``HIST_REGIONS`` counts: (n_bins + 4,) int32."""
    v = values.reshape(-1)
    edges = jnp.asarray(bins.magnitudes, v.dtype)
    finite = jnp.isfinite(v)
    zero = v == 0
    if bins.kind is not BinKind.SIGNED_LOG:  # linear and log bins: one axis of values
        below, above = finite & ~zero & (v < edges[0]), finite & (v > edges[-1])
        index = jnp.clip(jnp.searchsorted(edges, v, side="right") - 1, 0, bins.n - 1)
    else:
        mag = jnp.abs(v)
        below, above = finite & ~zero & (mag < edges[0]), finite & (mag > edges[-1])
        k = jnp.clip(jnp.searchsorted(edges, mag, side="right") - 1, 0, bins.n - 1)
        index = jnp.where(v > 0, bins.n + k, bins.n - 1 - k)
    inside = finite & ~zero & ~below & ~above
    counts = jnp.bincount(jnp.where(inside, index, bins.n_bins), length=bins.n_bins + 1)[: bins.n_bins]
    regions = {"zero": zero, "below": below, "above": above, "nonfinite": ~finite}
    special = jnp.stack([jnp.sum(regions[r]) for r in HIST_REGIONS])
    return jnp.concatenate([counts, special]).astype(jnp.int32)
