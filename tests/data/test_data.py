import json
import os
import time

import numpy as np
import pytest

from mnist_plus.data import mnist as data
from mnist_plus.data import tfds_mnist
from mnist_plus.errors import DataError
from tests.helpers import synthetic_digits, write_tiny_mnist


def _pairs(images, labels):
    return sorted((int(l), im.tobytes()) for im, l in zip(images, labels))


def test_tfds_route_prepares_array_record_from_idx_folder(tmp_path, tiny_mnist_dir):
    tfds_dir = str(tmp_path / "tfds")
    mnist = data.load_mnist(tfds_dir, tiny_mnist_dir)
    version_dir = os.path.join(tfds_dir, "mnist", "3.0.1")
    with open(os.path.join(version_dir, "dataset_info.json")) as f:
        info = json.load(f)
    assert info["name"] == "mnist" and info["version"] == "3.0.1"
    assert info["fileFormat"] == "array_record"
    assert any(n.startswith("mnist-train.array_record") for n in os.listdir(version_dir))
    assert mnist.train_images.shape == (256, 28, 28, 1) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (64, 28, 28, 1)
    # Same examples as the IDX files (TFDS stores them in its own shuffled order).
    for split, seed, n in (("train", 1, 256), ("test", 2, 64)):
        images, labels = synthetic_digits(n, seed)
        got = _pairs(getattr(mnist, f"{split}_images"), getattr(mnist, f"{split}_labels"))
        assert got == _pairs(images, labels)


def test_raw_idx_files_work_too(tmp_path):
    mnist_dir = write_tiny_mnist(str(tmp_path / "raw"), n_train=32, n_test=16, compress=False)
    mnist = data.load_mnist(str(tmp_path / "tfds"), mnist_dir)
    assert len(mnist.train_labels) == 32 and len(mnist.test_labels) == 16


def test_second_load_comes_from_the_cache(prepared_tiny, monkeypatch):
    tfds_dir, _ = prepared_tiny
    monkeypatch.setattr(tfds_mnist, "prepare", lambda *a: pytest.fail("prepared twice"))
    monkeypatch.setattr(tfds_mnist, "read_data_source", lambda *a: pytest.fail("decoded twice"))
    mnist = data.load_mnist(tfds_dir)  # no IDX folder needed once prepared
    assert len(mnist.train_labels) == 256


def test_prepared_dataset_is_read_when_cache_is_gone(prepared_tiny, tmp_path, monkeypatch):
    import shutil

    tfds_dir = str(tmp_path / "copy")
    shutil.copytree(prepared_tiny[0], tfds_dir)
    shutil.rmtree(os.path.join(tfds_dir, data.CACHE_FOLDER))
    monkeypatch.setattr(tfds_mnist, "prepare", lambda *a: pytest.fail("prepared twice"))
    assert len(data.load_mnist(tfds_dir).test_labels) == 64


def test_offline_without_data_fails_fast_naming_both_options(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_mnist, "download_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        data.load_mnist(str(tmp_path / "tfds"))
    assert time.perf_counter() - start < 5
    assert "--mnist-dir" in str(e.value) and "MNIST_PLUS_MNIST_DIR" in str(e.value)
    assert "network" in str(e.value)


def test_reachability_check_answers_within_seconds():
    start = time.perf_counter()
    tfds_mnist.download_reachable(timeout=2.0)
    assert time.perf_counter() - start < 10


def test_mnist_dir_from_environment(tmp_path, tiny_mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_PLUS_MNIST_DIR", tiny_mnist_dir)
    assert len(data.load_mnist(str(tmp_path / "tfds")).train_labels) == 256


def test_missing_mnist_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_mnist(str(tmp_path / "tfds"), str(tmp_path / "nowhere"))


def test_stock_tfrecord_copy_is_left_untouched(tmp_path, tiny_mnist_dir, monkeypatch):
    tfds_dir = tmp_path / "tfds"
    stock = tfds_dir / "mnist" / "3.0.1"
    stock.mkdir(parents=True)
    (stock / "dataset_info.json").write_text(json.dumps(
        {"name": "mnist", "version": "3.0.1", "fileFormat": "tfrecord"}))
    (stock / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"stock bytes")
    before = {p.name: p.read_bytes() for p in stock.iterdir()}
    monkeypatch.setattr(tfds_mnist, "tensorflow_available", lambda: False)
    mnist = data.load_mnist(str(tfds_dir), tiny_mnist_dir)
    assert len(mnist.train_labels) == 256
    assert {p.name: p.read_bytes() for p in stock.iterdir()} == before
    assert (tfds_dir / data.ALT_DATA_FOLDER / "mnist" / "3.0.1" / "dataset_info.json").exists()


def test_corrupt_cache_is_rebuilt(prepared_tiny, tmp_path):
    import shutil

    tfds_dir = str(tmp_path / "copy")
    shutil.copytree(prepared_tiny[0], tfds_dir)
    with open(data._cache_path(tfds_dir), "wb") as f:
        f.write(b"not an npz")
    assert len(data.load_mnist(tfds_dir).train_labels) == 256


def test_cache_gets_normal_file_permissions(prepared_tiny):
    # Written through a mkstemp file (0600); others sharing the data dir must read it.
    umask = os.umask(0o022)
    os.umask(umask)
    mode = os.stat(data._cache_path(prepared_tiny[0])).st_mode & 0o777
    assert mode == 0o666 & ~umask
