import gzip
import os

import numpy as np
import pytest

from mnist_plus.data import idx
from mnist_plus.errors import DataError
from tests.helpers import synthetic_digits


def test_round_trip_gz_and_raw(tmp_path):
    images, labels = synthetic_digits(20, 0)
    for compress in (True, False):
        folder = str(tmp_path / str(compress))
        idx.write_idx(folder, "train", images, labels, compress=compress)
        got_images, got_labels = idx.read_split(folder, "train")
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
        assert got_images.shape == (20, 28, 28, 1) and got_images.dtype == np.uint8


def test_missing_file_names_the_file_and_the_folder(tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*not found in"):
        idx.read_split(str(tmp_path), "train")


def _write(path, payload: bytes, compress=True):
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)


def test_truncated_gzip_is_reported(tmp_path):
    images, labels = synthetic_digits(10, 0)
    idx.write_idx(str(tmp_path), "train", images, labels)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="not a valid gzip file"):
        idx.read_split(str(tmp_path), "train")


def test_wrong_magic_number(tmp_path):
    # A label file (magic 2049) where the image file should be.
    _write(tmp_path / "train-images-idx3-ubyte.gz", (2049).to_bytes(4, "big") + b"\0" * 20)
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        idx.read_images(str(tmp_path / "train-images-idx3-ubyte.gz"))


def test_payload_shorter_than_header_says_truncated(tmp_path):
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (5, 28, 28))
    _write(tmp_path / "train-images-idx3-ubyte", header + b"\0" * 100, compress=False)
    with pytest.raises(DataError, match="truncated or corrupt"):
        idx.read_images(str(tmp_path / "train-images-idx3-ubyte"))


def test_count_mismatch(tmp_path):
    images, labels = synthetic_digits(10, 0)
    idx.write_idx(str(tmp_path), "train", images, labels)
    idx.write_idx(str(tmp_path / "other"), "train", images[:7], labels[:7])
    os.replace(tmp_path / "other" / "train-labels-idx1-ubyte.gz",
               tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="10 images but 7 labels"):
        idx.read_split(str(tmp_path), "train")


def test_images_not_28x28(tmp_path):
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 32, 32))
    _write(tmp_path / "train-images-idx3-ubyte.gz", header + b"\0" * (2 * 32 * 32))
    with pytest.raises(DataError, match="32x32 images, expected 28x28"):
        idx.read_images(str(tmp_path / "train-images-idx3-ubyte.gz"))


def test_label_out_of_range(tmp_path):
    images, labels = synthetic_digits(10, 0)
    labels = labels.copy()
    labels[3] = 12
    idx.write_idx(str(tmp_path), "train", images, labels)
    with pytest.raises(DataError, match="label 12 at index 3"):
        idx.read_split(str(tmp_path), "train")
