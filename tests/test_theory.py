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
    [
        ({"init": {"bias": 0.1}}, "init.bias=0.1"),
        ({"init": {"bias": 0.1}, "norm": {"name": "layernorm", "position": "after"}}, "init.bias=0.1"),
    ],
)
def test_no_prediction_where_the_theory_does_not_apply(change, reason):
    cfg = OmegaConf.merge(_cell({"name": "he"}), change)
    assert reason in theory.not_applicable(cfg)
    with pytest.raises(ValueError, match=reason):
        _predicted(cfg, 0.1, 784)


def test_a_constant_bias_before_a_norm_is_removed_by_it():
    """Batch or layer norm before the activation subtracts a constant bias exactly: the theory applies."""
    cfg = OmegaConf.merge(_cell({"name": "he", "bias": 0.1}), {"norm": {"name": "batchnorm", "position": "before"}})
    assert theory.not_applicable(cfg) is None


def test_batch_norm_after_the_activation_with_random_biases_is_refused():
    cfg = OmegaConf.merge(_cell({"name": "he", "bias_std": 0.3}), {"norm": {"name": "batchnorm", "position": "after"}})
    with pytest.raises(ValueError, match="batch norm after the activation"):
        _predicted(cfg, 0.1, 784)


def _norm_forward(x, axis, eps=1e-5):
    mean, var = x.mean(axis, keepdims=True), x.var(axis, keepdims=True)
    return (x - mean) / np.sqrt(var + eps), np.sqrt(var + eps)


def _norm_backward(grad, normed, scale, axis):
    """Exact backpropagation through (x - mean) / std over ``axis``, centring terms included."""
    return (grad - grad.mean(axis, keepdims=True) - normed * (grad * normed).mean(axis, keepdims=True)) / scale


def _delta_ratio_numpy(act, norm, position, sigma_w2, sigma_b2, rng, width=384, batch=384, depth=8):
    """delta_1 / delta_depth of one wide random net with numpy batch or layer norm, by exact
    backpropagation of a Gaussian gradient at the last hidden layer's z."""
    phi = {"relu": lambda x: np.maximum(x, 0), "tanh": np.tanh}[act]
    dphi = {"relu": lambda x: (x > 0) * 1.0, "tanh": lambda x: 1 - np.tanh(x) ** 2}[act]
    axis = 0 if norm == "batchnorm" else 1
    signal, layers = rng.normal(size=(batch, width)), []
    for _ in range(depth):
        kernel = rng.normal(scale=np.sqrt(sigma_w2 / width), size=(width, width))
        y = signal @ kernel + rng.normal(scale=np.sqrt(sigma_b2), size=width)
        if position == "before":
            z, scale = _norm_forward(y, axis)
            signal, normed = phi(z), z
        else:
            z = y
            normed, scale = _norm_forward(phi(z), axis)
            signal = normed
        layers.append((kernel, z, normed, scale))
    delta = rng.normal(size=(batch, width))
    last = delta
    for layer in range(depth - 2, -1, -1):
        _, z, normed, scale = layers[layer]
        kernel_above, _, normed_above, scale_above = layers[layer + 1]
        if position == "before":
            delta = dphi(z) * (_norm_backward(delta, normed_above, scale_above, axis) @ kernel_above.T)
        else:
            delta = dphi(z) * _norm_backward(delta @ kernel_above.T, normed, scale, axis)
    return delta.std() / last.std()


