"""The task's constants: what an example is, independent of how it is sampled or modelled.

An example is an MNIST image, a random number 0..9 (one-hot) and two labels: the
image's digit (10 classes) and digit + number (19 classes, 0..18). Everything that
only needs these facts imports this module, not the sampler or the model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NUM_DIGITS = 10
NUM_NUMBERS = 10
NUM_SUMS = NUM_DIGITS + NUM_NUMBERS - 1
# (digit, number) pairs never shown in training (--holdout): none, all pairs adding to 9,
# or 20 pairs drawn from the seed.
HOLDOUTS = ("none", "sum9", "random20")
# MNIST training images' pixel mean and std (0..1 units), as the write-up normalises.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class Batch(NamedTuple):
    """One batch; a pytree, so it passes straight into jitted functions."""

    image: np.ndarray   # float32 [B, 28, 28, 1], normalised
    digit: np.ndarray   # int32 [B], the image's label
    number: np.ndarray  # float32 [B, 10], one-hot of the random number
    sum: np.ndarray     # int32 [B], digit + number in 0..18
    mask: np.ndarray    # float32 [B], 1 for real examples, 0 for padding


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch; the remainder is dropped (a new one each epoch)."""
    return num_examples // batch_size
