"""The CLIs on a machine that lacks packages (the lent GPU machine's image has no
tensorflow-datasets, array_record or tensorboardX): each missing one costs one line,
never the run. The packages are hidden from the subprocesses (tests/helpers/hide). The
benchmark with only the five core packages runs in tests/experiments/test_gpu_check.py."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import NOT_CORE, NOT_ON_GPU_IMAGE, TINY, flags_for, hiding_env


@pytest.mark.slow
def test_training_reads_the_idx_folder_and_skips_tensorboard(cli, tiny_mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    flags = flags_for({**TINY, "epochs": 1, "tfds_dir": str(tmp_path / "tfds"),
                       "mnist_dir": tiny_mnist_dir})
    result = cli.train("--workdir", str(workdir), *flags, env=hiding_env(*NOT_ON_GPU_IMAGE))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"TFDS is not installed (array_record cannot be imported): reading MNIST from the "
        f"IDX files in {tiny_mnist_dir}"]
    notices = [line for line in result.stdout.splitlines() if line.startswith("TensorBoard")]
    assert len(notices) == 1 and "tensorboardX cannot be imported" in notices[0]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert json.loads((workdir / "summary.json").read_text())["epochs"] == 1
    assert not (workdir / "tensorboard").exists() and not (tmp_path / "tfds").exists()


def test_hidden_packages_cannot_be_imported(cli):
    """The hiding itself: otherwise the tests above would pass for the wrong reason."""
    code = ("import importlib\nfor name in " + repr(NOT_CORE) + ":\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ImportError as e:\n        print(e.name)\n")
    result = cli.run(["-c", code], env=hiding_env(*NOT_CORE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == list(NOT_CORE)
    assert os.environ.get("MNIST_PLUS_HIDE_MODULES") is None  # this process is untouched
