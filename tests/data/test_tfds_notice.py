"""TFDS's "OpenCV is not installed" notice (logged through absl while it decodes MNIST's
PNGs with PIL) is dropped from a first run's output, and no other record is."""

from __future__ import annotations

import importlib.util
import logging
import os

from mnist_plus.data import tfds_mnist as mnist

NOTICE = ("OpenCV is not installed. We recommend using OpenCV because it is faster according "
          "to our benchmarks. Defaulting to PIL to decode images...")


def test_the_notice_text_is_the_one_tfds_logs():
    # Read, not imported: importing TFDS takes seconds.
    spec = importlib.util.find_spec("tensorflow_datasets")
    source = os.path.join(os.path.dirname(spec.origin), "core", "features", "image_feature.py")
    with open(source, encoding="utf-8") as f:
        assert mnist.OPENCV_NOTICE in f.read()
    assert NOTICE.startswith(mnist.OPENCV_NOTICE)


def test_the_filter_drops_the_notice_and_keeps_every_other_record():
    logger = logging.getLogger("absl")
    kept: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    filters, level = list(logger.filters), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        mnist.quiet_opencv_notice()
        mnist.quiet_opencv_notice()  # idempotent
        assert sum(f is mnist._OPENCV_FILTER for f in logger.filters) == 1
        logger.warning(NOTICE)
        logger.warning("%s", NOTICE)  # formatted the same: still the notice
        logger.warning("checkpoint %d saved", 12)
        logger.warning("Note: " + NOTICE)  # not TFDS's record: kept
        logger.info("dataset prepared")
    finally:
        logger.removeHandler(handler)
        logger.filters[:] = filters
        logger.setLevel(level)
    assert kept == ["checkpoint 12 saved", "Note: " + NOTICE, "dataset prepared"]
