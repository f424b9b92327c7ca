"""Does the adder learn addition? Train with some (digit, number) pairs never shown
together and compare the sum accuracy on held-out pairs with that on seen pairs, for the
fully connected adder (`--adder mlp`, fed with digit logits, softmax probabilities or the
conv features) and for the adder with addition built in (`--adder shift`).

    python -m experiments.adder [--epochs 5] [--seed 0] [--adders mlp,shift]
        [--adder-inputs logits] [--out experiments/results/adder]

Each row is one training run (workdirs under --out; a finished one is reused), evaluated
on all 10,000 test images with each of the ten numbers (100,000 pairs), split by whether
the pair was held out. Also per run: agreement (how often argmax(sum) == argmax(digit) +
number over the 100,000 pairs), the expected calibration error (ECE, 15 equal-width
confidence bins) of the sum head over the 100,000 pairs and over the held-out ones, and
one reliability diagram for all runs (reliability.png).
"""

from __future__ import annotations

import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mnist_plus import configs
from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus.tools import trained
from mnist_plus.model import MnistPlusNet
from mnist_plus.trainer import train_and_evaluate

ECE_BINS = 15


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


def calibration_bins(confidence: np.ndarray, correct: np.ndarray,
                     bins: int = ECE_BINS) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(ECE, accuracy, mean confidence, count) per equal-width bin of (0, 1].

    ECE = sum over bins of (count / N) * |accuracy - mean confidence|; a bin is
    (k/bins, (k+1)/bins], so a confidence of exactly 1 falls in the last one.
    """
    confidence = np.asarray(confidence, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    hits = np.bincount(which, weights=correct, minlength=bins)
    conf = np.bincount(which, weights=confidence, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, mean_conf = hits / count, conf / count
    gaps = np.where(count > 0, np.abs(accuracy - mean_conf), 0.0)
    ece = float(np.sum(count * gaps) / max(count.sum(), 1))
    return ece, accuracy, mean_conf, count


@functools.partial(jax.jit, static_argnums=0)
def _exhaustive(model: MnistPlusNet, variables, image: jax.Array):
    # `heads` also answers for one given number; nothing reads that answer here, so any
    # number will do (and jit drops its computation).
    number = jnp.zeros((image.shape[0], sampler.NUM_NUMBERS), image.dtype)
    digit_logits, _, sum_logits = model.apply(variables, image, number,
                                              method=MnistPlusNet.heads)
    probs = jax.nn.softmax(sum_logits)                                   # [B, 10, 19]
    return jnp.argmax(digit_logits, -1), jnp.argmax(sum_logits, -1), jnp.max(probs, -1)


def exhaustive_predictions(run: trained.Trained, images: np.ndarray, batch_size: int = 1000
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted digit [N], and the predicted sum and its probability [N, 10] for every
    number 0..9, from the sum head's softmax (`MnistPlusNet.heads`)."""
    parts = []
    normalised = sampler.normalise(images)
    for start in range(0, len(images), batch_size):
        out = _exhaustive(run.model, run.variables, normalised[start:start + batch_size])
        parts.append([np.asarray(x) for x in jax.device_get(out)])
    return tuple(np.concatenate(xs) for xs in zip(*parts))


