"""Per-layer statistics from the compiled program against independent computations.

* weight-gradient norms against ``jax.grad`` of one unbatched model with the same parameters and batch;
* delta = B * dL/dz and the activation statistics against an explicit chain rule in float64 numpy.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradstudy.cells.options import ACTIVATIONS
from gradstudy.cells.statistics import BinKind, HistBins, hist_bins, stat_names
from gradstudy.engine.model import hidden_name
from gradstudy.engine.program import Engine, batch_indices
from gradstudy.engine.stats import histogram, order_statistic
from gradstudy.inputs.data import load_dataset

DERIVATIVES = {
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
    "prelu": (lambda z: np.where(z > 0, z, 0.25 * z), lambda z: np.where(z > 0, 1.0, 0.25)),  # at its initial slope
}
SEEDS = [4, 9, 11]


def _first_step(tiny_cfg, act, *extra):
    """Train one step with statistics; return the engine, its initial params and the recorded stats."""
    cfg = tiny_cfg(f"act={act}", "train.steps=1", "train.eval_every=1", "stats.every=1", "model.depth=4", *extra)
    dataset = load_dataset(cfg.data)
    engine = Engine(cfg, dataset)
    state = engine.init(SEEDS)
    params = jax.tree.map(np.asarray, state.params)
    result = engine.run(state, SEEDS)
    assert list(result.stats_steps) == [0]
    return cfg, dataset, engine, params, result.stats[0]


def _stat(stats, name, tier="scalars"):
    return stats[..., stat_names(tier).index(name)]


@pytest.mark.parametrize("act", sorted(DERIVATIVES))
def test_statistics_match_explicit_chain_rule(tiny_cfg, act):
    cfg, dataset, _, params, stats = _first_step(tiny_cfg, act, "init=normal", "init.sigma=0.6")
    phi, dphi = DERIVATIVES[act]
    depth, batch = cfg.model.depth, cfg.train.batch_size
    for i, seed in enumerate(SEEDS):
        idx = batch_indices(seed, len(dataset.y_train), batch, 0, 1)[0]
        x, y = dataset.x_train[idx].astype(np.float64), dataset.y_train[idx]
        p = {k: {n: v[i].astype(np.float64) for n, v in layer.items()} for k, layer in params.items()}
        hs, zs = [x], []
        for k in range(1, depth + 1):
            zs.append(hs[-1] @ p[hidden_name(k)]["kernel"] + p[hidden_name(k)]["bias"])
            hs.append(phi(zs[-1]))
        logits = hs[-1] @ p["output"]["kernel"] + p["output"]["bias"]
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        dh = ((prob - np.eye(logits.shape[1])[y]) / batch) @ p["output"]["kernel"].T
        for k in range(depth, 0, -1):
            dz = dh * dphi(zs[k - 1])
            grad_w = hs[k - 1].T @ dz
            h = hs[k]
            np.testing.assert_allclose(_stat(stats, "grad_norm")[i, k - 1], np.linalg.norm(grad_w), rtol=2e-4)
            np.testing.assert_allclose(_stat(stats, "delta_std")[i, k - 1], np.std(batch * dz), rtol=2e-4)
            np.testing.assert_allclose(_stat(stats, "act_mean")[i, k - 1], h.mean(), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(_stat(stats, "act_std")[i, k - 1], h.std(), rtol=1e-4)
            np.testing.assert_allclose(_stat(stats, "z_std")[i, k - 1], zs[k - 1].std(), rtol=1e-4)
            negative = np.all(zs[k - 1] <= 0, axis=0).mean()
            if ACTIVATIONS[act].rectifier:
                assert _stat(stats, "negative_frac")[i, k - 1] == pytest.approx(negative)
            else:
                assert np.isnan(_stat(stats, "negative_frac")[i, k - 1])
            if act == "prelu":
                assert _stat(stats, "prelu_alpha")[i, k - 1] == 0.25
            else:
                assert np.isnan(_stat(stats, "prelu_alpha")[i, k - 1])
            dh = dz @ p[hidden_name(k)]["kernel"].T
            if act == "relu":
                assert _stat(stats, "dead_frac")[i, k - 1] == pytest.approx(np.all(zs[k - 1] <= 0, axis=0).mean())
                assert np.isnan(_stat(stats, "saturated_frac")[i, k - 1])
            else:
                assert np.isnan(_stat(stats, "dead_frac")[i, k - 1])
            if act == "sigmoid":
                expected = ((h < 0.01) | (h > 0.99)).mean()
                assert _stat(stats, "saturated_frac")[i, k - 1] == pytest.approx(expected, abs=1e-6)
            if act == "tanh":
                assert _stat(stats, "saturated_frac")[i, k - 1] == pytest.approx((np.abs(h) > 0.99).mean(), abs=1e-6)


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
@pytest.mark.slow
def test_weight_gradient_norms_match_unbatched_jax_grad(tiny_cfg, norm):
    cfg, dataset, engine, params, stats = _first_step(tiny_cfg, "elu", f"norm={norm}")
    variables0 = engine.model.init(jax.random.PRNGKey(0), dataset.x_train[:1], train=False)
    for i, seed in enumerate(SEEDS):
        idx = batch_indices(seed, len(dataset.y_train), cfg.train.batch_size, 0, 1)[0]
        x, y = dataset.x_train[idx], dataset.y_train[idx]
        seed_params = jax.tree.map(lambda a: a[i], params)

        def loss(p):
            variables = {"params": p, "batch_stats": variables0.get("batch_stats", {})}
            logits, _ = engine.model.apply(variables, x, train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(seed_params)
        expected = [np.linalg.norm(np.asarray(grads[hidden_name(k)]["kernel"])) for k in range(1, cfg.model.depth + 1)]
        np.testing.assert_allclose(_stat(stats, "grad_norm")[i], expected, rtol=1e-4)


def test_delta_matches_finite_differences(tiny_cfg):
    """dL/dz by central differences on z itself, on a tiny net in float64 numpy (tanh, 2 layers)."""
    cfg, dataset, _, params, stats = _first_step(
        tiny_cfg, "tanh", "model.depth=2", "model.width=5", "train.batch_size=4"
    )
    p = {k: {n: v[0].astype(np.float64) for n, v in layer.items()} for k, layer in params.items()}
    idx = batch_indices(SEEDS[0], len(dataset.y_train), 4, 0, 1)[0]
    x, y = dataset.x_train[idx].astype(np.float64), dataset.y_train[idx]

    def loss_from_z1(z1):
        z2 = np.tanh(z1) @ p["hidden2"]["kernel"] + p["hidden2"]["bias"]
        logits = np.tanh(z2) @ p["output"]["kernel"] + p["output"]["bias"]
        logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        return np.mean(logz - logits[np.arange(4), y])

    z1 = x @ p["hidden1"]["kernel"] + p["hidden1"]["bias"]
    eps = 1e-6
    dz = np.zeros_like(z1)
    for index in np.ndindex(*z1.shape):
        step = np.zeros_like(z1)
        step[index] = eps
        dz[index] = (loss_from_z1(z1 + step) - loss_from_z1(z1 - step)) / (2 * eps)
    np.testing.assert_allclose(_stat(stats, "delta_std")[0, 0], np.std(4 * dz), rtol=1e-4)


@pytest.mark.slow
def test_full_tier_percentiles_match_numpy(tiny_cfg):
    cfg, dataset, _, params, stats = _first_step(tiny_cfg, "sigmoid", "stats=full")
    assert stats.shape[-1] == len(stat_names("full"))
    seed, i = SEEDS[1], 1
    idx = batch_indices(seed, len(dataset.y_train), cfg.train.batch_size, 0, 1)[0]
    x = dataset.x_train[idx].astype(np.float64)
    p = {k: {n: v[i].astype(np.float64) for n, v in layer.items()} for k, layer in params.items()}
    z = x @ p["hidden1"]["kernel"] + p["hidden1"]["bias"]
    for q in (15, 50, 85):
        expected = np.percentile(z.astype(np.float32), q, method="inverted_cdf")
        assert _stat(stats, f"z_p{q}", "full")[i, 0] == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("n", [1, 7, 100, 6400])
def test_order_statistic_is_the_inverted_cdf_percentile(n):
    values = np.random.default_rng(n).standard_t(3, size=n).astype(np.float32)
    for q in (15, 50, 85):
        k = -(-q * n // 100)
        assert float(order_statistic(values, k)) == np.percentile(values, q, method="inverted_cdf")


def _numpy_histogram(values: np.ndarray, bins: HistBins) -> list[int]:
    """Independent count: each finite nonzero value against every bin's [left, right) in float32."""
    left, right = (e.astype(np.float32) for e in bins.edges())
    v = values.astype(np.float32)
    finite = np.isfinite(v)
    lo, hi = bins.magnitudes[0], bins.magnitudes[-1]
    if bins.kind == "linear":
        below, above = finite & (v < lo), finite & (v > hi)
    else:
        below, above = finite & (v != 0) & (np.abs(v) < lo), finite & (np.abs(v) > hi)
    inside = v[finite & (v != 0) & ~below & ~above]
    counts = []
    for j, (a, b) in enumerate(zip(left, right, strict=True)):
        last_positive, first_negative = j == len(left) - 1, bins.kind == "signed_log" and j == 0
        if bins.kind == "signed_log" and b < 0:  # negative side: (a, b], mirror of the positive [|b|, |a|)
            counts.append(int(((inside > a) | (first_negative & (inside == a))).__and__(inside <= b).sum()))
        else:
            counts.append(int(((inside >= a) & ((inside < b) | (last_positive & (inside == b)))).sum()))
    return counts + [int((v == 0).sum()), int(below.sum()), int(above.sum()), int((~finite).sum())]


