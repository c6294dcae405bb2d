"""Mean-field signal propagation at initialization (Poole et al. 2016, Schoenholz et al. 2017).

Pure numpy/scipy in float64, no jax, so that config-time warnings can use it. Notation: Dz is the
standard Gaussian measure, sigma_w2 the weight variance times fan-in, sigma_b2 the bias variance.

* ``q_map``: q -> sigma_w2 * E[phi(sqrt(q) z)^2] + sigma_b2, the pre-activation variance of the next layer;
* ``q_star``: where iterating it from ``q0`` ends (a ``FixedPoint``: stable, neutral, or unbounded);
* ``chi1``: sigma_w2 * E[phi'(sqrt(q*) z)^2], the mean squared singular value of a layer's Jacobian;
* ``c_map`` / ``c_star``: the correlation of two inputs' pre-activations, layer to layer;
* ``depth_scales``: xi_q and xi_c, the depths over which q and c forget their inputs;
* ``predicted_profile``: a cell's predicted per-layer z, h and delta scales at step 0.

Every activation of ``gradstudy.engine.activations`` has a ``Curve`` here (phi, phi', phi'' in numpy).
Closed forms are used where they exist: rectifiers (ReLU, leaky ReLU, linear) through the
arc-cosine kernel, ELU and SELU's one-dimensional moments through E[e^{az} 1{z<0}] = e^{a^2/2} Phi(-a).
Everything else is quadrature: probabilists' Gauss-Hermite for smooth activations, and for a kink
(or a curve too steep at this q for Gauss-Hermite) each side of 0 separately with Gauss-Legendre;
in two dimensions, polar coordinates cut along the kink lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy import optimize, special

Fn = Callable[[np.ndarray], np.ndarray]

#: Quadrature sizes: Gauss-Hermite nodes in 1-D and per axis in 2-D; Gauss-Legendre nodes per half
#: line, per radius and per angular sector.
HERMITE_1D, HERMITE_2D, LEGENDRE_R, LEGENDRE_THETA = 200, 120, 160, 64
#: The half line [0, Z_MAX] carries all but e^{-Z_MAX^2/2} of a side's Gaussian mass.
Z_MAX = 12.0
#: Above this sqrt(q) a smooth curve's transition near 0 is too narrow for Gauss-Hermite's nodes.
STEEP = 8.0
#: Where the search for a fixed point of the q map stops: a q beyond Q_MAX counts as unbounded.
Q_MAX, Q_MIN = 1e12, 1e-14

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


# ----- activations in float64 ------------------------------------------------------------------
@dataclass(frozen=True)
class Curve:
    """An activation's phi, phi' and phi'' (phi'' without the point masses at a kink, which every
    formula here meets multiplied by phi(0) = 0), and whether it has a kink at 0."""

    phi: Fn
    dphi: Fn
    d2phi: Fn
    kinked: bool


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return special.expit(x)


def _exp_linear(alpha: float, scale: float) -> Curve:
    neg = lambda x: np.minimum(x, 0.0)  # noqa: E731  (keeps expm1 from overflowing on the unused side)
    return Curve(
        phi=lambda x: scale * np.where(x > 0, x, alpha * np.expm1(neg(x))),
        dphi=lambda x: scale * np.where(x > 0, 1.0, alpha * np.exp(neg(x))),
        d2phi=lambda x: scale * np.where(x > 0, 0.0, alpha * np.exp(neg(x))),
        kinked=True,
    )


def _rectifier(slope: float) -> Curve:
    return Curve(
        phi=lambda x: np.where(x > 0, x, slope * x),
        dphi=lambda x: np.where(x > 0, 1.0, slope),
        d2phi=lambda x: np.zeros_like(x),
        kinked=True,
    )


def _tanh() -> Curve:
    return Curve(
        phi=np.tanh,
        dphi=lambda x: 1 - np.tanh(x) ** 2,
        d2phi=lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2),
        kinked=False,
    )


def _logistic() -> Curve:
    return Curve(
        phi=_sigmoid,
        dphi=lambda x: _sigmoid(x) * (1 - _sigmoid(x)),
        d2phi=lambda x: _sigmoid(x) * (1 - _sigmoid(x)) * (1 - 2 * _sigmoid(x)),
        kinked=False,
    )


def _softsign() -> Curve:
    return Curve(
        phi=lambda x: x / (1 + np.abs(x)),
        dphi=lambda x: 1 / (1 + np.abs(x)) ** 2,
        d2phi=lambda x: -2 * np.sign(x) / (1 + np.abs(x)) ** 3,
        kinked=True,  # phi'' jumps at 0
    )


def _gelu() -> Curve:
    pdf = lambda x: np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)  # noqa: E731
    return Curve(
        phi=lambda x: x * special.ndtr(x),
        dphi=lambda x: special.ndtr(x) + x * pdf(x),
        d2phi=lambda x: (2 - x**2) * pdf(x),
        kinked=False,
    )


def _swish() -> Curve:
    return Curve(
        phi=lambda x: x * _sigmoid(x),
        dphi=lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
        d2phi=lambda x: _sigmoid(x) * (1 - _sigmoid(x)) * (2 + x * (1 - 2 * _sigmoid(x))),
        kinked=False,
    )


# ----- Gaussian expectations -------------------------------------------------------------------
@cache
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = hermegauss(n)
    return x, w / np.sqrt(2 * np.pi)


@cache
def _half_line() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of int_0^Z_MAX f(z) Dz."""
    t, w = leggauss(LEGENDRE_R)
    z = Z_MAX * (t + 1) / 2
    return z, w * Z_MAX / 2 * np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)


