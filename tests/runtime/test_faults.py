"""A full disk or a read-only file system while training writes, and data that changed
under a checkpoint: one line, nothing complete lost, and a rerun that resumes.

The disk faults are injected through the CLI (tests/helpers/fault_run.py) at the point where
the file system reports them; the rerun is the very same command as the first run,
and must end exactly as the uninterrupted `reference_run`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import numpy as np
import pytest

from mnist_plus.runtime import atomic
from mnist_plus.data import mnist as data
from mnist_plus.data import idx
from tests.helpers import (TINY_STEPS_PER_EPOCH, assert_same_as_reference,
                            final_state_leaves, read_bytes, snapshot, synthetic_digits,
                            tiny_config, tiny_flags, train_in_process, write_tiny_mnist)


def _one_error_line(result, status: int) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _complete_checkpoints(workdir) -> list[int]:
    return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints"))
                  if n.isdigit())


def _reference_lines(reference_run, n: int) -> bytes:
    with open(os.path.join(reference_run, "metrics.jsonl"), "rb") as f:
        return b"".join(f.readlines()[:n])


# ---- whole-file writes

def test_replace_file_fsyncs_the_file_before_the_rename_and_the_folder_after(
        tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.replace_file(str(tmp_path / "x.json"), lambda f: f.write(b"new"))
    assert events == ["fsync file", "rename", "fsync folder"]
    assert (tmp_path / "x.json").read_bytes() == b"new"


def test_a_failed_whole_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"old\n")

    def full_disk(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError):
        atomic.replace_file(str(path), full_disk)
    assert os.listdir(tmp_path) == ["metrics.jsonl"] and path.read_bytes() == b"old\n"


# ---- data fingerprints

def _other_tiny_mnist(folder: str) -> str:
    """The tiny MNIST with one train label changed."""
    write_tiny_mnist(folder)
    images, labels = synthetic_digits(256, 1)
    labels[0] = (labels[0] + 1) % 10
    idx.write_idx(folder, "train", images, labels)
    return folder


def test_fingerprint_is_sha256_of_each_part_and_sees_one_changed_label():
    images, labels = synthetic_digits(8, 1)
    mnist = data.Mnist(images, labels.astype(np.int32), images[:2], labels[:2].astype(np.int32))
    changed = data.Mnist(images, (labels + np.eye(8, dtype=labels.dtype)[0]).astype(np.int32),
                         images[:2], labels[:2].astype(np.int32))
    import hashlib

    assert mnist.fingerprint["train_images"] == hashlib.sha256(images.tobytes()).hexdigest()
    assert mnist.fingerprint["train_labels"] == hashlib.sha256(labels.tobytes()).hexdigest()
    assert [k for k in mnist.fingerprint if mnist.fingerprint[k] != changed.fingerprint[k]] == [
        "train_labels"]


def test_other_mnist_dir_with_the_same_tfds_dir_is_refused_not_served_old_arrays(
        prepared_tiny, tmp_path):
    tfds_dir = str(tmp_path / "tfds")
    shutil.copytree(prepared_tiny[0], tfds_dir)
    other = _other_tiny_mnist(str(tmp_path / "other"))
    with pytest.raises(data.DataError, match=r"prepared from other files than those in .*"
                                             r"\(train labels differ\).*--tfds-dir"):
        data.load_mnist(tfds_dir, other)


def test_same_data_in_another_folder_is_accepted_and_checked_once(prepared_tiny, tmp_path,
                                                                  monkeypatch):
    tfds_dir = str(tmp_path / "tfds")
    shutil.copytree(prepared_tiny[0], tfds_dir)
    raw = write_tiny_mnist(str(tmp_path / "raw"), compress=False)  # same examples, not gzipped
    first = data.load_mnist(tfds_dir, raw)
    monkeypatch.setattr(idx, "read_split", lambda *a: pytest.fail("decoded again"))
    assert data.load_mnist(tfds_dir, raw).fingerprint == first.fingerprint


@pytest.mark.slow
def test_resuming_on_other_data_is_refused_in_one_line_and_fresh_starts_over(
        cli, prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    other = (str(tmp_path / "other_tfds"), _other_tiny_mnist(str(tmp_path / "other")))
    data.load_mnist(*other)  # prepared here: TFDS's progress output is not under test
    _, meta = final_state_leaves(workdir, tiny_config(prepared_tiny))
    before = snapshot(workdir)
    result = cli.train(*tiny_flags(other, workdir))
    line = _one_error_line(result, 2)
    old = meta["data_fingerprint"]["train_labels"][:8]
    assert line.startswith(
        f"error: the checkpoint in {workdir}/checkpoints was trained on other data "
        f"(train labels: sha256 {old}.. -> ")
    assert line.endswith("..): rerun with the data it was trained on, use another --workdir, "
                         "or pass --fresh to start over")
    assert snapshot(workdir) == before

    fresh = train_in_process(*tiny_flags(other, workdir, "--fresh"))
    assert fresh.returncode == 0, fresh.stderr
    _, new_meta = final_state_leaves(workdir, tiny_config(other))
    assert new_meta["data_fingerprint"]["train_labels"][:8] != old


def test_a_checkpoint_without_a_fingerprint_resumes_with_a_warning(cli, prepared_tiny,
                                                                  reference_run, tmp_path):
    workdir = str(tmp_path / "old")
    shutil.copytree(reference_run, workdir)
    meta_path = os.path.join(workdir, "checkpoints", "24", "meta", "metadata")
    with open(meta_path) as f:
        meta = json.load(f)
    del meta["data_fingerprint"]
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    result = cli.train(*tiny_flags(prepared_tiny, workdir))
    assert result.returncode == 0, result.stderr
    assert "already finished" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: the checkpoint in {workdir}/checkpoints records no data "
                        f"fingerprint (written by an older version); resuming without checking "
                        f"that it was trained on the same data"]


# ---- disk faults while training

# Saves every 4 steps: 4, 8 (end of epoch 1), 12, 16 (end of epoch 2), 20, 24.
EVERY = ("--checkpoint-every-steps", "4")


@pytest.mark.parametrize("how,code", [("json", "ENOSPC"), ("tensorstore", "ENOSPC"),
                                      ("json", "EROFS")])
@pytest.mark.slow
def test_a_failed_background_checkpoint_write_is_one_line_and_a_rerun_resumes(
        cli, prepared_tiny, reference_run, tmp_path, how, code):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir, *EVERY)
    # The 4th save (step 16) fails in orbax's writer thread; it surfaces at the next save.
    result = cli.run(["-m", "tests.helpers.fault_run", "--checkpoint", "4", "--how", how,
                      "--errno", code, "--", *flags])
    line = _one_error_line(result, 1)
    reason = os.strerror(getattr(errno, code))
    remedy = "make it writable" if code == "EROFS" else "free space"
    assert line == (f"error: cannot write the checkpoint at step 16 in {workdir}/checkpoints "
                    f"({reason}): the newest complete checkpoint (step 12) and metrics.jsonl "
                    f"are intact; {remedy} and rerun to resume")
    assert _complete_checkpoints(workdir) == [4, 8, 12]  # none deleted for the failed one
    assert read_bytes(os.path.join(workdir, "metrics.jsonl")) == _reference_lines(
        reference_run, 2)
    _, meta = final_state_leaves(workdir, tiny_config(prepared_tiny), step=12)
    assert meta["global_step"] == 12

    rerun = train_in_process(*flags)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed from checkpoint at step 12" in rerun.stdout
    assert_same_as_reference(workdir, reference_run, prepared_tiny)


def test_a_read_only_checkpoint_folder_at_save_time_is_one_line(cli, prepared_tiny, tmp_path):
    workdir = str(tmp_path / "run")
    # The first save cannot even make its folder: nothing was complete yet.
    result = cli.run(["-m", "tests.helpers.fault_run", "--checkpoint", "1", "--how", "mkdir",
                      "--errno", "EROFS", "--", *tiny_flags(prepared_tiny, workdir, *EVERY)])
    assert _one_error_line(result, 1) == (
        f"error: cannot write the checkpoint at step 4 in {workdir}/checkpoints (Read-only "
        f"file system): metrics.jsonl is intact (no checkpoint was complete yet); make it "
        f"writable and rerun to resume")
    assert _complete_checkpoints(workdir) == []


@pytest.mark.slow
@pytest.mark.parametrize("code", ["ENOSPC", "EROFS"])
def test_a_failed_metrics_write_keeps_earlier_lines_and_a_rerun_resumes(
        cli, prepared_tiny, reference_run, tmp_path, code):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir)
    result = cli.run(["-m", "tests.helpers.fault_run", "--metrics", "2", "--errno", code, "--",
                      *flags])
    reason = os.strerror(getattr(errno, code))
    remedy = "make it writable" if code == "EROFS" else "free space"
    assert _one_error_line(result, 1) == (
        f"error: cannot write {workdir}/metrics.jsonl ({reason}): its earlier lines and the "
        f"checkpoints are intact; {remedy} and rerun to resume")
    assert read_bytes(os.path.join(workdir, "metrics.jsonl")) == _reference_lines(
        reference_run, 1)
    assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]
    assert _complete_checkpoints(workdir) == [TINY_STEPS_PER_EPOCH]

    rerun = train_in_process(*flags)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_as_reference(workdir, reference_run, prepared_tiny)
