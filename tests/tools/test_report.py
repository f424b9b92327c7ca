"""The report (figures, report.md) and TensorBoard scalars that a tiny training run leaves."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_plus import config as config_lib
from mnist_plus.tools import report
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.trainer import train_and_evaluate
from tests.helpers import REPO

# 256 train images / batch 32 = 8 steps per epoch; TensorBoard every 4 steps.
TINY = dict(epochs=3, batch_size=32, width=4, eval_batch_size=64, progress=False,
            log_every_steps=4)
STEPS_PER_EPOCH = 8


def _config(prepared_tiny, **kw):
    tfds_dir, mnist_dir = prepared_tiny
    return config_lib.Config(**{**TINY, "tfds_dir": tfds_dir, "mnist_dir": mnist_dir, **kw})


@pytest.fixture(scope="module")
def tiny_run(prepared_tiny, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    lines = []
    summary = train_and_evaluate(_config(prepared_tiny), workdir, log=lines.append)
    return workdir, summary, lines


def read_scalars(folder):
    """{tag: [(step, value)]} from TensorBoard event files, parsed without TensorFlow:
    TFRecord framing (length, crc, data, crc) around tensorboardX's Event protos."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for name in sorted(os.listdir(folder)):
        if os.path.isdir(os.path.join(folder, name)):  # hparams/: a run of its own
            continue
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos: pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12: pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.mark.slow
def test_training_writes_every_figure_as_a_readable_png(tiny_run):
    workdir, _, lines = tiny_run
    folder = os.path.join(workdir, "report")
    assert any(line.startswith("report: ") and line.endswith("report.md") for line in lines)
    assert lines[-1].startswith("done")  # the report line comes before the summary
    for name in report.FIGURES:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as image:
            width, height = image.size
            pixels = np.asarray(image.convert("L"))
        assert 500 <= width <= 2500 and 400 <= height <= 2500, (name, image.size)
        assert pixels.std() > 10, f"{name} looks blank"


@pytest.mark.slow
def test_report_md_shows_the_figures_final_figures_and_config(tiny_run):
    workdir, summary, _ = tiny_run
    with open(os.path.join(workdir, "report", "report.md")) as f:
        text = f.read()
    for name in report.FIGURES:
        assert f"]({name})" in text
    final = summary["final"]
    for key in ("test_digit_accuracy", "test_sum_accuracy", "test_exhaustive_sum_accuracy",
                "train_digit_accuracy"):
        assert f"{100 * final[key]:.2f}%" in text, key
    assert f"step {final['step']}" in text
    assert "| `batch_size` | `32` |" in text and "| `width` | `4` |" in text


@pytest.mark.slow
def test_report_figures_are_the_metrics_jsonl_row_of_its_checkpoint(tiny_run):
    """The report reads its test figures from training's evaluator: for the checkpoint
    of the last epoch, report.json has metrics.jsonl's last row, key for key."""
    workdir, summary, _ = tiny_run
    with open(os.path.join(workdir, "report", "report.json")) as f:
        data = json.load(f)
    final = summary["final"]
    assert data["step"] == final["step"] == 3 * STEPS_PER_EPOCH
    keys = metrics_lib.summary_keys("test")
    assert "test_sum_agreement" in keys and "test_exhaustive_sum_accuracy" in keys
    for key in keys:
        if key.endswith("_loss"):
            # Summed float32 losses: training evaluates through its (one-device) mesh,
            # the report without one, and another program may round differently.
            assert data[key] == pytest.approx(final[key], rel=1e-5), key
        else:  # counts of images: exact
            assert data[key] == final[key], key


