"""Readers for the datasets that come as local files: MNIST and Fashion-MNIST (IDX), CIFAR-10 (python batches).

Nothing is downloaded. When a file is missing, ``MissingDataError`` says which files are expected,
in which folder, and where to get them.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: IDX element types (the third byte of the magic number) used by the MNIST family.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MissingDataError(FileNotFoundError):
    """A dataset's local files are not where the config says; the message says what to put where."""


@dataclass(frozen=True)
class FileSet:
    """The files one dataset needs: names inside ``data.root`` and where they come from."""

    files: tuple[str, ...]
    source: str

    def locate(self, name: str, root: str | None) -> dict[str, Path]:
        """Path of each file under ``root``; a gzipped copy (``<file>.gz``) counts. Raises MissingDataError."""
        folder = Path(root or ".").expanduser().resolve()
        found, missing = {}, []
        for file in self.files:
            candidates = [folder / file, folder / f"{file}.gz"]
            hit = next((p for p in candidates if p.is_file()), None)
            if hit is None:
                missing.append(file)
            else:
                found[file] = hit
        if missing:
            raise MissingDataError(
                f"data={name}: missing {', '.join(missing)} in {folder} (data.root). "
                f"Expected files: {', '.join(self.files)} (each may also be gzipped, ending in .gz). "
                f"Get them from {self.source}, put them in that folder or set data.root=/path/to/folder. "
                "gradstudy never downloads; the offline datasets are mnist5k, digits, mnist1d and shapeset."
            )
        return found


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST = FileSet(
    IDX_FILES, "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"
)
FASHION_MNIST = FileSet(IDX_FILES, "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)")
CIFAR10 = FileSet(
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpack it; the files are in cifar-10-batches-py/)",
)


def _open(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzipped or not): magic 0x0000TTDD, D big-endian uint32 dimensions, then the data."""
    raw = _open(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {expected} for an IDX array of shape {shape}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


def load_idx_set(name: str, files: FileSet, root: str | None) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test) of an MNIST-format dataset, images flattened and scaled to [0, 1]."""
    paths = files.locate(name, root)
    x_train, y_train, x_test, y_test = (read_idx(paths[f]) for f in IDX_FILES)
    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255.0  # noqa: E731
    return flat(x_train), flat(x_test), y_train, y_test


def cifar10_folder(root: str | None) -> Path:
    """``data.root`` itself, or the ``cifar-10-batches-py`` folder inside it."""
    folder = Path(root or ".").expanduser()
    return folder / "cifar-10-batches-py" if (folder / "cifar-10-batches-py").is_dir() else folder


def source_files(name: str, root: str | None) -> list[Path]:
    """The local files a file dataset reads (raises MissingDataError when one is missing)."""
    if name == "cifar10":
        return sorted(CIFAR10.locate(name, str(cifar10_folder(root))).values())
    files = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}[name]
    return sorted(files.locate(name, root).values())


def load_cifar10(root: str | None) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test) from CIFAR-10's python batches, 3,072 features scaled to [0, 1].

    ``data.root`` may be the ``cifar-10-batches-py`` folder itself or the folder holding it.
    """
    paths = CIFAR10.locate("cifar10", str(cifar10_folder(root)))

    def batch(file: str) -> tuple[np.ndarray, np.ndarray]:
        content = pickle.loads(_open(paths[file]), encoding="bytes")
        return np.asarray(content[b"data"], np.float32) / 255.0, np.asarray(content[b"labels"])

    train = [batch(f) for f in CIFAR10.files[:-1]]
    x_test, y_test = batch("test_batch")
    return np.concatenate([x for x, _ in train]), x_test, np.concatenate([y for _, y in train]), y_test
