import jax
import numpy as np
import pytest

from mnist_plus import configs
from mnist_plus.data import mnist as data
from mnist_plus.training import loops
from mnist_plus.data import sampler
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.training.state import create_state as initial_state
from mnist_plus.training.step import zero_train_metrics
from tests.helpers import rounding


def test_auto_picks_the_loop_measured_fastest_per_backend():
    assert loops.choose_loop("auto", "cpu") == "host"
    assert loops.choose_loop("auto", "gpu") == "scan"
    assert loops.choose_loop("scan", "cpu") == "scan"


def test_prefetch_yields_everything_in_order_and_reraises():
    assert [int(x) for x in loops.prefetch(iter(np.arange(7)))] == list(range(7))

    def broken():
        yield np.zeros(1)
        raise RuntimeError("sampler broke")

    with pytest.raises(RuntimeError, match="sampler broke"):
        list(loops.prefetch(broken()))


@pytest.mark.slow
def test_host_and_scan_loops_compute_the_same_training(prepared_tiny):
    mnist = data.load_mnist(prepared_tiny[0])
    # `lean`'s recipe (shifts only, plain cross-entropy, 16 wide): with the default's on
    # this tiny set, the calibrated bound below grew until another data stream fell
    # inside it (0.9 of it, measured), so it would no longer catch a wrong loop.
    config = configs.get("lean", epochs=2, batch_size=32, width=4, augment_shift=2)
    images = sampler.normalise(mnist.train_images)
    steps = sampler.steps_per_epoch(len(mnist.train_labels), config.batch_size)
    results = {}
    for name in ("host", "scan"):
        loop = loops.make_loop(name, images, mnist.train_labels, config.seed, config.batch_size,
                               sampler.augment_for(config))
        state, sums = initial_state(config, steps), zero_train_metrics()
        for epoch in range(2):
            # Uneven pieces, as checkpoints every N steps would cut them.
            for start, stop in ((0, 3), (3, steps)):
                state, sums = loop.run(state, sums, epoch, start, stop)
        results[name] = (rounding.float_leaves(state), int(state.step), metrics_lib.to_host(sums))
    (host, host_steps, host_sums), (scan, scan_steps, scan_sums) = results["host"], results["scan"]
    examples = 2 * steps * config.batch_size
    assert host_steps == scan_steps == 2 * steps  # exact: counts
    assert host_sums["count"] == scan_sums["count"] == examples

    # The two loops are two compiled programs (a scan body fuses differently), so
    # they agree up to float order amplified by training: calibrate that here, on
    # this CPU, with the same run perturbed at the rounding level (tests/helpers/rounding.py).
    def run(state, **kw):
        state, rows, _ = rounding.train_epochs(
            state, images, mnist.train_labels, kw.pop("seed", config.seed), 2,
            config.batch_size, sampler.augment_for(config), **kw)
        loss = sum(r["train_loss"] for r in rows) / 2  # equal epochs: the 2-epoch mean
        digit_correct = round(sum(r["train_digit_accuracy"] for r in rows) * examples / 2)
        return rounding.float_leaves(state), loss, digit_correct

    initial = initial_state(config, steps)
    reference, loss, digit_correct = run(initial)
    perturbed = [run(initial if ulp is None else rounding.nudged(initial, ulp), reorder=reorder)
                 for _, ulp, reorder in rounding.PERTURBATIONS]
    bound = rounding.state_bound(reference, [p[0] for p in perturbed], 2 * steps)
    assert rounding.excess(host, reference, bound) <= 1  # the calibrated run is the host's
    assert rounding.excess(scan, host, bound) <= 1, rounding.leaf_gaps(scan, host) / bound
    # Mean loss: C x the perturbations' effect, plus float32 summation error of the
    # `examples` positive terms (<= examples * eps relative, Higham).
    loss_bound = (rounding.C * max(abs(p[1] - loss) for p in perturbed)
                  + examples * rounding.EPS32 * loss)
    assert abs(host_sums["loss"] - scan_sums["loss"]) / examples <= loss_bound
    # Correct predictions: as many flips as the perturbations caused (near-ties), plus
    # one (see rounding.row_bounds).
    flips = max(abs(p[2] - digit_correct) for p in perturbed) + 1
    assert abs(host_sums["digit_correct"] - scan_sums["digit_correct"]) <= flips
    # ... and the bounds still catch a real bug: another data stream is far outside.
    wrong, wrong_loss, _ = run(initial, seed=config.seed + 100)
    assert rounding.excess(wrong, reference, bound) >= 10
    assert abs(wrong_loss - loss) >= 10 * loss_bound


@pytest.mark.parametrize("augment", [
    sampler.Augment(shift=2), sampler.Augment(shift=1, rotate=10.0, scale=0.1, shear=0.1),
    sampler.Augment(shift=1, elastic=1.4)])
def test_the_scan_loop_builds_the_host_loops_batches(augment):
    # Bit for bit with integer shifts; with affine or elastic maps to float rounding
    # (NumPy's and XLA's operation orders may differ: `rounding.warp_bound`).
    rng = np.random.default_rng(0)
    images = sampler.normalise(rng.integers(0, 256, (96, 28, 28, 1)).astype(np.uint8))
    labels = rng.integers(0, 10, 96).astype(np.int32)
    permutation, numbers = sampler.epoch_plan(5, 3, 96, labels)
    shifts = sampler.epoch_shifts(5, 3, 96, augment.shift)
    maps = sampler.epoch_warps(5, 3, 96, augment)
    build = jax.jit(loops.device_batch, static_argnames=("batch_size", "augment"))
    host = list(sampler.train_batches(images, labels, 5, 3, 32, augment=augment))
    for step, want in enumerate(host):
        got = build(images, labels, permutation, numbers, shifts, maps, np.int32(step),
                    batch_size=32, augment=augment)
        for name in ("digit", "number", "sum", "mask"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        if augment.affine:
            idx = permutation[step * 32:(step + 1) * 32]
            bound = rounding.warp_bound(images[idx], maps[step * 32:(step + 1) * 32])
            np.testing.assert_allclose(got.image, want.image, rtol=0, atol=bound)
        else:
            np.testing.assert_array_equal(got.image, want.image)


def test_the_scan_loop_normalises_uint8_images_once_as_the_host_loop_does_per_batch():
    raw = np.random.default_rng(2).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(64) % 10
    loop = loops.make_loop("scan", raw, labels, 0, 32)
    assert loop.images.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(loop.images), sampler.normalise(raw))


def test_the_loop_pauses_where_checkpoints_logs_and_the_profile_window_fall():
    from mnist_plus.trainer import pauses

    # Epoch 1 of 8 steps, every 3 global steps: global steps 9, 12, 15 are steps 1, 4, 7.
    assert pauses(0, 8, 8, checkpoint_every=3, log_every=0) == [1, 4, 7, 8]
    assert pauses(5, 8, 8, checkpoint_every=3, log_every=0) == [7, 8]
    assert pauses(2, 8, 0, checkpoint_every=0, log_every=0) == [8]
    # Logs count steps within the epoch; the profile window's ends are global steps.
    assert pauses(0, 250, 250, 0, 100) == [100, 200, 250]
    assert pauses(0, 250, 250, 0, 100, profile_cuts=(259, 300)) == [9, 50, 100, 200, 250]