def gauss(f: Fn, q: float, kinked: bool) -> float:
    """E[f(sqrt(q) z)] for z ~ N(0, 1)."""
    s = np.sqrt(q)
    if kinked or s > STEEP:
        z, w = _half_line()
        return float(w @ (f(s * z) + f(-s * z)))
    z, w = _hermite(HERMITE_1D)
    return float(w @ f(s * z))


def gauss2(f: Callable[[np.ndarray, np.ndarray], np.ndarray], q: float, c: float, kinked: bool) -> float:
    """E[f(u1, u2)] for u1 = sqrt(q) z1, u2 = sqrt(q) (c z1 + sqrt(1 - c^2) z2), z1, z2 ~ N(0, 1)."""
    s, c = np.sqrt(q), float(np.clip(c, -1.0, 1.0))
    if not (kinked or s > STEEP):
        z, w = _hermite(HERMITE_2D)
        z1, z2 = np.meshgrid(z, z, indexing="ij")
        return float(w @ f(s * z1, s * (c * z1 + np.sqrt(1 - c * c) * z2)) @ w)
    # Polar: u1 = s r cos(t), u2 = s r cos(t - beta). Each sign change of u1 or u2 is a ray.
    beta = np.arccos(c)
    cuts = np.sort(np.mod([np.pi / 2, 3 * np.pi / 2, beta + np.pi / 2, beta + 3 * np.pi / 2], 2 * np.pi))
    edges = np.unique(np.concatenate([[0.0], cuts, [2 * np.pi]]))
    r, wr = _half_line()
    wr = wr * r / np.sqrt(2 * np.pi)  # from e^{-r^2/2} dr / sqrt(2 pi) to r e^{-r^2/2} dr / (2 pi)
    t0, wt0 = leggauss(LEGENDRE_THETA)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b - a < 1e-15:
            continue
        t = a + (b - a) * (t0 + 1) / 2
        wt = wt0 * (b - a) / 2
        rr, tt = np.meshgrid(r, t, indexing="ij")
        total += float(wr @ f(s * rr * np.cos(tt), s * rr * np.cos(tt - beta)) @ wt)
    return total


