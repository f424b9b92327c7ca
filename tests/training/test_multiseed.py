"""Many seeds in one vmapped program: each seed equals a single-seed run of that seed."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mnist_plus import config as config_lib
from mnist_plus.data import mnist as data
from mnist_plus.training import multiseed, runs
from mnist_plus.data import quality, sampler
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.runtime.checkpointing import Checkpointer
from mnist_plus.training.state import create_state as initial_state
from mnist_plus.trainer import train_and_evaluate
from mnist_plus.training.step import zero_train_metrics
from tests.helpers import rounding
from tests.helpers import REPO

SEEDS = (0, 1)
STEPS_PER_EPOCH = 8  # 256 tiny train images at batch 32
TEST_EXAMPLES = 64
RUN_SEEDS = list(reversed(SEEDS))  # a seed's result must follow the seed, not its position
# How far outside the calibrated bound a genuinely wrong run must land: a seed that
# got another seed's data or state would pass a bound 10x looser still.
FAR = 10


def _config(tfds_dir: str) -> config_lib.Config:
    # No recomputed BatchNorm statistics: the calibration retrains with the bare step
    # (tests/helpers/rounding.py), whose statistics are the running averages.
    return config_lib.Config(epochs=2, batch_size=32, width=4, adder_hidden=16,
                             eval_batch_size=48, tfds_dir=tfds_dir, loop="host",
                             progress=False, precise_bn=0)


@pytest.fixture(scope="module")
def single_runs(prepared_tiny, tmp_path_factory):
    """{seed: (metrics.jsonl rows, final state)} of `train_and_evaluate`, one run per seed."""
    tfds_dir, _ = prepared_tiny
    runs = {}
    for seed in SEEDS:
        # No report: it is not what these tests check, and it cost 5-15 s a run (measured).
        config = dataclasses.replace(_config(tfds_dir), seed=seed, report=False)
        workdir = str(tmp_path_factory.mktemp(f"seed{seed}"))
        train_and_evaluate(config, workdir, log=lambda s: None)
        rows = metrics_lib.JsonlLog(os.path.join(workdir, "metrics.jsonl")).read()
        checkpointer = Checkpointer(workdir, 3)
        state, _, _ = checkpointer.restore(initial_state(config, 8), zero_train_metrics(), config)
        checkpointer.close()
        runs[seed] = (rows, state)
    return runs


@pytest.fixture(scope="module")
def calibration(prepared_tiny):
    """{seed: {state_bound, row_bounds, reference run, wrong runs}}, measured here.

    Each seed's single run is retrained (16 steps, in this process) unperturbed and
    under each of `rounding.PERTURBATIONS`: how far those land from it is how far
    another float order may move this run on this CPU (see tests/helpers/rounding.py).
    Also three wrong runs that the bounds must reject: another data stream, and one
    step more or fewer.
    """
    tfds_dir, _ = prepared_tiny
    mnist = data.load_mnist(tfds_dir)
    images = sampler.normalise(mnist.train_images)
    out = {}
    for seed in SEEDS:
        config = dataclasses.replace(_config(tfds_dir), seed=seed)
        evaluate = rounding.evaluator(mnist.test_images, mnist.test_labels, seed,
                                      config.eval_batch_size)
        start = initial_state(config, STEPS_PER_EPOCH)

        def run(state=start, data_seed=seed, **kw):
            state, rows, kept = rounding.train_epochs(
                state, images, mnist.train_labels, data_seed, config.epochs,
                config.batch_size, sampler.augment_for(config), evaluate=evaluate,
                label_smoothing=config.label_smoothing, **kw)
            return rounding.float_leaves(state), rows, kept

        steps = config.epochs * STEPS_PER_EPOCH
        # The reference goes on one step too far, keeping its states one step short
        # and on time: three runs for the price of one.
        # (Its rows are those of epochs 1 and 2: the extra step comes after them.)
        longer, reference_rows, kept = run(extra_steps=1, keep=(steps - 1, steps))
        reference = rounding.float_leaves(kept[steps])
        perturbed = [run(start if ulp is None else rounding.nudged(start, ulp), reorder=reorder)
                     for _, ulp, reorder in rounding.PERTURBATIONS]
        out[seed] = dict(
            state_bound=rounding.state_bound(reference, [p[0] for p in perturbed], steps),
            row_bounds=rounding.row_bounds(reference_rows, [p[1] for p in perturbed],
                                           len(mnist.train_labels), TEST_EXAMPLES),
            reference=(reference, reference_rows),
            wrong={"another data stream": run(data_seed=seed + 100)[:2],
                   "one step more": (longer, None),
                   "one step fewer": (rounding.float_leaves(kept[steps - 1]), None)})
    return out


def _assert_rows_match(rows, expected, bounds):
    """Epochs and steps exactly; float values within the seed's calibrated bounds."""
    assert [(r["epoch"], r["step"]) for r in rows] == [(r["epoch"], r["step"]) for r in expected]
    assert rounding.row_excess(rows, expected, bounds) <= 1, (rows, expected, bounds)


