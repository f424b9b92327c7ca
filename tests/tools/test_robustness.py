"""`python -m mnist_plus.robustness` and the report's robustness section, on the tiny run."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_plus.errors import UsageError
from mnist_plus.tools import corruptions
from mnist_plus.tools import robustness
from mnist_plus.training import metrics as metrics_lib
from tests.helpers import REPO, synthetic_digits


def test_corrupted_sets_are_cached_by_seed_and_data(tmp_path, monkeypatch):
    images = synthetic_digits(8, seed=0)[0][..., 0]
    cache = str(tmp_path / "cache")
    first = robustness.corrupted(images, "shear", 0, cache)
    assert len(os.listdir(cache)) == 1

    def refuse(name):
        raise AssertionError(f"{name} was made again instead of read from the cache")

    monkeypatch.setattr(corruptions, "by_name", refuse)
    np.testing.assert_array_equal(robustness.corrupted(images, "shear", 0, cache), first)
    with pytest.raises(AssertionError):  # another seed, or other images: not in the cache
        robustness.corrupted(images, "shear", 1, cache)
    with pytest.raises(AssertionError):
        robustness.corrupted(images[:4], "shear", 0, cache)
    assert not [n for n in os.listdir(cache) if n.endswith(".tmp")]  # written atomically


@pytest.mark.slow
def test_benchmark_reports_every_corruption_the_mnist_c_mean_and_the_worst(
        reference_run, tmp_path):
    out = str(tmp_path / "out")
    results = robustness.run_benchmark(reference_run, out=out, limit=32,
                                       cache_dir=str(tmp_path / "cache"))
    with open(os.path.join(out, robustness.JSON)) as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(results))
    assert list(written["corruptions"]) == list(corruptions.NAMES)
    for row in [written["clean"], *written["corruptions"].values()]:
        for key in ("digit_accuracy", "sum_accuracy", "agreement"):
            assert round(row[key] * 32, 6) == int(round(row[key] * 32))  # counts of 32
    mnist_c = [written["corruptions"][n] for n in corruptions.MNIST_C]
    assert written["mnist_c_mean_digit_accuracy"] == pytest.approx(
        np.mean([r["digit_accuracy"] for r in mnist_c]), abs=1e-12)
    assert written["mnist_c_mean_sum_accuracy"] == pytest.approx(
        np.mean([r["sum_accuracy"] for r in mnist_c]), abs=1e-12)
    assert written["worst"]["digit_accuracy"] == min(r["digit_accuracy"] for r in mnist_c)
    assert written["corruptions"][written["worst"]["name"]]["mnist_c"]
    with open(os.path.join(out, robustness.MARKDOWN)) as f:
        rows = [line for line in f if line.startswith("| ")]
    assert len(rows) == 2 + len(corruptions.NAMES)  # header, clean, one per corruption
    with Image.open(os.path.join(out, robustness.FIGURE)) as figure:
        assert figure.format == "PNG" and figure.width > 500


@pytest.mark.slow
def test_clean_figures_are_trainings_own(reference_run, tmp_path):
    """Evaluated by training's Evaluator: on the whole (tiny) test set the clean figures
    are the last line of metrics.jsonl, exactly."""
    results = robustness.run_benchmark(reference_run, out=str(tmp_path / "out"),
                                       cache_dir=str(tmp_path / "cache"))
    last = metrics_lib.JsonlLog(os.path.join(reference_run, "metrics.jsonl")).read()[-1]
    assert results["clean"] == {"digit_accuracy": last["test_digit_accuracy"],
                                "sum_accuracy": last["test_sum_accuracy"],
                                "agreement": last["test_sum_agreement"]}


@pytest.mark.slow
def test_report_with_robustness_gains_its_section(reference_run, tmp_path):
    from mnist_plus.tools import report

    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)  # the shared run stays as it is
    assert not report.is_current(workdir, robustness=True)
    path = report.write_report(workdir, robustness=True)
    with open(path) as f:
        text = f.read()
    assert "## Robustness (corrupted test sets)" in text and "| canny_edges | yes |" in text
    with open(os.path.join(report.report_dir(workdir), "report.json")) as f:
        summary = json.load(f)["robustness"]
    assert summary["worst"]["name"] in corruptions.MNIST_C
    assert report.is_current(workdir, robustness=True)


@pytest.mark.slow
def test_cli_mistakes_are_one_line_errors(tmp_path):
    for flags, fragment in ((["--workdir", str(tmp_path / "none")], "no checkpoint"),
                            (["--limit", "-3"], "--limit")):
        result = subprocess.run([sys.executable, "-m", "mnist_plus.robustness", *flags],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


def test_usage_error_is_the_one_raised_for_a_missing_run(tmp_path):
    with pytest.raises(UsageError, match="no checkpoint"):
        robustness.run_benchmark(str(tmp_path / "none"))
