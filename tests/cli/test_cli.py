"""The training CLI end to end on tiny generated data (its errors: test_bad_input.py)."""

import json
import os
import subprocess
import sys

import pytest

from mnist_plus.training import metrics as metrics_lib
from tests.helpers import REPO


@pytest.mark.slow
def test_train_cli_end_to_end(cli, prepared_tiny, tmp_path):
    tfds_dir, mnist_dir = prepared_tiny
    workdir = tmp_path / "runs"
    result = cli.train("--workdir", str(workdir), "--tfds-dir", tfds_dir, "--epochs", "2",
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
    assert (workdir / "report" / "report.md").is_file()  # on by default (tests turn it off)

    again = cli.train("--workdir", str(workdir), "--tfds-dir", tfds_dir, "--epochs", "2",
                   "--batch-size", "32", "--width", "4", "--eval-batch-size", "64")
    assert again.returncode == 0 and "already finished" in again.stdout
    assert [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()] == rows


def test_help_explains_every_flag(cli):
    result = cli.train("--help")
    assert result.returncode == 0
    for flag in ("--epochs", "--batch-size", "--learning-rate", "--seed", "--mnist-dir",
                 "--tfds-dir", "--workdir", "--loop", "--fresh", "--no-progress"):
        assert flag in result.stdout


@pytest.mark.parametrize("module, flags", [
    ("train", ["--help"]), ("train", ["--epochs", "0"]), ("train", ["--frobnicate"]),
    ("train", ["--stem", "pixel"]),
    ("predict", ["--help"]), ("predict", ["--workdir", "runs"]),
    ("predict", ["--number", "12", "a.png"]), ("predict", ["--number", "3", "--step", "x", "a.png"]),
    ("report", ["--help"]), ("report", ["--step", "-1"]), ("report", ["runs"]),
    ("benchmark", ["--help"]), ("benchmark", ["--batch-sizes", "0"]),
    ("robustness", ["--help"]), ("robustness", ["--limit", "-1"]),
])
def test_help_and_flag_mistakes_answer_before_jax_is_imported(cli, module, flags):
    """They are checked before the imports that take about 1 s of a start; a valid
    command line goes on to them (and parses again there, with the same parser)."""
    result = cli.run(["-X", "importtime", "-m", f"mnist_plus.{module}", *flags])
    assert result.returncode == (0 if flags == ["--help"] else 2), result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "mnist_plus.cli" in imported
    assert not {"jax", "flax", "orbax"} & imported, sorted(imported)
    if flags != ["--help"]:
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def _console_scripts() -> dict[str, str]:
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(_console_scripts()))
def test_console_scripts_answer_help_before_jax_is_imported(name):
    """The installed `mnist-plus-*` commands start at the same light entry point as
    `python -m mnist_plus.*` (pyproject's [project.scripts])."""
    script = os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.exists(script), f"{name} is not installed: pip install -e ."
    assert _console_scripts()[name].endswith(":main")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m mnist_plus.")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "mnist_plus.cli" in imported
    assert not {"jax", "flax", "orbax"} & imported, sorted(imported)


@pytest.mark.parametrize("module, flags", [("predict", ["--number", "3", "missing.png"]),
                                           ("report", ["--workdir", "missing_run"])])
def test_valid_flags_go_on_past_the_early_check(cli, module, flags, tmp_path):
    """The early check only answers mistakes: flags that parse reach the real work (which
    imports jax), and its own errors still come as one line."""
    flags = [f if not f.startswith("missing") else str(tmp_path / f) for f in flags]
    result = cli.run(["-X", "importtime", "-m", f"mnist_plus.{module}", *flags])
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "jax" in imported
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
