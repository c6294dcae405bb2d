"""Learning-rate schedules and weight decay: each schedule is optax's, a run applies the rate of each
step and records it in ``steps.parquet``, and decoupled weight decay is the hand-written update on
a real network's parameters, masked as ``optim.decay_mask`` says."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from conftest import TINY, compose_config
from omegaconf import OmegaConf

from gradstudy.cells.config import resolved
from gradstudy.cells.grouping import program_key
from gradstudy.cells.schedules import SCHEDULES, learning_rate, learning_rates, schedule_numbers
from gradstudy.engine.optim import make_optimizer
from gradstudy.engine.program import Engine
from gradstudy.inputs.data import load_dataset
from gradstudy.run import run_cell
from gradstudy.schema import STEPS

STEPS_N = 120
OPTIM = {
    "name": "sgd",
    "lr": 0.3,
    "momentum": 0.9,
    "clip_norm": None,
    "warmup_steps": 17,
    "decay_steps": 90,
    "end_lr": 0.02,
    "boundaries": [30, 75],
    "factors": [0.5, 0.1],
    "weight_decay": 0.0,
    "decay_mask": "weights",
}
#: optax's own schedule for each of ours, with OPTIM's numbers.
OPTAX = {
    "constant": optax.constant_schedule(0.3),
    "cosine": optax.cosine_decay_schedule(0.3, 90, alpha=0.02 / 0.3),
    "warmup_cosine": optax.warmup_cosine_decay_schedule(0.0, 0.3, 17, 90, end_value=0.02),
    "linear": optax.linear_schedule(0.3, 0.02, 90),
    "step": optax.piecewise_constant_schedule(0.3, {30: 0.5, 75: 0.1}),
}


def _optim(schedule: str, **changes):
    return OmegaConf.create({**OPTIM, "schedule": schedule, **changes})


def test_every_schedule_has_optax_s_counterpart_here():
    assert set(OPTAX) == set(SCHEDULES)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_each_schedule_is_optax_s_in_float64_and_in_the_engine_s_float32(schedule):
    theirs = np.array([float(OPTAX[schedule](t)) for t in range(STEPS_N)])
    ours = learning_rates(_optim(schedule), STEPS_N)
    np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=1e-9)
    numbers = {k: jnp.float32(v) for k, v in schedule_numbers(_optim(schedule), STEPS_N).items()}
    t = jnp.arange(STEPS_N, dtype=jnp.float32)
    in_jit = jax.jit(lambda t, lr, h: learning_rate(schedule, t, lr, h, jnp))(t, jnp.float32(0.3), numbers)
    assert in_jit.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(in_jit), theirs, rtol=2e-6, atol=1e-8)


def test_decay_steps_null_is_the_whole_run():
    np.testing.assert_array_equal(
        learning_rates(_optim("cosine", decay_steps=None), STEPS_N),
        learning_rates(_optim("cosine", decay_steps=STEPS_N), STEPS_N),
    )
    assert learning_rates(_optim("cosine", decay_steps=None), STEPS_N)[-1] > 0.02  # still decaying at the last step


@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_a_run_s_update_at_step_t_uses_the_rate_of_step_t(schedule, name):
    """With a constant direction (SGD on constant gradients; Adam on them, whose direction is then
    1 per coordinate after its bias correction, to float32's rounding of 1 - 0.999^t), the update of
    step t is -lr_t."""
    optimizer = make_optimizer(_optim(schedule, name=name), STEPS_N)
    params = {"w": jnp.zeros(3, jnp.float32)}
    grads = {"w": jnp.ones(3, jnp.float32)}
    update = jax.jit(optimizer.update)
    state, applied = optimizer.init(params), []
    for _ in range(STEPS_N):
        u, state = update(grads, state, params)
        applied.append(-float(u["w"][0]))
    rtol = 1e-6 if name == "sgd" else 1e-4
    np.testing.assert_allclose(applied, learning_rates(_optim(schedule), STEPS_N), rtol=rtol, atol=1e-8)


def _network_params():
    """The parameters of a real cell (batch norm and a learned PReLU slope: kernels, biases, norm
    scales and offsets, slopes), seed 0."""
    cfg = compose_config(*TINY, "norm=batchnorm", "act=prelu")
    engine = Engine(cfg, load_dataset(cfg.data))
    return jax.tree.map(lambda leaf: np.asarray(leaf[0], np.float64), engine.init([0]).params)


def _is_kernel(path) -> bool:
    return path[-1].key == "kernel"


@pytest.mark.parametrize("mask", ["weights", "all"])
@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_weight_decay_is_the_hand_written_decoupled_update(name, mask):
    """p <- p - lr_t * (d_t + wd * p) on the masked parameters, d_t the optimizer's direction, over
    eight steps of random gradients, against numpy in float64 (float32's rounding of Adam's
    normalized moments stays below 2e-5; one step's decay moves a parameter by lr * wd * p ~ 1e-3)."""
    wd, mu, b1, b2, eps = 0.1, 0.9, 0.9, 0.999, 1e-8
    cfg = _optim("warmup_cosine", name=name, weight_decay=wd, decay_mask=mask, warmup_steps=3, decay_steps=8)
    rates = learning_rates(cfg, 8)
    params = _network_params()
    decays = jax.tree_util.tree_map_with_path(lambda path, _: mask == "all" or _is_kernel(path), params)
    assert {True, False} == set(jax.tree.leaves(decays)) or mask == "all"
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda p: rng.standard_normal(p.shape), params) for _ in range(8)]

    optimizer = make_optimizer(cfg, 8)
    ours = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    state = optimizer.init(ours)
    for g in grads:
        u, state = optimizer.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g), state, ours)
        ours = optax.apply_updates(ours, u)

    p = params
    m = jax.tree.map(np.zeros_like, params)
    v = jax.tree.map(np.zeros_like, params)
    for t, g in enumerate(grads):
        if name == "momentum":
            m = jax.tree.map(lambda m, g: g + mu * m, m, g)
            direction = m
        else:
            m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g**2, v, g)
            direction = jax.tree.map(
                lambda m, v: (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps), m, v
            )
        p = jax.tree.map(lambda p, d, on: p - rates[t] * (d + (wd * p if on else 0.0)), p, direction, decays)
    for (path, mine), theirs in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(np.asarray(mine), theirs, rtol=2e-5, atol=2e-5, err_msg=str(path))
    # and the decay did something: without it the kernels end elsewhere
    plain = make_optimizer(_optim("warmup_cosine", name=name, warmup_steps=3, decay_steps=8), 8)
    undecayed = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    state = plain.init(undecayed)
    for g in grads:
        u, state = plain.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g), state, undecayed)
        undecayed = optax.apply_updates(undecayed, u)
    kernel = jax.tree.leaves(ours["layer_01"]) if "layer_01" in ours else None
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(undecayed), strict=True)), (
        kernel
    )