# ----- each activation's moments ---------------------------------------------------------------
class Moments:
    """The Gaussian moments the maps need, by quadrature; subclasses give closed forms."""

    def __init__(self, curve: Curve) -> None:
        self.curve = curve

    def phi2(self, q: float) -> float:
        """E[phi(sqrt(q) z)^2]."""
        phi = self.curve.phi
        return gauss(lambda x: phi(x) ** 2, q, self.curve.kinked)

    def dphi2(self, q: float) -> float:
        """E[phi'(sqrt(q) z)^2]."""
        dphi = self.curve.dphi
        return gauss(lambda x: dphi(x) ** 2, q, self.curve.kinked)

    def dphi4(self, q: float) -> float:
        """E[phi'(sqrt(q) z)^4]: the second moment of a layer's squared slopes D^2 (``jacobian_spectrum``)."""
        dphi = self.curve.dphi
        return gauss(lambda x: dphi(x) ** 4, q, self.curve.kinked)

    def d2phi_phi(self, q: float) -> float:
        """E[phi''(sqrt(q) z) phi(sqrt(q) z)]."""
        c = self.curve
        return gauss(lambda x: c.d2phi(x) * c.phi(x), q, c.kinked)

    def mean(self, q: float) -> float:
        """E[phi(sqrt(q) z)]."""
        return gauss(self.curve.phi, q, self.curve.kinked)

    def phi_phi(self, q: float, c: float) -> float:
        """E[phi(u1) phi(u2)] at variance q and correlation c."""
        phi = self.curve.phi
        return gauss2(lambda a, b: phi(a) * phi(b), q, c, self.curve.kinked)

    def dphi_dphi(self, q: float, c: float) -> float:
        """E[phi'(u1) phi'(u2)] at variance q and correlation c."""
        dphi = self.curve.dphi
        return gauss2(lambda a, b: dphi(a) * dphi(b), q, c, self.curve.kinked)

    #: Positively homogeneous (phi(k x) = k phi(x) for k > 0): every moment is a multiple of a power of q.
    homogeneous = False


class RectifierMoments(Moments):
    """phi(x) = x for x > 0, ``slope`` x otherwise: the arc-cosine kernel (Cho & Saul 2009)."""

    homogeneous = True

    def __init__(self, slope: float) -> None:
        super().__init__(_rectifier(slope))
        self.a = slope

    def phi2(self, q: float) -> float:
        return q * (1 + self.a**2) / 2

    def dphi2(self, q: float) -> float:
        return (1 + self.a**2) / 2

    def dphi4(self, q: float) -> float:
        return (1 + self.a**4) / 2

    def d2phi_phi(self, q: float) -> float:
        return 0.0

    def mean(self, q: float) -> float:
        return np.sqrt(q / (2 * np.pi)) * (1 - self.a)

    def phi_phi(self, q: float, c: float) -> float:
        c = float(np.clip(c, -1.0, 1.0))
        theta = np.arccos(c)
        relu = q / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * c)
        # phi = a x + (1 - a) relu(x), and E[u1 relu(u2)] = q c / 2
        return self.a**2 * q * c + self.a * (1 - self.a) * q * c + (1 - self.a) ** 2 * relu

    def dphi_dphi(self, q: float, c: float) -> float:
        theta = np.arccos(float(np.clip(c, -1.0, 1.0)))
        same = (np.pi - theta) / (2 * np.pi)  # P(u1 > 0, u2 > 0) = P(u1 < 0, u2 < 0)
        return same * (1 + self.a**2) + (theta / np.pi) * self.a


def _e_exp_neg(a: float) -> float:
    """E[e^{a z} 1{z < 0}] = e^{a^2/2} Phi(-a), written with erfcx so that it never overflows."""
    return 0.5 * special.erfcx(a / np.sqrt(2))


class ExpLinearMoments(Moments):
    """``scale`` * ELU with ``alpha`` (SELU: scale 1.0507, alpha 1.6733): closed 1-D moments."""

    def __init__(self, alpha: float, scale: float = 1.0) -> None:
        super().__init__(_exp_linear(alpha, scale))
        self.alpha, self.scale = alpha, scale

    def phi2(self, q: float) -> float:
        s = np.sqrt(q)
        neg = self.alpha**2 * (_e_exp_neg(2 * s) - 2 * _e_exp_neg(s) + 0.5)
        return self.scale**2 * (q / 2 + neg)

    def dphi2(self, q: float) -> float:
        return self.scale**2 * (0.5 + self.alpha**2 * _e_exp_neg(2 * np.sqrt(q)))

    def d2phi_phi(self, q: float) -> float:
        s = np.sqrt(q)
        return self.scale**2 * self.alpha**2 * (_e_exp_neg(2 * s) - _e_exp_neg(s))

    def mean(self, q: float) -> float:
        s = np.sqrt(q)
        return self.scale * (s / np.sqrt(2 * np.pi) + self.alpha * (_e_exp_neg(s) - 0.5))