@pytest.mark.parametrize("kind", ["linear", "signed_log"])
def test_fixed_histogram_bins_count_every_value_once(kind):
    rng = np.random.default_rng(0)
    bins = HistBins(BinKind.LINEAR, -1.0, 1.0, 8) if kind == "linear" else HistBins(BinKind.SIGNED_LOG, 1e-3, 1e2, 5)
    values = np.concatenate(
        [
            rng.standard_normal(500) * (0.6 if kind == "linear" else 10.0) ** rng.integers(-3, 4, 500),
            [0.0, 0.0, np.nan, np.inf, -np.inf, 1e-9, -1e-9, 1e9, -1.0, 1.0],
            bins.magnitudes,
            -bins.magnitudes,
        ]
    )
    counts = np.asarray(histogram(jnp.asarray(values, jnp.float32), bins))
    assert counts.sum() == len(values)
    assert counts.tolist() == _numpy_histogram(values, bins)
    left, right = bins.edges()
    assert len(left) == bins.n_bins and np.all(left < right) and np.all(right[:-1] <= left[1:])


def test_histogram_bins_come_from_the_config_alone():
    linear, signed_log = BinKind.LINEAR, BinKind.SIGNED_LOG
    assert hist_bins("activation", "tanh", 50, [1e-6, 1e3]) == HistBins(linear, -1.0, 1.0, 50)
    assert hist_bins("activation", "sigmoid", 10, [1e-6, 1e3]) == HistBins(linear, 0.0, 1.0, 10)
    assert hist_bins("activation", "relu", 50, [1e-6, 1e3]) == HistBins(signed_log, 1e-6, 1e3, 50)
    assert hist_bins("delta", "tanh", 50, [1e-4, 10]) == HistBins(signed_log, 1e-4, 10.0, 50)


