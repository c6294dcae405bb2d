"""Compatibility warnings: each rule fires on its combination, with its theory number, and only there."""

import json
from pathlib import Path

import pytest
from conftest import TINY, compose_config

from gradstudy.cells.compat import Inputs, compatibility_warnings
from gradstudy.run import run_cell

INPUTS = Inputs(data_q=0.1, n_inputs=784)


def _warnings(*overrides):
    return compatibility_warnings(compose_config(*overrides), INPUTS)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ("act=selu", "init=he"),
            ["SELU's fixed point", "init=he (sigma_w2 = 2", "data.standardize=false", "chi1 = 1.0716"],
        ),
        (("act=selu", "init=lecun", "norm=batchnorm", "data.standardize=true"), ["norm=batchnorm"]),
        (
            ("act=tanh", "init=he"),
            ["He init with tanh", "sigma_w2 = 2", "chi1 = ", "std(delta) at layer 1 / at layer 10"],
        ),
        (("act=sigmoid", "init=he_uniform", "model.depth=3"), ["He init with sigmoid"]),
        (("act=relu", "init=xavier", "model.depth=11"), ["Xavier init with ReLU at depth 11", "chi1 = 0.5", "= 1/32"]),
        (("act=sigmoid", "init=xavier", "model.depth=5"), ["sigmoid at depth 5 without batch norm", "1/"]),
        (
            ("optim.schedule=cosine", "optim.decay_steps=600"),
            ["learning rate of 0 at step 600", "last 400 of 1000 steps", "optim.decay_steps=null"],
        ),
        (
            ("optim.schedule=step", "optim.boundaries=[250]", "optim.factors=[0.0]"),
            ["learning rate of 0 at step 250", "a factor above 0"],
        ),
    ],
)
def test_each_rule_fires_with_its_number(overrides, expected):
    text = " ".join(_warnings(*overrides))
    for part in expected:
        assert part in text, (part, text)


@pytest.mark.parametrize(
    "overrides",
    [
        ("act=relu", "init=xavier"),  # the quickstart's depth 10: not deeper than 10
        ("act=relu", "init=he", "model.depth=30"),
        ("act=selu", "init=lecun", "data.standardize=true"),
        ("act=sigmoid", "init=xavier", "model.depth=4"),
        ("act=sigmoid", "init=xavier", "model.depth=8", "norm=batchnorm"),
        ("act=tanh", "init=xavier"),
        ("optim.schedule=cosine",),  # 0 only after the last update
        ("model=resmlp", "act=relu", "init=xavier", "model.depth=30"),  # the skip path carries the signal
        ("model=resmlp", "act=sigmoid", "init=xavier", "model.depth=8"),
        ("optim.schedule=warmup_cosine", "optim.decay_steps=600", "optim.end_lr=0.001"),
        ("optim.schedule=linear", "optim.decay_steps=999"),
    ],
)
def test_no_warning_where_no_rule_is_broken(overrides):
    assert _warnings(*overrides) == []


def test_xavier_relu_ratio_is_the_std_ratio_not_the_variance_ratio():
    """At depth 11 delta's variance halves 10 times (1/1024); its std shrinks by 2^5 = 32."""
    (warning,) = _warnings("act=relu", "init=xavier", "model.depth=11")
    assert "= 1/32 " in warning + " " and "1/1.02e+03" not in warning


def test_a_warned_cell_prints_once_and_keeps_it_in_meta(tmp_path, capsys):
    cell_dir = Path(run_cell(compose_config(*TINY, "act=tanh", "init=he", f"results_dir={tmp_path}", "train.seeds=1")))
    meta = json.loads((cell_dir / "meta.json").read_text())
    assert meta["status"] == "complete"
    (warning,) = meta["warnings"]
    assert "He init with tanh" in warning
    assert capsys.readouterr().err.count("He init with tanh") == 1