#: Activation name -> its moments, given alpha (None: the activation's default). The names are
#: ``gradstudy.engine.activations.ACTIVATIONS``'s; the defaults are its ``default_alpha``.
MOMENTS: dict[str, Callable[[float | None], Moments]] = {
    "sigmoid": lambda a: Moments(_logistic()),
    "tanh": lambda a: Moments(_tanh()),
    "softsign": lambda a: Moments(_softsign()),
    "relu": lambda a: RectifierMoments(0.0),
    "leaky_relu": lambda a: RectifierMoments(0.01 if a is None else a),
    "prelu": lambda a: RectifierMoments(0.25 if a is None else a),  # at its current slope (at step 0: act.alpha)
    "elu": lambda a: ExpLinearMoments(1.0 if a is None else a),
    "selu": lambda a: ExpLinearMoments(SELU_ALPHA, SELU_SCALE),
    "gelu": lambda a: Moments(_gelu()),
    "swish": lambda a: Moments(_swish()),
    "linear": lambda a: RectifierMoments(1.0),
}


def moments(act: str, alpha: float | None = None) -> Moments:
    if act not in MOMENTS:
        raise ValueError(f"no mean-field theory for activation {act!r}; known: {', '.join(sorted(MOMENTS))}")
    return MOMENTS[act](alpha)


# ----- the maps and their fixed points ---------------------------------------------------------
def q_map(act: str, q: float, sigma_w2: float, sigma_b2: float, alpha: float | None = None) -> float:
    """sigma_w2 * int Dz phi(sqrt(q) z)^2 + sigma_b2."""
    return sigma_w2 * moments(act, alpha).phi2(q) + sigma_b2


@dataclass(frozen=True)
class FixedPoint:
    """Where the q map's iteration from q0 ends.

    ``kind`` is "stable" (``q`` is the limit), "neutral" (every q is fixed: ``q`` is q0 itself) or
    "unbounded" (q grows past ``Q_MAX`` without a fixed point: ``q`` is None)."""

    q: float | None
    kind: str


def q_star(act: str, sigma_w2: float, sigma_b2: float, q0: float = 1.0, alpha: float | None = None) -> FixedPoint:
    """The fixed point reached by iterating ``q_map`` from ``q0``.

    The map is increasing in q, so the iteration moves monotonically towards the nearest fixed point
    in the direction of q_map(q0) - q0. That point is bracketed on a doubling grid and solved by
    Brent's method, so the search ends after at most ~90 map evaluations plus the solve, however
    slowly the iteration itself would creep (ELU under He init grows by a constant per layer)."""
    m = moments(act, alpha)
    if m.homogeneous:  # q_map(q) = gain q + sigma_b2
        gain = sigma_w2 * m.phi2(1.0)
        if np.isclose(gain, 1.0, rtol=1e-12, atol=0):
            return FixedPoint(q0, "neutral") if sigma_b2 == 0 else FixedPoint(None, "unbounded")
        if gain > 1:
            return FixedPoint(None, "unbounded")
        return FixedPoint(sigma_b2 / (1 - gain), "stable")

    def h(q: float) -> float:
        return q_map(act, q, sigma_w2, sigma_b2, alpha) - q

    h0 = h(q0)
    if abs(h0) <= 1e-14 * max(q0, 1.0):
        return FixedPoint(q0, "stable")
    factor = 2.0 if h0 > 0 else 0.5
    inside = q0
    while Q_MIN <= inside <= Q_MAX:
        outside = inside * factor
        if np.sign(h(outside)) != np.sign(h0):
            root = optimize.brentq(h, *sorted((inside, outside)), xtol=1e-300, rtol=4 * np.finfo(float).eps)
            return FixedPoint(float(root), "stable")
        inside = outside
    if h0 > 0:
        return FixedPoint(None, "unbounded")
    return FixedPoint(0.0, "stable")  # contracts all the way to 0 (no bias, gain below 1)


def _finite_q(act: str, sigma_w2: float, sigma_b2: float, q0: float, alpha: float | None) -> float:
    fp = q_star(act, sigma_w2, sigma_b2, q0, alpha)
    if fp.q is None:
        raise ValueError(
            f"{act} with sigma_w2={sigma_w2:g}, sigma_b2={sigma_b2:g} has no finite fixed point: "
            f"q grows without bound from q0={q0:g}"
        )
    return fp.q


def chi1(act: str, sigma_w2: float, sigma_b2: float, alpha: float | None = None, q0: float = 1.0) -> float:
    """sigma_w2 * int Dz phi'(sqrt(q*) z)^2: above 1 gradients explode with depth, below 1 they vanish."""
    q = _finite_q(act, sigma_w2, sigma_b2, q0, alpha)
    return sigma_w2 * moments(act, alpha).dphi2(q)


