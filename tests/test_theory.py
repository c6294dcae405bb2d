"""Mean-field theory against independently computed oracles, closed forms against quadrature, and
the special cases (neutral, no fixed point)."""

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import integrate

from gradstudy import theory
from gradstudy.cells.compat import Inputs, cell_inputs
from gradstudy.cells.options import ACTIVATIONS
from gradstudy.engine.activations import FUNCTIONS
from gradstudy.inputs.inits import INITIALIZERS, WEIGHT_VARIANCES
from gradstudy.theory import MOMENTS, Moments, c_star, chi1, depth_scales, q_map, q_star

REL = 1e-4


# Oracles: 160-200-node Gauss-Hermite, scipy quad for SELU (issue #12).
@pytest.mark.parametrize(
    "sigma_w2, q, x1, c, xi_c",
    [
        (1.0, 0.19359, 0.75903, 1.0, 3.6270),
        (1.5, 0.41804, 0.93864, 1.0, 15.791),
        (2.0, 0.72176, 1.04767, 0.74408, 25.213),
    ],
)
def test_tanh_oracles(sigma_w2, q, x1, c, xi_c):
    assert q_star("tanh", sigma_w2, 0.05).q == pytest.approx(q, rel=REL)
    assert chi1("tanh", sigma_w2, 0.05) == pytest.approx(x1, rel=REL)
    assert c_star("tanh", sigma_w2, 0.05) == pytest.approx(c, rel=REL)
    assert depth_scales("tanh", sigma_w2, 0.05).xi_c == pytest.approx(xi_c, rel=REL)


def test_tanh_order_to_chaos_boundary():
    assert chi1("tanh", 1.76095, 0.05) == pytest.approx(1.0, abs=1e-5)


def test_relu_at_he_variance_is_neutral():
    fp = q_star("relu", 2.0, 0.0, q0=3.7)
    assert fp.kind == "neutral" and fp.q == 3.7
    assert chi1("relu", 2.0, 0.0) == pytest.approx(1.0, rel=1e-12)
    assert depth_scales("relu", 2.0, 0.0).xi_c == np.inf


def test_selu_maps_one_to_one():
    assert q_map("selu", 1.0, 1.0, 0.0) == pytest.approx(1.0, rel=REL)
    assert q_star("selu", 1.0, 0.0).q == pytest.approx(1.0, rel=REL)
    assert chi1("selu", 1.0, 0.0) == pytest.approx(1.07157, rel=REL)


@pytest.mark.parametrize(
    "act, sigma_w2, sigma_b2", [("relu", 2.5, 0.0), ("relu", 2.0, 0.1), ("elu", 2.0, 0.0), ("leaky_relu", 3.0, 0.0)]
)
def test_no_finite_fixed_point_is_reported_not_looped_on(act, sigma_w2, sigma_b2):
    """ReLU above sigma_w2 = 2 grows geometrically; ELU under He init grows by a constant per layer,
    so slowly that iterating would never notice."""
    fp = q_star(act, sigma_w2, sigma_b2)
    assert fp.kind == "unbounded" and fp.q is None
    with pytest.raises(ValueError, match="no finite fixed point"):
        chi1(act, sigma_w2, sigma_b2)


def test_contracting_map_without_bias_ends_at_zero():
    assert q_star("tanh", 0.5, 0.0) == theory.FixedPoint(0.0, "stable")
    assert q_star("relu", 1.0, 0.0) == theory.FixedPoint(0.0, "stable")


@pytest.mark.parametrize("act", sorted(MOMENTS))
@pytest.mark.parametrize("sigma_w2, sigma_b2", [(1.0, 0.05), (1.3, 0.2)])
def test_fixed_point_is_where_plain_iteration_ends(act, sigma_w2, sigma_b2):
    """Where the q map has a stable fixed point, iterating the map itself from q0 lands on q_star."""
    fp = q_star(act, sigma_w2, sigma_b2)
    if fp.kind != "stable":
        pytest.skip(f"{act}: {fp.kind}")
    q = 1.0
    for _ in range(3000):
        q = q_map(act, q, sigma_w2, sigma_b2)
    assert fp.q == pytest.approx(q, rel=1e-6)


