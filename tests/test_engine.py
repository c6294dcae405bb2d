"""The compiled training program: seed independence, divergence masking, determinism, no recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradstudy.cells.statistics import stat_names
from gradstudy.engine.program import Engine, batch_indices
from gradstudy.inputs.data import load_dataset


@pytest.fixture
def engine(tiny_cfg):
    cfg = tiny_cfg()
    return Engine(cfg, load_dataset(cfg.data))


def _equal(a, b):
    return np.array_equal(a, b, equal_nan=True)


def test_batch_indices_are_epoch_permutations_drawn_from_the_seed():
    idx = batch_indices(seed=3, n_train=100, batch_size=32, start=0, length=6)
    assert idx.shape == (6, 32)
    for epoch in (idx[:3], idx[3:]):  # 3 batches per epoch, no repeat inside an epoch
        assert len(np.unique(epoch)) == 96
    assert not np.array_equal(idx[:3], idx[3:])
    np.testing.assert_array_equal(batch_indices(3, 100, 32, 2, 3), idx[2:5])
    assert not np.array_equal(batch_indices(4, 100, 32, 0, 6), idx)


def test_same_config_and_seed_give_identical_results(engine):
    first = engine.run(engine.init([7, 8]), [7, 8])
    second = engine.run(engine.init([7, 8]), [7, 8])
    assert _equal(first.evals, second.evals) and _equal(first.stats, second.stats)


def test_nan_seed_is_frozen_and_leaves_the_others_bitwise_equal(engine):
    seeds = [0, 1, 2, 3, 4]
    clean = engine.run(engine.init(seeds), seeds)
    state = engine.init(seeds)
    poisoned = jax.tree.map(lambda a: a.at[2].set(jnp.nan), state.params)
    result = engine.run(state._replace(params=poisoned), seeds)
    assert list(result.diverged_at) == [-1, -1, 0, -1, -1]
    others = [0, 1, 3, 4]
    assert _equal(result.evals[:, others], clean.evals[:, others])
    assert _equal(result.stats[:, others], clean.stats[:, others])


def test_divergence_mid_training_is_recorded_at_its_step(tiny_cfg):
    cfg = tiny_cfg("init=normal", "init.sigma=3", "act=linear", "optim.lr=5", "train.steps=60")
    engine = Engine(cfg, load_dataset(cfg.data))
    result = engine.run(engine.init([0, 1]), [0, 1])
    assert (result.diverged_at > 0).all(), result.diverged_at
    # The frozen state is the last finite one.
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.state.params))


def test_statistics_schedule_and_tiers(tiny_cfg):
    cfg = tiny_cfg("train.steps=23", "train.eval_every=10", "stats.every=5")
    engine = Engine(cfg, load_dataset(cfg.data))
    result = engine.run(engine.init([0]), [0])
    assert list(result.stats_steps) == [0, 5, 10, 15, 20]
    assert result.stats.shape == (5, 1, cfg.model.depth, len(stat_names("scalars")))
    assert list(result.eval_steps) == [0, 10, 20, 23]
    assert np.isfinite(result.stats[..., :4]).all()
    cfg = tiny_cfg("stats=none")
    engine = Engine(cfg, load_dataset(cfg.data))
    none = engine.run(engine.init([0]), [0])
    assert none.stats.shape[0] == 0 and len(none.stats_steps) == 0


def test_new_seed_values_do_not_recompile(engine):
    engine.run(engine.init([0, 1]), [0, 1])
    compiled = engine._chunk._cache_size()
    engine.run(engine.init([5, 6]), [5, 6])
    assert engine._chunk._cache_size() == compiled


@pytest.mark.slow
def test_batchnorm_trains_and_evaluates_with_running_averages(tiny_cfg):
    cfg = tiny_cfg("norm=batchnorm", "train.steps=100", "train.eval_every=50", "stats.every=50")
    dataset = load_dataset(cfg.data)
    engine = Engine(cfg, dataset)
    result = engine.run(engine.init([0]), [0])
    assert result.evals[-1, 0, 3] > 0.8  # test accuracy on digits after 100 steps
    final = jax.tree.map(lambda a: a[0], result.state)
    assert np.abs(np.asarray(final.batch_stats["BatchNorm_0"]["mean"])).max() > 0  # running averages moved
    # At evaluation an example's output does not depend on its batch-mates: running averages are used.
    variables = {"params": final.params, "batch_stats": final.batch_stats}
    batch = engine.model.apply(variables, dataset.x_test[:8], train=False)
    alone = engine.model.apply(variables, dataset.x_test[:1], train=False)
    np.testing.assert_allclose(alone[0], batch[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_adam_and_clipping_match_optax(clip):
    """Our Adam and clipping (divisions by scalars as reciprocal multiplications) are optax's up to float32 rounding."""
    import optax
    from omegaconf import OmegaConf

    from gradstudy.engine.optim import make_optimizer

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((8, 5)), jnp.float32)}
    ours = make_optimizer(OmegaConf.create({"name": "adam", "lr": 0.01, "clip_norm": clip}), 50)
    theirs = optax.adam(0.01) if clip is None else optax.chain(optax.clip_by_global_norm(clip), optax.adam(0.01))
    p_ours, p_theirs = params, params
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    for _step in range(50):
        grads = {"w": jnp.asarray(rng.standard_normal((8, 5)), jnp.float32)}
        u, s_ours = ours.update(grads, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_theirs = theirs.update(grads, s_theirs, p_theirs)
        p_theirs = optax.apply_updates(p_theirs, u)
    np.testing.assert_allclose(p_ours["w"], p_theirs["w"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "schedule, decay",
    [("constant", 0.0), ("warmup_cosine", 0.0), ("step", 0.1)],
)
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_injected_hyperparameters_update_bitwise_as_constants(name, clip, schedule, decay):
    """Per-run learning rate, momentum, clip norm, schedule numbers and weight decay held in the
    optimizer state (what lets cells with different values share one program) give bitwise the
    update with the values as constants."""
    import optax
    from omegaconf import OmegaConf

    from gradstudy.engine.optim import factory, hyperparameters, make_optimizer

    cfg = OmegaConf.create(
        {
            "name": name,
            "lr": 0.03,
            "momentum": 0.7,
            "clip_norm": clip,
            "schedule": schedule,
            "warmup_steps": 2,
            "decay_steps": None,
            "end_lr": 0.001,
            "boundaries": [2, 4],
            "factors": [0.5, 0.1],
            "weight_decay": decay,
            "decay_mask": "weights",
        }
    )
    numbers = hyperparameters(cfg, 5)
    injected, constant = make_optimizer(cfg, 5), factory(cfg, 5)(**numbers)
    assert set(injected.init({"w": jnp.zeros(2)}).hyperparams) == set(numbers)
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.standard_normal((16, 9)), jnp.float32), "b": jnp.zeros(9, jnp.float32)}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params) for _ in range(5)]

    def train(opt):
        @jax.jit
        def step(p, s, g):
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        p, s = params, opt.init(params)
        for g in grads:
            p, s = step(p, s, g)
        return p

    ours, theirs = train(injected), train(constant)
    for key in params:
        assert np.array_equal(ours[key], theirs[key]), key
