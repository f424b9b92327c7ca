"""MNIST as arrays: through TFDS without TensorFlow (`tfds_mnist`), prepared once as
array_record, read, cached. Decoding 70,000 PNGs takes seconds, so the decoded arrays are cached beside the
TFDS data and later starts load them in well under a second.

Each load returns the arrays' fingerprint (sha256 of the image and label bytes per
split; checkpoints record it), and with an IDX folder given, checks that the TFDS
data and cache were made from the same images and labels as that folder holds: a
data dir prepared from other files is an error, never silently used instead.

Without TFDS (or array_record) installed, and with no cache prepared, an IDX folder is
read directly, in the order TFDS stores the examples: the same arrays, fingerprint and
batches as through TFDS, so a run can resume across the two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import sys
from typing import Iterator

import numpy as np

from mnist_plus.runtime import atomic
from mnist_plus.data import idx, tfds_mnist
from mnist_plus.errors import DataError

MNIST_DIR_ENV = idx.MNIST_DIR_ENV
TFDS_DIR_ENV = "TFDS_DATA_DIR"
CACHE_FOLDER = "mnist_plus_cache"
# Where our array_record copy goes when the data dir holds a stock tfrecord
# `mnist` that we must not touch and cannot read without TensorFlow.
ALT_DATA_FOLDER = "mnist_plus_array_record"


@dataclasses.dataclass(frozen=True)
class Mnist:
    """Decoded MNIST: uint8 images [N, 28, 28, 1] and int32 labels [N] per split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @functools.cached_property
    def fingerprint(self) -> dict[str, str]:
        """sha256 of the uint8 image bytes and label bytes per split (0.06 s for
        MNIST): what a checkpoint records, to refuse resuming on other data."""
        return {part: hashlib.sha256(np.ascontiguousarray(getattr(self, part), np.uint8)
                                     ).hexdigest() for part in idx.IDX_FILES}


def default_tfds_dir() -> str:
    """TFDS's own default (honours TFDS_DATA_DIR), without importing TFDS early."""
    return os.path.expanduser(os.environ.get(TFDS_DIR_ENV) or "~/tensorflow_datasets")


def _check(mnist: Mnist, origin: str) -> Mnist:
    for split in ("train", "test"):
        images = getattr(mnist, f"{split}_images")
        labels = getattr(mnist, f"{split}_labels")
        if images.ndim != 4 or images.shape[1:] != (28, 28, 1) or len(images) != len(labels):
            raise DataError(
                f"MNIST {split} split from {origin} has images {images.shape} and labels "
                f"{labels.shape}; delete it and prepare again")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"MNIST {split} labels from {origin} are outside 0..9")
    return mnist


def _cache_path(data_dir: str) -> str:
    return os.path.join(data_dir, CACHE_FOLDER, "mnist-3.0.1.npz")


def _sources_path(data_dir: str) -> str:
    """The IDX files (by sha256 of their bytes) checked to hold the cached arrays."""
    return os.path.join(data_dir, CACHE_FOLDER, "mnist-3.0.1.sources.json")


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _check_source(data_dir: str, mnist_dir: str, mnist: Mnist) -> None:
    """Refuse `mnist` (from `data_dir`) if `mnist_dir` holds other images or labels.

    The data dir is prepared once, from whatever folder was given first; later starts
    read its cache whatever --mnist-dir says. Hashing the four files (about 20 ms for
    MNIST) recognises folders already checked; a new one is decoded and compared once
    (about 2 s for MNIST).
    """
    idx.check_folder(mnist_dir)
    files = {part: _file_sha256(idx.find_idx_file(mnist_dir, stem))
             for part, stem in idx.IDX_FILES.items()}
    path = _sources_path(data_dir)
    try:
        with open(path) as f:
            record = json.load(f)
        known = record["sources"] if record["fingerprint"] == mnist.fingerprint else []
    except (OSError, ValueError, KeyError, TypeError):
        known = []
    if files in known:
        return
    changed = []
    for split in ("train", "test"):
        images, labels = idx.read_split(mnist_dir, split)
        ours = (getattr(mnist, f"{split}_images"), getattr(mnist, f"{split}_labels"))
        changed += [f"{split} {what}" for what in _differences((images, labels), ours)]
    if changed:
        raise DataError(
            f"the TFDS data dir {data_dir} holds MNIST prepared from other files than those "
            f"in {mnist_dir} ({', '.join(changed)} differ): pass another --tfds-dir to "
            f"prepare these files, or leave out --mnist-dir (and {MNIST_DIR_ENV}) to use the "
            f"prepared data")
    try:
        atomic.replace_file(path, lambda f: f.write(json.dumps(
            {"fingerprint": mnist.fingerprint, "sources": known[-7:] + [files]}).encode()))
    except OSError:
        pass  # a read-only shared data dir: check again next time


def _sorted_rows(*columns: np.ndarray) -> np.ndarray:
    """The rows of `columns` (side by side, as bytes), sorted: a multiset to compare."""
    rows = np.ascontiguousarray(np.concatenate(
        [np.asarray(c).astype(np.uint8).reshape(len(c), -1) for c in columns], axis=1))
    return np.sort(rows.view(np.dtype((np.void, rows.shape[1]))).ravel())


def _differences(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
                 ) -> list[str]:
    """Which of 'images', 'labels' differ between two (images, labels) splits, whatever
    the order of their examples (TFDS stores them in its own order)."""
    if a[0].shape != b[0].shape or not np.array_equal(_sorted_rows(a[0]), _sorted_rows(b[0])):
        return ["images"] + (["labels"] if a[1].shape != b[1].shape else [])
    if not np.array_equal(_sorted_rows(a[1], a[0]), _sorted_rows(b[1], b[0])):
        return ["labels"]
    return []


