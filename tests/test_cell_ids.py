"""One policy for cell ids: hash the canonical config (the keys each chosen option uses, without
run-only keys and without keys added later while they keep their default), and pin the ids."""

from pathlib import Path

import pytest
import yaml
from conftest import compose_config

from gradstudy.cells.config import (
    ADDED_KEYS,
    RUN_KEYS,
    canonical,
    ignored_overrides,
    option_keys,
    resolved,
    used_keys,
)
from gradstudy.cells.options import ACTIVATIONS, NORMS, OPTIMIZERS
from gradstudy.cells.schedules import DECAY_MASKS, SCHEDULES
from gradstudy.engine.model import NORM_LAYERS
from gradstudy.engine.optim import DIRECTIONS, MASKS, make_optimizer
from gradstudy.inputs.data import FILE_DATASETS
from gradstudy.inputs.inits import INITIALIZERS, bias_init
from gradstudy.schema import conf_dir
from gradstudy.store.ids import cell_id

ROOT = Path(__file__).resolve().parents[1]

#: The quickstart grid's cell ids (README). They change only with a deliberate change of the id policy.
QUICKSTART_IDS = {
    ("xavier", "relu"): "xavier-relu-none-mnist5k-d10w100-sgd-334b1eb39b",
    ("xavier", "elu"): "xavier-elu-none-mnist5k-d10w100-sgd-72b6f7caa2",
    ("he", "relu"): "he-relu-none-mnist5k-d10w100-sgd-ab8b9fb1f7",
    ("he", "elu"): "he-elu-none-mnist5k-d10w100-sgd-5318de541c",
}


def _id(*overrides: str) -> str:
    return cell_id(canonical(resolved(compose_config(*overrides))))


def test_quickstart_cell_ids_are_pinned_and_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for (init, act), expected in QUICKSTART_IDS.items():
        assert _id(f"init={init}", f"act={act}") == expected
        assert expected in readme


@pytest.mark.parametrize(
    "ignored",
    [
        ("optim.momentum=0.5",),  # sgd has no momentum
        ("optim=adam", "optim.momentum=0.5"),
        ("act.alpha=0.3",),  # relu has no alpha
        ("init.sigma=3",),  # xavier has no sigma
        ("norm.momentum=0.5", "norm.epsilon=0.1", "norm.position=after"),  # no norm
        ("stats.hist_bins=7", "stats.hist_steps=[0]", "stats.hist_range=[1e-3,1]"),  # scalars draws no histograms
        ("stats=none", "stats.every=5"),
        ("study=other", "results_dir=/elsewhere", "force=true", "budget=smoke"),
    ],
)
def test_keys_the_chosen_options_ignore_do_not_change_the_id(ignored):
    base = [o for o in ignored if o.startswith(("optim=", "stats="))]
    assert _id(*ignored) == _id(*base)


@pytest.mark.parametrize(
    "base, ignored",
    [
        ((), ("optim.warmup_steps=10", "optim.end_lr=0.1", "optim.boundaries=[5]", "optim.decay_mask=all")),
        (("optim.schedule=cosine",), ("optim.warmup_steps=10", "optim.boundaries=[5]", "optim.factors=[0.1]")),
        (("optim.schedule=step", "optim.boundaries=[5]", "optim.factors=[0.1]"), ("optim.end_lr=0.5",)),
        (("optim.schedule=cosine",), ("optim.decay_steps=1000",)),  # null is the whole run, train.steps=1000
    ],
    ids=["constant", "cosine", "step", "decay_steps spelled out"],
)
def test_keys_the_schedule_and_no_decay_ignore_do_not_change_the_id(base, ignored):
    assert _id(*base, *ignored) == _id(*base)


@pytest.mark.parametrize(
    "used",
    [
        ("optim=momentum", "optim.momentum=0.5"),
        ("act=elu", "act.alpha=0.5"),
        ("init=normal", "init.sigma=3"),
        ("norm=batchnorm", "norm.momentum=0.5"),
        ("stats=full", "stats.hist_bins=7"),
        ("init.bias=0.1",),
        ("optim.lr=0.3",),
        ("optim.schedule=cosine",),
        ("optim.schedule=cosine", "optim.end_lr=0.01"),
        ("optim.schedule=warmup_cosine", "optim.warmup_steps=10"),
        ("optim.schedule=cosine", "optim.decay_steps=500"),
        ("optim.weight_decay=0.01",),
        ("optim.weight_decay=0.01", "optim.decay_mask=all"),
    ],
)
def test_keys_the_chosen_options_use_change_the_id(used):
    assert _id(*used) != _id(*used[:-1])


