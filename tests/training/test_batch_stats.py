"""--precise-bn: BatchNorm statistics recomputed from clean training images after each
epoch (mnist_plus/batch_stats.py)."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import precise_bn as precise_bn_experiment
from mnist_plus.training import batch_stats
from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus import config as config_lib
from mnist_plus.errors import UsageError
from mnist_plus.model import BN_MOMENTUM
from mnist_plus.training.state import create_state
from tests.helpers import (TINY_STEPS_PER_EPOCH, final_state_leaves, tiny_config,
                            tiny_flags, train_in_process)


def _state_and_images(batch_size=8, n=16):
    config = config_lib.Config(width=4, batch_size=batch_size)
    state = create_state(config, steps_per_epoch=4)
    images = np.random.default_rng(0).integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    return state, images


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def test_one_batch_gives_the_statistics_flax_averages_in_training_mode():
    """Recovered from Flax's own update of the running averages (from the initial ones,
    mean 0 and variance 1): new = m * old + (1 - m) * batch. That path rounds three
    times in float32 and divides by 1 - m = 0.1, so it is within about 10 * 3 ulp of
    max(1, |batch|): 2e-6 relative to that; 1e-5 leaves a margin of 5."""
    state, images = _state_and_images()
    precise = batch_stats.PreciseBatchStats(images, 8, 8)(state)
    _, updated = state.apply_fn(state.variables, sampler.normalise(images[:8]), True,
                                method=lambda model, x, train: model.digit_net(x, train),
                                mutable=["batch_stats"])
    expected = jax.tree_util.tree_map(
        lambda new, old: (new - BN_MOMENTUM * old) / (1 - BN_MOMENTUM),
        updated["batch_stats"], state.batch_stats)
    got, want = _leaves(precise.batch_stats), _leaves(expected)
    assert len(got) == len(want) == 2 * 7  # mean and var: the stem, 4 blocks, 2 'same' blocks
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    # Statistics of real activations, not the initial ones; nothing else changes.
    assert not np.allclose(got[0], 0.0)
    for a, b in zip(_leaves((state.params, state.opt_state, state.step)),
                    _leaves((precise.params, precise.opt_state, precise.step))):
        np.testing.assert_array_equal(a, b)


def test_several_batches_give_the_mean_of_their_statistics_and_only_whole_batches_count():
    state, images = _state_and_images()
    first = batch_stats.PreciseBatchStats(images[:8], 8, 8)(state).batch_stats
    second = batch_stats.PreciseBatchStats(images[8:], 8, 8)(state).batch_stats
    both = batch_stats.PreciseBatchStats(images, 16, 8)
    # The same sums, but XLA may fuse a batch's scaling into the addition (an FMA, one
    # rounding where the reference has two): within 2 eps of the larger term.
    eps = np.finfo(np.float32).eps
    for g, a, b in zip(_leaves(both(state).batch_stats), _leaves(first), _leaves(second)):
        np.testing.assert_allclose(g, (a + b) / np.float32(2), rtol=0,
                                   atol=2 * eps * np.maximum(abs(a), abs(b)).max())
        assert not np.array_equal(a, b)  # two batches, two sets of statistics
    partial = batch_stats.PreciseBatchStats(images, 12, 8)
    assert partial.num_examples == 8
    for g, a in zip(_leaves(partial(state).batch_stats), _leaves(first)):
        np.testing.assert_array_equal(g, a)  # the same program on the same batch
    # More images asked for than the training set holds (the default's 10,000 on a small
    # set): all of them, in whole batches, are what the two-batch pass above read.
    everything = batch_stats.PreciseBatchStats(images, 10_000, 8)
    assert everything.num_examples == 16 == len(images)
    for g, a in zip(_leaves(everything(state).batch_stats), _leaves(both(state).batch_stats)):
        np.testing.assert_array_equal(g, a)


def test_a_many_seeds_run_checks_precise_bn_as_a_single_run_does(tmp_path):
    """A bad --precise-bn is one line before any data is read (its working case:
    tests/training/test_multiseed.py)."""
    from mnist_plus.trainer import train_and_evaluate

    for value in (16, 0.5):
        with pytest.raises(UsageError, match=f"--precise-bn {value} is invalid"):
            train_and_evaluate(config_lib.Config(precise_bn=value), str(tmp_path), seeds=[0, 1])


@pytest.fixture(scope="module")
def precise_run(prepared_tiny, tmp_path_factory) -> str:
    """Workdir of an uninterrupted in-process run of `tiny_config` with --precise-bn 64."""
    from mnist_plus.trainer import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("precise"))
    train_and_evaluate(tiny_config(prepared_tiny, precise_bn=64), workdir, log=lambda s: None)
    return workdir


@pytest.mark.slow
def test_precise_bn_changes_what_is_evaluated_and_saved_not_the_training(
        prepared_tiny, reference_run, precise_run):
    """Training normalises with each batch's own statistics, so the recomputed ones never
    reach a gradient: parameters and optimiser state end bit for bit as without them."""
    config = tiny_config(prepared_tiny, precise_bn=64)
    workdir = precise_run
    with_pbn, _ = final_state_leaves(workdir, config)
    without, _ = final_state_leaves(reference_run, tiny_config(prepared_tiny))
    state = create_state(config, TINY_STEPS_PER_EPOCH)
    n_params = len(jax.tree_util.tree_leaves(state.params))
    n_stats = len(jax.tree_util.tree_leaves(state.batch_stats))
    for a, b in zip(with_pbn[:n_params] + with_pbn[n_params + n_stats:],
                    without[:n_params] + without[n_params + n_stats:]):
        np.testing.assert_array_equal(a, b)
    stats = list(zip(with_pbn[n_params:n_params + n_stats], without[n_params:n_params + n_stats]))
    assert any(not np.array_equal(a, b) for a, b in stats)
    rows = [[json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
            for w in (workdir, reference_run)]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]
    # So experiments/precise_bn.py, recomputing the statistics of the run without them,
    # scores what the run with them scored, and the run without them before that.
    mnist = data.load_mnist(*prepared_tiny)
    row = precise_bn_experiment.compare(reference_run, 64, mnist)
    for key in precise_bn_experiment.KEYS:
        assert row["before"][key] == rows[1][-1][key]
        assert row["after"][key] == rows[0][-1][key]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_with_precise_bn_resumes_to_the_uninterrupted_one(
        cli, prepared_tiny, precise_run, tmp_path):
    """The mid-epoch checkpoint holds running averages; the epoch's end replaces them with
    statistics that depend on the parameters alone, so the resumed run ends as the
    uninterrupted one, bit for bit, metrics included."""
    workdir = tmp_path / "run"
    flags = tiny_flags(prepared_tiny, workdir, "--checkpoint-every-steps", "2",
                       "--precise-bn", "64")
    killed = cli.crash(["--after-steps", "13"], flags)
    assert killed.returncode == -9, killed.stderr
    resumed = train_in_process(*flags)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint at step" in resumed.stdout
    config = tiny_config(prepared_tiny, precise_bn=64)
    for a, b in zip(final_state_leaves(workdir, config)[0],
                    final_state_leaves(precise_run, config)[0]):
        np.testing.assert_array_equal(a, b)
    assert (open(workdir / "metrics.jsonl").read()
            == open(os.path.join(precise_run, "metrics.jsonl")).read())
