"""experiments/ema.py: the averages are updated where the step runs and evaluated alike."""

import pytest

from experiments import ema
from mnist_plus.data import mnist as data
from mnist_plus.training import evaluation
from mnist_plus.training import state as state_lib
from tests.helpers import tiny_config


@pytest.mark.slow
def test_decay_zero_is_the_trained_model_and_decay_one_never_moves(prepared_tiny):
    """Decay 0 copies every step's variables and decay 1 keeps the initial ones, both
    exactly (0 * a + 1 * x and 1 * a + 0 * x): the first scores as the trained model, the
    second as the untrained one, to the last count."""
    config = tiny_config(prepared_tiny, epochs=2)
    mnist = data.load_mnist(*prepared_tiny)
    rows = ema.run(config, [0.0, 1.0], mnist, log=lambda s: None)
    assert [r["epoch"] for r in rows] == [1, 2]
    untrained = ema._accuracies(evaluation.evaluator_for(
        config, mnist.test_images, mnist.test_labels).metrics(state_lib.create_state(config, 8)))
    for r in rows:
        assert r["ema0"] == r["raw"]
        assert r["ema1"] == untrained
    assert rows[-1]["raw"] != untrained  # else the two checks above could not tell them apart
