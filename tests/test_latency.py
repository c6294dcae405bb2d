"""Inference latency: interleaved rounds of jitted forward passes, and ratios within a round."""

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, compose_config

from gradstudy.analysis.latency import ratios
from gradstudy.engine.latency import measure_latency
from gradstudy.inputs.data import load_dataset


def test_rounds_interleave_every_arm_and_time_per_example():
    configs = {
        "relu": compose_config(*TINY, "act=relu"),
        "prelu_bn": compose_config(*TINY, "act=prelu", "norm=batchnorm"),
    }
    dataset = load_dataset(configs["relu"].data)
    table = measure_latency(configs, dataset.x_train[:100], dataset.n_classes, rounds=3, calls=2)
    assert list(table["arm"]) == ["relu", "prelu_bn"] * 3 and list(table["round"]) == [0, 0, 1, 1, 2, 2]
    assert (table["seconds_per_example"] > 0).all()


def test_ratios_pair_arms_within_each_round():
    table = pd.DataFrame(
        {"arm": ["a", "b", "a", "b"], "round": [0, 0, 1, 1], "seconds_per_example": [2.0, 1.0, 9.0, 3.0]}
    )
    np.testing.assert_allclose(ratios(table, "a", "b"), [2.0, 3.0])
    with pytest.raises(KeyError):
        ratios(table, "a", "c")