def plot_reliability(rows: list[dict], path: str) -> None:
    """One panel per run: per confidence bin, accuracy (bar) and mean confidence (red
    tick; the gap is the bin's miscalibration), pair counts below (log scale)."""
    from matplotlib.figure import Figure

    holdouts = list(dict.fromkeys(r["holdout"] for r in rows))
    heads = list(dict.fromkeys(r["head"] for r in rows))
    fig = Figure(figsize=(3.6 * len(heads), 4.4 * len(holdouts)), dpi=110, layout="constrained")
    axes = fig.subplots(2 * len(holdouts), len(heads), squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1] * len(holdouts)})
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for r in rows:
        i, j = 2 * holdouts.index(r["holdout"]), heads.index(r["head"])
        ax, ax_count = axes[i, j], axes[i + 1, j]
        b = r["_bins"]
        accuracy = np.nan_to_num(np.asarray(b["accuracy"], float))
        ax.bar(edges[:-1], accuracy, width=1 / ECE_BINS, align="edge", color="tab:blue",
               edgecolor="white", label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        filled = np.asarray(b["count"]) > 0
        centres = (edges[:-1] + edges[1:]) / 2
        ax.plot(centres[filled], np.asarray(b["confidence"], float)[filled], "_",
                color="tab:red", ms=14, mew=2.5, label="mean confidence (gap: miscalibration)")
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="sum accuracy in bin",
               title=f"{r['head']}, holdout {r['holdout']}\nECE {100 * r['ece']:.2f}% "
                     f"(held-out pairs {100 * r['ece_held_out']:.1f}%)")
        ax.title.set_fontsize(9)
        if i == 0 and j == 0:
            ax.legend(fontsize=7, loc="upper left")
        ax_count.bar(edges[:-1], np.maximum(b["count"], 0.5), width=1 / ECE_BINS, align="edge",
                     color="gray", log=True)
        ax_count.set(xlim=(0, 1), ylim=(0.5, 2e5), xlabel="sum head confidence (max prob)",
                     ylabel="pairs")
    fig.suptitle("Sum head reliability on all 100,000 (test image, number) pairs "
                 f"({ECE_BINS} bins)", fontsize=10)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdouts", default="sum9,random20")
    parser.add_argument("--adders", default="mlp,shift")
    parser.add_argument("--adder-inputs", default="logits",
                        help="what the mlp adder sees (the shift adder always reads logits)")
    parser.add_argument("--preset", choices=configs.NAMES, default="conv_stem",
                        help="model and recipe (mnist_plus/configs/); the tables were made with "
                             "conv_stem")
    parser.add_argument("--out", default="experiments/results/adder")
    parser.add_argument("--tfds-dir", default="")
    parser.add_argument("--mnist-dir", default="")
    args = parser.parse_args()

    mnist = data.load_mnist(args.tfds_dir or None, args.mnist_dir or None)
    labels = mnist.test_labels.astype(np.int64)
    true_sums = labels[:, None] + np.arange(sampler.NUM_NUMBERS)[None, :]      # [N, 10]
    heads = [("mlp", i) for i in args.adder_inputs.split(",")] * ("mlp" in args.adders.split(","))
    heads += [("shift", "logits")] * ("shift" in args.adders.split(","))
    rows = []
    for holdout in args.holdouts.split(","):
        for adder, adder_input in heads:
            name = f"{adder}-{adder_input}" if adder == "mlp" else adder
            config = configs.get(args.preset, epochs=args.epochs, seed=args.seed,
                                       holdout=holdout, adder=adder, adder_input=adder_input,
                                       tfds_dir=args.tfds_dir, mnist_dir=args.mnist_dir,
                                       progress=False, report=False)
            workdir = os.path.join(args.out, f"{holdout}-{name}")
            summary = train_and_evaluate(config, workdir, log=lambda s: None)
            digit, answers, confidence = exhaustive_predictions(trained.load(workdir),
                                                                mnist.test_images)
            correct = answers == true_sums                                      # [N, 10]
            held = sampler.held_out_pairs(holdout, args.seed)                   # [digit, number]
            held_pairs = held[labels]                                           # [N, 10]
            # Per (digit, number) first, then averaged over pairs: as the first table did.
            grid = np.stack([correct[labels == d].mean(axis=0) for d in range(10)])
            ece, accuracy, mean_conf, count = calibration_bins(confidence, correct)
            row = {"holdout": holdout, "head": name, "adder": adder, "adder_input": adder_input,
                   "epochs": args.epochs,
                   "digit_accuracy": summary["final"]["test_digit_accuracy"],
                   "seen_pairs_sum_accuracy": float(grid[~held].mean()),
                   "held_out_pairs_sum_accuracy": float(grid[held].mean()),
                   "agreement": float(np.mean(answers == digit[:, None] + np.arange(10))),
                   "ece": ece,
                   "ece_held_out": calibration_bins(confidence[held_pairs],
                                                    correct[held_pairs])[0],
                   "held_out_answers_snapped_to_a_seen_pair": snapped_to_seen(
                       answers, labels, held),
                   "held_out_pairs": int(held.sum()),
                   "train_seconds": summary["train_seconds"],
                   "_bins": {"accuracy": accuracy.tolist(), "confidence": mean_conf.tolist(),
                             "count": count.tolist()}}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "_bins"}), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    plot_reliability(rows, os.path.join(args.out, "reliability.png"))
    print("\n| held out | sum head | digit acc | sum acc, seen pairs | sum acc, held-out pairs "
          "| agreement | ECE, all pairs | ECE, held-out pairs | held-out answers = a seen "
          "pair's sum |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['holdout']} ({r['held_out_pairs']} pairs) | {r['head']} | "
              f"{100 * r['digit_accuracy']:.2f}% | {100 * r['seen_pairs_sum_accuracy']:.2f}% | "
              f"{100 * r['held_out_pairs_sum_accuracy']:.2f}% | {100 * r['agreement']:.2f}% | "
              f"{100 * r['ece']:.2f}% | {100 * r['ece_held_out']:.2f}% | "
              f"{100 * r['held_out_answers_snapped_to_a_seen_pair']:.1f}% |")


if __name__ == "__main__":
    main()
