"""Per-layer statistics of one training step, pure functions of arrays (computed inside ``jit``).

For hidden layer l (numbered from 1 at the input), on the training minibatch of size B:

* ``grad_norm``: the L2 (Frobenius) norm of dL/dW_l, L being the mean minibatch loss;
* ``delta_std``: the standard deviation over (example, unit) of delta_l = B * dL/dz_l, z_l being the
  input to the nonlinearity. The factor B undoes the 1/B of the mean, so the figure is Glorot &
  Bengio's back-propagated gradient and does not change with batch size;
* ``act_mean``, ``act_std``: mean and standard deviation over (example, unit) of h_l = act(z_l);
* ``saturated_frac``: the fraction of entries of h_l in the activation's flat region (NaN when the
  activation has none);
* ``dead_frac``: the fraction of units with z_l <= 0 on every example of the batch (NaN unless the
  activation has dead units: relu);
* ``z_p15``, ``z_p50``, ``z_p85`` (``full`` tier): percentiles of z_l over (example, unit), each the
  ceil(q·n/100)-th smallest entry.

Optional statistics, asked for by name in ``stats.extra``:

* ``unit_mean_median`` (every ``stats.every`` steps, with the scalars): the batch mean of each unit's
  activation h_l, then the median over units (Clevert et al. 2015's measure of the mean shift);
* ``jacobian_sv_mean`` (once, at step 0, on the first ``JACOBIAN_EXAMPLES`` training examples): the
  mean singular value of the layer Jacobian dh_l/dh_{l-1} = diag(act'(z_l)) W_l^T, averaged over the
  min(fan_in, fan_out) singular values and the examples (Glorot & Bengio 2010, section 4.2.2). A norm
  between the dense layer and the nonlinearity is not part of it.

Under batch norm every one of these is a batch-level quantity by nature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gradstudy.engine.activations import Activation
from gradstudy.schema import HIST_REGIONS, unit_stat

SCALAR_STATS = (
    "grad_norm",
    "delta_std",
    "act_mean",
    "act_std",
    "saturated_frac",
    "dead_frac",
    "z_std",
    "negative_frac",
    "prelu_alpha",
)
#: Percentiles of the pre-activation z_l (Ioffe & Szegedy's figure 1), recorded by the ``full`` tier.
PERCENTILES = (15, 50, 85)
PERCENTILE_STATS = tuple(f"z_p{q}" for q in PERCENTILES)

#: Statistics tiers: ``none`` records nothing, ``scalars`` the per-layer scalars above, ``full`` adds
#: pre-activation percentiles every ``stats.every`` steps and histograms at ``stats.hist_steps``.
TIERS = ("none", "scalars", "full")


def unit_mean_median(z: jax.Array, h: jax.Array) -> jax.Array:
    """Median over units of each unit's batch-mean activation."""
    return jnp.median(jnp.mean(h, axis=0))


#: Optional statistics recorded with the scalars: name -> function of (z_l, h_l) for one layer.
STEP_EXTRAS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {"unit_mean_median": unit_mean_median}
#: Optional statistic: the ``PERCENTILES`` of z over the batch for each of the first ``stats.units``
#: units of every layer, every ``stats.every`` steps (Ioffe & Szegedy follow single units). Carried
#: as per-layer statistics named ``unit_stat(j, q)``; the tables writer moves them to their own table.
UNIT_PERCENTILES = "unit_percentiles"
#: Optional statistics recorded once, at step 0.
INIT_EXTRAS = ("jacobian_sv_mean",)
EXTRA_STATS = (*STEP_EXTRAS, UNIT_PERCENTILES, *INIT_EXTRAS)

#: The Jacobian statistic is taken on this many fixed examples (the first ones of the training split).
JACOBIAN_EXAMPLES = 32


def stat_names(tier: str, extra: Sequence[str] = (), units: int = 0) -> tuple[str, ...]:
    """The per-layer statistics recorded every ``stats.every`` steps by ``tier`` and ``stats.extra``
    (``units``: how many units ``unit_percentiles`` follows per layer)."""
    base = {"none": (), "scalars": SCALAR_STATS, "full": SCALAR_STATS + PERCENTILE_STATS}[tier]
    if not base:
        return ()
    per_unit = tuple(unit_stat(j, q) for j in range(units) for q in PERCENTILES) if UNIT_PERCENTILES in extra else ()
    return base + tuple(e for e in extra if e in STEP_EXTRAS) + per_unit


