"""Many processes with jax.distributed: 2 processes x 2 forced CPU devices on localhost
(gloo CPU collectives), against one process with 4 devices.

Every process is a real `python -m mnist_plus.train` subprocess; every wait is bounded.
"""

import json
import socket
import subprocess
import time

import numpy as np
import pytest

from tests.helpers import dp_steps
from tests.helpers import final_state_leaves, read_bytes, tiny_config, tiny_flags

TWO = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
TIMEOUT = 400  # seconds for any process; a run takes well under a minute on 2 idle cores
# The 2-process runs recompute BatchNorm's statistics after each epoch, so that pass runs
# (and must resume exactly) on a mesh spanning processes too.
PRECISE = ("--precise-bn", "64")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cli, module_args, env):
    return cli.popen(module_args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"a process did not finish in {TIMEOUT} s: {err[-2000:]}")
    return proc.returncode, out, err


def _pair(cli, flags, crash_second=None):
    """Run processes 0 and 1 of a 2-process run; process 1 optionally through crash_run."""
    port = _free_port()
    dist = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    first = _start(cli, ["-m", "mnist_plus.train", *flags, *dist, "--process-id", "0"], TWO)
    second_args = ["-m", "mnist_plus.train", *flags, *dist, "--process-id", "1"]
    if crash_second:
        second_args = ["-m", "tests.helpers.crash_run", *crash_second, "--", *second_args[2:]]
    second = _start(cli, second_args, TWO)
    t0 = time.monotonic()
    results = [_finish(first), _finish(second)]
    return results, time.monotonic() - t0


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("[Gloo]")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def two_process_run(prepared_tiny, cli, tmp_path_factory):
    """Workdir of an uninterrupted 2-process x 2-device run of the tiny config."""
    workdir = tmp_path_factory.mktemp("two_processes")
    results, _ = _pair(cli, tiny_flags(prepared_tiny, workdir, *PRECISE))
    for code, out, err in results:
        assert code == 0, err[-3000:]
    (_, out0, _), (_, out1, _) = results
    assert "mesh data=4 (4 cpu devices, 2 processes)" in out0
    assert "epoch" not in out1  # only process 0 reports
    return workdir


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_four_devices(prepared_tiny, two_process_run,
                                                              four_device_run,
                                                              device_split_runs):
    """Same mesh size, same global batches, so the same optimisation; only where the
    float additions of the all-reduce happen differs (gloo between processes). The
    tolerance is derived as in test_data_parallel: the mean absolute parameter difference
    within 3x the largest drift that rounding-level perturbations of a 1-device run (a
    one-ulp nudge, reordered batch rows) reach in the same 24 steps on this machine."""
    summary = json.loads(read_bytes(two_process_run / "summary.json"))
    assert summary["num_processes"] == 2 and summary["num_devices"] == 4
    assert len(read_bytes(two_process_run / "metrics.jsonl").splitlines()) == 3  # written once

    one_process, _ = four_device_run  # the same flags; its evaluation batch changes no parameter
    config = tiny_config(prepared_tiny, precise_bn=64)
    leaves_two, meta = final_state_leaves(two_process_run, config)
    leaves_one, _ = final_state_leaves(one_process, config)
    assert meta["global_step"] == 24

    runs = device_split_runs  # the same 24 steps: dp_steps.STEPS
    bound = 3 * dp_steps.rounding_drift(runs)
    # Only the params: `one` and `one_nudged` hold the parameters, not the optimizer state.
    n_params = len(runs["one"])
    params_two = np.concatenate([np.ravel(x) for x in leaves_two]).astype(np.float64)
    params_one = np.concatenate([np.ravel(x) for x in leaves_one]).astype(np.float64)
    assert np.mean(np.abs(params_two[:n_params] - params_one[:n_params])) <= bound


@pytest.mark.slow
def test_killing_one_process_stops_the_other_and_a_restart_resumes_exactly(
        prepared_tiny, cli, two_process_run, tmp_path):
    workdir = tmp_path / "killed"
    flags = tiny_flags(prepared_tiny, workdir, *PRECISE)
    # Process 1 is SIGKILLed 12 steps in (mid-epoch 2, after the epoch-1 checkpoint).
    results, seconds = _pair(cli, flags, crash_second=["--after-steps", "12"])
    (code0, _, err0), (code1, _, _) = results
    assert code1 == -9
    assert code0 == 1
    assert "another process of the run died" in _one_line(err0)
    assert seconds < 180  # heartbeat timeout (20 s) plus start-up, far from a hang
    assert len(read_bytes(workdir / "metrics.jsonl").splitlines()) == 1

    results, _ = _pair(cli, flags)
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert "resumed from checkpoint at step 8" in results[0][1]
    assert read_bytes(workdir / "metrics.jsonl") == read_bytes(
        two_process_run / "metrics.jsonl")


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 is invalid: with --num-processes 2 it must be 0..1"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2"],
     "missing --process-id"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator 'localhost' is invalid: give HOST:PORT"),
    (["--distributed", "auto", "--process-id", "1"], "--distributed auto takes the cluster's"),
])
def test_bad_distributed_flags_are_one_line_usage_errors(prepared_tiny, cli, tmp_path, flags,
                                                          message):
    result = cli.train(*tiny_flags(prepared_tiny, tmp_path / "w"), *flags)
    assert result.returncode == 2
    assert message in _one_line(result.stderr)


@pytest.mark.slow
def test_an_unreachable_coordinator_is_reported_within_the_timeout(prepared_tiny, cli,
                                                                    tmp_path):
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    result = cli.train(*tiny_flags(prepared_tiny, tmp_path / "w"), "--coordinator",
                       f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
                       "--distributed-timeout", "10", env=TWO)
    assert result.returncode == 2
    assert f"cannot reach the coordinator at --coordinator 127.0.0.1:{port} after 10 s" in (
        _one_line(result.stderr))
    assert time.monotonic() - t0 < 60


def test_a_batch_the_global_devices_do_not_divide_stops_both_processes(prepared_tiny, cli,
                                                                        tmp_path):
    results, _ = _pair(cli, tiny_flags(prepared_tiny, tmp_path / "w", "--batch-size", "30"))
    for code, _, err in results:
        assert code == 2
        assert "--batch-size 30 is invalid: it must be divisible by the 4 devices" in (
            _one_line(err))