def test_keys_added_later_leave_the_id_alone_while_they_keep_their_default():
    assert ADDED_KEYS == {
        "stats.hist_range": [1e-6, 1e3],
        "init.bias_std": 0.0,
        "stats.units": 8,
        "optim.schedule": "constant",
        "optim.weight_decay": 0.0,
        "model.name": "mlp",
        "stats.jacobian_inputs": 4,
    }
    plain = canonical(resolved(compose_config("stats=full")))
    assert "hist_range" not in plain["stats"] and "hist_bins" in plain["stats"]
    assert "bias_std" not in plain["init"] and "bias" in plain["init"]
    assert _id("stats=full", "stats.hist_range=[1e-6,1e3]") == _id("stats=full")
    assert _id("stats=full", "stats.hist_range=[1e-4,1e3]") != _id("stats=full")
    assert _id("init.bias_std=0.0") == _id() and _id("init.bias_std=0.1") != _id()
    assert _id("optim.schedule=constant", "optim.weight_decay=0.0") == _id()
    assert _id("model=mlp") == _id() and "name" not in canonical(resolved(compose_config()))["model"]
    assert _id("model=resmlp").split("-")[4] == "resd10w100"
    assert _id("model=cnn").split("-")[4] == "cnnd8c16k3" and _id("model=cnn", "model.width=7") == _id("model=cnn")
    assert _id("stats.jacobian_inputs=4") == _id() and _id("stats.jacobian_inputs=8") != _id()
    assert not set(RUN_KEYS) & set(plain)


class _Recorder(dict):
    """A config node that records which keys are read."""

    def __init__(self, data, read):
        super().__init__(data)
        self.read = read

    def __getattr__(self, key):
        self.read.add(key)
        return self[key]

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def _node(group: str, option: str) -> tuple[dict, set]:
    node = dict(compose_config(f"{group}={option}")[group])
    read: set[str] = set()
    return _Recorder(node, read), read


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_an_initializer_reads_only_the_keys_its_yaml_lists(name):
    node, read = _node("init", name)
    INITIALIZERS[name](node)
    bias_init(node)
    assert read <= option_keys("init", name)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_an_optimizer_reads_only_the_keys_its_yaml_schedule_and_decay_use(name, schedule, weight_decay):
    overrides = [f"optim.schedule={schedule}", f"optim.weight_decay={weight_decay}"]
    node = dict(compose_config(f"optim={name}", *overrides, "optim.boundaries=[5]", "optim.factors=[0.1]")["optim"])
    read: set[str] = set()
    make_optimizer(_Recorder(node, read), 10)
    assert read <= used_keys("optim", node)
    if schedule == "constant" and weight_decay == 0:
        assert read <= option_keys("optim", name) | {"schedule", "weight_decay"}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_a_norm_reads_only_the_keys_its_yaml_lists(name):
    node, read = _node("norm", name)
    if NORM_LAYERS[name] is not None:
        NORM_LAYERS[name](node)(True)
        read.add("position")  # the model places every norm before or after the activation
    assert read <= option_keys("norm", name)


def test_the_engine_builds_every_norm_and_optimizer_the_options_name():
    assert set(NORM_LAYERS) == set(NORMS)
    assert set(DIRECTIONS) == set(OPTIMIZERS)
    assert set(MASKS) == set(DECAY_MASKS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_an_activation_lists_alpha_exactly_when_it_has_one(name):
    assert ("alpha" in option_keys("act", name)) == (ACTIVATIONS[name].default_alpha is not None)


def test_a_dataset_lists_root_exactly_when_it_reads_files():
    for path in Path(conf_dir(), "data").glob("*.yaml"):
        keys = set(yaml.safe_load(path.read_text()))
        assert {"name", "standardize", "n_train", "n_test"} <= keys
        assert ("root" in keys) == (path.stem in FILE_DATASETS)


def test_an_override_the_cell_ignores_is_named_with_the_choice_that_ignores_it():
    overrides = ["optim.warmup_steps=10", "optim.decay_mask=all", "optim.momentum=0.3", "optim.lr=0.2"]
    cfg = compose_config(*overrides, "optim.schedule=step", "optim.boundaries=[5]", "optim.factors=[0.1]")
    assert ignored_overrides(cfg, overrides) == [
        f"{key} is ignored by {by}: this cell runs, and is identified, without it"
        for key, by in [
            ("optim.warmup_steps", "optim.schedule=step"),
            ("optim.decay_mask", "optim.weight_decay=0.0"),
            ("optim.momentum", "optim=sgd"),
        ]
    ]
