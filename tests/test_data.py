"""The offline datasets: shapes, stratified splits, scaling and standardization."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from gradstudy.data import DATASETS, load_dataset, standardize


def _data(name, standardize=False):
    return load_dataset(OmegaConf.create({"name": name, "standardize": standardize, "root": None}))


def test_mnist5k_stratified_split_and_scaling():
    d = _data("mnist5k")
    assert d.x_train.shape == (4000, 784) and d.x_test.shape == (1000, 784)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert np.bincount(d.y_train).tolist() == [400] * 10 and np.bincount(d.y_test).tolist() == [100] * 10
    assert d.x_train.min() == 0 and d.x_train.max() == 1
    assert d.n_classes == 10 and d.n_features == 784


def test_mnist5k_standardization_uses_the_training_split_and_zeroes_constant_pixels():
    raw, std = _data("mnist5k"), _data("mnist5k", standardize=True)
    constant = raw.x_train.std(axis=0) == 0
    assert constant.sum() >= 121
    assert np.all(std.x_train[:, constant] == 0) and np.all(std.x_test[:, constant] == 0)
    np.testing.assert_allclose(std.x_train[:, ~constant].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(std.x_train[:, ~constant].std(axis=0), 1, rtol=1e-3)


def test_standardize_formula():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    test = np.array([[5.0, 7.0]])
    tr, te = standardize(train, test)
    np.testing.assert_allclose(tr, [[-1, 0], [1, 0]])
    np.testing.assert_allclose(te, [[3, 0]])


def test_digits_and_mnist1d_are_offline_and_keep_numpy_state():
    d = _data("digits")
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64) and d.x_train.max() <= 1
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    m = _data("mnist1d")
    assert np.random.rand() == expected  # make_dataset's global reseed was undone
    assert m.x_train.shape == (4000, 40) and m.x_test.shape == (1000, 40) and m.n_classes == 10


def test_every_dataset_has_a_preset():
    from pathlib import Path

    from gradstudy.run import conf_dir

    assert {p.stem for p in Path(conf_dir(), "data").glob("*.yaml")} == set(DATASETS)
