"""Training on the real MNIST files: slow (about a minute on 2 cores), run in CI."""

import pytest

from mnist_plus import config as config_lib
from mnist_plus.train import train_and_evaluate


@pytest.mark.slow
def test_one_epoch_on_real_mnist_reaches_a_floor(real_mnist_dir, tmp_path):
    config = config_lib.Config(epochs=1, tfds_dir=str(tmp_path / "tfds"),
                               mnist_dir=real_mnist_dir, progress=False)
    summary = train_and_evaluate(config, str(tmp_path / "run"), log=lambda s: None)
    final = summary["final"]
    assert final["test_digit_accuracy"] >= 0.97
    assert final["test_sum_accuracy"] >= 0.95
    assert final["test_exhaustive_sum_accuracy"] >= 0.95
