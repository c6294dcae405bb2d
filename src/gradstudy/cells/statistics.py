"""The statistics a cell records, one record each: name, tiers, when it is measured, which activations
it means something for, how it is summarised over seeds, and its computation.

For hidden layer l (numbered from 1 at the input), on the training minibatch of size B:

* ``grad_norm``: the L2 (Frobenius) norm of dL/dW_l, L being the mean minibatch loss;
* ``delta_std``: the standard deviation over (example, unit) of delta_l = B * dL/dz_l, z_l being the
  input to the nonlinearity. The factor B undoes the 1/B of the mean, so the figure is Glorot &
  Bengio's back-propagated gradient and does not change with batch size;
* ``act_mean``, ``act_std``: mean and standard deviation over (example, unit) of h_l = act(z_l);
* ``saturated_frac``: the fraction of entries of h_l in the activation's flat region;
* ``dead_frac``: the fraction of units with z_l <= 0 on every example of the batch (ReLU);
* ``z_std``: the standard deviation of z_l; ``negative_frac``: ``dead_frac``'s count for any
  rectifier; ``prelu_alpha``: the mean learned slope (PReLU);
* ``z_p15``, ``z_p50``, ``z_p85`` (``full`` tier): percentiles of z_l over (example, unit), each the
  ceil(q·n/100)-th smallest entry.

Asked for by name in ``stats.extra``:

* ``unit_mean_median`` (with the scalars): the batch mean of each unit's activation h_l, then the
  median over units (Clevert et al. 2015's measure of the mean shift);
* ``unit_percentiles`` (with the scalars): the percentiles of z over the batch for each of the
  first ``stats.units`` units of every layer (Ioffe & Szegedy follow single units), carried as
  statistics named ``schema.unit_stat(j, q)``; the tables writer moves them to their own table;
* ``jacobian_sv_mean`` (once, at step 0, on the first ``JACOBIAN_EXAMPLES`` training examples): the
  mean singular value of the layer Jacobian dh_l/dh_{l-1} = diag(act'(z_l)) W_l^T, averaged over the
  min(fan_in, fan_out) singular values and the examples (Glorot & Bengio 2010, section 4.2.2). A norm
  between the dense layer and the nonlinearity is not part of it;
* ``shattering`` (with the scalars, any model): the correlation of the gradients dL/dz_l at
  neighbouring inputs along a line between the first two test examples (``neighbour_correlation``):
  how far the gradient has "shattered" into noise at layer l (Balduzzi et al. 2017).

Under batch norm every one of these is a batch-level quantity by nature.

Each computation is written against an array namespace ``xp`` (``LayerView.xp``): the engine hands
it ``jax.numpy`` inside the compiled program, and a test can hand it ``numpy``. This module imports
no jax, so validation, the tables, the analysis and the figures read the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from gradstudy.cells.options import ACTIVATIONS, MODELS, Activation
from gradstudy.schema import unit_stat


class Tier(StrEnum):
    """``stats.tier``: ``none`` records nothing, ``scalars`` the per-layer scalars, ``full`` adds
    pre-activation percentiles every ``stats.every`` steps and histograms at ``stats.hist_steps``."""

    NONE = "none"
    SCALARS = "scalars"
    FULL = "full"


class Schedule(StrEnum):
    """When a statistic is measured: every ``stats.every`` steps, once at step 0, or (the Jacobian
    spectrum, ``cells.spectrum``) at step 0, the histogram steps and the last step."""

    STEP = "step"
    INIT = "init"
    SPECTRUM = "spectrum"


class Summary(StrEnum):
    """How a quantity is summarised over seeds, so that its interval stays inside the quantity's range:

    * ``geometric``: magnitudes (norms, stds): the geometric mean, with the t interval of the logs mapped back;
    * ``arithmetic``: unbounded values (means, percentiles): the mean with its t interval;
    * ``fraction``: values in [0, 1] (accuracies, fractions of units): the mean, with the t interval
      taken on the logit scale by the delta method and mapped back, so it stays inside [0, 1];
    * ``positive``: positive values averaged as they are (losses): the mean, with the t interval
      taken on the log scale by the delta method, so it stays above 0.
    """

    GEOMETRIC = "geometric"
    ARITHMETIC = "arithmetic"
    FRACTION = "fraction"
    POSITIVE = "positive"


@dataclass(frozen=True)
class LayerView:
    """One hidden layer of one run, as a statistic sees it. At a measured step: the kernel gradient,
    dL/dz (of the mean minibatch loss, (B, width)), z, h and the learned slope (PReLU, else None);
    at step 0 (``Schedule.INIT``): the kernel and act'(z). ``kth(values, k)`` is the k-th smallest
    entry (the engine's order statistic); ``units`` how many units ``unit_percentiles`` follows."""

    xp: Any
    act: Activation
    z: Any
    h: Any = None
    kernel_grad: Any = None
    dloss_dz: Any = None
    slope: Any = None
    kernel: Any = None
    act_slope: Any = None
    units: int = 0
    kth: Callable[[Any, int], Any] | None = None
    #: A residual block's branch output a * F(x_{l-1}), its input stream x_{l-1} and its multiplier a.
    branch: Any = None
    stream_in: Any = None
    gain: Any = None
    #: dL/dz_l at ``SHATTER_POINTS`` inputs along a line between two test examples, (points, width).
    line_grads: Any = None


def _always(act: Activation) -> bool:
    return True


@dataclass(frozen=True)
class Stat:
    """One statistic. ``compute(view)`` returns its value (or, for ``per_unit``, one value per name);
    ``tiers`` are the tiers that record it (empty: it is recorded when ``stats.extra`` names it)."""

    name: str
    compute: Callable[[LayerView], Any]
    summary: Summary
    tiers: tuple[Tier, ...] = ()
    schedule: Schedule = Schedule.STEP
    applies: Callable[[Activation], bool] = _always
    #: One value per followed unit and percentile, named ``unit_stat(j, q)``.
    per_unit: bool = False
    #: The models it is recorded for (``cells.options.MODELS``).
    models: tuple[str, ...] = MODELS

    def names(self, units: int) -> tuple[str, ...]:
        """The names this statistic's values are stored under."""
        if self.per_unit:
            return tuple(unit_stat(j, q) for j in range(units) for q in PERCENTILES)
        return (self.name,)

    def values(self, view: LayerView) -> list[Any]:
        """Its values on ``view``, in the order of ``names``; NaN where it does not apply."""
        if not self.applies(view.act):
            return [view.xp.array(np.nan, view.z.dtype)] * len(self.names(view.units))
        value = self.compute(view)
        return list(value) if self.per_unit else [value]


#: Percentiles of the pre-activation z_l (Ioffe & Szegedy's figure 1), recorded by the ``full`` tier.
PERCENTILES = (15, 50, 85)
#: The Jacobian statistic is taken on this many fixed examples (the first ones of the training split).
JACOBIAN_EXAMPLES = 32


def _saturated(v: LayerView) -> Any:
    lo, hi = v.act.saturation
    return v.xp.mean((v.h < lo) | (v.h > hi)).astype(v.h.dtype)


def _over_examples(v: LayerView) -> tuple[int, ...]:
    """The axes of z that are not units: the batch, and a convolution's positions (a unit is a channel)."""
    return tuple(range(v.z.ndim - 1))


def _negative(v: LayerView) -> Any:
    """Units with z <= 0 on every example of the batch (a channel: at every position too)."""
    return v.xp.mean(v.xp.all(v.z <= 0, axis=_over_examples(v))).astype(v.h.dtype)


def _percentile(q: int) -> Callable[[LayerView], Any]:
    return lambda v: v.kth(v.z, -(-q * v.z.size // 100))


def _unit_percentiles(v: LayerView) -> list[Any]:
    per_unit = v.z.size // v.z.shape[-1]
    return [v.kth(v.z[..., j], -(-q * per_unit // 100)) for j in range(v.units) for q in PERCENTILES]


def mean_singular_value(v: LayerView) -> Any:
    """Mean singular value of diag(act'(z_n)) W^T over the examples n of z (n, fan_out).

    W is ``v.kernel``, (fan_in, fan_out). The singular values are the square roots of the eigenvalues
    of the smaller Gram matrix, so there are min(fan_in, fan_out) of them per example.
    """
    xp, kernel, slope = v.xp, v.kernel, v.act_slope
    fan_in, fan_out = kernel.shape
    if fan_out <= fan_in:
        gram = (kernel.T @ kernel)[None] * slope[:, :, None] * slope[:, None, :]
    else:
        gram = xp.einsum("iu,nu,ju->nij", kernel, xp.square(slope), kernel)
    return xp.mean(xp.sqrt(xp.clip(xp.linalg.eigvalsh(gram), 0)))


#: How many evenly spaced inputs ``shattering`` follows along its line (both ends included).
SHATTER_POINTS = 64


def neighbour_correlation(v: LayerView) -> Any:
    """The mean over neighbouring points t_i, t_{i+1} of a line through the data of the Pearson
    correlation over units of their gradients dL/dz_l (Balduzzi et al. 2017, "The shattered
    gradients problem": near 1 for smooth gradients, near 0 for white noise). A point whose
    gradient is constant over units counts as 0."""
    xp, g = v.xp, v.line_grads
    g = g.reshape(g.shape[0], -1)
    g = g - g.mean(axis=1, keepdims=True)
    a, b = g[:-1], g[1:]
    num = xp.sum(a * b, axis=1)
    den = xp.sqrt(xp.sum(a * a, axis=1) * xp.sum(b * b, axis=1))
    return xp.mean(xp.where(den > 0, num / xp.where(den > 0, den, 1), 0)).astype(g.dtype)


def _branch_ratio(v: LayerView) -> Any:
    """std(a * F(x_{l-1})) / std(x_{l-1}), as exp(log - log): XLA compiled the quotient of the two
    scalars (and its reciprocal form) one way on one host device and another on two, which broke
    bitwise seed independence; exp and log are left as they are written (0 when the branch is 0)."""
    xp = v.xp
    return xp.exp(xp.log(xp.std(v.branch)) - xp.log(xp.std(v.stream_in)))


_RECORDED = (Tier.SCALARS, Tier.FULL)
GEO, ARITH, FRAC = Summary.GEOMETRIC, Summary.ARITHMETIC, Summary.FRACTION
#: A residual net's "layer" l is its block l: z_l and h_l are both the stream x_l after the block,
#: so a statistic of the activation's own regions (dead, saturated, negative units) is the MLP's alone.
#: An MLP's and a CNN's "layer" is one dense or conv layer with its activation (``PLAIN``).
PLAIN, MLP, RESIDUAL = ("mlp", "cnn"), ("mlp",), ("resmlp",)

#: Every statistic, in the order the engine stacks them (the per-tier ones first).
STATISTICS: dict[str, Stat] = {
    s.name: s
    for s in (
        Stat("grad_norm", lambda v: v.xp.sqrt(v.xp.sum(v.xp.square(v.kernel_grad))), GEO, _RECORDED),
        Stat("delta_std", lambda v: v.xp.std(v.z.shape[0] * v.dloss_dz), GEO, _RECORDED),
        Stat("act_mean", lambda v: v.xp.mean(v.h), ARITH, _RECORDED),
        Stat("act_std", lambda v: v.xp.std(v.h), GEO, _RECORDED),
        Stat("saturated_frac", _saturated, FRAC, _RECORDED, applies=lambda a: a.saturation is not None, models=PLAIN),
        Stat("dead_frac", _negative, FRAC, _RECORDED, applies=lambda a: a.has_dead_units, models=PLAIN),
        Stat("z_std", lambda v: v.xp.std(v.z), GEO, _RECORDED),
        Stat("negative_frac", _negative, FRAC, _RECORDED, applies=lambda a: a.rectifier, models=PLAIN),
        Stat(
            "prelu_alpha",
            lambda v: v.xp.mean(v.slope).astype(v.h.dtype),
            ARITH,
            _RECORDED,
            applies=lambda a: a.learned_alpha,
        ),
        *(Stat(f"z_p{q}", _percentile(q), ARITH, (Tier.FULL,)) for q in PERCENTILES),
        Stat(
            "unit_mean_median",
            lambda v: v.xp.median(v.xp.mean(v.h, axis=_over_examples(v))).astype(v.h.dtype),
            ARITH,
        ),
        Stat("unit_percentiles", _unit_percentiles, ARITH, per_unit=True),
        Stat("jacobian_sv_mean", mean_singular_value, GEO, schedule=Schedule.INIT, models=MLP),
        Stat("shattering", neighbour_correlation, ARITH),
        # the whole network's, not a layer view's: computed by ``engine.spectrum``
        Stat("jacobian_spectrum", lambda v: None, GEO, schedule=Schedule.SPECTRUM),
        Stat("branch_std", lambda v: v.xp.std(v.branch), GEO, _RECORDED, models=RESIDUAL),
        Stat("branch_ratio", _branch_ratio, GEO, _RECORDED, models=RESIDUAL),
        Stat("branch_gain", lambda v: v.xp.asarray(v.gain, v.z.dtype), ARITH, _RECORDED, models=RESIDUAL),
    )
}
#: The statistics ``stats.extra`` may name that only an MLP records.
MLP_ONLY = tuple(name for name, s in STATISTICS.items() if not s.tiers and s.models == MLP)
#: The statistics ``stats.extra`` may name.
EXTRA_STATS = tuple(name for name, s in STATISTICS.items() if not s.tiers)


def recorded(
    tier: str, extra: Sequence[str] = (), schedule: Schedule = Schedule.STEP, model: str = "mlp"
) -> tuple[Stat, ...]:
    """The statistics that ``tier`` and ``stats.extra`` record on ``schedule`` for ``model``, in
    stacking order. Step statistics need a tier that records per-layer scalars; step-0 ones are
    asked for alone."""
    if schedule is Schedule.STEP and Tier(tier) is Tier.NONE:
        return ()
    return tuple(
        s
        for s in STATISTICS.values()
        if s.schedule is schedule and model in s.models and (Tier(tier) in s.tiers or (not s.tiers and s.name in extra))
    )


def stat_names(tier: str, extra: Sequence[str] = (), units: int = 0, model: str = "mlp") -> tuple[str, ...]:
    """The per-layer statistics recorded every ``stats.every`` steps by ``tier`` and ``stats.extra``
    (``units``: how many units ``unit_percentiles`` follows per layer)."""
    return tuple(name for s in recorded(tier, extra, model=model) for name in s.names(units))


def init_stat_names(extra: Sequence[str], model: str = "mlp") -> tuple[str, ...]:
    """The statistics measured once, at step 0."""
    return tuple(s.name for s in recorded(Tier.SCALARS, extra, Schedule.INIT, model))


def applicable(act_name: str, tier: str, extra: Sequence[str], units: int, model: str = "mlp") -> set[str]:
    """The recorded statistics that mean something for the activation (every one but, e.g.,
    ``dead_frac`` for tanh) on ``model``."""
    act = ACTIVATIONS[act_name]
    chosen = (*recorded(tier, extra, model=model), *recorded(tier, extra, Schedule.INIT, model))
    return {name for s in chosen if s.applies(act) for name in s.names(units)}


#: The Jacobian spectrum's stored statistics and the spread drawn from them (``cells.spectrum``):
#: positive magnitudes.
SPECTRUM_SUMMARIES = dict.fromkeys(("sv2_mean", "sv2_var", "sv2_max", "sv2_nvar"), Summary.GEOMETRIC)


def summary_of(stat: str) -> Summary:
    """How ``stat`` (a stored statistic name) is summarised over seeds."""
    found = STATISTICS.get(stat)
    return found.summary if found is not None else SPECTRUM_SUMMARIES.get(stat, Summary.ARITHMETIC)


class BinKind(StrEnum):
    """``linear``: equal bins over a range; ``signed_log``: log-spaced magnitudes, mirrored for
    negatives; ``log``: log-spaced positive values (a value at or below 0 is ``zero`` or ``below``)."""

    LINEAR = "linear"
    SIGNED_LOG = "signed_log"
    LOG = "log"


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

    kind: BinKind
    lo: float
    hi: float
    n: int

    @property
    def magnitudes(self) -> np.ndarray:
        """The n + 1 edges on one axis: values for linear bins, magnitudes for signed-log ones."""
        if self.kind is BinKind.LINEAR:
            return np.linspace(self.lo, self.hi, self.n + 1).astype(np.float32)
        return np.geomspace(self.lo, self.hi, self.n + 1).astype(np.float32)

    @property
    def n_bins(self) -> int:
        return 2 * self.n if self.kind is BinKind.SIGNED_LOG else self.n

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) edge of every bin in increasing order, as float64 copies of the float32 edges."""
        m = self.magnitudes.astype(np.float64)
        if self.kind is not BinKind.SIGNED_LOG:
            return m[:-1], m[1:]
        left = np.concatenate([-m[:0:-1], m[:-1]])
        right = np.concatenate([-m[-2::-1], m[1:]])
        return left, right


def hist_bins(quantity: str, act_name: str, n: int, magnitudes: Sequence[float]) -> HistBins:
    """The bins of ``quantity``: bounded activations get linear bins over their range (Glorot &
    Bengio's figure 6), delta and unbounded activations signed-log bins over ``magnitudes``."""
    bounds = ACTIVATIONS[act_name].bounds
    if quantity == "activation" and bounds is not None:
        return HistBins(BinKind.LINEAR, *bounds, n)
    return HistBins(BinKind.SIGNED_LOG, float(magnitudes[0]), float(magnitudes[1]), n)
