"""Does an exponential moving average (EMA) of the weights raise test accuracy?

    MNIST_PLUS_MNIST_DIR=/path/to/mnist python -m experiments.ema --seeds 0,1 \
        --json experiments/results/ema.json

Trains the default config per seed (the host loop's batches, `train_step` unchanged) and
keeps, beside the trained variables, one EMA of params and BatchNorm statistics per decay,
updated after every step inside the same jitted program. After each epoch it evaluates
the raw variables and every EMA on the test set, so each comparison is within one run:
same data, same steps, only the averaging differs.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Sequence

import jax

from mnist_plus import configs
from mnist_plus import config as config_lib
from mnist_plus.data import mnist as data
from mnist_plus.training import evaluation
from mnist_plus.data import sampler
from mnist_plus.training import state as state_lib
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.training.step import train_step, zero_train_metrics


def ema_update(decay: float, average: Any, current: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, x: decay * a + (1 - decay) * x, average, current)


def _accuracies(sums: dict[str, float]) -> dict[str, float]:
    """Test digit and sum accuracy, as training's metrics.jsonl derives them."""
    test = metrics_lib.summarise("test", sums)
    return {"digit": test["test_digit_accuracy"], "sum": test["test_sum_accuracy"]}


def run(config: config_lib.Config, decays: Sequence[float], mnist: data.Mnist,
        log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per epoch: test accuracies of the raw variables and of each decay's EMA."""
    images = sampler.normalise(mnist.train_images)
    steps = sampler.steps_per_epoch(len(images), config.batch_size)
    state = state_lib.create_state(config, steps)
    evaluator = evaluation.evaluator_for(config, mnist.test_images, mnist.test_labels)

    def step(state, averages, batch, metrics):
        state, metrics = train_step(state, batch, metrics)
        return state, [ema_update(d, a, state.variables) for d, a in zip(decays, averages)], \
            metrics

    step = jax.jit(step, donate_argnums=(0, 1, 3))
    # Copies: the step donates the state's buffers and the averages' separately.
    averages = [jax.device_put(state.variables, may_alias=False) for _ in decays]
    rows = []
    for epoch in range(config.epochs):
        metrics = zero_train_metrics()
        for batch in sampler.train_batches(images, mnist.train_labels, config.seed, epoch,
                                           config.batch_size, augment=sampler.augment_for(config)):
            state, averages, metrics = step(state, averages, jax.device_put(batch), metrics)
        row = {"seed": config.seed, "epoch": epoch + 1,
               "raw": _accuracies(evaluator.metrics(state))}
        for d, a in zip(decays, averages):
            row[f"ema{d:g}"] = _accuracies(evaluator.metrics(
                state.replace(params=a["params"], batch_stats=a["batch_stats"])))
        log("  ".join(f"{k} {v['digit']:.2%}/{v['sum']:.2%}" if isinstance(v, dict)
                      else f"{k} {v}" for k, v in row.items()))
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--decays", default="0.99,0.995,0.998,0.999",
                        help="comma-separated EMA decays per step")
    parser.add_argument("--epochs", type=int, default=config_lib.Config.epochs)
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_PLUS_MNIST_DIR", ""))
    parser.add_argument("--tfds-dir", default="")
    parser.add_argument("--preset", choices=configs.NAMES, default="conv_stem",
                        help="model and recipe (mnist_plus/configs/); the README's rows were made "
                             "with conv_stem")
    parser.add_argument("--json", default="", help="write every row here")
    args = parser.parse_args(argv)
    mnist = data.load_mnist(args.tfds_dir or None, args.mnist_dir or None)
    decays = [float(d) for d in args.decays.split(",")]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows += run(configs.get(args.preset, seed=seed, epochs=args.epochs), decays,
                    mnist)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
