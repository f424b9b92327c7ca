"""The training CLI end to end on tiny generated data, and its usage errors."""

import json
import os
import subprocess
import sys

import pytest

from mnist_plus import metrics as metrics_lib
from tests.conftest import REPO


def _train(*flags, env=None):
    return subprocess.run([sys.executable, "-m", "mnist_plus.train", *flags], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_train_cli_end_to_end(prepared_tiny, tmp_path):
    tfds_dir, mnist_dir = prepared_tiny
    workdir = tmp_path / "runs"
    result = _train("--workdir", str(workdir), "--tfds-dir", tfds_dir, "--epochs", "2",
                    "--batch-size", "32", "--width", "4", "--eval-batch-size", "64")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "parameters" in out and "epoch   1" in out and "epoch   2" in out
    assert "digit acc" in out and "sum acc" in out and out.strip().splitlines()[-1].startswith("done")
    assert "epoch 1" in result.stderr  # the progress bar
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(tuple(r) == metrics_lib.KEYS for r in rows)
    assert all(0 <= r["test_sum_accuracy"] <= 1 for r in rows)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["final"] == rows[-1]
    assert (workdir / "checkpoints").is_dir()

    again = _train("--workdir", str(workdir), "--tfds-dir", tfds_dir, "--epochs", "2",
                   "--batch-size", "32", "--width", "4", "--eval-batch-size", "64")
    assert again.returncode == 0 and "already finished" in again.stdout
    assert [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()] == rows


def test_help_explains_every_flag():
    result = _train("--help")
    assert result.returncode == 0
    for flag in ("--epochs", "--batch-size", "--learning-rate", "--seed", "--mnist-dir",
                 "--tfds-dir", "--workdir", "--loop", "--fresh", "--no-progress"):
        assert flag in result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs 0 is invalid: it must be a positive integer"),
    (["--epochs", "-3"], "--epochs -3 is invalid"),
    (["--batch-size", "0"], "--batch-size 0 is invalid"),
    (["--learning-rate", "-0.1"], "--learning-rate -0.1 is invalid: it must be a positive"),
    (["--learning-rate", "nan"], "--learning-rate nan is invalid"),
    (["--learning-rate", "fast"], "'fast' is not a float number"),
    (["--epochs", "2.5"], "'2.5' is not a int number"),
    (["--loop", "warp"], "invalid choice: 'warp'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_usage_errors_are_one_line_with_status_2(flags, message, tmp_path):
    result = _train("--workdir", str(tmp_path / "w"), *flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_batch_larger_than_dataset(prepared_tiny, tmp_path):
    result = _train("--workdir", str(tmp_path / "w"), "--tfds-dir", prepared_tiny[0],
                    "--batch-size", "1000")
    assert result.returncode == 2
    assert "larger than the 256 training examples" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _train("--workdir", str(blocker / "runs"))
    assert result.returncode == 2
    assert "cannot write to workdir" in result.stderr and "Traceback" not in result.stderr
    assert blocker.read_text() == "not a folder"


def test_offline_without_data_is_one_clear_error(tmp_path):
    result = _train("--workdir", str(tmp_path / "w"), "--tfds-dir", str(tmp_path / "empty"),
                    env={"MNIST_PLUS_MNIST_DIR": ""})
    if "Traceback" in result.stderr or result.returncode == 0:
        pytest.fail(result.stderr)
    assert result.returncode == 2
    assert "--mnist-dir" in result.stderr and "MNIST_PLUS_MNIST_DIR" in result.stderr
