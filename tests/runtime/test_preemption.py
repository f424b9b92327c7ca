"""SIGTERM/SIGINT stop training at a step boundary with a checkpoint there, exit with
128 + the signal and one line; the same command then resumes to the very results of an
uninterrupted run. And one training per workdir (an OS lock a killed process cannot leave
behind).

Every run that is stopped is a `python -m ...` subprocess; signals are real (sent from
outside, or by tests/helpers/crash_run.py to its own process at a chosen point), as a
scheduler would send them. The rerun that resumes it is the same command, run by the pytest
process (`train_in_process`).
"""

import os
import re
import signal
import subprocess
import time

import pytest

from mnist_plus.runtime import preemption
from tests.helpers import (assert_same_as_reference, final_state_leaves, read_bytes, snapshot,
                            tiny_config, tiny_flags, train_in_process)

TMP_SUFFIX = ".orbax-checkpoint-tmp"
RESUME = "checkpoint saved; rerun the same command to resume"


def _checkpoints(workdir) -> list[int]:
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    assert not [n for n in names if TMP_SUFFIX in n], names  # every save completed
    return sorted(int(n) for n in names)


def _metrics_lines(workdir) -> int:
    return len(read_bytes(os.path.join(workdir, "metrics.jsonl")).splitlines())


def _only_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _resume_and_compare(cli, flags, workdir, resumed_at: str, prepared_tiny, reference_run):
    resumed = train_in_process(*flags)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from checkpoint at {resumed_at}" in resumed.stdout, resumed.stdout
    assert_same_as_reference(workdir, reference_run, prepared_tiny)


def _start_paused(cli, crash_flags, flags) -> subprocess.Popen:
    """A training that waits after some steps (lock held, mid-epoch) for a signal."""
    proc = cli.popen(["-m", "tests.helpers.crash_run", *crash_flags, "--", *flags],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:  # EOF (a crash) ends the loop and fails below
        if line.startswith("paused after step"):
            return proc
    proc.wait(timeout=60)
    pytest.fail(f"the training never paused: {proc.stderr.read()[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_mid_epoch_checkpoints_that_step_and_resuming_is_exact(
        name, code, cli, prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir)
    proc = _start_paused(cli, ["--pause-after-steps", "11"], flags)  # epoch 2, step 3
    proc.send_signal(getattr(signal, name))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert _only_line(err) == f"interrupted by {name} at step 11 (epoch 2, step 3 of 8): {RESUME}"
    assert _checkpoints(workdir) == [8, 11]
    _, meta = final_state_leaves(workdir, tiny_config(prepared_tiny), step=11)
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 3)
    assert _metrics_lines(workdir) == 1
    _resume_and_compare(cli, flags, workdir, "step 11 (epoch 2, step 3 of 8)", prepared_tiny,
                        reference_run)


@pytest.mark.slow
def test_a_signal_during_evaluation_writes_that_epoch_once(cli, prepared_tiny, reference_run,
                                                            tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir)
    # Sent as epoch 2's evaluation starts: it finishes, its row and checkpoint are written.
    stopped = cli.crash(["--signal-at-eval", "2"], flags)
    assert stopped.returncode == 143, stopped.stderr
    assert _only_line(stopped.stderr) == (f"interrupted by SIGTERM at step 16 (epoch 3, step 0 "
                                          f"of 8): {RESUME}")
    assert _metrics_lines(workdir) == 2
    assert _checkpoints(workdir) == [8, 16]
    _resume_and_compare(cli, flags, workdir, "step 16 (epoch 3, step 0 of 8)", prepared_tiny,
                        reference_run)


@pytest.mark.slow
def test_a_signal_during_a_save_lets_it_complete_and_a_second_one_changes_nothing(
        cli, prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir, "--checkpoint-every-steps", "3")
    # SIGTERM, then SIGINT, while orbax writes the checkpoint at step 6 in the background.
    stopped = cli.crash(["--signal-mid-save", "2", "--second-signal"], flags)
    assert stopped.returncode == 143, stopped.stderr  # the first signal's status
    assert _only_line(stopped.stderr) == (f"interrupted by SIGTERM at step 6 (epoch 1, step 6 "
                                          f"of 8): {RESUME}")
    assert _checkpoints(workdir) == [3, 6]
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl")) or \
        _metrics_lines(workdir) == 0
    _resume_and_compare(cli, flags, workdir, "step 6 (epoch 1, step 6 of 8)", prepared_tiny,
                        reference_run)


