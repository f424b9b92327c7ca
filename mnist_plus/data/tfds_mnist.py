"""TFDS's `mnist`, prepared and read without TensorFlow.

TFDS's stock `mnist` builder needs TensorFlow to extract and encode. `IdxMnist` is the
same dataset (name, version, features) with a TensorFlow-free `_split_generators`: it
reads the IDX files itself (from a local folder, or from TFDS's download manager with the
registered checksums) and yields PNG bytes, so TFDS can write `array_record` and
`tfds.data_source` can read it back. TFDS is imported only inside these functions.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import urllib.parse

import numpy as np

from mnist_plus.data import idx
from mnist_plus.errors import DataError

DOWNLOAD_HOST = "storage.googleapis.com"
# TFDS decodes each stored PNG with OpenCV when it is installed, else with PIL, and says
# so once through absl ("WARNING:absl:OpenCV is not installed. We recommend using OpenCV
# ..."), in the middle of a first run's output. PIL is what this project uses (a
# dependency); the decode runs once per data dir before the cache is written.
OPENCV_NOTICE = "OpenCV is not installed. We recommend using OpenCV"


class _DropOpenCvNotice(logging.Filter):
    """Drops TFDS's OpenCV notice (`OPENCV_NOTICE`) and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to judge
            return True
        return not message.startswith(OPENCV_NOTICE)


_OPENCV_FILTER = _DropOpenCvNotice()


def quiet_opencv_notice() -> None:
    """Install the filter on absl's logger, which TFDS logs through. Idempotent."""
    logger = logging.getLogger("absl")
    if _OPENCV_FILTER not in logger.filters:
        logger.addFilter(_OPENCV_FILTER)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0], mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def builder_class():
    """The TFDS builder, defined lazily so importing this module does not import TFDS."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist as stock

    class IdxMnist(stock.MNIST, skip_registration=True):
        """TFDS `mnist` 3.0.1, prepared from IDX files without TensorFlow."""

        name = "mnist"

        def __init__(self, *, mnist_dir: str | None = None, **kwargs):
            self._mnist_dir = mnist_dir
            super().__init__(**kwargs)

        @tfds.core.utils.classproperty
        @classmethod
        def url_infos(cls):
            # The checksums TFDS registers for the official URLs.
            return stock.MNIST.url_infos

        def _split_generators(self, dl_manager):
            stems = {part: stem + ".gz" for part, stem in idx.IDX_FILES.items()}
            if self._mnist_dir:
                paths = {part: idx.find_idx_file(self._mnist_dir, stem)
                         for part, stem in idx.IDX_FILES.items()}
            else:
                paths = dl_manager.download(
                    {part: urllib.parse.urljoin(self.URL, name) for part, name in stems.items()})
            return [
                tfds.core.SplitGenerator(
                    name=split,
                    gen_kwargs=dict(images_path=os.fspath(paths[f"{split}_images"]),
                                    labels_path=os.fspath(paths[f"{split}_labels"])),
                )
                for split in ("train", "test")
            ]

        def _generate_examples(self, images_path, labels_path):
            images = idx.read_images(images_path)
            labels = idx.read_labels(labels_path)
            if len(images) != len(labels):
                raise DataError(
                    f"{images_path} has {len(images)} images but {labels_path} has "
                    f"{len(labels)} labels; the files do not belong together")
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": _png_bytes(image), "label": int(label)}

    return IdxMnist


def version_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "mnist", "3.0.1")


def prepared_format(data_dir: str) -> str | None:
    """File format of a prepared `mnist` in `data_dir`, or None if not prepared."""
    info_path = os.path.join(version_dir(data_dir), "dataset_info.json")
    try:
        with open(info_path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info.get("fileFormat", "tfrecord")


def tensorflow_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def download_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((DOWNLOAD_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def prepare(data_dir: str, mnist_dir: str | None) -> None:
    """Write our array_record `mnist` into `data_dir` from IDX files or the download."""
    if mnist_dir is None and not download_reachable():
        raise DataError(
            f"MNIST is not prepared in {data_dir} and {DOWNLOAD_HOST} cannot be reached: "
            f"pass --mnist-dir DIR (or set {idx.MNIST_DIR_ENV}) to a folder with the four MNIST "
            f"IDX files, or run once with network access to download it")
    if mnist_dir is not None:
        idx.check_folder(mnist_dir)
        for split in ("train", "test"):  # fail fast, before TFDS starts writing
            idx.read_split(mnist_dir, split)
    import tensorflow_datasets as tfds

    builder = builder_class()(data_dir=data_dir, mnist_dir=mnist_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def read_data_source(data_dir: str) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    quiet_opencv_notice()  # decoding the PNGs below is where TFDS gives it
    arrays = {}
    for split in ("train", "test"):
        source = tfds.data_source("mnist", split=split, data_dir=data_dir, download=False)
        records = source.__getitems__(list(range(len(source))))
        arrays[f"{split}_images"] = np.stack([r["image"] for r in records]).astype(np.uint8)
        arrays[f"{split}_labels"] = np.array([r["label"] for r in records], np.int32)
    return arrays


def read_tfrecord_with_tensorflow(data_dir: str) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    arrays = {}
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(tfds.load(
            "mnist", split=split, data_dir=data_dir, batch_size=-1, as_supervised=True,
            download=False))
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.int32)
    return arrays