@pytest.mark.parametrize("act, width", [("tanh", 16), ("sigmoid", 16), ("tanh", 80)])
@pytest.mark.slow
def test_optional_statistics_match_numpy(tiny_cfg, act, width):
    """unit_mean_median against numpy; jacobian_sv_mean against the SVD of each example's Jacobian
    dh_l/dh_{l-1}, taken by jax.jacobian of the layer alone (width 80 > the 64 inputs: the first
    layer's Jacobian is wide, so only its 64 nonzero singular values count)."""
    from gradstudy.cells.statistics import JACOBIAN_EXAMPLES
    from gradstudy.engine.activations import activation_fn

    extra = "stats.extra=[unit_mean_median,jacobian_sv_mean]"
    cfg = tiny_cfg(
        f"act={act}",
        "train.steps=1",
        "train.eval_every=1",
        "stats.every=1",
        "model.depth=3",
        f"model.width={width}",
        "init=standard",
        extra,
    )
    dataset = load_dataset(cfg.data)
    engine = Engine(cfg, dataset)
    state = engine.init(SEEDS)
    params = jax.tree.map(np.asarray, state.params)
    result = engine.run(state, SEEDS)
    assert result.init_stat_names == ("jacobian_sv_mean",)
    median = result.stats[0][..., result.stat_names.index("unit_mean_median")]
    phi = activation_fn(act)
    for i, seed in enumerate(SEEDS):
        p = {k: {n: v[i] for n, v in layer.items()} for k, layer in params.items()}
        idx = batch_indices(seed, len(dataset.y_train), cfg.train.batch_size, 0, 1)[0]
        h, fixed = dataset.x_train[idx], dataset.x_train[:JACOBIAN_EXAMPLES]
        for k in range(1, cfg.model.depth + 1):
            w, b = p[hidden_name(k)]["kernel"], p[hidden_name(k)]["bias"]
            h = np.asarray(phi(h @ w + b))
            np.testing.assert_allclose(median[i, k - 1], np.median(h.mean(axis=0)), rtol=1e-4, atol=1e-6)
            layer = lambda v: phi(v @ w + b)  # noqa: E731
            jacobians = [np.asarray(jax.jacobian(layer)(v)) for v in fixed]
            expected = np.mean([np.linalg.svd(j, compute_uv=False).mean() for j in jacobians])
            np.testing.assert_allclose(result.init_stats[i, k - 1, 0], expected, rtol=1e-3)
            fixed = np.asarray(layer(fixed))