def _key(*overrides: str) -> str:
    return program_key(resolved(compose_config(*TINY, *overrides)))


def test_schedule_numbers_and_decay_values_share_a_program_and_kinds_do_not():
    warm = ("optim.schedule=warmup_cosine", "optim.weight_decay=0.01")
    assert _key(*warm, "optim.warmup_steps=5") == _key(*warm, "optim.warmup_steps=9", "optim.end_lr=0.1")
    assert _key(*warm) == _key("optim.schedule=warmup_cosine", "optim.weight_decay=0.3")
    assert _key(*warm) != _key("optim.schedule=warmup_cosine")  # decay on or off
    assert _key(*warm) != _key(*warm, "optim.decay_mask=all")
    assert _key("optim.schedule=cosine") != _key("optim.schedule=linear") != _key()
    step = ("optim.schedule=step", "optim.boundaries=[10,20]", "optim.factors=[0.5,0.5]")
    assert _key(*step) == _key("optim.schedule=step", "optim.boundaries=[5,25]", "optim.factors=[0.1,0.2]")
    assert _key(*step) != _key("optim.schedule=step", "optim.boundaries=[10]", "optim.factors=[0.5]")
    assert _key("optim.lr=0.3") == _key()  # constant: unchanged, the learning rate is per-run data


def test_steps_parquet_records_the_rate_of_every_step(tmp_path):
    overrides = ("optim.schedule=step", "optim.boundaries=[10,20]", "optim.factors=[0.5,0.1]", "train.seeds=2")
    cell = run_cell(compose_config(*TINY, *overrides, f"results_dir={tmp_path}"))
    steps = pd.read_parquet(f"{cell}/{STEPS}")
    assert list(steps.columns) == ["seed", "step", "loss", "lr"] and steps["lr"].dtype == np.float32
    for _, rows in steps.groupby("seed"):
        np.testing.assert_allclose(rows["lr"], [0.1] * 10 + [0.05] * 10 + [0.005] * 10, rtol=1e-6)
