"""Train K seeds of one config at once (jax.vmap over seeds) and tabulate mean ± std.

    python -m experiments.seeds --num-seeds 8 --epochs 1 --out runs/seeds8

One program trains every seed (`--seed-map vmap`, the default, or `map`), sharded over
the seed axis where there are several devices (see mnist_plus/training/multiseed.py).

Every config flag of `python -m mnist_plus.train` applies (`--seed` is the first seed
of `--num-seeds`; `--seeds 0,3,7` picks them instead). Writes to `--out`:
  per_seed.jsonl  one line per seed per epoch: the seed and the keys of metrics.jsonl
  table.md        final metrics per seed, and mean ± standard deviation over seeds
  timing.json     compile, epoch and evaluation seconds, devices used
Each seed's numbers equal a single `python -m mnist_plus.train --seed S` run's (up to
float summation order). No checkpoints are written: a killed run starts over.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Sequence

from mnist_plus.data import mnist as data
from mnist_plus.training import multiseed
from mnist_plus.cli import config_from_args, config_parser, run_main
from mnist_plus.errors import UsageError

TABLE_KEYS = ("test_digit_accuracy", "test_sum_accuracy", "test_exhaustive_sum_accuracy",
              "test_loss", "train_loss", "test_sum_agreement")


def parse_args(argv: Sequence[str] | None = None):
    parser = config_parser("python -m experiments.seeds",
                           "Train several seeds of one config as one vmapped program and "
                           "report per-seed metrics and their mean and standard deviation.")
    group = parser.add_argument_group("seeds")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--seeds", default="", help="comma-separated seeds, e.g. 0,1,2")
    choice.add_argument("--num-seeds", type=int, default=0,
                        help="train seeds --seed, --seed + 1, ..., --seed + K - 1")
    group.add_argument("--seed-map", choices=multiseed.SEED_MAPS, default="vmap",
                       help="how the program runs the seeds: vmap (batched into wide ops) "
                            "or map (lax.map, one seed after another; faster on CPU, where "
                            "vmapped convolutions are slow)")
    group.add_argument("--train-examples", type=int, default=0,
                       help="train on the first N training examples only (0: all)")
    group.add_argument("--out", default="runs/seeds", help="folder for the results")
    args = parser.parse_args(argv)
    if args.loop == "scan":
        raise UsageError("--loop scan is not available here: the seeds are fed from the host "
                         "(pass --loop host or leave it out)")
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds {args.seeds!r} is invalid: give integers like "
                             f"0,1,2") from None
    else:
        if args.num_seeds < 0:
            raise UsageError(f"--num-seeds {args.num_seeds} is invalid: it must be positive")
        seeds = list(range(args.seed, args.seed + (args.num_seeds or 1)))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"seeds {seeds} are invalid: give distinct non-negative integers")
    if args.train_examples < 0:
        raise UsageError(f"--train-examples {args.train_examples} is invalid: it must be >= 0")
    args.seed_list = seeds
    return args


def format_table(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    """Markdown: the final epoch per seed, then mean ± std over seeds (in percent)."""
    final = [r for r in rows if r["epoch"] == max(x["epoch"] for x in rows)]
    pct = lambda k: "loss" not in k  # noqa: E731
    fmt = lambda k, v: f"{100 * v:.2f}%" if pct(k) else f"{v:.4f}"  # noqa: E731
    lines = ["| seed | " + " | ".join(TABLE_KEYS) + " |",
             "|---|" + "---|" * len(TABLE_KEYS)]
    for r in final:
        lines.append(f"| {r['seed']} | " + " | ".join(fmt(k, r[k]) for k in TABLE_KEYS) + " |")
    stats = multiseed.mean_std(final, TABLE_KEYS)
    lines += ["", f"Epoch {final[0]['epoch']}, {len(seeds)} seeds {seeds}: mean ± sample "
              f"standard deviation", "", "| metric | mean | std |", "|---|---|---|"]
    for k, (mean, std) in stats.items():
        spread = "n/a (one seed)" if len(final) == 1 else fmt(k, std)
        lines.append(f"| {k} | {fmt(k, mean)} | {spread} |")
    return "\n".join(lines) + "\n"


def _main(argv: Sequence[str] | None) -> None:
    args = parse_args(argv)
    config = config_from_args(args)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --out {args.out} ({e.strerror})") from None
    t0 = time.time()
    mnist = data.load_mnist(config.tfds_dir or None, config.mnist_dir or None)
    if args.train_examples:
        n = args.train_examples
        mnist = data.Mnist(mnist.train_images[:n], mnist.train_labels[:n],
                           mnist.test_images, mnist.test_labels)
    print(f"data: {len(mnist.train_labels)} train / {len(mnist.test_labels)} test images "
          f"loaded in {time.time() - t0:.2f}s", flush=True)

    bar = None

    def progress(epoch: int):
        nonlocal bar
        if not config.progress:
            return lambda n: None
        from tqdm import tqdm

        if bar is not None:
            bar.close()
        bar = tqdm(total=len(mnist.train_labels) // config.batch_size, unit="step",
                   desc=f"epoch {epoch + 1}", leave=False, file=sys.stderr)

        def advance(n: int) -> None:
            bar.update(n)  # not returned: a true result stops the epoch (loops.Progress)
        return advance

    result = multiseed.train_seeds(config, args.seed_list, mnist, seed_map=args.seed_map,
                                   log=lambda s: print(s, flush=True), progress=progress)
    if bar is not None:
        bar.close()
    with open(os.path.join(args.out, "per_seed.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in result.rows)
    table = format_table(result.rows, result.seeds)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table)
    timing = {**result.timing, "wall_seconds": time.time() - t0,
              "nonfinite_steps": result.nonfinite_steps}
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        json.dump(timing, f, indent=2)
    print(table, flush=True)
    t = result.timing
    print(f"compile {t['compile_seconds']:.1f}s; train "
          + ", ".join(f"{s:.1f}s" for s in t["epoch_seconds"]) + " per epoch ("
          + ", ".join(f"{v:.0f}" for v in t["seed_images_per_second"])
          + " seed-images/s); results in " + os.path.abspath(args.out), flush=True)
    for seed, step in result.nonfinite_steps.items():
        print(f"warning: seed {seed}'s loss became NaN or infinite at step {step}",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_main(_main, argv))


if __name__ == "__main__":
    main()
