"""Does the adder learn addition? Train with some (digit, number) pairs never shown
together and compare the sum accuracy on held-out pairs with that on seen pairs, for
an adder fed with digit logits, softmax probabilities, or the conv features.

    python experiments/adder.py [--epochs 5] [--seed 0] [--out experiments/results/adder]

Each row is one training run (workdirs under --out), evaluated on all 10,000 test images
with each of the ten numbers (100,000 pairs), split by whether the pair was held out.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from mnist_plus import config as config_lib
from mnist_plus import data, report, sampler, trained
from mnist_plus.train import train_and_evaluate


def snapped_to_seen(answers: np.ndarray, labels: np.ndarray, held: np.ndarray) -> float:
    """Of the answers for held-out pairs (d, n), the fraction equal to d' + n for a digit
    d' that training did pair with n: the adder answering as if the image were d'.

    `answers` [N, 10] is the sum head's answer for every test image with every number.
    """
    hits, total = 0, 0
    for d, n in zip(*np.nonzero(held)):
        implied = answers[labels == d, n] - n
        ok = (implied >= 0) & (implied <= 9)
        hits += int(np.sum(ok & ~held[np.clip(implied, 0, 9), n]))
        total += len(implied)
    return hits / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdouts", default="sum9,random20")
    parser.add_argument("--adder-inputs", default="logits,probs,features")
    parser.add_argument("--out", default="experiments/results/adder")
    parser.add_argument("--tfds-dir", default="")
    parser.add_argument("--mnist-dir", default="")
    args = parser.parse_args()

    mnist = data.load_mnist(args.tfds_dir or None, args.mnist_dir or None)
    rows = []
    for holdout in args.holdouts.split(","):
        for adder_input in args.adder_inputs.split(","):
            config = config_lib.Config(epochs=args.epochs, seed=args.seed, holdout=holdout,
                                       adder_input=adder_input, tfds_dir=args.tfds_dir,
                                       mnist_dir=args.mnist_dir, progress=False)
            workdir = os.path.join(args.out, f"{holdout}-{adder_input}")
            summary = train_and_evaluate(config, workdir, log=lambda s: None)
            evaluation = report.evaluate(trained.load(workdir), mnist)
            answers = evaluation.predictions.all_sums
            grid = evaluation.pair_accuracy()
            held = sampler.held_out_pairs(holdout, args.seed)
            row = {"holdout": holdout, "adder_input": adder_input,
                   "digit_accuracy": summary["final"]["test_digit_accuracy"],
                   "seen_pairs_sum_accuracy": float(grid[~held].mean()),
                   "held_out_pairs_sum_accuracy": float(grid[held].mean()),
                   "held_out_answers_snapped_to_a_seen_pair": snapped_to_seen(
                       answers, mnist.test_labels, held),
                   "held_out_pairs": int(held.sum())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print("\n| held out | adder input | digit acc | sum acc, seen pairs | "
          "sum acc, held-out pairs | held-out answers = a seen pair's sum |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['holdout']} ({r['held_out_pairs']} pairs) | {r['adder_input']} | "
              f"{100 * r['digit_accuracy']:.2f}% | {100 * r['seen_pairs_sum_accuracy']:.2f}% | "
              f"{100 * r['held_out_pairs_sum_accuracy']:.2f}% | "
              f"{100 * r['held_out_answers_snapped_to_a_seen_pair']:.1f}% |")


if __name__ == "__main__":
    main()