@pytest.mark.slow
def test_a_signal_after_the_last_step_leaves_the_summary_to_a_rerun(
        cli, prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir)
    stopped = cli.crash(["--signal-at-eval", "3", "--signal", "INT"], flags)
    assert stopped.returncode == 130, stopped.stderr
    assert _only_line(stopped.stderr) == (
        "interrupted by SIGINT after the last step (step 24): training is finished and "
        "checkpointed; rerun the same command to write the summary and report")
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    rerun = train_in_process(*flags)
    assert rerun.returncode == 0, rerun.stderr
    assert "training already finished" in rerun.stdout
    assert os.path.exists(os.path.join(workdir, "summary.json"))
    assert_same_as_reference(workdir, reference_run, prepared_tiny)


def test_handlers_only_record_the_first_signal_and_are_restored():
    before = {sig: signal.getsignal(sig) for sig in preemption.SIGNALS}
    stop = preemption.Preemption().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal: no KeyboardInterrupt, no change
        assert stop.received == signal.SIGTERM and not stop.stopped
        assert stop.step(1) and stop.signum == signal.SIGTERM
    finally:
        stop.restore()
    assert {sig: signal.getsignal(sig) for sig in preemption.SIGNALS} == before


# ---- One training per workdir.

BUSY = re.compile(r"error: workdir (\S+) is in use by another training \(pid (\d+) on host "
                  r"(\S+), started [\d: -]+\): wait for it to finish, or use another --workdir")


@pytest.mark.slow
def test_a_second_training_on_a_busy_workdir_fails_at_once(cli, prepared_tiny, tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir)
    first = _start_paused(cli, ["--pause-after-steps", "1"], flags)  # holds the lock
    try:
        # The start-up every CLI pays (Python, JAX and this package imported; a flag
        # refused): the busy check must add no wait to it (no data read, no training).
        t0 = time.monotonic()
        bad_flag = cli.train(*flags, "--epochs", "0")
        startup = time.monotonic() - t0
        assert bad_flag.returncode == 2, bad_flag.stderr
        before = snapshot(workdir)
        t0 = time.monotonic()
        second = cli.train(*flags)
        seconds = time.monotonic() - t0
        assert second.returncode == 2, second.stderr
        match = BUSY.fullmatch(_only_line(second.stderr))
        assert match, second.stderr
        assert match.group(1) == workdir and int(match.group(2)) == first.pid
        print(f"busy workdir refused after {seconds:.2f} s; a refused flag takes "
              f"{startup:.2f} s (2 shared cores, under load)")
        # "At once": before reading the data (no "data:" line) and without waiting for the
        # lock, which the first training holds for its whole run; no tight clock bound,
        # which a loaded machine breaks.
        assert "data:" not in second.stdout
        assert seconds < startup + 30.0
        after = snapshot(workdir)
        # The first training may flush TensorBoard events meanwhile; nothing else changes.
        assert ({k: v for k, v in after.items() if not k.startswith("tensorboard")} ==
                {k: v for k, v in before.items() if not k.startswith("tensorboard")})
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143


@pytest.mark.slow
def test_a_killed_trainings_lock_does_not_block_the_next_one(cli, prepared_tiny, reference_run,
                                                              tmp_path):
    workdir = str(tmp_path / "run")
    flags = tiny_flags(prepared_tiny, workdir)
    killed = cli.crash(["--after-steps", "3"], flags)  # SIGKILL, holding the lock
    assert killed.returncode == -9, killed.stderr
    assert read_bytes(os.path.join(workdir, ".lock")).startswith(b"pid ")  # its owner line
    rerun = train_in_process(*flags, "--fresh")
    assert rerun.returncode == 0, rerun.stderr
    assert_same_as_reference(workdir, reference_run, prepared_tiny)
    assert read_bytes(os.path.join(workdir, ".lock")) == b""  # released, emptied
    aside = [n for n in os.listdir(workdir) if n.startswith("previous-")]
    assert len(aside) == 1 and not os.path.exists(os.path.join(workdir, aside[0], ".lock"))


@pytest.mark.slow
def test_processes_of_a_multi_process_run_stop_at_the_same_step(cli, prepared_tiny, tmp_path):
    """Only process 1 gets SIGTERM (after 3 steps); both agree to stop at the next
    agreement point, the checkpoint after epoch 1 (step 8), save it together and exit
    143. That a 2-process run resumed from step 8 ends as an uninterrupted one is
    tested in test_multiprocess.py (after a SIGKILL, from the same checkpoint), and that
    a checkpoint saved on a signal resumes exactly, in the single-process tests here."""
    from tests.runtime.test_multiprocess import _pair

    workdir = tmp_path / "run"
    flags = tiny_flags(prepared_tiny, workdir)
    results, _ = _pair(cli, flags, crash_second=["--signal-after-steps", "3"])
    for code, _, err in results:
        assert code == 143, err[-3000:]
        lines = [line for line in err.strip().splitlines() if not line.startswith("[Gloo]")]
        assert lines == [f"interrupted by SIGTERM at step 8 (epoch 2, step 0 of 8): {RESUME}"]
    assert _checkpoints(workdir) == [8]
    assert _metrics_lines(workdir) == 1