@pytest.mark.slow
def test_report_per_image_figures_count_what_the_evaluator_counts(tiny_run):
    """Confusion matrices and pair accuracies come from per-image predictions; they count
    the same right answers as the evaluator's accuracies."""
    workdir, _, _ = tiny_run
    with open(os.path.join(workdir, "report", "report.json")) as f:
        data = json.load(f)
    digit = np.array(data["digit_confusion"])
    total = np.array(data["sum_confusion"])
    assert digit.shape == (10, 10) and total.shape == (19, 19)
    assert digit.sum() == total.sum() == 64
    # Counts of correct predictions, compared exactly (k/64 is exact in binary): `predict`
    # is another program than the evaluator's, but its logits differ by rounding (~1e-6)
    # at most, which flips only an exact near-tie.
    assert np.trace(digit) / 64 == data["test_digit_accuracy"]
    assert np.trace(total) / 64 == data["test_sum_accuracy"]
    grid = np.array(data["pair_accuracy"])
    counts = digit.sum(axis=1)  # test images per true digit
    exhaustive = np.nansum(grid * counts[:, None]) / (10 * counts.sum())
    # A count / 640 rebuilt through float64 fractions: equal up to float64 rounding.
    assert exhaustive == pytest.approx(data["test_exhaustive_sum_accuracy"])


@pytest.mark.slow
def test_tensorboard_has_epoch_and_step_scalars(tiny_run):
    workdir, _, _ = tiny_run
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    scalars = read_scalars(os.path.join(workdir, "tensorboard"))
    for key in ("train_loss", "train_sum_accuracy", "test_digit_loss", "test_sum_accuracy",
                "test_exhaustive_sum_accuracy"):
        split, _, name = key.partition("_")
        logged = scalars[f"{split}/{name}"]
        assert [s for s, _ in logged] == [r["step"] for r in rows]
        # TensorBoard stores float32: the row's float64 rounded once, the same rounding
        # as np.float32's, so exactly equal.
        np.testing.assert_array_equal(np.float32([v for _, v in logged]),
                                      np.float32([r[key] for r in rows]))
    steps = scalars["train_steps/loss"]
    assert [s for s, _ in steps] == [4, 8, 12, 16, 20, 24]
    # Two windows of 4 equal batches make an epoch: their mean is the epoch's mean.
    # Both come from the same float32 running sums (windows are differences of host
    # float64 copies); only storing each window mean as float32 rounds (<= eps/2
    # relative, of positive means): rtol eps.
    windows = np.array([v for _, v in steps]).reshape(3, 2).mean(axis=1)
    np.testing.assert_allclose(windows, [r["train_loss"] for r in rows],
                               rtol=np.finfo(np.float32).eps)


@pytest.mark.slow
def test_step_logging_does_not_change_the_numbers(prepared_tiny, tiny_run, tmp_path):
    """Cutting epochs into logged segments must not change training at all."""
    workdir, _, _ = tiny_run
    plain = str(tmp_path / "plain")
    train_and_evaluate(_config(prepared_tiny, log_every_steps=0, report=False), plain,
                       log=lambda s: None)
    with open(os.path.join(plain, "metrics.jsonl")) as a, \
            open(os.path.join(workdir, "metrics.jsonl")) as b:
        assert a.read() == b.read()
    assert not os.path.exists(os.path.join(plain, "report"))
    assert "train_steps/loss" not in read_scalars(os.path.join(plain, "tensorboard"))


@pytest.mark.slow
def test_report_is_not_rewritten_when_current_and_cli_redoes_it(prepared_tiny, tiny_run):
    workdir, _, _ = tiny_run
    md = os.path.join(workdir, "report", "report.md")
    before = os.stat(md).st_mtime_ns
    lines = []
    train_and_evaluate(_config(prepared_tiny), workdir, log=lines.append)
    assert any("already finished" in line for line in lines)
    assert not any(line.startswith("report:") for line in lines)
    assert os.stat(md).st_mtime_ns == before

    os.unlink(os.path.join(workdir, "report", report.CURVES))
    assert not report.is_current(workdir)
    tfds_dir, _ = prepared_tiny
    result = subprocess.run([sys.executable, "-m", "mnist_plus.report", "--workdir", workdir,
                             "--tfds-dir", tfds_dir], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {md}"
    assert report.is_current(workdir)


def test_report_cli_without_a_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mnist_plus.report", "--workdir",
                             str(tmp_path / "empty")], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no checkpoint" in result.stderr
    assert not os.path.exists(tmp_path / "empty")  # nothing created
