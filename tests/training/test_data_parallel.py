"""Data parallel on one host: a mesh of forced CPU devices, the batch split over them.

Each run is a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=4`
(the device count is fixed when JAX starts).
"""

import json
import os

import numpy as np
import pytest

from tests.helpers import dp_steps
from tests.helpers import read_bytes, tiny_flags

FOUR = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_four_devices_compute_the_same_optimisation_as_one(device_split_runs):
    """The step is written for the global batch: BatchNorm statistics and the loss mean
    are over all 32 rows whether one device holds them or four hold 8 each. What
    differs is only the order of float additions (per-device partial sums, then an
    all-reduce), so after 24 steps the two runs may differ by rounding carried through
    training, and by nothing more.

    How far rounding carries is measured, not assumed: the same 1-device run with every
    initial parameter moved by one float32 ulp, and with every batch's rows reversed or
    rolled (the same maths in another float order at every step, which is what the split
    over devices changes), shows how much rounding-level differences grow in these 24
    steps on this very machine. They can grow a lot, and in bursts: Adam turns a tiny
    gradient difference into an update of up to the learning rate for near-zero
    gradients, and whether a given perturbation sets off such a cascade depends on the
    run, the CPU and the jaxlib version (with an older jaxlib the one-ulp nudge barely
    moved while the device split did). So the bound takes the largest of the three, and
    compares the mean absolute difference over all parameters (single parameters jump by
    up to ~lr per step): 4 devices must stay within 3x it. A real bug (another data
    order, a batch seen twice or by one device only, BatchNorm over a quarter of the
    batch) is a difference in the data or the maths, not in rounding: `one_other_seed`,
    another data order, must land well outside the bound (measured with jax 0.10.2 on
    AVX-512: 13x the one-ulp drift).
    """
    runs = device_split_runs
    assert int(runs["devices"]) == 4
    one, many = runs["one"], runs["many"]
    rounding = dp_steps.rounding_drift(runs)
    assert rounding > 0  # the perturbations did change something: the bound is measured
    bound = 3 * rounding
    assert np.mean(np.abs(many - one)) <= bound
    assert np.mean(np.abs(runs["one_other_seed"] - one)) > 2 * bound


def _assert_one_process_on_four_devices(workdir, stdout: str, epochs: int) -> None:
    assert "mesh data=4 (4 cpu devices, 1 process)" in stdout
    summary = json.loads(read_bytes(os.path.join(workdir, "summary.json")))
    assert summary["num_devices"] == 4 and summary["num_processes"] == 1
    assert len(read_bytes(os.path.join(workdir, "metrics.jsonl")).splitlines()) == epochs


@pytest.mark.slow
def test_training_on_four_devices_writes_the_device_count(four_device_run):
    """The host loop (the default on CPU). An evaluation batch the devices do not divide
    is rounded up (50 -> 52), not refused; the BatchNorm statistics are recomputed on the
    mesh too."""
    workdir, stdout = four_device_run
    _assert_one_process_on_four_devices(workdir, stdout, epochs=3)


@pytest.mark.slow
def test_the_scan_loop_trains_on_four_devices(prepared_tiny, cli, tmp_path):
    workdir = tmp_path / "four"
    result = cli.train(*tiny_flags(prepared_tiny, workdir, "--epochs", "1", "--loop", "scan",
                                   "--eval-batch-size", "50", "--precise-bn", "64"), env=FOUR)
    assert result.returncode == 0, result.stderr
    _assert_one_process_on_four_devices(workdir, result.stdout, epochs=1)


@pytest.mark.parametrize("flags, message", [
    (("--batch-size", "30"), "--batch-size 30 is invalid: it must be divisible by the 4 "
                             "devices"),
    (("--num-devices", "5"), "--num-devices 5 is invalid: this run sees 4 cpu device(s)"),
])
def test_a_batch_the_devices_do_not_divide_is_a_usage_error(prepared_tiny, cli, tmp_path,
                                                            flags, message):
    workdir = tmp_path / "bad"
    result = cli.train(*tiny_flags(prepared_tiny, workdir, *flags), env=FOUR)
    assert result.returncode == 2
    assert message in _one_line_error(result)
    assert not (workdir / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [("4", "1"), ("1", "4")])
