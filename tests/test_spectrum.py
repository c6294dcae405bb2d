"""The input-output Jacobian spectrum (``stats.extra=[jacobian_spectrum]``): the exact method against
``jnp.linalg.svd`` of ``jax.jacobian`` on tiny nets, the Hutchinson estimate against the exact
spectrum, the tables it writes, and its prediction by free probability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, compose_config

from gradstudy.cells.spectrum import EXACT, HUTCHINSON, SPECTRUM_BINS, spectrum_method
from gradstudy.engine.program import Engine
from gradstudy.engine.spectrum import spectrum_program
from gradstudy.inputs.data import load_dataset
from gradstudy.schema import HISTS, SPECTRA
from gradstudy.store.tables import cell_tables

SPECTRUM = "stats.extra=[jacobian_spectrum]"
NETS = {
    "mlp tanh": ("act=tanh", "init=orthogonal", "model.width=24"),
    "mlp relu batchnorm": ("norm=batchnorm", "init=he", "model.width=24"),
    "resmlp": ("model=resmlp", "model.width=16", "norm=layernorm"),
    "cnn circular": ("model=cnn", "model.channels=2", "model.padding=circular", "act=tanh"),
}


def _engine(*overrides):
    cfg = compose_config(*TINY, SPECTRUM, "train.steps=10", "train.eval_every=10", "stats.every=10", *overrides)
    dataset = load_dataset(cfg.data)
    return cfg, dataset, Engine(cfg, dataset)


def _svd_spectrum(engine, params, batch_stats, x):
    """Every layer's squared singular values of dh_l/dx, by jax.jacobian and an SVD: (depth, examples * r)."""
    variables = {"params": params, "batch_stats": batch_stats}

    def hidden(example):
        _, updates = engine.model.apply(variables, example[None], train=False, mutable=["intermediates"])
        hs = updates["intermediates"]["h"][0]
        return hs.reshape(hs.shape[0], -1)

    per_example = []
    for example in x:
        jac = jax.jacobian(hidden)(example)  # (depth, units, inputs)
        sv2 = np.asarray(jnp.linalg.svd(jac, compute_uv=False), np.float64) ** 2
        floor = sv2.shape[1] * np.finfo(np.float32).eps * sv2.max(axis=1, keepdims=True)
        per_example.append(np.where(sv2 > floor, sv2, 0))  # as the engine: round-off is 0
    return np.concatenate(per_example, axis=1)


@pytest.mark.parametrize("net", list(NETS))
def test_exact_spectrum_is_the_svd_of_jax_jacobian(net):
    cfg, dataset, engine = _engine(*NETS[net])
    assert engine.spectrum_method == EXACT
    state = engine.init([0, 1])
    moments, counts = engine.spectrum(state)
    x = dataset.x_train[: cfg.stats.jacobian_inputs]
    for run in (0, 1):
        one = jax.tree.map(lambda leaf, run=run: leaf[run], state)
        sv2 = _svd_spectrum(engine, one.params, one.batch_stats, x)
        np.testing.assert_allclose(moments[run, :, 0], sv2.mean(axis=1), rtol=1e-4)
        np.testing.assert_allclose(moments[run, :, 1], sv2.var(axis=1), rtol=2e-3, atol=1e-7)
        np.testing.assert_allclose(moments[run, :, 2], sv2.max(axis=1), rtol=1e-4)
        left, right = SPECTRUM_BINS.edges()
        for layer in range(cfg.model.depth):
            inside = (sv2[layer] >= left[0]) & (sv2[layer] <= right[-1])
            expected, _ = np.histogram(sv2[layer][inside], bins=np.append(left, right[-1]))
            got = counts[run, layer, : SPECTRUM_BINS.n_bins]
            # a value within float32 round-off of an edge may fall on either side of it
            assert np.abs(got - expected).sum() <= 2 and got.sum() + counts[run, layer, -4:].sum() == sv2.shape[1]


@pytest.mark.parametrize("net", ["mlp tanh", "cnn circular"])
def test_the_hutchinson_estimate_agrees_with_the_exact_spectrum(net):
    cfg, dataset, engine = _engine(*NETS[net], "stats.jacobian_inputs=8")
    # on one device, as the engine runs it: XLA's CPU eigensolver can hang on an input split across two
    state = jax.device_put(jax.tree.map(lambda leaf: leaf[0], engine.init([0])), jax.devices()[0])
    x = engine._spectrum_inputs
    exact, _ = jax.jit(spectrum_program(engine.model, EXACT, dataset.n_features, len(x)))(state, x)
    estimate, counts = jax.jit(spectrum_program(engine.model, HUTCHINSON, dataset.n_features, len(x)))(state, x)
    exact, estimate = np.asarray(exact), np.asarray(estimate)
    assert counts.shape[1] == 0 and np.isnan(estimate[:-1, 1:]).all()
    # 32 probes per example on 8 examples: each mean within a few percent, the variance within a third
    np.testing.assert_allclose(estimate[:, 0], exact[:, 0], rtol=0.1)
    np.testing.assert_allclose(estimate[-1, 1], exact[-1, 1], rtol=0.35)
    # power iteration gives the largest of the examples' largest squared singular values from below
    assert 0.9 * exact[-1, 2] <= estimate[-1, 2] <= exact[-1, 2] * (1 + 1e-4)


def test_the_method_is_exact_while_the_jacobian_fits():
    assert spectrum_method(200, 784, 200) == EXACT
    assert spectrum_method(256, 784, 14 * 14 * 8) == HUTCHINSON


def test_the_spectrum_lands_in_its_table_and_its_bins_beside_the_histograms():
    from gradstudy.cells.schedules import learning_rates

    cfg, dataset, engine = _engine(*NETS["mlp tanh"], "optim.lr=100")
    result = engine.run(engine.init([0, 1, 2]), [0, 1, 2])
    tables, diverged = cell_tables(result, set(result.stat_names), cfg.train.steps, learning_rates(cfg.optim, 10))
    spectra = tables[SPECTRA]
    assert set(spectra["method"]) == {EXACT} and set(spectra["stat"]) == {"sv2_mean", "sv2_var", "sv2_max"}
    for seed in (0, 1, 2):
        steps = set(spectra.loc[spectra["seed"] == seed, "step"])
        assert steps == ({0} if seed in diverged else {0, 10}), (seed, diverged)
    bins = tables[HISTS][tables[HISTS]["quantity"] == "jacobian_sv2"]
    assert (
        len(bins)
        and bins.groupby(["seed", "step", "layer"])["count"].sum().eq(cfg.stats.jacobian_inputs * cfg.model.width).all()
    )


def test_a_spectrum_that_cannot_fit_is_refused_naming_its_size():
    from gradstudy.engine.memory import OutOfMemory, preflight

    cfg, _, engine = _engine(*NETS["cnn circular"])
    with pytest.raises(OutOfMemory, match=r"jacobian_spectrum \(exact\) needs about .* GiB per example"):
        preflight(engine, cfg, [0], available=2**16)
