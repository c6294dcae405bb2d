"""Readers for the datasets that come as local files: MNIST and Fashion-MNIST (IDX), CIFAR-10 (the
binary batches, or the python batches through a restricted unpickler).

Nothing is downloaded, and nothing in a data folder is ever executed: a CIFAR-10 python batch is
unpickled by ``BatchUnpickler``, which builds only what the official batches hold (dicts, lists,
bytes, strings, ints and numpy arrays) and refuses any other class before it is created. When a file
is missing, ``MissingDataError`` says which files are expected, in which folder, and where to get
them; a file that is damaged or not what it should be raises ``DataFileError`` naming it.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: IDX element types (the third byte of the magic number) used by the MNIST family.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MissingDataError(FileNotFoundError):
    """A dataset's local files are not where the config says; the message says what to put where."""


class DataFileError(ValueError):
    """A data file that cannot be read or does not hold what it should; the message names the file,
    what was found and what was expected."""


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
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpack it; the files are in cifar-10-batches-py/), "
    "or the binary version cifar-10-binary.tar.gz (cifar-10-batches-bin/)",
)
CIFAR10_BIN = FileSet(
    tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",),
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (unpack it; the files are in cifar-10-batches-bin/)",
)
#: CIFAR-10's images: 32 x 32 pixels x 3 channels, stored channel after channel.
CIFAR10_FEATURES = 3072


def _open(path: Path) -> bytes:
    """The file's bytes, decompressed when it ends in ``.gz``; a damaged archive names the file."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise DataFileError(f"{path}: not a valid gzip file ({err})") from err


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzipped or not): magic 0x0000TTDD, D big-endian uint32 dimensions, then the data."""
    raw = _open(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataFileError(f"{path}: {len(raw)} bytes, expected {expected} for an IDX array of shape {shape}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


def load_idx_set(name: str, files: FileSet, root: str | None) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test) of an MNIST-format dataset, images flattened and scaled to [0, 1].
    Each split's images must be (n, 28, 28) and its labels (n,), n the same: a file that disagrees is named."""
    paths = files.locate(name, root)
    x_train, y_train, x_test, y_test = (read_idx(paths[f]) for f in IDX_FILES)
    for images, labels, image_file, label_file in (
        (x_train, y_train, *IDX_FILES[:2]),
        (x_test, y_test, *IDX_FILES[2:]),
    ):
        if images.ndim != 3:
            raise DataFileError(
                f"{paths[image_file]}: an array of shape {images.shape}, expected (n, rows, columns) images"
            )
        if labels.ndim != 1:
            raise DataFileError(f"{paths[label_file]}: an array of shape {labels.shape}, expected (n,) labels")
        if len(images) != len(labels):
            raise DataFileError(
                f"{paths[image_file]} holds {len(images)} images but {paths[label_file]} holds {len(labels)} labels; "
                "they must be equal"
            )
    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255.0  # noqa: E731
    return flat(x_train), flat(x_test), y_train, y_test


def cifar10_folder(root: str | None) -> tuple[Path, FileSet]:
    """Where CIFAR-10's batches are and in which format: ``data.root`` itself or the
    ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` folder inside it; the binary batches, which
    need no unpickling, when both are there."""
    folder = Path(root or ".").expanduser()
    for sub, files in (("cifar-10-batches-bin", CIFAR10_BIN), ("cifar-10-batches-py", CIFAR10)):
        if (folder / sub).is_dir():
            return folder / sub, files
    binary = all(any((folder / f"{f}{gz}").is_file() for gz in ("", ".gz")) for f in CIFAR10_BIN.files)
    return folder, CIFAR10_BIN if binary else CIFAR10


def source_files(name: str, root: str | None) -> list[Path]:
    """The local files a file dataset reads (raises MissingDataError when one is missing)."""
    if name == "cifar10":
        folder, files = cifar10_folder(root)
        return sorted(files.locate(name, str(folder)).values())
    files = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}[name]
    return sorted(files.locate(name, root).values())


def _multiarray(name: str) -> object:
    """``_reconstruct`` or ``scalar`` of numpy's multiarray module (``numpy._core`` from numpy 2 on)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name)


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch and nothing else: the only globals it will look up are
    numpy's array reconstructor, ``ndarray`` and ``dtype`` (what a pickled uint8 array needs); dicts,
    lists, bytes, strings and ints need none (numpy integer scalars need ``scalar``). Any other class is refused before it is created, so
    a payload in a data folder never runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise DataFileError(
                f"{self.path}: refused to unpickle {module}.{name}: a CIFAR-10 batch holds only dicts, lists, bytes, "
                "strings, ints and numpy uint8 arrays, and nothing in a data folder is executed"
            )
        if module.endswith("multiarray"):
            return _multiarray(name)
        return getattr(np, name)


def _python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        content = BatchUnpickler(_open(path), path).load()
    except DataFileError:
        raise
    except Exception as err:  # a truncated or foreign pickle
        raise DataFileError(f"{path}: not a CIFAR-10 python batch ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict) or b"data" not in content or b"labels" not in content:
        found = sorted(content)[:6] if isinstance(content, dict) else type(content).__name__
        raise DataFileError(f"{path}: expected a dict with b'data' and b'labels', found {found}")
    data, labels = content[b"data"], content[b"labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != CIFAR10_FEATURES
    ):
        shape = getattr(data, "shape", None)
        raise DataFileError(
            f"{path}: b'data' is {type(data).__name__} {getattr(data, 'dtype', '')} of shape {shape}, "
            f"expected a uint8 array of shape (n, {CIFAR10_FEATURES})"
        )
    if not isinstance(labels, list | np.ndarray) or not all(isinstance(v, int | np.integer) for v in labels):
        raise DataFileError(f"{path}: b'labels' must be a list of integers")
    if len(labels) != len(data):
        raise DataFileError(f"{path}: {len(data)} images but {len(labels)} labels; they must be equal")
    return data.astype(np.float32) / 255.0, np.asarray(labels, np.int64)


def _binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the binary version: records of 1 label byte and 3,072 pixel bytes."""
    raw = np.frombuffer(_open(path), np.uint8)
    record = 1 + CIFAR10_FEATURES
    if raw.size == 0 or raw.size % record:
        raise DataFileError(
            f"{path}: {raw.size} bytes, expected a whole number of {record}-byte records (label + image)"
        )
    rows = raw.reshape(-1, record)
    return rows[:, 1:].astype(np.float32) / 255.0, rows[:, 0].astype(np.int64)


def load_cifar10(root: str | None) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test) from CIFAR-10's batches, 3,072 features scaled to [0, 1]:
    the binary version when it is there (it needs no unpickling), else the python version."""
    folder, files = cifar10_folder(root)
    paths = files.locate("cifar10", str(folder))
    read = _binary_batch if files is CIFAR10_BIN else _python_batch
    train = [read(paths[f]) for f in files.files[:-1]]
    x_test, y_test = read(paths[files.files[-1]])
    return np.concatenate([x for x, _ in train]), x_test, np.concatenate([y for _, y in train]), y_test
