"""The PyTorch baseline (experiments/pytorch_reference.py) on tiny generated MNIST folders.

Skipped where torch is not installed (it is an optional extra: `pip install -e '.[pytorch]'`),
except the check that the module imports without it. These pin down what
`mnist_plus.benchmark` will read from its JSON, not speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, write_tiny_mnist

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed; pip install -e '.[pytorch]' to test the PyTorch reference")

MODULE = "experiments.pytorch_reference"
EPOCH_KEYS = {"epoch", "steps", "train_images", "train_seconds", "data_seconds",
              "eval_seconds",
              "epoch_seconds", "images_per_second", "train_loss", "test_loss",
              "test_digit_accuracy", "test_sum_accuracy", "elapsed_seconds",
              "elapsed_train_seconds"}
TOP_KEYS = {"format", "framework", "torch_version", "threads", "device", "cpu_isa", "cpu_flags",
            "torch_cpu_capability", "config", "parameters", "train_examples",
            "test_examples", "epochs", "target_reached_epoch", "time_to_target_seconds",
            "time_to_target_train_seconds", "total_train_seconds", "total_seconds", "final"}


@pytest.fixture(scope="module")
def reference():
    from experiments import pytorch_reference

    return pytorch_reference


def _script(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", MODULE, *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})


def test_module_imports_without_torch_or_jax_and_asks_for_torch_in_one_line():
    """The script must import without the optional extra; run without torch (its import
    made to fail here, where torch may be installed), the CLI says how to install it."""
    code = ("import sys; sys.modules['torch'] = None; "
            "from experiments import pytorch_reference; "
            "print('jax' in sys.modules, flush=True); pytorch_reference.main(['--epochs', '1'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 2 and proc.stdout.strip() == "False"
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "PyTorch is not installed" in proc.stderr and "[pytorch]" in proc.stderr


@needs_torch
def test_dataset_items_are_the_writeups_image_digit_onehot_and_sum(reference, tmp_path):
    x, y = reference.load_split(write_tiny_mnist(str(tmp_path / "idx")), "test")
    numbers = np.arange(len(y)) % 10
    data = reference.MnistPlusNum(x, y, train=False, numbers=numbers)
    for i in range(12):
        img, digit, one_hot, total = data[i]
        assert img.shape == (1, 28, 28) and one_hot.shape == (1, 10)
        assert one_hot.sum() == 1 and int(one_hot.argmax()) == numbers[i]
        assert int(total) == int(digit) + numbers[i] == int(y[i]) + numbers[i]
    # A black pixel normalises to (0 - 0.1307) / 0.3081 as Normalize((0.1307,), (0.3081,))
    # does; float32 division is exact to one rounding, far inside 1e-6.
    assert float(x.max()) == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-6)
    assert float(x.min()) >= (0 - 0.1307) / 0.3081 - 1e-6


@needs_torch
@pytest.mark.slow
def test_run_learns_tiny_digits_and_reports_every_field(reference, tmp_path):
    import torch

    folder = write_tiny_mnist(str(tmp_path / "idx"), n_train=512, n_test=128)
    out = tmp_path / "torch.json"
    result = reference.run(
        ["--mnist-dir", folder, "--epochs", "4", "--batch-size", "16", "--threads", "1",
         "--target-digit", "0.5", "--target-sum", "0.05", "--json", str(out)],
        log=lambda s: None)

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert TOP_KEYS <= result.keys()
    assert result["framework"] == "pytorch" and result["torch_version"] == torch.__version__
    assert result["threads"] == 1 and result["config"]["batch_size"] == 16
    assert result["cpu_isa"] in {"amx", "avx512", "avx2", "other", "unknown"}
    assert (result["train_examples"], result["test_examples"]) == (512, 128)
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    for e in epochs:
        assert EPOCH_KEYS <= e.keys()
        assert e["steps"] == 32 and e["train_images"] == 512
        assert e["train_seconds"] > 0 and e["eval_seconds"] > 0
        assert 0 < e["data_seconds"] < e["train_seconds"]
        assert e["epoch_seconds"] == e["train_seconds"] + e["eval_seconds"]
        assert e["images_per_second"] == e["train_images"] / e["train_seconds"]
        assert 0 <= e["test_sum_accuracy"] <= 1
    assert result["total_seconds"] == epochs[-1]["elapsed_seconds"]
    # Chance is 10%; the bars of the tiny digits are learnt within 96 steps (100% at
    # epoch 3 here, 65% at epoch 2): a fourth epoch leaves room for other CPUs' rounding.
    assert epochs[-1]["test_digit_accuracy"] > 0.5
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    # The target is recorded at the first epoch that meets both thresholds, with the
    # elapsed times of that epoch.
    meets = [e["epoch"] for e in epochs
             if e["test_digit_accuracy"] >= 0.5 and e["test_sum_accuracy"] >= 0.05]
    assert meets, "the tiny run should reach these low targets"
    assert result["target_reached_epoch"] == meets[0]
    first = epochs[meets[0] - 1]
    assert result["time_to_target_seconds"] == first["elapsed_seconds"]
    assert result["time_to_target_train_seconds"] == first["elapsed_train_seconds"]


@needs_torch
@pytest.mark.slow
def test_cli_caps_steps_per_epoch_and_prints_a_line_per_epoch(tmp_path):
    folder = write_tiny_mnist(str(tmp_path / "idx"))
    out = tmp_path / "torch.json"
    proc = _script("--mnist-dir", folder, "--epochs", "2", "--batch-size", "32",
                   "--max-steps-per-epoch", "2", "--threads", "1",
                   "--target-digit", "1.0", "--target-sum", "1.0", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines()
            if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]
    result = json.loads(out.read_text())
    assert [(e["steps"], e["train_images"]) for e in result["epochs"]] == [(2, 64), (2, 64)]
    # A target of 100% on both heads after 4 steps is not reached: null, not a time.
    assert result["target_reached_epoch"] is None
    assert result["time_to_target_seconds"] is None


@needs_torch
@pytest.mark.slow
def test_no_mnist_folder_is_a_one_line_usage_error(tmp_path):
    proc = _script("--epochs", "1")  # conftest removes MNIST_PLUS_MNIST_DIR
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--mnist-dir" in proc.stderr and "MNIST_PLUS_MNIST_DIR" in proc.stderr

    proc = _script("--mnist-dir", str(tmp_path), "--epochs", "0")
    assert proc.returncode == 2 and "--epochs must be at least 1" in proc.stderr