def c_map(act: str, c: float, sigma_w2: float, sigma_b2: float, alpha: float | None = None, q0: float = 1.0) -> float:
    """The next layer's correlation of two inputs at correlation ``c``, both at q*:
    (sigma_w2 * int Dz1 Dz2 phi(u1) phi(u2) + sigma_b2) / q*."""
    q = _finite_q(act, sigma_w2, sigma_b2, q0, alpha)
    if q == 0:
        raise ValueError(f"{act}: q* = 0, so the correlation map is undefined")
    return (sigma_w2 * moments(act, alpha).phi_phi(q, c) + sigma_b2) / q


def c_star(act: str, sigma_w2: float, sigma_b2: float, alpha: float | None = None, q0: float = 1.0) -> float:
    """The stable fixed point of ``c_map``: 1 in the ordered phase (chi1 <= 1); in the chaotic phase
    the largest fixed point below 1, the one the iteration from any c < 1 near 1 falls to."""
    if chi1(act, sigma_w2, sigma_b2, alpha, q0) <= 1 + 1e-12:
        return 1.0

    def g(c: float) -> float:
        return c_map(act, c, sigma_w2, sigma_b2, alpha, q0) - c

    # 1 - c on a geometric grid from 1e-6 to 2; g < 0 just below 1 and g(-1) >= 0 (Cauchy-Schwarz).
    grid = 1 - np.geomspace(1e-6, 2.0, 120)
    previous = grid[0]
    for c in grid[1:]:
        if g(c) >= 0:
            return float(optimize.brentq(g, c, previous, xtol=1e-14))
        previous = c
    return -1.0


@dataclass(frozen=True)
class DepthScales:
    """xi_q and xi_c (inf at criticality: no exponential decay)."""

    xi_q: float
    xi_c: float


def _depth(rate: float) -> float:
    """-1 / ln(rate) for a contraction rate in (0, 1); inf when nothing contracts."""
    return float(-1 / np.log(rate)) if rate < 1 else float("inf")


def depth_scales(
    act: str, sigma_w2: float, sigma_b2: float, alpha: float | None = None, q0: float = 1.0
) -> DepthScales:
    """xi_q^-1 = -ln[chi1 + sigma_w2 int Dz phi''(sqrt(q*) z) phi(sqrt(q*) z)];
    xi_c^-1 = -ln[sigma_w2 int Dz1 Dz2 phi'(u1) phi'(u2)] at c*."""
    m = moments(act, alpha)
    q = _finite_q(act, sigma_w2, sigma_b2, q0, alpha)
    x1 = sigma_w2 * m.dphi2(q)
    c = c_star(act, sigma_w2, sigma_b2, alpha, q0)
    chi_c = x1 if c == 1.0 else sigma_w2 * m.dphi_dphi(q, c)
    return DepthScales(xi_q=_depth(x1 + sigma_w2 * m.d2phi_phi(q)), xi_c=_depth(chi_c))


# ----- a cell's predicted profile --------------------------------------------------------------
#: The normalization layers the profile covers, at either position (``norm.position``).
NORMALIZED = ("batchnorm", "layernorm")


def not_applicable(cfg: Any) -> str | None:
    """Why mean-field theory does not describe the cell ``cfg`` at initialization, or None when it does."""
    if cfg.model.get("name", "mlp") == "resmlp" and cfg.norm.name == "batchnorm":
        return (
            "batch norm in a residual net: the stream's per-unit centring is not in the residual recursion "
            "(layer norm and no norm are)"
        )
    if cfg.norm.name not in ("none", *NORMALIZED):
        return f"norm={cfg.norm.name}: no mean-field recursion for it"
    bias_removed = cfg.norm.name in NORMALIZED and cfg.norm.get("position", "before") == "before"
    if cfg.init.get("bias", 0.0) != 0 and not bias_removed:
        return f"init.bias={cfg.init.bias:g}: the theory takes random biases, not a non-zero constant"
    if cfg.act.name not in MOMENTS:
        return f"act={cfg.act.name}: no mean-field moments"
    return None