def test_a_checkpoint_resumes_on_another_number_of_devices(prepared_tiny, cli, tmp_path,
                                                           first, then):
    """Saved from state replicated over one mesh, restored replicated over another:
    training goes on from the same step with the same parameters."""
    workdir = tmp_path / "run"
    flags = tiny_flags(prepared_tiny, workdir, "--epochs", "2")
    crashed = cli.crash(["--after-saves", "1"], [*flags, "--num-devices", first], env=FOUR)
    assert crashed.returncode != 0
    first_row = read_bytes(workdir / "metrics.jsonl")
    assert len(first_row.splitlines()) == 1
    result = cli.train(*flags, "--num-devices", then, env=FOUR)
    assert result.returncode == 0, result.stderr
    assert "resumed from checkpoint at step 8" in result.stdout
    lines = read_bytes(workdir / "metrics.jsonl").splitlines()
    assert len(lines) == 2 and lines[0] == first_row.splitlines()[0]
    assert json.loads(lines[1])["step"] == 16
    summary = json.loads(read_bytes(workdir / "summary.json"))
    assert summary["num_devices"] == int(then)


@pytest.mark.slow
def test_two_devices_reach_the_accuracy_of_one_on_real_mnist(real_mnist_run, cli, tmp_path):
    """One epoch of the default config on real MNIST: the same optimisation up to float
    rounding, so test accuracies agree to well within 0.1 point (10 of 10,000 images).
    One device: the shared in-process run; two: a subprocess with two forced CPU devices
    (the tiny tests above split over four; on real data four took 40% longer on 2 cores
    and test the same split)."""
    tfds_dir, one_device = real_mnist_run
    workdir = tmp_path / "d2"
    result = cli.train("--workdir", str(workdir), "--tfds-dir", tfds_dir, "--epochs", "1",
                       "--no-progress", "--no-report", "--num-devices", "2",
                       env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result.returncode == 0, result.stderr
    two = json.loads(read_bytes(workdir / "metrics.jsonl"))
    one = json.loads(read_bytes(os.path.join(one_device, "metrics.jsonl")))
    assert json.loads(read_bytes(workdir / "summary.json"))["num_devices"] == 2
    for key in ("test_digit_accuracy", "test_sum_accuracy"):
        assert abs(two[key] - one[key]) <= 0.001, (key, two[key], one[key])


_PRECISE_BN_ON_A_MESH = """
import sys
import jax, numpy as np
from mnist_plus import config
from mnist_plus.training import batch_stats
from mnist_plus.training import mesh
from mnist_plus.training import state
cfg = config.Config(width=4, batch_size=32)
st = state.create_state(cfg, 8)
images = np.random.default_rng(0).integers(0, 256, size=(96, 28, 28, 1), dtype=np.uint8)
one = batch_stats.PreciseBatchStats(images, 96, 32)(st).batch_stats
four = mesh.make_mesh(4)
st4 = state.create_state(cfg, 8, four)
split = batch_stats.PreciseBatchStats(images, 96, 32, four)(st4).batch_stats
leaves = lambda t: [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(t))]
np.savez(sys.argv[1], *leaves(one), *leaves(split))
"""


@pytest.mark.slow
def test_precise_bn_on_four_devices_gives_the_statistics_of_one(cli, tmp_path):
    """Each batch's statistics are over its 32 rows whether one device holds them or four
    hold 8 each; only the order of float additions differs (partial sums, then an
    all-reduce): within 1e-5 of the largest statistic, where float32 sums of a few
    thousand O(1) terms in another order differ by about 1e-6 of it."""
    out = tmp_path / "stats.npz"
    result = cli.run(["-c", _PRECISE_BN_ON_A_MESH, str(out)], env=FOUR)
    assert result.returncode == 0, result.stderr
    arrays = list(np.load(out).values())
    one, split = arrays[:len(arrays) // 2], arrays[len(arrays) // 2:]
    assert len(one) == len(split) == 14
    for a, b in zip(one, split):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
