"""Which checkpoints are kept (the newest N plus the best by test sum accuracy), and
`--step latest|best|N` for the readers (report, predict)."""

import json
import os

import pytest

from mnist_plus import report as report_cli
from mnist_plus.tools import trained
from mnist_plus.runtime.checkpointing import Checkpointer
from mnist_plus.training.state import create_state
from mnist_plus.trainer import train_and_evaluate
from mnist_plus.training.step import zero_train_metrics
from tests.helpers import TINY_STEPS_PER_EPOCH, tiny_config


def _saved_steps(workdir) -> list[int]:
    return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints"))
                  if n.isdigit())


def _save_sequence(workdir, config, saves, keep, keep_best=True):
    """Save the state at each (step, test sum accuracy or None for mid-epoch)."""
    state = create_state(config, TINY_STEPS_PER_EPOCH)
    checkpointer = Checkpointer(str(workdir), keep, keep_best=keep_best)
    try:
        for step, accuracy in saves:
            checkpointer.save(state.replace(step=step), zero_train_metrics(), epoch=0,
                              step_in_epoch=0, config=config,
                              test_metrics=None if accuracy is None else {
                                  "test_loss": 1.0, "test_sum_accuracy": accuracy})
            checkpointer.wait()
    finally:
        checkpointer.close()


@pytest.mark.slow
def test_keep_one_plus_best_keeps_the_best_and_the_newest(prepared_tiny, tmp_path):
    config = tiny_config(prepared_tiny)
    # Epoch ends at 8, 16, 24, 32 (best: 16); mid-epoch checkpoints at 20 and 36 carry no
    # accuracy, and 36 is the newest: it must stay (resume needs it) but never be "best".
    _save_sequence(tmp_path, config, [(8, 0.5), (16, 0.9), (20, None), (24, 0.3), (32, 0.4),
                                      (36, None)], keep=1)
    assert _saved_steps(tmp_path) == [16, 36]
    reader = Checkpointer(str(tmp_path), keep=0, read_only=True)
    try:
        assert reader.best_step() == 16 and reader.latest_step() == 36
    finally:
        reader.close()


def test_without_keep_best_only_the_newest_n_remain(prepared_tiny, tmp_path):
    config = tiny_config(prepared_tiny)
    _save_sequence(tmp_path, config, [(8, 0.9), (16, 0.1), (24, 0.2)], keep=2, keep_best=False)
    assert _saved_steps(tmp_path) == [16, 24]


@pytest.mark.slow
def test_mid_epoch_checkpoints_are_never_the_best(prepared_tiny, tmp_path):
    config = tiny_config(prepared_tiny)
    _save_sequence(tmp_path, config, [(4, None), (8, 0.2), (12, None)], keep=1)
    assert _saved_steps(tmp_path) == [8, 12]
    assert trained.load(str(tmp_path), "best").step == 8


@pytest.fixture(scope="module")
def keep_one_run(prepared_tiny, tmp_path_factory):
    """A tiny run keeping 1 checkpoint plus the best, with mid-epoch checkpoints."""
    workdir = str(tmp_path_factory.mktemp("keep1"))
    train_and_evaluate(tiny_config(prepared_tiny, keep_checkpoints=1, checkpoint_every_steps=3),
                       workdir, log=lambda s: None)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return workdir, rows


@pytest.mark.slow
def test_a_run_keeps_its_best_epoch_and_its_newest_checkpoint(keep_one_run):
    workdir, rows = keep_one_run
    best = max(reversed(rows), key=lambda r: r["test_sum_accuracy"])  # ties: the later epoch
    newest = rows[-1]["step"]
    assert _saved_steps(workdir) == sorted({best["step"], newest})
    assert trained.load(workdir, "best").step == best["step"]
    assert trained.load(workdir).step == trained.load(workdir, newest).step == newest


@pytest.mark.slow
def test_report_step_best_evaluates_the_best_checkpoint(keep_one_run, prepared_tiny):
    workdir, rows = keep_one_run
    best = max(reversed(rows), key=lambda r: r["test_sum_accuracy"])
    tfds_dir, mnist_dir = prepared_tiny
    assert report_cli.main(["--workdir", workdir, "--step", "best",
                                       "--tfds-dir", tfds_dir, "--mnist-dir", mnist_dir]) == 0
    with open(os.path.join(workdir, "report", "report.json")) as f:
        made = json.load(f)
    assert made["step"] == best["step"] and made["requested_step"] == "best"
    # The same checkpoint, test set and fixed numbers as training's evaluation of that epoch:
    # the accuracy is a count over 64 images, so it is equal, not merely close.
    assert made["test_sum_accuracy"] == best["test_sum_accuracy"]


@pytest.mark.parametrize("step, expected", [
    ("7", "error: --step 7: there is no checkpoint at step 7 in "),
    ("soon", "error: argument --step: 'soon' is not 'latest', 'best' or a step number"),
    ("-3", "error: argument --step: '-3' is not 'latest', 'best' or a step number"),
])
@pytest.mark.slow
def test_bad_step_is_a_one_line_usage_error(keep_one_run, capsys, step, expected):
    workdir, rows = keep_one_run
    assert report_cli.main(["--workdir", workdir, f"--step={step}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1
    if step == "7":
        steps = ", ".join(map(str, _saved_steps(workdir)))
        assert err.rstrip().endswith(f"choose latest, best or one of the steps {steps}")


def test_step_best_without_test_metrics_says_so(prepared_tiny, tmp_path, capsys):
    config = tiny_config(prepared_tiny)
    _save_sequence(tmp_path, config, [(4, None)], keep=1)
    from mnist_plus import predict as predict_cli

    image = tmp_path / "x.png"
    from PIL import Image, ImageDraw

    digit = Image.new("L", (28, 28))  # a bar of ink: predict refuses a blank image first
    ImageDraw.Draw(digit).rectangle((12, 6, 15, 21), fill=255)
    digit.save(image)
    assert predict_cli.main(["--workdir", str(tmp_path), "--step", "best",
                                        "--number", "3", str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --step best: no checkpoint in ") and err.count("\n") == 1
    assert "choose latest or one of the steps 4" in err