@pytest.fixture(scope="module")
def seeds_runs(prepared_tiny, tmp_path_factory):
    """`_seeds_run` of `_config` and `RUN_SEEDS`, by (seed map, --precise-bn), each made
    when first asked for: the precise-BN test reuses the equality test's plain runs."""
    made = {}

    def get(seed_map: str, precise_bn: int = 0):
        if (seed_map, precise_bn) not in made:
            config = dataclasses.replace(_config(prepared_tiny[0]), precise_bn=precise_bn)
            workdir = tmp_path_factory.mktemp(f"{seed_map}_{precise_bn}")
            made[seed_map, precise_bn] = _seeds_run(config, RUN_SEEDS, workdir, seed_map)
        return made[seed_map, precise_bn]

    return get


def _seeds_run(config, seeds, workdir, seed_map="vmap"):
    """(metrics.jsonl rows, the final stacked state, summary.json) of a K-seed run of the
    trainer (`train_and_evaluate(..., seeds=...)`)."""
    summary = train_and_evaluate(dataclasses.replace(config, report=False), str(workdir),
                                 seeds=seeds, seed_map=seed_map, log=lambda s: None)
    rows = metrics_lib.JsonlLog(os.path.join(workdir, "metrics.jsonl")).read()
    template = multiseed.stack([initial_state(dataclasses.replace(config, seed=s),
                                              STEPS_PER_EPOCH) for s in seeds])
    sums = multiseed.stack([zero_train_metrics()] * len(seeds))
    checkpointer = Checkpointer(str(workdir), 3, seeds=list(seeds))
    state, _, _ = checkpointer.restore(template, sums, config)
    checkpointer.close()
    return rows, state, summary


@pytest.mark.slow
@pytest.mark.parametrize("seed_map", config_lib.SEED_MAPS)
def test_each_seed_equals_its_single_run(single_runs, calibration, seeds_runs, seed_map):
    seeds = RUN_SEEDS
    rows, state, summary = seeds_runs(seed_map)
    assert len(rows) == 2 * len(seeds) and summary["seeds"] == seeds
    for i, seed in enumerate(seeds):
        expected_rows, expected_state = single_runs[seed]
        mine = [{k: v for k, v in r.items() if k != "seed"} for r in rows if r["seed"] == seed]
        _assert_rows_match(mine, expected_rows, calibration[seed]["row_bounds"])
        got = multiseed.unstack(state, i)
        assert int(got.step) == int(expected_state.step) == 16
        leaves = rounding.float_leaves(got)
        bound = calibration[seed]["state_bound"]
        assert rounding.excess(leaves, rounding.float_leaves(expected_state), bound) <= 1, (
            rounding.leaf_gaps(leaves, rounding.float_leaves(expected_state)) / bound)
    # The seeds really differ (no seed's state was broadcast to the others).
    seed0, seed1 = (rounding.float_leaves(multiseed.unstack(state, i)) for i in (0, 1))
    assert rounding.excess(seed0, seed1, calibration[seeds[1]]["state_bound"]) >= FAR
    # The summary's mean and sample deviation are those of the final rows.
    final = [r["test_sum_accuracy"] for r in rows if r["epoch"] == 2]
    mean, std = summary["final_mean_std"]["test_sum_accuracy"]
    assert np.isclose(mean, np.mean(final)) and np.isclose(std, np.std(final, ddof=1))