def _load_cache(path: str) -> Mnist | None:
    try:
        with np.load(path) as f:
            return _check(Mnist(**{k: f[k] for k in f.files}), path)
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return None


def _write_atomically(path: str, mnist: Mnist) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.replace_file(path, lambda f: np.savez(f, **dataclasses.asdict(mnist)))


@contextlib.contextmanager
def _lock(data_dir: str) -> Iterator[None]:
    """Serialise preparation so concurrent runs on one data dir never corrupt it."""
    folder = os.path.join(data_dir, CACHE_FOLDER)
    try:
        os.makedirs(folder, exist_ok=True)
        handle = open(os.path.join(folder, ".lock"), "w")
    except OSError as e:
        raise DataError(
            f"cannot write to the TFDS data dir {data_dir} ({e.strerror}): pass a writable "
            f"--tfds-dir or set {TFDS_DIR_ENV}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is preparing MNIST in {data_dir}",
                  file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tfds_order(n: int, split: str) -> np.ndarray:
    """The order in which TFDS stores a split's examples 0..n-1: by the md5 of the split
    name and the example's key, as tensorflow_datasets/core/hashing.py and shuffle.py
    do (0.25 s for MNIST's train split). Read in this order without TFDS, MNIST gives
    the arrays, fingerprint and batches that TFDS gives."""
    salted = hashlib.md5(split.encode())

    def key(index: int) -> bytes:
        md5 = salted.copy()
        md5.update(str(index).encode())
        return md5.digest()  # big-endian bytes sort as TFDS's 128-bit integers do

    return np.array(sorted(range(n), key=key), dtype=np.int64)


def read_idx_folder(mnist_dir: str) -> Mnist:
    """MNIST straight from a folder of IDX files, in TFDS's order (`tfds_order`)."""
    idx.check_folder(mnist_dir)
    arrays = {}
    for split in ("train", "test"):
        images, labels = idx.read_split(mnist_dir, split)
        order = tfds_order(len(labels), split)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[order])
        arrays[f"{split}_labels"] = labels[order].astype(np.int32)
    return _check(Mnist(**arrays), mnist_dir)


def missing_tfds() -> str | None:
    """The name of TFDS's or array_record's module that cannot be imported, else None.
    Asked only when TFDS would be used: importing it takes about a second."""
    try:
        import array_record  # noqa: F401
        import tensorflow_datasets  # noqa: F401
    except ImportError as e:
        return e.name or str(e)
    return None


def _without_tfds(missing: str, mnist_dir: str | None) -> Mnist:
    """MNIST from the IDX folder where TFDS cannot be imported, saying so in one line."""
    if mnist_dir is None:
        raise DataError(
            f"TFDS is not installed ({missing} cannot be imported) and no MNIST folder is "
            f"given: pip install tensorflow-datasets array_record, or pass --mnist-dir DIR "
            f"(or set {MNIST_DIR_ENV}) to a folder with the four MNIST IDX files")
    print(f"TFDS is not installed ({missing} cannot be imported): reading MNIST from the IDX "
          f"files in {mnist_dir}", file=sys.stderr, flush=True)
    return read_idx_folder(mnist_dir)


def load_mnist(tfds_dir: str | None = None, mnist_dir: str | None = None) -> Mnist:
    """MNIST as arrays: from the cache, else from TFDS (preparing it once if needed),
    else, TFDS not installed, from the IDX folder.

    `tfds_dir` defaults to TFDS's data dir; `mnist_dir` (or MNIST_PLUS_MNIST_DIR)
    is a folder of IDX files used to prepare offline instead of downloading; once
    prepared, a DataError if the data dir was prepared from other files than it holds.
    """
    data_dir = os.path.abspath(os.path.expanduser(tfds_dir or default_tfds_dir()))
    mnist_dir = mnist_dir or os.environ.get(MNIST_DIR_ENV) or None
    cached = _load_cache(_cache_path(data_dir))
    if cached is None and (missing := missing_tfds()) is not None:
        return _without_tfds(missing, mnist_dir)
    mnist = cached if cached is not None else _load(data_dir, mnist_dir)
    if mnist_dir is not None:
        _check_source(data_dir, mnist_dir, mnist)
    return mnist


def _load(data_dir: str, mnist_dir: str | None) -> Mnist:
    cache = _cache_path(data_dir)
    cached = _load_cache(cache)
    if cached is not None:
        return cached
    with _lock(data_dir):
        cached = _load_cache(cache)  # another process may have finished meanwhile
        if cached is not None:
            return cached
        fmt = tfds_mnist.prepared_format(data_dir)
        if fmt is not None and fmt != "array_record" and tfds_mnist.tensorflow_available():
            mnist = Mnist(**tfds_mnist.read_tfrecord_with_tensorflow(data_dir))
            origin = data_dir
        else:
            source_dir = data_dir
            if fmt is not None and fmt != "array_record":
                # A stock tfrecord copy we cannot read: keep it, prepare ours beside it.
                source_dir = os.path.join(data_dir, ALT_DATA_FOLDER)
                fmt = tfds_mnist.prepared_format(source_dir)
            if fmt is None:
                tfds_mnist.prepare(source_dir, mnist_dir)
            mnist = Mnist(**tfds_mnist.read_data_source(source_dir))
            origin = source_dir
        mnist = _check(mnist, origin)
        _write_atomically(cache, mnist)
        return mnist
