"""Training on the real MNIST files: slow (a minute or two on 2 cores), run in CI."""

import json
import os

import pytest


@pytest.mark.slow
def test_one_epoch_on_real_mnist_reaches_a_floor(real_mnist_run):
    _, workdir = real_mnist_run
    with open(os.path.join(workdir, "summary.json")) as f:
        final = json.load(f)["final"]
    assert final["epoch"] == 1
    assert final["test_digit_accuracy"] >= 0.97
    assert final["test_sum_accuracy"] >= 0.95
    assert final["test_exhaustive_sum_accuracy"] >= 0.95
