"""Initializer variances against their formulas, statistically, and the engine's initial values per seed."""

from pathlib import Path

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

from gradstudy.inputs.inits import INITIALIZERS, kernel_init
from gradstudy.run import conf_dir

FAN_IN, FAN_OUT = 300, 500
N = FAN_IN * FAN_OUT


def _cfg(name, **kw):
    preset = OmegaConf.load(Path(conf_dir(), "init", f"{name}.yaml"))
    base = {"scale": 1.0, "mode": "fan_in", "distribution": "normal", "sigma": 1.0, "bias": 0.0, "bias_std": 0.0}
    return OmegaConf.merge(base, preset, kw)


EXPECTED_VAR = {
    "xavier": 2 / (FAN_IN + FAN_OUT),
    "xavier_normal": 2 / (FAN_IN + FAN_OUT),
    "he": 2 / FAN_IN,
    "he_uniform": 2 / FAN_IN,
    "lecun": 1 / FAN_IN,
    "lecun_uniform": 1 / FAN_IN,
    "standard": 1 / (3 * FAN_IN),
    "normal": 1.0,
    # the chapter's formulas as it writes them: sigma or r, then the variance
    "chapter_xavier_normal": np.sqrt(2 / (FAN_IN + FAN_OUT)) ** 2,
    "chapter_xavier_uniform": np.sqrt(6 / (FAN_IN + FAN_OUT)) ** 2 / 3,
    "chapter_he_normal": (2 / np.sqrt(FAN_IN + FAN_OUT)) ** 2,
    "chapter_he_uniform": np.sqrt(24 / (FAN_IN + FAN_OUT)) ** 2 / 3,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_VAR))
def test_variance_matches_formula(name):
    w = np.asarray(kernel_init(_cfg(name))(np.random.default_rng(0), (FAN_IN, FAN_OUT)), np.float64)
    # The sample variance of N iid draws has relative standard error about sqrt(2/N) (< 0.4% here).
    assert abs(w.mean()) < 5 * np.sqrt(EXPECTED_VAR[name] / N)
    assert w.var() == pytest.approx(EXPECTED_VAR[name], rel=5 * np.sqrt(2 / N))


def test_uniform_bounds():
    w = np.asarray(kernel_init(_cfg("standard"))(np.random.default_rng(1), (FAN_IN, FAN_OUT)))
    assert np.abs(w).max() <= 1 / np.sqrt(FAN_IN) + 1e-7
    assert np.abs(w).max() > 0.99 / np.sqrt(FAN_IN)
    w = np.asarray(kernel_init(_cfg("xavier"))(np.random.default_rng(1), (FAN_IN, FAN_OUT)))
    assert np.abs(w).max() <= np.sqrt(6 / (FAN_IN + FAN_OUT)) + 1e-7


def test_overrides_change_the_formula():
    w = np.asarray(kernel_init(_cfg("he", mode="fan_avg"))(np.random.default_rng(2), (FAN_IN, FAN_OUT)))
    assert w.var() == pytest.approx(2 * 2 / (FAN_IN + FAN_OUT), rel=0.03)
    w = np.asarray(kernel_init(_cfg("normal", sigma=0.1))(np.random.default_rng(2), (FAN_IN, FAN_OUT)))
    assert w.std() == pytest.approx(0.1, rel=0.02)


def test_truncated_normal_keeps_the_variance():
    w = np.asarray(
        kernel_init(_cfg("he", distribution="truncated_normal"))(np.random.default_rng(3), (FAN_IN, FAN_OUT))
    )
    assert w.var() == pytest.approx(2 / FAN_IN, rel=0.03)
    assert np.abs(w).max() <= 2 * np.sqrt(2 / FAN_IN) / 0.8796256 + 1e-6


@pytest.mark.parametrize("shape", [(64, 32), (32, 64)])
def test_orthogonal_gain_on_tall_and_wide_matrices(shape):
    w = kernel_init(_cfg("orthogonal", scale=1.5))(np.random.default_rng(4), shape)
    small = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T  # orthonormal columns, or rows when wide
    np.testing.assert_allclose(gram, 1.5**2 * np.eye(small), atol=1e-10)


def test_engine_init_counts_fan_per_seed(tiny_cfg):
    """Stacked seeds must not enter the fan: He's variance is 2/fan_in for each seed's matrix."""
    from gradstudy.engine.program import Engine
    from gradstudy.inputs.data import load_dataset

    cfg = tiny_cfg("init=he", "model.width=256")
    engine = Engine(cfg, load_dataset(cfg.data))
    kernels = np.asarray(engine.init([0, 1, 2]).params["hidden2"]["kernel"], np.float64)
    assert kernels.shape == (len(engine.padded([0, 1, 2])), 256, 256)  # padded to the device count
    for k in kernels:
        assert k.var() == pytest.approx(2 / 256, rel=0.05)
    assert not np.allclose(kernels[0], kernels[1])


