"""Without TFDS installed (as on the lent GPU machine's image), MNIST is read from the IDX
folder in TFDS's order: the same arrays and fingerprint, so a run resumes across the two."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from mnist_plus.data import idx
from mnist_plus.data import mnist as data
from mnist_plus.errors import DataError

PARTS = ("train_images", "train_labels", "test_images", "test_labels")


@pytest.fixture
def no_tfds(monkeypatch):
    """`import tensorflow_datasets` fails in this process, as where it is not installed."""
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)


def test_idx_folder_in_tfds_order_gives_the_tfds_arrays_and_fingerprint(prepared_tiny):
    tfds_dir, mnist_dir = prepared_tiny
    through_tfds = data.load_mnist(tfds_dir, mnist_dir)
    direct = data.read_idx_folder(mnist_dir)
    for part in PARTS:
        ours, theirs = getattr(direct, part), getattr(through_tfds, part)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), part
    assert direct.fingerprint == through_tfds.fingerprint
    # The files' own order is another: the reordering is what makes them equal.
    _, labels = idx.read_split(mnist_dir, "train")
    assert not np.array_equal(labels, through_tfds.train_labels)


def test_real_mnist_in_tfds_order_gives_the_tfds_fingerprint(real_mnist_run, real_mnist_dir):
    tfds_dir, _ = real_mnist_run
    through_tfds = data.load_mnist(tfds_dir, real_mnist_dir)
    assert data.read_idx_folder(real_mnist_dir).fingerprint == through_tfds.fingerprint


def test_tfds_order_is_a_permutation_that_depends_on_the_split():
    train, test = data.tfds_order(500, "train"), data.tfds_order(500, "test")
    assert sorted(train) == sorted(test) == list(range(500))
    assert not np.array_equal(train, test) and not np.array_equal(train, np.arange(500))


def test_without_tfds_the_folder_is_read_with_one_line_and_nothing_written(
        no_tfds, tiny_mnist_dir, tmp_path, capsys):
    tfds_dir = str(tmp_path / "tfds")
    mnist = data.load_mnist(tfds_dir, tiny_mnist_dir)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TFDS is not installed" in err and tiny_mnist_dir in err
    assert mnist.fingerprint == data.read_idx_folder(tiny_mnist_dir).fingerprint
    assert not os.path.exists(tfds_dir)


def test_without_tfds_a_prepared_cache_is_still_read(no_tfds, prepared_tiny, capsys):
    tfds_dir, mnist_dir = prepared_tiny
    mnist = data.load_mnist(tfds_dir, mnist_dir)
    assert capsys.readouterr().err == ""
    assert mnist.fingerprint == data.read_idx_folder(mnist_dir).fingerprint


def test_without_tfds_or_a_folder_the_error_names_both_remedies(no_tfds, tmp_path):
    with pytest.raises(DataError) as info:
        data.load_mnist(str(tmp_path / "tfds"), None)
    message = str(info.value)
    assert "\n" not in message
    assert "pip install tensorflow-datasets" in message and "--mnist-dir" in message