@pytest.mark.slow
@pytest.mark.parametrize("seed_map", config_lib.SEED_MAPS)
def test_precise_bn_gives_each_seed_the_statistics_a_single_run_computes(prepared_tiny,
                                                                        seeds_runs, seed_map):
    """With --precise-bn every seed's BatchNorm statistics are recomputed from the same
    clean images before each evaluation. Training never reads them, so the parameters
    equal those of the same seeds trained without the flag, bit for bit; each seed's
    statistics are what `batch_stats.PreciseBatchStats` computes for that seed's state,
    within 1e-5 of the largest (the vmapped or mapped pass sums in another float order:
    float32 sums of a few thousand O(1) terms differ by about 1e-6 of them)."""
    import jax

    from mnist_plus.training import batch_stats

    tfds_dir, _ = prepared_tiny
    mnist = data.load_mnist(tfds_dir)
    config = _config(tfds_dir)
    (plain_rows, plain, _), (precise_rows, precise, _) = (seeds_runs(seed_map, n)
                                                          for n in (0, 96))
    leaves = lambda tree: [np.asarray(x) for x in jax.tree_util.tree_leaves(  # noqa: E731
        jax.device_get(tree))]
    for a, b in zip(leaves(plain.params), leaves(precise.params)):
        assert np.array_equal(a, b)
    single = batch_stats.PreciseBatchStats(mnist.train_images, 96, config.batch_size)
    for i in range(len(RUN_SEEDS)):
        expected = leaves(single(multiseed.unstack(plain, i)).batch_stats)
        got = leaves(multiseed.unstack(precise, i).batch_stats)
        running = leaves(multiseed.unstack(plain, i).batch_stats)
        assert len(got) == len(expected) > 0
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-5 * np.abs(e).max())
        # Not the running averages: the pass changed what is evaluated.
        assert max(np.abs(g - r).max() / np.abs(r).max() for g, r in zip(got, running)) > 1e-2
    # ...and so the test rows: the same training, other statistics.
    assert [r["train_loss"] for r in plain_rows] == [r["train_loss"] for r in precise_rows]
    assert [r["test_loss"] for r in plain_rows] != [r["test_loss"] for r in precise_rows]


@pytest.mark.slow
def test_calibrated_bounds_reject_wrong_runs(single_runs, calibration):
    """The self-calibrated tolerance still catches real bugs: another seed's run,
    another data stream, one step more or fewer land far outside it."""
    for seed in SEEDS:
        bound, bounds = calibration[seed]["state_bound"], calibration[seed]["row_bounds"]
        reference, reference_rows = calibration[seed]["reference"]
        expected_rows, expected_state = single_runs[seed]
        expected = rounding.float_leaves(expected_state)
        # The in-test retrain is the single run (same step function, same batches).
        assert rounding.excess(reference, expected, bound) <= 1
        other_rows, other_state = single_runs[1 - seed]
        assert rounding.excess(rounding.float_leaves(other_state), expected, bound) >= FAR
        assert rounding.row_excess(other_rows, expected_rows, bounds,
                                   rounding.LOSS_KEYS) >= FAR
        leaves, rows = calibration[seed]["wrong"]["another data stream"]
        assert rounding.excess(leaves, reference, bound) >= FAR
        assert rounding.row_excess(rows, reference_rows, bounds, rounding.LOSS_KEYS) >= FAR
        for name in ("one step more", "one step fewer"):
            # At the end of the one-cycle schedule a step moves the parameters by
            # ~lr/25000, but Adam's moments and BatchNorm's running statistics by
            # ~10%; the exact step counts catch it too.
            leaves, _ = calibration[seed]["wrong"][name]
            assert rounding.excess(leaves, reference, bound) >= FAR, name


