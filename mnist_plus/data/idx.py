"""Reading and validating the four MNIST IDX files (gzipped or raw).

Kept apart from the TFDS builder so that every way of getting MNIST into the
project checks the bytes the same way, and a broken file is reported as such.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from typing import Mapping

import numpy as np

from mnist_plus.errors import DataError

# name of a part -> file stem, as published with MNIST.
IDX_FILES: Mapping[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IMAGE_SIDE = 28
MNIST_DIR_ENV = "MNIST_PLUS_MNIST_DIR"  # the IDX folder when no --mnist-dir is given


def find_idx_file(folder: str, stem: str) -> str:
    """Path of `stem` in `folder`, gzipped or raw (the forms MNIST mirrors use)."""
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise DataError(
        f"MNIST file {stem}(.gz) not found in {folder}: put the four MNIST IDX files "
        f"({', '.join(IDX_FILES.values())}) there, gzipped or not"
    )


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read MNIST file {path}: {e.strerror}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"MNIST file {path} is not a valid gzip file ({e}); download it again"
        ) from None


def _parse(path: str, magic: int) -> np.ndarray:
    data = _read_bytes(path)
    ndim = 3 if magic == IMAGE_MAGIC else 1
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"MNIST file {path} is truncated: {len(data)} bytes, no full header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "image" if magic == IMAGE_MAGIC else "label"
        raise DataError(
            f"MNIST file {path} has magic number {found}, expected {magic} for an {kind} "
            f"file; is it the right file?"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims) + header  # exact: np.prod overflows on a corrupt header
    if len(data) != expected:
        raise DataError(
            f"MNIST file {path} has {len(data)} bytes but its header {dims} needs {expected}; "
            f"the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_images(path: str) -> np.ndarray:
    """uint8 images [N, 28, 28, 1] from an IDX image file."""
    images = _parse(path, IMAGE_MAGIC)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"MNIST file {path} holds {images.shape[1]}x{images.shape[2]} images, "
            f"expected {IMAGE_SIDE}x{IMAGE_SIDE}"
        )
    return images[..., None]


def read_labels(path: str) -> np.ndarray:
    """int64 labels [N] in 0..9 from an IDX label file."""
    labels = _parse(path, LABEL_MAGIC)
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(
            f"MNIST file {path} has label {int(labels[bad])} at index {bad}; labels must be 0..9"
        )
    return labels.astype(np.int64)


def read_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (images, labels) of `split` ('train' or 'test') from an IDX folder."""
    images_path = find_idx_file(folder, IDX_FILES[f"{split}_images"])
    labels_path = find_idx_file(folder, IDX_FILES[f"{split}_labels"])
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(
            f"MNIST {split} split in {folder} has {len(images)} images but {len(labels)} "
            f"labels; the files do not belong together"
        )
    return images, labels


def write_idx(folder: str, split: str, images: np.ndarray, labels: np.ndarray,
              compress: bool = True) -> None:
    """Write a split as IDX files: used by tests and tools to make small MNIST folders."""
    os.makedirs(folder, exist_ok=True)
    images = np.asarray(images, np.uint8).reshape(len(images), -1, images.shape[2])
    parts = {
        f"{split}_images": (IMAGE_MAGIC, images),
        f"{split}_labels": (LABEL_MAGIC, np.asarray(labels, np.uint8)),
    }
    for part, (magic, array) in parts.items():
        header = magic.to_bytes(4, "big") + b"".join(
            d.to_bytes(4, "big") for d in array.shape)
        payload = header + array.tobytes()
        name = IDX_FILES[part] + (".gz" if compress else "")
        with open(os.path.join(folder, name), "wb") as f:
            f.write(gzip.compress(payload, mtime=0) if compress else payload)


def check_folder(mnist_dir: str) -> None:
    """A DataError unless `mnist_dir` is a folder (its files are checked as read)."""
    if not os.path.isdir(mnist_dir):
        what = "is not a folder" if os.path.exists(mnist_dir) else "does not exist"
        raise DataError(
            f"MNIST folder {mnist_dir} {what}: point --mnist-dir or {MNIST_DIR_ENV} "
            f"at a folder with the four MNIST IDX files")
