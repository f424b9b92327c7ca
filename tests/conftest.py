"""Shared fixtures: tiny generated MNIST folders, so no test downloads anything."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mnist_plus import idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_MNIST_DIR = os.environ.get("MNIST_PLUS_MNIST_DIR") or os.path.join(
    REPO, "..", "shared", "data", "mnist")


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: label d draws a bright bar in row band d, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, d in enumerate(labels):
        images[i, 2 + 2 * d: 4 + 2 * d, 4:24] = 255
    return images[..., None], labels


def write_tiny_mnist(folder: str, n_train: int = 256, n_test: int = 64,
                     compress: bool = True) -> str:
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = synthetic_digits(n, seed)
        idx.write_idx(folder, split, images, labels, compress=compress)
    return folder


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's TFDS dir or MNIST folder by accident."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default_tfds"))
    monkeypatch.delenv("MNIST_PLUS_MNIST_DIR", raising=False)


@pytest.fixture
def tiny_mnist_dir(tmp_path) -> str:
    return write_tiny_mnist(str(tmp_path / "idx"))


@pytest.fixture(scope="session")
def prepared_tiny(tmp_path_factory) -> tuple[str, str]:
    """(tfds_dir, mnist_dir) with the tiny MNIST already prepared and cached once."""
    from mnist_plus import data

    root = tmp_path_factory.mktemp("tiny")
    mnist_dir = write_tiny_mnist(str(root / "idx"))
    tfds_dir = str(root / "tfds")
    data.load_mnist(tfds_dir, mnist_dir)
    return tfds_dir, mnist_dir


@pytest.fixture(scope="session")
def real_mnist_dir() -> str:
    folder = os.path.abspath(REAL_MNIST_DIR)
    if not all(os.path.exists(os.path.join(folder, stem + ".gz")) or
               os.path.exists(os.path.join(folder, stem)) for stem in idx.IDX_FILES.values()):
        pytest.skip(f"real MNIST IDX files not found in {folder}; set MNIST_PLUS_MNIST_DIR "
                    f"to a folder with the four MNIST files to run this test")
    return folder