@dataclass(frozen=True)
class Profile:
    """Predicted per-layer scales at step 0, layers 1..depth: the standard deviations of z_l and
    h_l over units and examples, and of delta_l anchored at the last hidden layer."""

    z_std: np.ndarray
    h_std: np.ndarray
    delta_std: np.ndarray
    #: A residual net's: the std of each block's branch a * F(x_{l-1}), and its ratio to std(x_{l-1}).
    branch_std: np.ndarray | None = None
    branch_ratio: np.ndarray | None = None


@dataclass(frozen=True)
class CellInputs:
    """What the theory needs of a cell beyond its activation, norm and depth: the data's E[x^2]
    (over examples and features), its feature count, each dense layer's sigma_w2 (weight variance
    times fan-in, the first hidden layer's first) and sigma_b2. ``gradstudy.run`` records
    them in the cell's ``meta.json`` (``cells.compat.cell_inputs``), so a prediction never needs the
    data or the initializer again."""

    data_q: float
    n_inputs: int
    sigma_w2: tuple[float, ...]
    sigma_b2: float


def branch_multiplier(cfg: Any) -> float:
    """A residual branch's multiplier a at step 0."""
    scale = cfg.model.branch_scale
    if scale in ("skipinit", "rezero"):
        return 1.0 if cfg.init.name == "fixup" else float(cfg.model.branch_init)
    return 1.0 if scale == "one" else float(cfg.model.depth) ** -0.5


def residual_profile(cfg: Any, inputs: CellInputs, delta_last: float = 1.0) -> Profile:
    """The predicted step-0 profile of a residual net (``model=resmlp``; Yang & Schoenholz 2017's
    recursion for pre-activation branches): per block, the stream x_l, the branch a * F(x_{l-1})
    and delta at the stream.

    ``inputs.sigma_w2`` holds the input projection's sigma_w2 and then each branch layer's. The
    stream starts at q_0 = sigma_w2_in E[x^2] + sigma_b2. A branch of m layers, each phi then dense,
    maps its input's second moment v through V_j(v) = sigma_w2_j E[phi(sqrt(v) z)^2] + sigma_b2, so
    its output has q_F = V_m(...V_1(q_{l-1})); a branch weight's zero mean makes it uncorrelated
    with the stream, so q_l = q_{l-1} + a^2 q_F. Layer norm ``pre`` normalizes the input of each
    phi to second moment 1 (V_j(1)); ``post`` normalizes the stream to 1 after each addition.
    Backward, E[delta_{l-1}^2] = E[delta_l^2] (1 + a^2 chi_F), chi_F being the product over the
    branch's layers of sigma_w2_j E[phi'(sqrt(v_j) z)^2] / s_j^2, with s_j^2 the second moment a
    norm before layer j divides by (1 without one), and for ``post`` divided by the block's
    (q_{l-1} + a^2 q_F), the second moment the stream's norm divides by. delta is anchored at
    ``delta_last`` at the last block. ``tests/test_theory.py`` checks the recursion against exact
    forward and backward passes through wide random residual nets."""
    m = moments(cfg.act.name, cfg.act.alpha)
    depth, layers = cfg.model.depth, cfg.model.branch_layers
    a2 = branch_multiplier(cfg) ** 2
    norm = cfg.norm.name == "layernorm"
    where = cfg.model.norm_position or "pre"
    pre, post = norm and where == "pre", norm and where == "post"
    sigma_in, branch, sigma_b2 = inputs.sigma_w2[0], inputs.sigma_w2[1:], inputs.sigma_b2
    q = sigma_in * inputs.data_q + sigma_b2
    streams, branch_var, incoming, growth = [], [], [], []
    for _ in range(depth):
        v, chi = q, 1.0
        for j in range(layers):
            divide = v if pre else 1.0  # the norm before phi brings v to 1 and divides the gradient by sqrt(v)
            v_in = 1.0 if pre else v
            chi *= branch[j] * m.dphi2(v_in) / divide
            v = branch[j] * m.phi2(v_in) + sigma_b2
        incoming.append(q)
        branch_var.append(a2 * v)
        summed = q + a2 * v
        growth.append((1 + a2 * chi) / (summed if post else 1.0))
        q = 1.0 if post else summed
        streams.append(q)
    delta2 = [delta_last**2]
    for block in range(depth - 1, 0, -1):  # delta at block l-1's stream from block l's
        delta2.insert(0, delta2[0] * growth[block])
    stream_std = np.sqrt(streams)
    return Profile(
        z_std=stream_std,
        h_std=stream_std,
        delta_std=np.sqrt(delta2),
        branch_std=np.sqrt(branch_var),
        branch_ratio=np.sqrt(np.array(branch_var) / np.array(incoming)),
    )