@pytest.mark.slow
def test_jacobian_statistic_matches_glorot_and_bengio_at_init(tiny_cfg):
    """Square tanh layers: about 0.5 with the standard init and about 0.8 with the normalized one (§4.2.2)."""
    values = {}
    for init in ("standard", "xavier"):
        cfg = tiny_cfg(
            "act=tanh",
            f"init={init}",
            "model.width=200",
            "model.depth=3",
            "train.steps=1",
            "train.eval_every=1",
            "stats.every=1",
            "stats.extra=[jacobian_sv_mean]",
        )
        engine = Engine(cfg, load_dataset(cfg.data))
        values[init] = engine.init_stats(engine.init([0, 1]))[:, 1:, 0].mean()
    assert abs(values["standard"] - 0.5) < 0.05 and abs(values["xavier"] - 0.8) < 0.05


@pytest.mark.slow
def test_unit_percentiles_follow_single_units_and_land_in_their_own_table(tiny_cfg, tmp_path):
    """Each of the first stats.units units' 15/50/85th percentile of z over the batch, against numpy's
    inverted-CDF percentiles of an explicit float64 forward pass; written to units.parquet, not layers."""
    from gradstudy import load_study
    from gradstudy.run import run_cell
    from gradstudy.schema import unit_stat

    extra = ("stats.extra=[unit_percentiles]", "stats.units=3")
    cfg, dataset, _, params, stats = _first_step(tiny_cfg, "tanh", *extra)
    names = stat_names("scalars", ["unit_percentiles"], 3)
    for i, seed in enumerate(SEEDS):
        idx = batch_indices(seed, len(dataset.y_train), cfg.train.batch_size, 0, 1)[0]
        h = dataset.x_train[idx].astype(np.float64)
        for k in range(1, cfg.model.depth + 1):
            layer = params[hidden_name(k)]
            z = h @ layer["kernel"][i].astype(np.float64) + layer["bias"][i]
            for unit in range(3):
                for q in (15, 50, 85):
                    expected = np.percentile(z[:, unit], q, method="inverted_cdf")
                    assert stats[i, k - 1, names.index(unit_stat(unit, q))] == pytest.approx(
                        expected, rel=1e-5, abs=1e-6
                    )
            h = np.tanh(z)
    study = load_study(Path(run_cell(tiny_cfg("act=tanh", *extra, f"results_dir={tmp_path}"))).parent)
    units = study.units
    assert set(units["unit"]) == {0, 1, 2} and set(units["stat"]) == {"z_p15", "z_p50", "z_p85"}
    assert len(units) == len(study.layers[study.layers["stat"] == "z_std"]) * 3 * 3
    assert not study.layers["stat"].str.startswith("unit").any()