@pytest.mark.parametrize(
    "act, norm, position, sigma_w2, sigma_b2",
    [
        ("relu", "batchnorm", "before", 2.0, 0.0),  # pi / (pi - 1) per layer (Yang et al. 2019)
        ("tanh", "layernorm", "before", 1.0, 0.0),  # E[phi'^2] / E[phi^2] at q = 1
        ("relu", "layernorm", "before", 2.0, 0.0),  # flat
        ("tanh", "batchnorm", "before", 1.0, 0.0),
        ("tanh", "layernorm", "before", 1.0, 0.3),  # the bias enters layer norm's spread
        ("relu", "batchnorm", "after", 2.0, 0.0),
        ("tanh", "layernorm", "after", 1.5, 0.3),
    ],
)
def test_normalized_delta_profiles_match_backpropagation_on_wide_random_nets(act, norm, position, sigma_w2, sigma_b2):
    """The predicted first-to-last delta ratio over 8 layers against the geometric mean of three
    random nets of width 384, backpropagated exactly through numpy batch and layer norm."""
    rng = np.random.default_rng(0)
    measured = np.exp(
        np.mean([np.log(_delta_ratio_numpy(act, norm, position, sigma_w2, sigma_b2, rng)) for _ in range(3)])
    )
    cfg = OmegaConf.merge(
        _cell({"name": "he"}, act=act, depth=8, width=384), {"norm": {"name": norm, "position": position}}
    )
    inputs = theory.CellInputs(data_q=1.0, n_inputs=384, sigma_w2=(sigma_w2,) * 8, sigma_b2=sigma_b2)
    predicted = theory.predicted_profile(cfg, inputs)
    assert measured == pytest.approx(predicted.delta_std[0] / predicted.delta_std[-1], rel=0.1)
    expected_q = 1.0 if position == "before" else sigma_w2 + sigma_b2
    np.testing.assert_allclose(predicted.z_std[1:] ** 2, expected_q, rtol=1e-12)


def test_relu_batch_norm_grows_delta_by_pi_over_pi_minus_one_per_layer():
    cfg = OmegaConf.merge(
        _cell({"name": "he"}, act="relu", depth=16), {"norm": {"name": "batchnorm", "position": "before"}}
    )
    inputs = theory.CellInputs(data_q=0.1, n_inputs=784, sigma_w2=(2.0,) * 16, sigma_b2=0.0)
    delta = theory.predicted_profile(cfg, inputs).delta_std
    np.testing.assert_allclose((delta[:-1] / delta[1:]) ** 2, np.pi / (np.pi - 1), rtol=1e-9)


def _residual_numpy(act, norm, m, a, sigma_w2, rng, width=1024, batch=128, depth=5):
    """One wide random residual net in float64 numpy (inputs with E[x^2] = 1, an input projection
    of sigma_w2 = 1, blocks x <- x + a F(x) with F's layers phi then dense; layer norm before each
    phi (``pre``) or on the stream (``post``)): each stream's and branch's second moment, and
    delta at the first block's stream over delta at the last, by exact backpropagation."""
    phi = {"relu": lambda x: np.maximum(x, 0), "tanh": np.tanh}[act]
    dphi = {"relu": lambda x: (x > 0) * 1.0, "tanh": lambda x: 1 - np.tanh(x) ** 2}[act]
    x = rng.normal(size=(batch, width)) @ rng.normal(scale=np.sqrt(1 / width), size=(width, width))
    streams, branches, blocks = [], [], []
    for _ in range(depth):
        f, cache = x, []
        for j in range(m):
            normed, scale = _norm_forward(f, 1) if norm == "pre" else (None, None)
            u = normed if norm == "pre" else f
            kernel = rng.normal(scale=np.sqrt(sigma_w2[j] / width), size=(width, width))
            cache.append((u, normed, scale, kernel))
            f = phi(u) @ kernel
        summed = x + a * f
        post = _norm_forward(summed, 1) if norm == "post" else None
        blocks.append((cache, post))
        branches.append(np.mean((a * f) ** 2))
        x = post[0] if post else summed
        streams.append(np.mean(x**2))
    delta = last = rng.normal(size=(batch, width))
    for cache, post in blocks[:0:-1]:  # from the last block down to the second: delta at the stream before it
        g = _norm_backward(delta, post[0], post[1], 1) if post else delta
        branch = a * g
        for u, normed, scale, kernel in reversed(cache):
            branch = (branch @ kernel.T) * dphi(u)
            if normed is not None:
                branch = _norm_backward(branch, normed, scale, 1)
        delta = g + branch
    return np.array(streams), np.array(branches), delta.std() / last.std()


