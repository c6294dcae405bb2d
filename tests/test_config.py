"""Bad input is rejected before any compile, with a message naming the key and what is allowed."""

import pytest
from conftest import compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from gradstudy.cells.config import seeds_of
from gradstudy.cells.validate import validate, validate_against_data
from gradstudy.inputs.data import load_dataset
from gradstudy.schema import ConfigError


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ("model.depth=0", "model.depth", ">= 1"),
        ("model.width=-1", "model.width", ">= 1"),
        ("optim.lr=-0.1", "optim.lr", "> 0"),
        ("train.steps=0", "train.steps", ">= 1"),
        ("train.seeds=[]", "train.seeds", "empty"),
        ("train.seeds=0", "train.seeds", ">= 1"),
        ("train.seeds=[1,1]", "train.seeds", "distinct"),
        ("init.mode=fan_sideways", "init.mode", "fan_avg"),
        ("init.distribution=cauchy", "init.distribution", "truncated_normal"),
        ("norm.position=middle", "norm.position", "after"),
        ("train.eval_every=7", "train.eval_every", "stats.every"),
        ("stats.hist_steps=[5000]", "stats.hist_steps", "train.steps"),
        ("optim.clip_norm=0", "optim.clip_norm", "> 0"),
        ("budget=huge", "budget", "'paper'"),
        ("data.n_train=0", "data.n_train", ">= 1"),
        ("stats.extra=[curvature]", "stats.extra", "jacobian_sv_mean"),
        ("stats.extra=[unit_mean_median] stats.tier=none", "stats.extra", "stats.tier=scalars"),
    ],
)
def test_impossible_values_name_the_key(override, key, hint):
    cfg = compose_config(*override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(f"{key}:") and hint in str(err.value)


def test_names_are_checked_against_the_registries():
    cfg = compose_config("init.name=glorot_magic")
    with pytest.raises(ConfigError, match=r"init.name: must be one of \[.*'he'.*'xavier'"):
        validate(cfg)


def test_batch_larger_than_training_set():
    cfg = compose_config("data=digits", "train.batch_size=5000")
    validate(cfg)
    with pytest.raises(ConfigError, match=r"train.batch_size: must not exceed the 1437 training examples"):
        validate_against_data(cfg, len(load_dataset(cfg.data).y_train))


@pytest.mark.parametrize("group", ["init", "act", "norm", "data", "optim"])
def test_unknown_option_lists_the_valid_ones(group):
    with pytest.raises(MissingConfigException, match="Available options"):
        compose_config(f"{group}=nonexistent")


@pytest.mark.parametrize("override", ["model.depth=ten", "optim.lr=fast", "train.batch_size=1.5"])
def test_non_numeric_values_are_rejected_at_composition(override):
    with pytest.raises((ConfigCompositionException, ValidationError), match=override.split("=")[0].split(".")[-1]):
        compose_config(override)


def test_unknown_key_is_rejected_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_config("model.dpeth=3")


def test_seed_count_or_list():
    assert seeds_of(compose_config("train.seeds=3")) == [0, 1, 2]
    assert seeds_of(compose_config("train.seeds=[7,2]")) == [7, 2]
    with pytest.raises(ConfigError, match="train.seeds"):
        seeds_of(compose_config("train.seeds=many"))


def test_default_config_is_valid():
    validate(compose_config())
