"""Time one multi-seed train step for several K and each seed map (vmap, lax.map, unroll).

    python -m experiments.seed_step_time --num-seeds 1,8 --batch-size 128

Why: a full epoch of 8 seeds takes many minutes on a small CPU; the steady step time
(median of repeats, after compilation, one device-resident [K, B] batch) answers
"how much does a seed cost when batched with others" in seconds. Prints a table of
step time, time per seed-step, and the ratio to K=1 with the same seed map.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from typing import Sequence

import jax
import numpy as np

from mnist_plus import config as config_lib
from mnist_plus.training import multiseed
from mnist_plus.training.state import create_state
from mnist_plus.data import sampler
from mnist_plus.cli import config_from_args, config_parser, run_main
from mnist_plus.errors import UsageError
from mnist_plus.training.step import zero_train_metrics


def step_seconds(config, num_seeds: int, seed_map: str, repeats: int, steps: int) -> float:
    """Median seconds of one compiled K-seed step on random data of MNIST's shape."""
    b = config.batch_size
    rng = np.random.default_rng(0)
    batch = jax.device_put(sampler.make_batch(
        rng.normal(size=(num_seeds, b, 28, 28, 1)).astype(np.float32),
        rng.integers(0, 10, (num_seeds, b)), rng.integers(0, 10, (num_seeds, b)),
        mask=np.ones((num_seeds, b), np.float32)))
    state = jax.device_put(multiseed.stack(
        [create_state(dataclasses.replace(config, seed=s), 100) for s in range(num_seeds)]))
    metrics = jax.device_put(multiseed.stack([zero_train_metrics()] * num_seeds))
    step = multiseed.seeds_train_step(None, seed_map).lower(state, batch, metrics).compile()
    state, metrics = jax.block_until_ready(step(state, batch, metrics))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch, metrics)
        jax.block_until_ready((state, metrics))
        times.append((time.perf_counter() - t) / steps)
    return statistics.median(times)


def _main(argv: Sequence[str] | None) -> None:
    parser = config_parser("python -m experiments.seed_step_time", __doc__.splitlines()[0])
    parser.add_argument("--num-seeds", default="1,8", help="values of K, comma-separated")
    parser.add_argument("--seed-maps", default=",".join(config_lib.SEED_MAPS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    args = parser.parse_args(argv)
    try:
        ks = [int(k) for k in args.num_seeds.split(",")]
    except ValueError:
        raise UsageError(f"--num-seeds {args.num_seeds!r} is invalid: give integers") from None
    maps = args.seed_maps.split(",")
    if (min(ks) < 1 or set(maps) - set(config_lib.SEED_MAPS) or args.repeats < 1
            or args.steps < 1):
        raise UsageError("K, --repeats and --steps must be positive; seed maps are "
                         + ", ".join(config_lib.SEED_MAPS))
    config = config_from_args(args)
    print(f"backend {jax.default_backend()}, batch {config.batch_size} per seed, width "
          f"{config.width}; median of {args.repeats} x {args.steps} steps")
    print(f"{'map':>5} {'K':>3} {'step ms':>9} {'ms/seed':>8} {'vs K=1':>7}")
    for seed_map in maps:
        base = None
        for k in ks:
            s = step_seconds(config, k, seed_map, args.repeats, args.steps)
            base = base or (s if k == 1 else None)
            ratio = f"{s / base:.2f}x" if base else "-"
            print(f"{seed_map:>5} {k:>3} {s * 1e3:>9.1f} {s * 1e3 / k:>8.1f} {ratio:>7}",
                  flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_main(_main, argv))


if __name__ == "__main__":
    main()
