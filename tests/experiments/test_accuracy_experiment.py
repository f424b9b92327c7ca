"""experiments/accuracy.py: variants parse, runs merge by (variant, seed), tables add up."""

import json

import pytest

from experiments import accuracy


def _row(variant, seed, digit):
    return {"variant": variant, "seed": seed, "test_digit_accuracy": digit,
            "test_sum_accuracy": digit - 0.001, "test_exhaustive_sum_accuracy": digit,
            "test_sum_agreement": 0.998, "epoch_seconds_mean": 9.0}


def test_variants_are_named_json_objects_and_bad_ones_are_refused(capsys):
    args = accuracy.parse_args(["--variant", 'a={"batch_size": 64}', "--variant", "b={}",
                                "--seeds", "3,4"])
    assert args.variants == {"a": {"batch_size": 64}, "b": {}} and args.seed_list == [3, 4]
    assert accuracy.parse_args([]).variants == {"default": {}}
    for bad in (["--variant", "a=[1]"], ["--variant", "=1"], ["--seeds", "x"]):
        with pytest.raises(SystemExit):
            accuracy.parse_args(bad)
        assert "--" in capsys.readouterr().err


def test_table_gives_mean_sample_std_min_and_max_per_variant():
    rows = [_row("a", 0, 0.9950), _row("a", 1, 0.9954), _row("a", 2, 0.9946), _row("b", 0, 0.99)]
    lines = accuracy.table(rows).splitlines()
    a = next(line for line in lines if line.startswith("| a |"))
    # digit: mean 99.50, sample std 0.04, min 99.46, max 99.54
    assert "| 0,1,2 | 99.50 ± 0.04 (99.46-99.54) |" in a
    b = next(line for line in lines if line.startswith("| b |"))
    assert "99.00 ± nan (99.00-99.00)" in b  # one seed: no spread


def test_a_run_is_the_train_cli_with_its_seed_and_its_last_epoch_is_read(tmp_path, monkeypatch):
    # The training CLI is recorded, not run; the workdir holds what it would have written.
    calls = []
    monkeypatch.setattr(accuracy.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    workdir = tmp_path / "runs" / "v" / "s7"
    workdir.mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text(
        json.dumps({"epoch": 9, **_row("v", 7, 0.99)}) + "\n"
        + json.dumps({"epoch": 10, **_row("v", 7, 0.995)}) + "\n")
    (workdir / "timing.jsonl").write_text('{"seconds": 8.0}\n{"seconds": 10.0}\n')
    row = accuracy.run_one(str(tmp_path), "v", {"width": 8}, 7)
    assert row["epoch"] == 10 and row["test_digit_accuracy"] == 0.995
    assert row["epoch_seconds_mean"] == 9.0
    assert "--seed" in calls[0] and calls[0][calls[0].index("--seed") + 1] == "7"
    assert json.loads((tmp_path / "runs" / "v" / "config.json").read_text()) == {"width": 8}