def predicted_profile(cfg: Any, inputs: CellInputs, delta_last: float = 1.0) -> Profile:
    """The predicted step-0 profile of a cell's own architecture.

    Without normalization, q_l starts from the data's E[x^2] and runs forward with each layer's own
    sigma_w2 (Xavier's fan_avg makes the first layer's differ); delta runs backward,
    E[delta_l^2] = E[delta_{l+1}^2] sigma_w2_{l+1} (n_{l+1} / n_l) E[phi'(sqrt(q_l) z)^2] / s_l^2,
    from ``delta_last`` at the last hidden layer (the measured ``delta_std`` there), with s_l = 1.

    Batch or layer norm rescales the signal it normalizes to unit variance and divides the gradient
    it passes back by the same standard deviation s (the centring terms are O(1/width) or
    O(1/batch) and left out):

    * norm ``before`` the activation: z_l itself is normalized, so q_l = 1 at every layer, and s_l
      is the std of the next layer's pre-norm input W h_l + b. Layer norm normalizes over units, where
      that variance is sigma_w2 E[phi^2] + sigma_b2; batch norm normalizes each unit over the batch,
      which also removes the mean of h_l and the (constant per unit) bias: sigma_w2 Var[phi]. For
      ReLU and batch norm the factor per layer is E[phi'^2] / Var[phi] = pi / (pi - 1) (Yang et al.
      2019, "A mean field theory of batch normalization"); for layer norm with sigma_b2 = 0 it is
      E[phi'^2] / E[phi^2], whatever sigma_w2;
    * norm ``after`` the activation: h_l is normalized, so the next layer's q is sigma_w2 + sigma_b2,
      and s_l^2 = Var[phi(sqrt(q_l) z)] (for batch norm only with sigma_b2 = 0: with random biases
      each unit has its own spread, and the profile raises ``ValueError``).

    ``tests/test_theory.py`` checks the normalized recursions against exact backpropagation through
    numpy batch and layer norm on wide random nets.
    """
    reason = not_applicable(cfg)
    if reason is not None:
        raise ValueError(f"no mean-field prediction: {reason}")
    if cfg.model.get("name", "mlp") == "resmlp":
        return residual_profile(cfg, inputs, delta_last)
    m = moments(cfg.act.name, cfg.act.alpha)
    depth, width = cfg.model.depth, cfg.model.width
    widths = [inputs.n_inputs, *[width] * depth]
    sigma_w2, sigma_b2 = inputs.sigma_w2, inputs.sigma_b2
    norm = cfg.norm.name if cfg.norm.name in NORMALIZED else None
    before = norm is not None and cfg.norm.get("position", "before") == "before"
    if norm == "batchnorm" and not before and sigma_b2 > 0:
        raise ValueError(
            "no mean-field prediction: batch norm after the activation with random biases divides each unit by its "
            "own spread, which the one-variable recursion does not describe"
        )
    qs = [1.0 if before else sigma_w2[0] * inputs.data_q + sigma_b2]
    for layer in range(1, depth):
        if before:
            qs.append(1.0)
        elif norm is not None:  # after: h normalized to unit second moment
            qs.append(sigma_w2[layer] + sigma_b2)
        else:
            qs.append(sigma_w2[layer] * m.phi2(qs[-1]) + sigma_b2)
    h_var = [max(m.phi2(q) - m.mean(q) ** 2, 0.0) for q in qs]

    def passed_back(layer: int) -> float:
        """s^2: the variance the norm between z_layer and z_{layer+1} divides the gradient by (0-based)."""
        if norm is None:
            return 1.0
        if not before:
            return h_var[layer]
        if norm == "layernorm":
            return sigma_w2[layer + 1] * m.phi2(qs[layer]) + sigma_b2
        return sigma_w2[layer + 1] * h_var[layer]

    delta2 = [delta_last**2]
    for layer in range(depth - 2, -1, -1):  # 0-based: layer l gets layer l+1's
        growth = sigma_w2[layer + 1] * widths[layer + 2] / widths[layer + 1] * m.dphi2(qs[layer])
        delta2.insert(0, delta2[0] * growth / passed_back(layer))
    return Profile(z_std=np.sqrt(qs), h_std=np.sqrt(h_var), delta_std=np.sqrt(delta2))