def test_shattering_matches_numpy_backpropagation_along_the_line(tiny_cfg):
    """``shattering`` at step 0 against numpy: the line of ``SHATTER_POINTS`` inputs between the
    first two test examples, dL/dz_l by an explicit chain rule in float64 (loss at the first
    example's class), then the mean neighbour correlation over units."""
    from gradstudy.cells.statistics import SHATTER_POINTS

    cfg, dataset, engine, params, stats = _first_step(tiny_cfg, "relu", "stats.extra=[shattering]")
    names = stat_names("scalars", ["shattering"])
    t = np.linspace(0, 1, SHATTER_POINTS)[:, None]
    x = (1 - t) * dataset.x_test[0].astype(np.float64) + t * dataset.x_test[1].astype(np.float64)
    y = int(dataset.y_test[0])
    for i, _seed in enumerate(SEEDS):
        p = jax.tree.map(lambda a: np.asarray(a[i], np.float64), params)
        h, zs = x, []
        for k in range(1, cfg.model.depth + 1):
            zs.append(h @ p[hidden_name(k)]["kernel"] + p[hidden_name(k)]["bias"])
            h = np.maximum(zs[-1], 0)
        logits = h @ p["output"]["kernel"] + p["output"]["bias"]
        soft = np.exp(logits - logits.max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        grad = (soft - np.eye(logits.shape[1])[y]) / len(x)
        grad, kernel, expected = grad, p["output"]["kernel"], []
        for k in range(cfg.model.depth, 0, -1):
            delta = (grad @ kernel.T) * (zs[k - 1] > 0)
            centred = delta - delta.mean(1, keepdims=True)
            a, b = centred[:-1], centred[1:]
            den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
            expected.insert(0, np.mean(np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 0)))
            grad, kernel = delta, p[hidden_name(k)]["kernel"]
        np.testing.assert_allclose(stats[i, :, names.index("shattering")], expected, rtol=1e-4, atol=1e-5)
        assert 0.5 < expected[-1] <= 1  # next to the output, neighbouring gradients are alike


def test_shattering_under_batch_norm_normalizes_the_line_with_the_minibatch_statistics(tiny_cfg):
    """Under batch norm the line's points are normalized with the training minibatch's batch
    statistics (not their own): against a hand-written pass, batch norm written out, gradients by
    ``jax.grad`` of probes on the line's z_l, correlations in numpy."""
    from gradstudy.cells.statistics import SHATTER_POINTS

    cfg, dataset, engine, params, stats = _first_step(tiny_cfg, "relu", "norm=batchnorm", "stats.extra=[shattering]")
    names = stat_names("scalars", ["shattering"])
    t = np.linspace(0, 1, SHATTER_POINTS)[:, None]
    line = (1 - t) * dataset.x_test[0].astype(np.float64) + t * dataset.x_test[1].astype(np.float64)
    y = np.full(SHATTER_POINTS, int(dataset.y_test[0]))
    eps, depth = cfg.norm.epsilon, cfg.model.depth
    for i, seed in enumerate(SEEDS):
        p = jax.tree.map(lambda a: jnp.asarray(a[i], jnp.float32), params)
        batch = jnp.asarray(dataset.x_train[batch_indices(seed, len(dataset.y_train), cfg.train.batch_size, 0, 1)[0]])

        def line_loss(probes, p=p, batch=batch):
            h, v = batch, jnp.asarray(line, jnp.float32)
            for k in range(1, depth + 1):
                layer, norm = p[hidden_name(k)], p[f"BatchNorm_{k - 1}"]
                zb, zv = h @ layer["kernel"] + layer["bias"], v @ layer["kernel"] + layer["bias"]
                mean, var = zb.mean(0), zb.var(0)
                h = jnp.maximum((zb - mean) / jnp.sqrt(var + eps) * norm["scale"] + norm["bias"], 0)
                v = jnp.maximum((zv - mean) / jnp.sqrt(var + eps) * norm["scale"] + norm["bias"] + probes[k - 1], 0)
            logits = v @ p["output"]["kernel"] + p["output"]["bias"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        deltas = np.asarray(jax.grad(line_loss)(jnp.zeros((depth, SHATTER_POINTS, cfg.model.width))), np.float64)
        expected = []
        for delta in deltas:
            centred = delta - delta.mean(1, keepdims=True)
            a, b = centred[:-1], centred[1:]
            den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
            expected.append(np.mean(np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 0)))
        np.testing.assert_allclose(stats[i, :, names.index("shattering")], expected, rtol=2e-3, atol=2e-3)
        assert expected[0] > 0.3  # a 4-layer net's gradient at the input side is still smooth
