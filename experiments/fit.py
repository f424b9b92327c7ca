"""Does a trained run fit its training data? Digit accuracy on the clean training images
beside the test images, from the run's checkpoint.

    python -m experiments.fit --workdir runs/accuracy/runs/default/s0 [--workdir ...]

A model that gets its training images wrong about as often as its test images is held
back by what it can fit (capacity, steps), and augmentation, which makes the training
task harder, will not raise its test accuracy; one that fits its training data far
better than the test data is held back by generalisation, and augmentation may help.
The training images are evaluated as the test images are (no shifts, BatchNorm's running
statistics), so the two numbers are comparable; the `train_digit_accuracy` of
`metrics.jsonl` is not (augmented images, batch statistics, parameters still moving).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np

from mnist_plus.data import mnist as data
from mnist_plus.tools import trained
from mnist_plus.cli import run_main, usage_parser


def digit_accuracy(run: trained.Trained, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of `images` (uint8 [N,28,28,1]) whose predicted digit is the label."""
    numbers = np.zeros(len(labels), np.int64)  # the digit head does not read the number
    predictions = trained.predict(run, images, numbers)
    return float(np.mean(predictions.digit == labels))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = usage_parser("python -m experiments.fit",
                          "Digit accuracy of trained runs on the clean training and test sets.")
    parser.add_argument("--workdir", action="append", required=True,
                        help="a trained run's workdir (repeatable); its newest checkpoint")
    parser.add_argument("--mnist-dir", default="", help="MNIST IDX folder (default: the run's)")
    parser.add_argument("--tfds-dir", default="", help="TFDS data dir (default: the run's)")
    return parser.parse_args(argv)


def _main(argv: Sequence[str] | None) -> None:
    args = _parse(argv)
    runs = [trained.load(w) for w in args.workdir]  # one-line errors before loading data
    mnist = data.load_mnist(args.tfds_dir or runs[0].config.tfds_dir or None,
                            args.mnist_dir or runs[0].config.mnist_dir or None)
    for workdir, run in zip(args.workdir, runs):
        train = digit_accuracy(run, mnist.train_images, mnist.train_labels)
        test = digit_accuracy(run, mnist.test_images, mnist.test_labels)
        print(json.dumps({"workdir": workdir, "epoch": run.epoch, "train_digit_accuracy": train,
                          "test_digit_accuracy": test,
                          "train_errors": int(round((1 - train) * len(mnist.train_labels))),
                          "test_errors": int(round((1 - test) * len(mnist.test_labels)))}),
              flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_main(_main, argv))


if __name__ == "__main__":
    main()
