"""experiments/gpu_check.sh end to end on CPU with its tiny setting, as on the lent GPU
machine's image (no tensorflow-datasets, array_record or tensorboardX), and the table
that experiments/gpu_check.py makes of its JSON files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments import gpu_check
from tests.helpers import NOT_CORE, REPO, hiding_env

SCRIPT = os.path.join(REPO, "experiments", "gpu_check.sh")


def _script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHON": sys.executable,
                                            **(env or {})})


@pytest.mark.slow
def test_tiny_run_writes_every_json_and_one_table(cli, tiny_mnist_dir, tmp_path):
    """Every step runs with the presets the GPU run uses (speedrun, writeup), shrunk, with
    every package but the five core ones (jax, flax, optax, orbax-checkpoint, numpy) and
    torch hidden; the PyTorch step runs where torch imports (CI installs it)."""
    out = tmp_path / "out"
    torch_imports = subprocess.run([sys.executable, "-c", "import torch"]).returncode == 0
    hidden = [name for name in NOT_CORE if name != "torch"]
    env = {**cli.cache_env, **hiding_env(*hidden), "GPU_CHECK_TINY": "1"}
    result = _script(tiny_mnist_dir, str(out), env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    lines = (out / "steps.jsonl").read_text().splitlines()
    steps = {r["step"]: r for r in map(json.loads, lines)}
    assert [steps[s]["status"] for s in ("device", "benchmark", "train", "speedrun")] == \
        ["ok"] * 4, steps
    if torch_imports:
        assert steps["pytorch"]["status"] == "ok"
        compare = json.loads((out / "pytorch.json").read_text())["compare_pytorch"]
        assert compare["ours_config"]["arch"] == "writeup" and compare["epochs"]
    else:
        assert steps["pytorch"]["status"] == "skipped"

    assert json.loads((out / "device.json").read_text())["backend"] == "cpu"
    bench = json.loads((out / "benchmark.json").read_text())
    assert [e["loop"] for e in bench["epoch"]] == ["host", "scan"]
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["epochs"] == 1
    speed = json.loads((out / "speedrun.json").read_text())["time_to_accuracy"]
    assert speed["reached"] and speed["seeds"] == [0]
    train_log = (out / "logs" / "train.log").read_text()
    assert "TFDS is not installed" in train_log and "TensorBoard: off" in train_log

    table = result.stdout[result.stdout.index("step       status"):]
    assert table.rstrip("\n") == gpu_check.format_table(gpu_check.table(str(out)))
    for words in ("train step, batch 32", "epoch, scan loop", "1 epoch ",
                  "time to 1.00% digit and sum", "1 of 1 seeds"):
        assert words in table, words
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [r["step"] for r in rows if r["step"]] == list(gpu_check.STEPS)


def test_no_mnist_folder_is_a_one_line_usage_error(tmp_path):
    result = _script(str(tmp_path / "missing"), str(tmp_path / "out"))
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "is not a folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_spent_budget_skips_every_step_and_the_table_says_so(tiny_mnist_dir, tmp_path):
    out = tmp_path / "out"
    result = _script(tiny_mnist_dir, str(out), env={"GPU_CHECK_BUDGET_S": "20",
                                                    **hiding_env("torch")})
    assert result.returncode == 0, result.stderr
    rows = gpu_check.table(str(out))
    assert [(r["step"], r["status"]) for r in rows] == [
        ("device", "skipped"), ("benchmark", "skipped"), ("train", "skipped"),
        ("speedrun", "skipped"), ("pytorch", "skipped")]
    assert "budget is spent" in rows[0]["value"] and "torch" in rows[-1]["value"]


def test_summary_reads_the_comparison_and_fails_on_a_timed_out_step(tmp_path, capsys):
    (tmp_path / "steps.jsonl").write_text(
        '{"step": "train", "status": "timeout", "seconds": 150, "exit_code": 124, '
        '"note": "limit 150 s; logs/train.log"}\n'
        '{"step": "pytorch", "status": "ok", "seconds": 61, "exit_code": 0, "note": ""}\n')
    epochs = [{"epoch": e, "ours_epoch_seconds": 3.0, "pytorch_epoch_seconds": 9.0,
               "ours_images_per_second": 20000.0, "pytorch_images_per_second": 7000.0}
              for e in (1, 2)]
    (tmp_path / "pytorch.json").write_text(json.dumps({"compare_pytorch": {
        "epochs": epochs, "epoch_ratio_steady": 3.0, "torch_version": "2.13.0"}}))
    assert gpu_check.main(["summary", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "epoch 2, ours / pytorch" in text and "3.0 / 9.0 s; 20,000 / 7,000 images/s" in text
    assert "3.00x epoch time, torch 2.13.0" in text
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["device", "not"]  # never recorded: "not run"
    train = next(line for line in lines if line.startswith("train"))
    assert "timeout" in train and "150s" in train and "logs/train.log" in train
