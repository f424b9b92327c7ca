"""Checkpoints, resume, and the promise that an interrupted run ends exactly as an
uninterrupted one (bitwise on CPU), wherever it was killed.

Every kill is a real SIGKILL of a training subprocess (tests/helpers/crash_run.py), and the
restart is the very same command (run by the pytest process: `train_in_process`); the
result is compared with `reference_run`, an uninterrupted in-process run with the same
flags.
"""

import os
import re
import shutil

import numpy as np
import pytest

from mnist_plus import config as config_lib
from mnist_plus.runtime.checkpointing import Checkpointer
from mnist_plus.errors import DivergedError
from mnist_plus.training.state import create_state as initial_state
from mnist_plus.trainer import train_and_evaluate
from mnist_plus.training.step import zero_train_metrics
from tests.helpers import (TINY_STEPS_PER_EPOCH, assert_same_as_reference,
                            final_state_leaves, read_bytes, snapshot, tiny_config, tiny_flags,
                            train_in_process)

TMP_SUFFIX = ".orbax-checkpoint-tmp"


def _checkpoint_dirs(workdir) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def test_checkpoint_round_trip_restores_state_and_position(prepared_tiny, reference_run):
    config = tiny_config(prepared_tiny)
    leaves, meta = final_state_leaves(reference_run, config)
    assert meta["epoch"] == 3 and meta["step_in_epoch"] == 0 and meta["global_step"] == 24
    assert meta["config"] == config_lib.to_dict(config)
    assert all(np.isfinite(np.asarray(x, np.float64)).all() for x in leaves)
    assert _checkpoint_dirs(reference_run) == ["16", "24", "8"]


