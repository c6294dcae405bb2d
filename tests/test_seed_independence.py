"""A seed's numbers are bitwise the same alone, among other seeds, and on one or two host devices.

This is an empirical property of the XLA CPU build (see ``gradstudy.engine.program``'s docstring); this test
is what guards it. Curves, per-step losses, layer statistics (percentiles included) and histograms
are compared bit for bit, through the tables a cell writes.
"""

import jax
import pytest

from gradstudy.cells.schedules import learning_rates
from gradstudy.engine.program import Engine
from gradstudy.inputs.data import load_dataset
from gradstudy.schema import CURVES, HISTS, LAYERS, STEPS
from gradstudy.store.tables import cell_tables

SEED = 3
COMPANIONS = {1: [SEED], 3: [0, SEED, 4], 5: [0, 1, 2, SEED, 4]}


def _tables_of_seed(cfg, dataset, seeds, n_devices):
    engine = Engine(cfg, dataset, devices=jax.devices()[:n_devices])
    result = engine.run(engine.init(seeds), seeds)
    tables, _ = cell_tables(result, set(result.stat_names), cfg.train.steps, learning_rates(cfg.optim, cfg.train.steps))
    return {
        name: tables[name][tables[name]["seed"] == SEED].reset_index(drop=True)
        for name in (CURVES, LAYERS, STEPS, HISTS)
    }


@pytest.mark.parametrize(
    "extra",
    [
        (),
        pytest.param(("norm=batchnorm", "optim=adam", "optim.clip_norm=1.0", "act=tanh"), marks=pytest.mark.slow),
        pytest.param(
            ("norm=layernorm", "optim=momentum", "act=elu", "stats.extra=[unit_mean_median]"), marks=pytest.mark.slow
        ),
        pytest.param(
            ("optim=adam", "optim.schedule=warmup_cosine", "optim.warmup_steps=5", "optim.end_lr=0.001")
            + ("optim.weight_decay=0.01", "optim.decay_mask=all"),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ("optim=momentum", "optim.schedule=step", "optim.boundaries=[7,13]", "optim.factors=[0.3,0.5]"),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ("model=resmlp", "norm=batchnorm", "model.branch_scale=skipinit", "model.branch_init=0.1"),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ("model=cnn", "model.channels=4", "model.padding=circular", "norm=batchnorm", "act=tanh"),
            marks=pytest.mark.slow,
        ),
    ],
    ids=[
        "sgd-relu",
        "bn-adam-clip-tanh",
        "ln-momentum-elu",
        "adamw-warmup-cosine",
        "momentum-step",
        "resmlp-bn",
        "cnn-bn",
    ],
)
@pytest.mark.slow
def test_seed_alone_among_others_and_across_devices_is_bitwise_equal(tiny_cfg, extra):
    assert len(jax.devices()) == 2, "conftest asks for two host devices"
    cfg = tiny_cfg("stats=full", "train.steps=20", *extra)
    dataset = load_dataset(cfg.data)
    reference = _tables_of_seed(cfg, dataset, [SEED], 1)
    assert all(len(frame) for frame in reference.values())
    # the slow variants check the other optimizers and norms against one set of companions
    companions = COMPANIONS if not extra else {3: COMPANIONS[3]}
    for n_devices in (1, 2):
        for n_seeds, seeds in companions.items():
            other = _tables_of_seed(cfg, dataset, seeds, n_devices)
            for name, frame in reference.items():
                assert other[name].equals(frame), (
                    f"{name} of seed {SEED} differs among {n_seeds} seeds on {n_devices} device(s)"
                )


def test_padding_gives_every_device_whole_groups(tiny_cfg):
    cfg = tiny_cfg()
    dataset = load_dataset(cfg.data)
    for n_devices, group in ((1, 1), (2, 1), (2, 3)):
        engine = Engine(cfg, dataset, devices=jax.devices()[:n_devices], run_group=group)
        for n in (1, 2, 3, 5, 8):
            padded = engine.padded(list(range(n)))
            assert padded[:n] == list(range(n)) and set(padded[n:]) <= {n - 1}
            assert len(padded) % (group * n_devices) == 0 and len(padded) - n < group * n_devices
