"""How many epochs and parameters does it take? Final test accuracy against the length
of training and the model's width, over several seeds.

    python -m experiments.capacity [--widths 8,16,24] [--epochs 1,3,10] [--seeds 0,1]
                                   [--out experiments/results/capacity]

Each (width, epochs, seed) is its own run with its own one-cycle schedule, so "3
epochs" means a full 3-epoch schedule, not the third epoch of a longer one. Writes
results.jsonl, a markdown table (mean and sample standard deviation over seeds) and
capacity.png. Finished runs are kept in results.jsonl and not repeated.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from mnist_plus import configs
from mnist_plus.model import param_count
from mnist_plus.training.state import create_state
from mnist_plus.trainer import train_and_evaluate


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def table(rows: list[dict]) -> str:
    lines = ["| width | parameters | epochs | digit accuracy | sum accuracy | seeds |",
             "|---|---|---|---|---|---|"]
    keys = sorted({(r["width"], r["epochs"]) for r in rows})
    for width, epochs in keys:
        group = [r for r in rows if r["width"] == width and r["epochs"] == epochs]
        d = 100 * np.array([r["digit_accuracy"] for r in group])
        s = 100 * np.array([r["sum_accuracy"] for r in group])
        std = (lambda x: x.std(ddof=1)) if len(group) > 1 else (lambda x: 0.0)
        lines.append(f"| {width} | {group[0]['parameters']:,} | {epochs} | "
                     f"{d.mean():.2f} ± {std(d):.2f}% | {s.mean():.2f} ± {std(s):.2f}% | "
                     f"{len(group)} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "digit_accuracy", "digit head"),
                           (axes[1], "sum_accuracy", "sum head")):
        for width in sorted({r["width"] for r in rows}):
            epochs = sorted({r["epochs"] for r in rows if r["width"] == width})
            acc = [[100 * r[key] for r in rows if r["width"] == width and r["epochs"] == e]
                   for e in epochs]
            ax.errorbar(epochs, [np.mean(a) for a in acc],
                        yerr=[np.std(a, ddof=1) if len(a) > 1 else 0.0 for a in acc],
                        marker="o", capsize=3, label=f"width {width}")
        ax.set_title(f"Test accuracy, {title}")
        ax.set_xlabel("epochs (each a full one-cycle schedule)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="8,16,24")
    parser.add_argument("--epochs", default="1,3,10")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--preset", choices=configs.NAMES, default="conv_stem",
                        help="model and recipe (mnist_plus/configs/) whose width and epochs vary; "
                             "the table was made with conv_stem")
    parser.add_argument("--out", default="experiments/results/capacity")
    parser.add_argument("--tfds-dir", default="")
    parser.add_argument("--mnist-dir", default="")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "results.jsonl")
    done = {}
    if os.path.exists(results):  # resumable: finished runs are not repeated
        for line in open(results):
            r = json.loads(line)
            # Rows from before --preset were made with the conv stem.
            done[(r.get("preset", "conv_stem"), r["width"], r["epochs"], r["seed"])] = r
    for width in _ints(args.widths):
        for epochs in _ints(args.epochs):
            for seed in _ints(args.seeds):
                if (args.preset, width, epochs, seed) in done:
                    continue
                config = configs.get(args.preset, epochs=epochs, width=width, seed=seed,
                                           tfds_dir=args.tfds_dir, mnist_dir=args.mnist_dir,
                                           progress=False, report=False, log_every_steps=0)
                workdir = os.path.join(args.out, f"w{width}-e{epochs}-s{seed}")
                summary = train_and_evaluate(config, workdir, log=lambda s: None)
                row = {"preset": args.preset, "width": width, "epochs": epochs, "seed": seed,
                       "parameters": param_count(create_state(config, 1).params),
                       "digit_accuracy": summary["final"]["test_digit_accuracy"],
                       "sum_accuracy": summary["final"]["test_sum_accuracy"],
                       "train_seconds": summary["train_seconds"]}
                done[(args.preset, width, epochs, seed)] = row
                with open(results, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    rows = [r for key, r in done.items() if key[0] == args.preset]
    print(table(rows))
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table(rows) + "\n")
    plot(rows, os.path.join(args.out, "capacity.png"))


if __name__ == "__main__":
    main()
