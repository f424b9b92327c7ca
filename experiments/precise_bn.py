"""Would `--precise-bn` have changed a finished run's test accuracy?

    MNIST_PLUS_MNIST_DIR=/path/to/mnist python -m experiments.precise_bn \
        --examples 10000 --json runs/precise_bn.json runs/accuracy/runs/*/s*

For each trained workdir: the newest checkpoint's test metrics with the BatchNorm
statistics it holds (the running averages of training's batches, unless it was trained
with `--precise-bn`), and again with them recomputed by `batch_stats.PreciseBatchStats`
from the first N clean training images at the run's batch size: what `--precise-bn N`
does after the last epoch. The parameters are the same, so each pair differs only in
the statistics. Training ignores those statistics, so this is also what the run would
have ended at with `--precise-bn N` (up to the last bits).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

from mnist_plus.training import batch_stats
from mnist_plus.data import mnist as data
from mnist_plus.training import evaluation
from mnist_plus.tools import trained
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.training.state import TrainState

KEYS = ("test_digit_accuracy", "test_sum_accuracy")


def compare(workdir: str, examples: int, mnist: data.Mnist) -> dict[str, Any]:
    """One row: the run's fields, and its test metrics before and after the recompute."""
    run = trained.load(workdir)
    state = TrainState(step=run.step, params=run.variables["params"],
                       batch_stats=run.variables["batch_stats"], opt_state=None,
                       apply_fn=run.model.apply, tx=None)
    evaluator = evaluation.evaluator_for(run.config, mnist.test_images, mnist.test_labels)
    before = metrics_lib.summarise("test", evaluator.metrics(state))
    recompute = batch_stats.PreciseBatchStats(mnist.train_images, examples,
                                              run.config.batch_size)
    after = metrics_lib.summarise("test", evaluator.metrics(recompute(state)))
    return {"workdir": workdir, "seed": run.config.seed, "epoch": run.epoch,
            "examples": recompute.num_examples,
            "before": {k: before[k] for k in KEYS}, "after": {k: after[k] for k in KEYS}}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="trained workdirs")
    parser.add_argument("--examples", type=int, default=10000,
                        help="clean training images the statistics are recomputed from")
    parser.add_argument("--tfds-dir", default="")
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_PLUS_MNIST_DIR", ""))
    parser.add_argument("--json", default="", help="write every row here")
    args = parser.parse_args(argv)
    mnist = data.load_mnist(args.tfds_dir or None, args.mnist_dir or None)
    rows = []
    for workdir in args.workdirs:
        row = compare(workdir, args.examples, mnist)
        rows.append(row)
        b, a = row["before"], row["after"]
        print(f"{workdir}: digit {100 * b[KEYS[0]]:.2f} -> {100 * a[KEYS[0]]:.2f}, "
              f"sum {100 * b[KEYS[1]]:.2f} -> {100 * a[KEYS[1]]:.2f}", flush=True)
    for key in KEYS:
        deltas = [100 * (r["after"][key] - r["before"][key]) for r in rows]
        print(f"{key}: mean change {sum(deltas) / len(deltas):+.3f} points over "
              f"{len(rows)} runs (min {min(deltas):+.2f}, max {max(deltas):+.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