def test_every_registered_initializer_has_a_preset():
    presets = {p.stem for p in Path(conf_dir(), "init").glob("*.yaml")}
    assert presets == set(INITIALIZERS)


def test_engine_init_of_a_deep_orthogonal_net_is_orthogonal_for_every_seed(tiny_cfg):
    """Several seeds of a deep orthogonal net (a compiled program of that many batched QR
    decompositions hangs on XLA's CPU backend, so initial values are drawn in numpy)."""
    from gradstudy.engine.program import Engine
    from gradstudy.inputs.data import load_dataset

    cfg = tiny_cfg("init=orthogonal", "model.depth=8", "model.width=32")
    engine = Engine(cfg, load_dataset(cfg.data))
    params = engine.init([0, 1, 2, 3, 4]).params
    for layer in ("hidden2", "hidden8"):
        kernels = np.asarray(params[layer]["kernel"], np.float64)[:5]
        for k in kernels:
            np.testing.assert_allclose(k.T @ k, np.eye(32), atol=1e-4)
        assert not np.allclose(kernels[0], kernels[1])


def test_initial_values_do_not_depend_on_the_activation(tiny_cfg):
    """Same init and seed, same values, whatever the activation of the cell."""
    from gradstudy.engine.program import Engine
    from gradstudy.inputs.data import load_dataset

    params = []
    for act in ("relu", "tanh"):
        cfg = tiny_cfg("init=he", f"act={act}")
        params.append(jax.tree.map(np.asarray, Engine(cfg, load_dataset(cfg.data)).init([0, 1]).params))
    assert jax.tree.all(jax.tree.map(np.array_equal, *params))


def test_meanfield_weights_and_biases_have_the_given_variances():
    from gradstudy.inputs.inits import bias_init, bias_variance, weight_variance

    cfg = _cfg("meanfield", sigma_w2=1.76, sigma_b2=0.05)
    w = kernel_init(cfg)(np.random.default_rng(5), (FAN_IN, FAN_OUT))
    assert w.var() == pytest.approx(1.76 / FAN_IN, rel=5 * np.sqrt(2 / N))
    assert weight_variance(cfg, FAN_IN, FAN_OUT) == pytest.approx(1.76 / FAN_IN)
    b = bias_init(cfg)(np.random.default_rng(6), (N,))
    assert abs(b.mean()) < 5 * np.sqrt(0.05 / N)
    assert b.var() == pytest.approx(0.05, rel=5 * np.sqrt(2 / N)) and bias_variance(cfg) == 0.05


def test_bias_std_draws_random_biases_around_the_constant():
    from gradstudy.inputs.inits import bias_init

    b = bias_init(_cfg("he", bias=0.5, bias_std=0.2))(np.random.default_rng(7), (N,))
    assert b.mean() == pytest.approx(0.5, abs=5 * 0.2 / np.sqrt(N))
    assert b.std() == pytest.approx(0.2, rel=5 * np.sqrt(1 / (2 * N)))
    assert np.all(bias_init(_cfg("he", bias=0.5))(np.random.default_rng(7), (4,)) == 0.5)


@pytest.mark.parametrize("name", sorted(EXPECTED_VAR) + ["orthogonal"])
def test_weight_variance_is_what_the_initializer_draws(name):
    from gradstudy.inputs.inits import weight_variance

    for shape in ((FAN_IN, FAN_OUT), (FAN_OUT, FAN_IN)):
        w = kernel_init(_cfg(name))(np.random.default_rng(8), shape)
        assert (w**2).mean() == pytest.approx(weight_variance(_cfg(name), *shape), rel=6 * np.sqrt(2 / N))


def test_the_chapters_he_uniform_has_twice_its_he_normal_variance():
    """The discrepancy the chapter11 report states: r = sqrt(24/(n_in+n_out)) has variance 8/(n_in+n_out),
    twice the normal form's 4/(n_in+n_out)."""
    normal = kernel_init(_cfg("chapter_he_normal"))(np.random.default_rng(9), (FAN_IN, FAN_OUT))
    uniform = kernel_init(_cfg("chapter_he_uniform"))(np.random.default_rng(9), (FAN_IN, FAN_OUT))
    assert uniform.var() / normal.var() == pytest.approx(2.0, rel=10 * np.sqrt(2 / N))
    assert np.abs(uniform).max() <= np.sqrt(24 / (FAN_IN + FAN_OUT))
