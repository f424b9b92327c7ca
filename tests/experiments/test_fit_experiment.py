"""experiments/fit.py: its test accuracy is the run's own evaluation, so its training-set
accuracy, computed the same way, is comparable with it."""

import json
import os

import pytest

from experiments import fit
from mnist_plus.data import mnist as data


def test_fit_reports_the_runs_own_test_accuracy_and_its_training_accuracy(
        reference_run, prepared_tiny, capsys):
    fit._main(["--workdir", reference_run])
    row = json.loads(capsys.readouterr().out)
    with open(os.path.join(reference_run, "metrics.jsonl")) as f:
        final = json.loads(f.read().splitlines()[-1])
    assert row["epoch"] == final["epoch"]
    # Same checkpoint, same images, argmax of the same logits (other batch shapes: a tie
    # could flip, which random-init-sized data makes unlikely, and 64 images hold none).
    assert row["test_digit_accuracy"] == final["test_digit_accuracy"]
    # The training images go through the same function: its count is of all of them.
    mnist = data.load_mnist(*prepared_tiny)
    assert row["train_errors"] + round(row["train_digit_accuracy"] * len(mnist.train_labels)) \
        == len(mnist.train_labels) == 256


def test_fit_of_a_missing_workdir_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit.main(["--workdir", str(tmp_path / "nothing")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