def _quad(f):
    return integrate.quad(
        lambda z: f(z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -np.inf, np.inf, limit=400, points=None
    )[0]


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "linear", "elu", "selu"])
@pytest.mark.parametrize("q", [0.3, 1.0, 4.0])
def test_closed_forms_match_quadrature(act, q):
    closed = MOMENTS[act](0.2 if act in ("leaky_relu", "elu") else None)
    numeric = Moments(closed.curve)
    for moment in ("phi2", "dphi2", "d2phi_phi", "mean"):
        assert getattr(closed, moment)(q) == pytest.approx(getattr(numeric, moment)(q), rel=1e-8, abs=1e-12), moment
    for c in (-0.7, 0.0, 0.5, 0.95):
        assert closed.phi_phi(q, c) == pytest.approx(numeric.phi_phi(q, c), rel=1e-7, abs=1e-10)
        assert closed.dphi_dphi(q, c) == pytest.approx(numeric.dphi_dphi(q, c), rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softsign", "gelu", "swish", "elu"])
def test_quadrature_matches_scipy_quad(act):
    m = MOMENTS[act](None)
    s = np.sqrt(2.3)
    assert m.phi2(2.3) == pytest.approx(_quad(lambda z: m.curve.phi(s * z) ** 2), rel=1e-8)
    assert m.dphi2(2.3) == pytest.approx(_quad(lambda z: m.curve.dphi(s * z) ** 2), rel=1e-8)


@pytest.mark.parametrize("act", sorted(MOMENTS))
def test_derivatives_match_finite_differences(act):
    curve = MOMENTS[act](None).curve
    x = np.array([-2.1, -0.7, -0.2, 0.3, 0.9, 2.4])
    h = 1e-5
    np.testing.assert_allclose(curve.dphi(x), (curve.phi(x + h) - curve.phi(x - h)) / (2 * h), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(curve.d2phi(x), (curve.dphi(x + h) - curve.dphi(x - h)) / (2 * h), rtol=1e-5, atol=1e-7)


def test_steep_curves_use_split_quadrature():
    """At large q a tanh is nearly a step, too narrow near 0 for Gauss-Hermite's nodes; the split
    quadrature must still match scipy's adaptive integral."""
    m = MOMENTS["tanh"](None)
    s = np.sqrt(900.0)
    assert m.dphi2(900.0) == pytest.approx(_quad(lambda z: (1 - np.tanh(s * z) ** 2) ** 2), rel=1e-8)


def test_every_activation_has_theory_with_its_default_alpha():
    assert set(MOMENTS) == set(ACTIVATIONS)
    for name, act in ACTIVATIONS.items():
        if act.default_alpha is not None:
            x = np.array([-1.3, 0.4])
            ours = MOMENTS[name](None).curve.phi(x)
            theirs = np.asarray(FUNCTIONS[name](x, act.default_alpha))
            np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_every_initializer_has_a_weight_variance():
    assert set(WEIGHT_VARIANCES) == set(INITIALIZERS)


def _cell(init: dict, act="relu", depth=10, width=100):
    base = {"scale": 1.0, "mode": "fan_in", "distribution": "normal", "sigma": 1.0, "bias": 0.0, "bias_std": 0.0}
    return OmegaConf.create(
        {
            "init": {**base, **init},
            "act": {"name": act, "alpha": None},
            "norm": {"name": "none"},
            "model": {"depth": depth, "width": width},
        }
    )


def _predicted(cfg, data_q, n_inputs, delta_last=1.0):
    """The profile from the inputs a run records for ``cfg`` (``cells.compat.cell_inputs``)."""
    inputs = theory.CellInputs(**cell_inputs(cfg, Inputs(data_q, n_inputs)))
    return theory.predicted_profile(cfg, inputs, delta_last)


def test_xavier_relu_profile_shrinks_by_the_stated_ratio():
    """Xavier (fan_avg, scale 1) with ReLU: each hidden layer multiplies E[delta^2] by 1/2 going down,
    so from the last to the first of 10 layers the standard deviation shrinks by 2^(-9/2) ~ 1/22.6."""
    profile = _predicted(_cell({"name": "xavier", "mode": "fan_avg", "distribution": "uniform"}), 0.1, 100)
    assert profile.delta_std[0] / profile.delta_std[-1] == pytest.approx(2 ** (-4.5), rel=1e-12)
    # q halves per layer from the first: z_std shrinks by sqrt(2) per layer
    np.testing.assert_allclose(profile.z_std[1:] / profile.z_std[:-1], 2**-0.5, rtol=1e-12)


def test_he_relu_profile_is_flat_and_first_layer_uses_its_own_fan():
    profile = _predicted(_cell({"name": "he", "scale": 2.0}), 0.1, 784, delta_last=0.3)
    np.testing.assert_allclose(profile.delta_std, 0.3, rtol=1e-12)
    np.testing.assert_allclose(profile.z_std, np.sqrt(2 * 0.1), rtol=1e-12)
    xavier = _predicted(_cell({"name": "xavier", "mode": "fan_avg"}), 0.1, 784)
    assert xavier.z_std[0] ** 2 == pytest.approx(784 / ((784 + 100) / 2) * 0.1, rel=1e-12)


@pytest.mark.parametrize(
    "change, reason",
    [({"norm": {"name": "batchnorm"}}, "norm=batchnorm"), ({"init": {"bias": 0.1}}, "init.bias=0.1")],
)
def test_no_prediction_where_the_theory_does_not_apply(change, reason):
    cfg = OmegaConf.merge(_cell({"name": "he"}), change)
    assert reason in theory.not_applicable(cfg)
    with pytest.raises(ValueError, match=reason):
        _predicted(cfg, 0.1, 784)
