import jax
import numpy as np
import pytest

from mnist_plus import config as config_lib
from mnist_plus import data, loops, sampler
from mnist_plus.state import create_state as initial_state
from mnist_plus.train_step import zero_train_metrics


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


def test_host_and_scan_loops_compute_the_same_training(prepared_tiny):
    mnist = data.load_mnist(prepared_tiny[0])
    config = config_lib.Config(epochs=2, batch_size=32, width=4, augment_shift=2)
    images = sampler.normalise(mnist.train_images)
    steps = sampler.steps_per_epoch(len(mnist.train_labels), config.batch_size)
    results = {}
    for name in ("host", "scan"):
        loop = loops.make_loop(name, images, mnist.train_labels, config.seed, config.batch_size,
                               config.augment_shift)
        state, sums = initial_state(config, steps), zero_train_metrics()
        for epoch in range(2):
            # Uneven pieces, as checkpoints every N steps would cut them.
            for start, stop in ((0, 3), (3, steps)):
                state, sums = loop.run(state, sums, epoch, start, stop)
        results[name] = jax.device_get((state.params, sums))
    (host_params, host_sums), (scan_params, scan_sums) = results["host"], results["scan"]
    assert host_sums["count"] == scan_sums["count"] == 2 * steps * 32
    np.testing.assert_allclose(host_sums["loss"], scan_sums["loss"], rtol=1e-4)
    assert host_sums["digit_correct"] == pytest.approx(scan_sums["digit_correct"], abs=2)
    for a, b in zip(jax.tree_util.tree_leaves(host_params),
                    jax.tree_util.tree_leaves(scan_params)):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3)


def test_split_at_multiples_cuts_where_checkpoints_and_logs_fall():
    # Epoch 1 of 8 steps, every 3 global steps: global steps 9, 12, 15 are steps 1, 4, 7.
    assert loops.split_at_multiples(0, 8, 3, offset=8) == [(0, 1), (1, 4), (4, 7), (7, 8)]
    assert loops.split_at_multiples(5, 8, 3, offset=8) == [(5, 7), (7, 8)]
    assert loops.split_at_multiples(2, 8, 0) == [(2, 8)]
    assert loops.split_at_multiples(0, 250, 100) == [(0, 100), (100, 200), (200, 250)]