def test_rerun_of_a_finished_run_changes_nothing(prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(reference_run, workdir)
    before = snapshot(os.path.join(workdir, "checkpoints"))
    metrics = read_bytes(os.path.join(workdir, "metrics.jsonl"))
    lines = []
    train_and_evaluate(tiny_config(prepared_tiny), workdir, log=lines.append)
    assert any("already finished" in line for line in lines)
    assert read_bytes(os.path.join(workdir, "metrics.jsonl")) == metrics
    assert snapshot(os.path.join(workdir, "checkpoints")) == before


@pytest.mark.slow
def test_checkpointing_every_n_steps_changes_no_result(prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "every2")
    train_and_evaluate(tiny_config(prepared_tiny, checkpoint_every_steps=2, keep_best=False),
                       workdir, log=lambda s: None)
    assert_same_as_reference(workdir, reference_run, prepared_tiny)
    # The newest three (--no-keep-best: not also the best epoch's): two mid-epoch
    # checkpoints and the end of training.
    assert _checkpoint_dirs(workdir) == ["20", "22", "24"]
    _, meta = final_state_leaves(workdir, tiny_config(prepared_tiny), step=22)
    assert (meta["epoch"], meta["step_in_epoch"]) == (2, 6)


@pytest.mark.slow
def test_killed_mid_epoch_resumes_the_same_stream(cli, prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir, "--checkpoint-every-steps", "2")
    # Killed in epoch 2 after step 13: the save at 12 may still be in flight, the one at
    # 10 is complete (orbax finishes a save before starting the next).
    killed = cli.crash(["--after-steps", "13"], flags)
    assert killed.returncode == -9, killed.stderr
    assert len(read_bytes(os.path.join(workdir, "metrics.jsonl")).splitlines()) == 1

    resumed = train_in_process(*flags)
    assert resumed.returncode == 0, resumed.stderr
    match = re.search(r"resumed from checkpoint at step (\d+) \(epoch 2, step (\d+) of 8\)",
                      resumed.stdout)
    assert match, resumed.stdout
    assert match.group(1) in ("10", "12") and int(match.group(2)) == int(match.group(1)) - 8
    assert_same_as_reference(workdir, reference_run, prepared_tiny)


@pytest.mark.slow
def test_killed_while_saving_restores_the_newest_complete_checkpoint(
        cli, prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir, "--checkpoint-every-steps", "3")
    # Saves at steps 3, 6 and 8 (end of epoch 1); killed while orbax writes the one at 8,
    # after epoch 1's metrics line was written.
    killed = cli.crash(["--after-saves", "3", "--mid-save"], flags)
    assert killed.returncode == -9, killed.stderr
    assert _checkpoint_dirs(workdir) == ["3", "6", "8" + TMP_SUFFIX]
    assert len(read_bytes(os.path.join(workdir, "metrics.jsonl")).splitlines()) == 1

    config = tiny_config(prepared_tiny)
    ckpt = Checkpointer(workdir, 3)
    try:
        assert ckpt.latest_step() == 6  # the half-written 8 is not a checkpoint
    finally:
        ckpt.close()

    resumed = train_in_process(*flags)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint at step 6 (epoch 1, step 6 of 8)" in resumed.stdout
    assert_same_as_reference(workdir, reference_run, prepared_tiny)
    assert not [n for n in _checkpoint_dirs(workdir) if TMP_SUFFIX in n]
    assert final_state_leaves(workdir, config)[1]["global_step"] == 24


@pytest.mark.slow
def test_killed_after_an_epoch_resumes_to_identical_results(cli, prepared_tiny, reference_run,
                                                             tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir)
    killed = cli.crash(["--after-saves", "1"], flags)
    assert killed.returncode == -9, killed.stderr
    assert len(read_bytes(os.path.join(workdir, "metrics.jsonl")).splitlines()) == 1
    resumed = train_in_process(*flags)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint at step 8 (epoch 2, step 0 of 8)" in resumed.stdout
    assert_same_as_reference(workdir, reference_run, prepared_tiny)


@pytest.mark.slow
def test_fresh_moves_the_old_run_aside(prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(reference_run, workdir)
    old = snapshot(workdir)
    lines = []
    train_and_evaluate(tiny_config(prepared_tiny, epochs=1), workdir, fresh=True,
                       log=lines.append)
    aside = [n for n in os.listdir(workdir) if n.startswith("previous-")]
    assert len(aside) == 1 and any("--fresh: moved" in line for line in lines)
    # Everything but the workdir's lock, which stays (see runtime/workdir.py).
    assert snapshot(os.path.join(workdir, aside[0])) == {k: v for k, v in old.items()
                                                         if k != ".lock"}
    assert os.path.exists(os.path.join(workdir, ".lock"))
    assert len(read_bytes(os.path.join(workdir, "metrics.jsonl")).splitlines()) == 1


def test_a_non_finite_state_is_refused_before_it_would_replace_the_last_good_one(
        prepared_tiny, tmp_path):
    from mnist_plus.training import divergence

    import jax
    import jax.numpy as jnp

    config = tiny_config(prepared_tiny)
    state = initial_state(config, TINY_STEPS_PER_EPOCH)
    ckpt = Checkpointer(str(tmp_path / "run"), 3)
    try:
        ckpt.save(state.replace(step=jnp.asarray(4, jnp.int32)), zero_train_metrics(),
                  epoch=0, step_in_epoch=4, config=config)
        ckpt.wait()
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        leaves[0] = leaves[0].at[0].set(jnp.nan)
        broken = state.replace(step=jnp.asarray(5, jnp.int32),
                               params=jax.tree_util.tree_unflatten(treedef, leaves))
        with pytest.raises(DivergedError, match=r"NaN or infinite by step 5 \(\['params'\].*"
                                                r"last good checkpoint \(step 4\) is kept"):
            divergence.check_state(broken, ckpt.latest_step())
        divergence.check_state(state, ckpt.latest_step())  # a finite state passes
        ckpt.wait()
        assert ckpt.latest_step() == 4
    finally:
        ckpt.close()
    assert _checkpoint_dirs(str(tmp_path / "run")) == ["4"]