@pytest.mark.parametrize(
    "act, norm, m, scale, a, sigma_w2",
    [
        ("relu", "none", 2, "one", 1.0, (2.0, 2.0)),  # He: the stream's variance doubles per block
        ("tanh", "none", 1, "inv_sqrt_depth", 5**-0.5, (1.5,)),
        ("relu", "pre", 2, "one", 1.0, (2.0, 2.0)),  # linear growth of the stream
        ("tanh", "post", 1, "skipinit", 0.5, (1.0,)),
        ("relu", "none", 2, "one", 1.0, (2.0 * 5**-1.0, 0.0)),  # Fixup's factors: the branch starts at 0
    ],
    ids=["relu-he", "tanh-1/sqrt(depth)", "relu-layernorm-pre", "tanh-layernorm-post-skipinit", "relu-fixup"],
)
def test_residual_recursion_matches_wide_random_residual_nets(act, norm, m, scale, a, sigma_w2):
    """Yang & Schoenholz's residual recursion (``theory.residual_profile``) against the mean of six
    random residual nets of width 1024 and 5 blocks: stream and branch second moments per block and
    delta's first-to-last ratio within 15% and 5% (one net's second moment at block 5 spreads by about 12%,
    ten random layers having compounded; the mean of six by about 5%)."""
    rng = np.random.default_rng(1)
    runs = [_residual_numpy(act, norm, m, a, sigma_w2, rng) for _ in range(6)]
    streams = np.mean([r[0] for r in runs], axis=0)
    branches = np.mean([r[1] for r in runs], axis=0)
    ratio = np.exp(np.mean([np.log(r[2]) for r in runs]))
    cfg = OmegaConf.merge(
        _cell({"name": "he"}, act=act, depth=5, width=1024),
        {
            "model": {"name": "resmlp", "branch_layers": m, "norm_position": None if norm == "none" else norm},
            "norm": {"name": "none" if norm == "none" else "layernorm", "epsilon": 1e-5},
        },
    )
    cfg.model.branch_scale, cfg.model.branch_init = scale, a
    inputs = theory.CellInputs(data_q=1.0, n_inputs=1024, sigma_w2=(1.0, *sigma_w2), sigma_b2=0.0)
    predicted = theory.predicted_profile(cfg, inputs)
    np.testing.assert_allclose(predicted.z_std**2, streams, rtol=0.15)
    np.testing.assert_allclose(predicted.branch_std**2, branches, rtol=0.15, atol=1e-12)
    assert ratio == pytest.approx(predicted.delta_std[0] / predicted.delta_std[-1], rel=0.05)


ACT_AND_SLOPE = {
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0),
}


@pytest.mark.parametrize(
    "act, sigma_w2, sigma_b2, orthogonal, depth",
    [
        ("tanh", 1.05, 0.01, True, 12),
        ("tanh", 1.05, 0.01, False, 12),
        ("relu", 2.0, 0.0, True, 4),
        ("relu", 2.0, 0.0, False, 4),
    ],
)
def test_free_probability_spectrum_matches_a_monte_carlo_of_random_products(act, sigma_w2, sigma_b2, orthogonal, depth):
    """Products J_l = D_l W_l^T ... D_1 W_1^T of 400 x 400 random layers on a unit-variance input:
    the mean and variance of their squared singular values at every depth against
    ``product_spectrum`` with the q_l of the mean-field recursion."""
    from gradstudy.inputs.inits import orthogonal_matrix

    n, trials, rng = 400, 4, np.random.default_rng(0)
    phi, dphi = ACT_AND_SLOPE[act]
    mean, var = np.zeros(depth), np.zeros(depth)
    for _ in range(trials):
        h, jac = rng.standard_normal(n), np.eye(n)
        h *= np.sqrt(n) / np.linalg.norm(h)  # q_0 = 1 exactly
        for layer in range(depth):
            w = np.sqrt(sigma_w2) * (
                orthogonal_matrix(rng, n, n) if orthogonal else rng.standard_normal((n, n)) / np.sqrt(n)
            )
            z = h @ w + np.sqrt(sigma_b2) * rng.standard_normal(n)
            h, jac = phi(z), (dphi(z)[:, None] * w.T) @ jac
            sv2 = np.linalg.svd(jac, compute_uv=False) ** 2
            mean[layer] += sv2.mean() / trials
            var[layer] += sv2.var() / trials
    m = theory.moments(act)
    qs = [sigma_w2 + sigma_b2]
    for _ in range(depth - 1):
        qs.append(sigma_w2 * m.phi2(qs[-1]) + sigma_b2)
    predicted = theory.product_spectrum(
        [sigma_w2] * depth, [m.dphi2(q) for q in qs], [m.dphi4(q) for q in qs], [0.0 if orthogonal else 1.0] * depth
    )
    np.testing.assert_allclose(mean, predicted.mean, rtol=0.08)
    # finite-width corrections grow with depth over width; orthogonal ReLU's spread is the largest
    np.testing.assert_allclose(var, predicted.var, rtol=0.2)