# ----- the input-output Jacobian's spectrum ----------------------------------------------------
@dataclass(frozen=True)
class Spectrum:
    """Predicted mean and variance of the squared singular values of J_l = dh_l/dx, layers 1..depth."""

    mean: np.ndarray
    var: np.ndarray


def product_spectrum(
    sigma_w2: Sequence[float], dphi2: Sequence[float], dphi4: Sequence[float], weight_nvar: Sequence[float]
) -> Spectrum:
    """The first two moments of the squared singular values of J_l = D_l W_l^T ... D_1 W_1^T for every
    l, in the limit of wide layers, by free probability (Pennington, Schoenholz & Ganguli 2017).

    Layer k contributes W_k^T W_k, of mean ``sigma_w2[k]`` and normalized variance (variance over
    mean squared) ``weight_nvar[k]``, and D_k^2 = diag(phi'(z_k)^2), of moments ``dphi2[k]`` and
    ``dphi4[k]``. The factors are asymptotically free, and for free positive a and b,
    m1(ab) = m1(a) m1(b) and var(ab) / m1(ab)^2 = var(a) / m1(a)^2 + var(b) / m1(b)^2: the means
    multiply and the normalized variances add. With every layer alike at chi_1 = sigma_w2 E[phi'^2]
    = 1 this is the paper's sigma^2_JJ^T = L (mu_2 / mu_1^2 - 1 - s_1), s_1 = -1 for Gaussian
    weights (Marchenko-Pastur, normalized variance 1) and 0 for orthogonal ones."""
    growth = np.asarray(sigma_w2, float) * np.asarray(dphi2, float)
    nvar = np.asarray(dphi4, float) / np.asarray(dphi2, float) ** 2 - 1 + np.asarray(weight_nvar, float)
    mean = np.cumprod(growth)
    return Spectrum(mean=mean, var=mean**2 * np.cumsum(nvar))


#: The initializers (``inputs.inits``) whose kernels are scaled isometries: W^T W has no spread.
ISOMETRIC = ("orthogonal", "delta_orthogonal")


def spectrum_not_applicable(cfg: Any) -> str | None:
    """Why ``jacobian_spectrum`` has no free-probability prediction for the cell, or None."""
    if cfg.model.get("name", "mlp") != "mlp":
        return f"model={cfg.model.name}: the prediction is the MLP's (a CNN shares its q* and chi_1 only)"
    if cfg.norm.name != "none":
        return f"norm={cfg.norm.name}: the product of free factors has no normalization layer"
    if cfg.init.get("bias", 0.0) != 0:
        return f"init.bias={cfg.init.bias:g}: the theory takes random biases, not a non-zero constant"
    if cfg.act.name not in MOMENTS:
        return f"act={cfg.act.name}: no mean-field moments"
    return None


def jacobian_spectrum(cfg: Any, inputs: CellInputs) -> Spectrum:
    """The predicted spectrum moments of dh_l/dx at step 0 for every hidden layer of an MLP without
    norm (``product_spectrum``): z_l's variance q_l runs forward from the data as in
    ``predicted_profile``, and W_l^T W_l has the normalized variance of its initializer: 0 for an
    orthogonal one (``inits.ISOMETRIC``), else Marchenko-Pastur's min(fan_in, fan_out) /
    max(fan_in, fan_out) (the first layer's fan-in is the data's)."""
    reason = spectrum_not_applicable(cfg)
    if reason is not None:
        raise ValueError(f"no free-probability prediction: {reason}")
    m = moments(cfg.act.name, cfg.act.alpha)
    sigma_w2, sigma_b2 = inputs.sigma_w2, inputs.sigma_b2
    qs = [sigma_w2[0] * inputs.data_q + sigma_b2]
    for layer in range(1, cfg.model.depth):
        qs.append(sigma_w2[layer] * m.phi2(qs[-1]) + sigma_b2)
    widths = [inputs.n_inputs, *[cfg.model.width] * cfg.model.depth]
    isometric = cfg.init.name in ISOMETRIC
    nvar = [0.0 if isometric else min(a, b) / max(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
    return product_spectrum(sigma_w2, [m.dphi2(q) for q in qs], [m.dphi4(q) for q in qs], nvar)
