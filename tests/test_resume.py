"""Checkpoints, resume, and the promise that an interrupted run ends exactly as an
uninterrupted one (bitwise on CPU)."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mnist_plus import config as config_lib
from mnist_plus.checkpointing import Checkpointer
from mnist_plus.errors import UsageError
from mnist_plus.train import initial_state, train_and_evaluate
from mnist_plus.train_step import zero_train_metrics
from tests.conftest import REPO

TINY = dict(epochs=3, batch_size=32, width=4, eval_batch_size=64, progress=False)


def _config(prepared_tiny, **kw):
    tfds_dir, mnist_dir = prepared_tiny
    return config_lib.Config(**{**TINY, "tfds_dir": tfds_dir, "mnist_dir": mnist_dir, **kw})


def _final_params(workdir, config, steps_per_epoch=8):
    state = initial_state(config, steps_per_epoch)
    ckpt = Checkpointer(workdir, 3)
    state, _, meta = ckpt.restore(state, zero_train_metrics(), config)
    ckpt.close()
    return jax.tree_util.tree_leaves(jax.device_get((state.params, state.batch_stats,
                                                     state.opt_state))), meta


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def reference_run(prepared_tiny, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    train_and_evaluate(_config(prepared_tiny), workdir, log=lambda s: None)
    return workdir


def test_checkpoint_round_trip_restores_state_and_position(prepared_tiny, reference_run):
    config = _config(prepared_tiny)
    leaves, meta = _final_params(reference_run, config)
    assert meta["epoch"] == 3 and meta["step_in_epoch"] == 0 and meta["global_step"] == 24
    assert meta["config"] == config_lib.to_dict(config)
    assert all(np.isfinite(np.asarray(x, np.float64)).all() for x in leaves)
    assert max(int(n) for n in os.listdir(os.path.join(reference_run, "checkpoints")) if n.isdigit()) == 24


def test_rerun_of_a_finished_run_changes_nothing(prepared_tiny, reference_run):
    before = {n: _read(os.path.join(reference_run, n)) for n in ("metrics.jsonl",)}
    steps_before = sorted(os.listdir(os.path.join(reference_run, "checkpoints")))
    lines = []
    train_and_evaluate(_config(prepared_tiny), reference_run, log=lines.append)
    assert any("already finished" in line for line in lines)
    assert {n: _read(os.path.join(reference_run, n)) for n in before} == before
    assert sorted(os.listdir(os.path.join(reference_run, "checkpoints"))) == steps_before


def _train_cmd(prepared_tiny, workdir, *extra):
    tfds_dir, mnist_dir = prepared_tiny
    flags = ["--workdir", workdir, "--tfds-dir", tfds_dir, "--mnist-dir", mnist_dir,
             "--epochs", "3", "--batch-size", "32", "--width", "4", "--eval-batch-size", "64",
             "--no-progress", *extra]
    return flags


def _run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kw)


def test_killed_after_an_epoch_resumes_to_identical_results(prepared_tiny, reference_run,
                                                             tmp_path):
    workdir = str(tmp_path / "run")
    flags = _train_cmd(prepared_tiny, workdir)
    killed = _run(["-m", "tests.crash_run", "--after-saves", "1", "--", *flags])
    assert killed.returncode == -9, killed.stderr
    assert len(_read(os.path.join(workdir, "metrics.jsonl")).splitlines()) == 1
    resumed = _run(["-m", "mnist_plus.train", *flags])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint at step 8" in resumed.stdout
    assert _read(os.path.join(workdir, "metrics.jsonl")) == _read(
        os.path.join(reference_run, "metrics.jsonl"))
    config = _config(prepared_tiny)
    for a, b in zip(_final_params(workdir, config)[0], _final_params(reference_run, config)[0]):
        np.testing.assert_array_equal(a, b)


def test_incompatible_checkpoint_is_refused_and_kept(prepared_tiny, reference_run):
    steps_before = sorted(os.listdir(os.path.join(reference_run, "checkpoints")))
    with pytest.raises(UsageError, match=r"width: 4 -> 8.*--fresh"):
        train_and_evaluate(_config(prepared_tiny, width=8), reference_run, log=lambda s: None)
    assert sorted(os.listdir(os.path.join(reference_run, "checkpoints"))) == steps_before


def test_fresh_moves_the_old_run_aside(prepared_tiny, reference_run, tmp_path):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(reference_run, workdir)
    old_metrics = _read(os.path.join(workdir, "metrics.jsonl"))
    train_and_evaluate(_config(prepared_tiny, epochs=1), workdir, fresh=True, log=lambda s: None)
    aside = [n for n in os.listdir(workdir) if n.startswith("previous-")]
    assert len(aside) == 1
    assert _read(os.path.join(workdir, aside[0], "metrics.jsonl")) == old_metrics
    assert len(_read(os.path.join(workdir, "metrics.jsonl")).splitlines()) == 1