def mean_singular_value(kernel: jax.Array, z: jax.Array, act_fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Mean singular value of diag(act'(z_n)) W^T over the examples n of ``z`` (n, fan_out).

    ``kernel`` is W, (fan_in, fan_out). The singular values are the square roots of the eigenvalues
    of the smaller Gram matrix, so there are min(fan_in, fan_out) of them per example.
    """
    slope = jax.jvp(act_fn, (z,), (jnp.ones_like(z),))[1]
    fan_in, fan_out = kernel.shape
    if fan_out <= fan_in:
        gram = (kernel.T @ kernel)[None] * slope[:, :, None] * slope[:, None, :]
    else:
        gram = jnp.einsum("iu,nu,ju->nij", kernel, jnp.square(slope), kernel)
    return jnp.mean(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(gram), 0)))


def layer_stats(
    kernel_grad: jax.Array,
    dloss_dz: jax.Array,
    z: jax.Array,
    h: jax.Array,
    act: Activation,
    percentiles: bool,
    extra: Sequence[str] = (),
    slope: jax.Array | None = None,
    units: int = 0,
) -> jax.Array:
    """The statistics of one hidden layer, in the order of ``stat_names``.

    ``dloss_dz`` is the gradient of the *mean* minibatch loss with respect to z, shape (B, width);
    ``slope`` the layer's learned activation slope (PReLU), if it has one.
    """
    batch = z.shape[0]
    nan = jnp.array(jnp.nan, h.dtype)
    saturated = jnp.mean(act.saturated(h)) if act.saturated is not None else nan
    negative = jnp.mean(jnp.all(z <= 0, axis=0))  # units with z <= 0 on every example of the batch
    scalars = [
        jnp.sqrt(jnp.sum(jnp.square(kernel_grad))),
        jnp.std(batch * dloss_dz),
        jnp.mean(h),
        jnp.std(h),
        saturated.astype(h.dtype),
        (negative if act.has_dead_units else nan).astype(h.dtype),
        jnp.std(z),
        (negative if act.rectifier else nan).astype(h.dtype),
        (jnp.mean(slope) if slope is not None else nan).astype(h.dtype),
    ]
    if percentiles:
        n = z.size
        scalars.extend(order_statistic(z, -(-q * n // 100)) for q in PERCENTILES)
    scalars.extend(STEP_EXTRAS[e](z, h).astype(h.dtype) for e in extra if e in STEP_EXTRAS)
    if UNIT_PERCENTILES in extra:
        scalars.extend(order_statistic(z[:, j], -(-q * batch // 100)) for j in range(units) for q in PERCENTILES)
    return jnp.stack(scalars)


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
    kernel_grads: Sequence[jax.Array],
    dloss_dzs: Sequence[jax.Array],
    zs: Sequence[jax.Array],
    hs: Sequence[jax.Array],
    act: Activation,
    percentiles: bool = False,
    extra: Sequence[str] = (),
    slopes: Sequence[jax.Array | None] | None = None,
    units: int = 0,
) -> jax.Array:
    """Statistics of every hidden layer: shape (depth, n_stats)."""
    slopes = slopes if slopes is not None else [None] * len(zs)
    layers = zip(kernel_grads, dloss_dzs, zs, hs, slopes, strict=True)
    return jnp.stack([layer_stats(g, d, z, h, act, percentiles, extra, a, units) for g, d, z, h, a in layers])


@dataclass(frozen=True)
class HistBins:
    """Fixed bins of one histogram, chosen from the config alone, never from the data.

    ``linear``: ``n`` equal bins over [lo, hi] (the last one closed). ``signed_log``: ``n`` bins per
    sign, log-spaced in magnitude over [lo, hi]; a negative value falls in the mirror image of the
    positive bin of its magnitude. Every value that lands in no bin is counted in one of
    ``HIST_REGIONS``: exactly 0 (zero), inside the range's lower end (below: v < lo for linear bins,
    0 < |v| < lo for signed-log ones), past its upper end (above), or NaN/inf (nonfinite).
    Edges are float32, the precision the values are compared in.
    """

    kind: str
    lo: float
    hi: float
    n: int

    @property
    def magnitudes(self) -> np.ndarray:
        """The n + 1 edges on one axis: values for linear bins, magnitudes for signed-log ones."""
        if self.kind == "linear":
            return np.linspace(self.lo, self.hi, self.n + 1).astype(np.float32)
        return np.geomspace(self.lo, self.hi, self.n + 1).astype(np.float32)

    @property
    def n_bins(self) -> int:
        return self.n if self.kind == "linear" else 2 * self.n

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) edge of every bin in increasing order, as float64 copies of the float32 edges."""
        m = self.magnitudes.astype(np.float64)
        if self.kind == "linear":
            return m[:-1], m[1:]
        left = np.concatenate([-m[:0:-1], m[:-1]])
        right = np.concatenate([-m[-2::-1], m[1:]])
        return left, right


def hist_bins(quantity: str, act: Activation, n: int, magnitudes: Sequence[float]) -> HistBins:
    """The bins of ``quantity``: bounded activations get linear bins over their range (Glorot &
    Bengio's figure 6), delta and unbounded activations signed-log bins over ``magnitudes``."""
    if quantity == "activation" and act.bounds is not None:
        return HistBins("linear", *act.bounds, n)
    return HistBins("signed_log", float(magnitudes[0]), float(magnitudes[1]), n)


def histogram(values: jax.Array, bins: HistBins) -> jax.Array:
    """Counts of ``values`` (any shape) in ``bins``, then the ``HIST_REGIONS`` counts: (n_bins + 4,) int32."""
    v = values.reshape(-1)
    edges = jnp.asarray(bins.magnitudes, v.dtype)
    finite = jnp.isfinite(v)
    zero = v == 0
    if bins.kind == "linear":
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
