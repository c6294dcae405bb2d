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
    dloss_dzs: Sequence[jax.Array],
    zs: Sequence[jax.Array],
    hs: Sequence[jax.Array],
    slopes: Sequence[jax.Array | None],
    units: int = 0,
    blocks: Sequence[dict[str, jax.Array]] | None = None,
) -> jax.Array:
    """The values of ``stats`` for every hidden layer: shape (depth, n_values), in order.

    ``dloss_dzs`` are the gradients of the *mean* minibatch loss with respect to each z, (B, width);
    ``slopes`` each layer's learned activation slope (PReLU), or None; ``blocks`` a residual
    block's branch, incoming stream and multiplier (``LayerView`` fields), one dict per layer.
    """
    act = ACTIVATIONS[act_name]
    blocks = blocks if blocks is not None else [{} for _ in zs]
    layers = zip(kernel_grads, dloss_dzs, zs, hs, slopes, blocks, strict=True)
    views = [
        LayerView(jnp, act, z, h, kernel_grad=g, dloss_dz=d, slope=a, units=units, kth=order_statistic, **block)
        for g, d, z, h, a, block in layers
    ]
    return jnp.stack([jnp.stack([value for s in stats for value in s.values(view)]) for view in views])


def histogram(values: jax.Array, bins: HistBins) -> jax.Array:
    """Counts of ``values`` (any shape) in ``bins``, then the ``HIST_REGIONS`` counts: (n_bins + 4,) int32."""
    v = values.reshape(-1)
    edges = jnp.asarray(bins.magnitudes, v.dtype)
    finite = jnp.isfinite(v)
    zero = v == 0
    if bins.kind is BinKind.LINEAR:
        below, above = finite & (v < edges[0]), finite & (v > edges[-1])
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