QUALITY = sampler.Augment(shift=1, rotate=10.0, **{n: 0.5 for n in quality.QUALITY_FAMILIES})


@pytest.mark.parametrize("augment", [
    sampler.Augment(shift=2, rotate=10.0, scale=0.1, shear=0.1, elastic=1.0), QUALITY])
def test_stacked_batches_are_each_seeds_host_loop_batches(augment):
    images = sampler.normalise(np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1),
                                                                 dtype=np.uint8))
    labels = np.arange(40, dtype=np.int32) % 10
    seeds = [3, 5, 8]
    plans = multiseed.epoch_plans(seeds, 2, labels, augment=augment, holdout="random20")
    for step in range(4):
        stacked = multiseed.stacked_batch(images, labels, plans, step, 8, augment=augment,
                                          seeds=seeds, epoch=2)
        assert stacked.image.shape == (3, 8, 28, 28, 1) and stacked.mask.shape == (3, 8)
        for i, seed in enumerate(seeds):
            single = list(sampler.train_batches(
                images, labels, seed, 2, 8, augment=augment,
                held_out=sampler.held_out_pairs("random20", seed)))[step]
            for got, want in zip(stacked, single):
                np.testing.assert_array_equal(got[i], want)


def test_mean_std_uses_the_sample_deviation():
    stats = runs.mean_std([{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], ["a"])
    assert stats["a"] == (2.0, 1.0)
    assert runs.mean_std([{"a": 0.5}], ["a"])["a"] == (0.5, 0.0)


@pytest.mark.slow
def test_train_seeds_cli_shards_seeds_over_two_devices_and_resumes(prepared_tiny, single_runs,
                                                                   calibration, tmp_path):
    tfds_dir, _ = prepared_tiny
    workdir = tmp_path / "seeds"
    c = _config(tfds_dir)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    flags = ["-m", "mnist_plus.train", "--seeds", ",".join(map(str, SEEDS)), "--epochs",
             str(c.epochs), "--batch-size", str(c.batch_size), "--width", str(c.width),
             "--adder-hidden", str(c.adder_hidden), "--eval-batch-size", str(c.eval_batch_size),
             "--precise-bn", str(c.precise_bn), "--tfds-dir", tfds_dir, "--workdir",
             str(workdir), "--no-report", "--log-every-steps", "0"]
    # with the progress bar, as a user runs it
    result = subprocess.run([sys.executable, *flags], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 seeds [0, 1] in one program (unroll) on 2 of 2 cpu device(s)" in result.stdout
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for seed in SEEDS:
        mine = [{k: v for k, v in r.items() if k != "seed"} for r in rows if r["seed"] == seed]
        _assert_rows_match(mine, single_runs[seed][0], calibration[seed]["row_bounds"])
    summary = json.loads((workdir / "summary.json").read_text())
    final = [r["test_sum_accuracy"] for r in rows if r["epoch"] == 2]
    assert np.isclose(summary["final_mean_std"]["test_sum_accuracy"][0], np.mean(final))
    assert summary["num_devices"] == 2 and summary["seeds"] == list(SEEDS)
    # Rerun: finished, nothing to do; with other seeds: refused in one line.
    again = subprocess.run([sys.executable, *flags], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    flags[flags.index("--seeds") + 1] = "0-2"
    other = subprocess.run([sys.executable, *flags], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert other.returncode == 2 and "rerun with the same --seeds" in other.stderr, other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0,x"], "'0,x' is not a seed range or list"),
    (["--seeds", "1,1"], "'1,1' is not a seed range or list"),
    (["--seeds", "0-1", "--seed-map", "pmap"], "invalid choice: 'pmap'"),
])
def test_bad_seeds_flags_are_one_line(flags, message, capsys):
    from mnist_plus import train

    assert train.main(flags) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
