"""Which test digits do trained runs miss, and how many of those does every run miss?

    MNIST_PLUS_MNIST_DIR=/path/to/mnist python -m experiments.errors \\
        --json runs/errors.json --figure runs/errors.png runs/accuracy/runs/default \\
        runs/accuracy/runs/lw32aff

Each argument is a variant's folder of `experiments/accuracy.py` (its seeds' workdirs,
`s0`, `s1`, ...) or a single trained workdir. For each variant: the digit errors of each
seed's newest checkpoint on MNIST's 10,000 test images, the errors every seed makes
(`shared`), those any seed makes (`union`), and the accuracy of the seeds' averaged
digit probabilities (an ensemble: what averaging those runs could give, at their summed
cost). `--views 5` or `9` averages each run's probabilities over shifted copies of each
test image (test-time augmentation, which evaluation does not do). Over all the runs
given: the images every run misses (the floor that no variant here moved) and those most
runs miss. A 5-seed mean of 99.60% is 40 errors per run: the floor says how many of those
40 are spent before any config choice.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

import numpy as np

from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus.tools import trained


def workdirs(folder: str) -> list[str]:
    """`folder` itself if it holds a run, else its `s<seed>` runs in seed order."""
    if os.path.isdir(os.path.join(folder, "checkpoints")):
        return [folder]
    seeds = sorted((int(name[1:]), os.path.join(folder, name)) for name in os.listdir(folder)
                   if name[:1] == "s" and name[1:].isdigit()
                   and os.path.isdir(os.path.join(folder, name, "checkpoints")))
    if not seeds:
        raise SystemExit(f"error: {folder} holds no trained run (no checkpoints/, no s<seed>/ "
                         f"runs): give trained workdirs or accuracy.py's variant folders")
    return [path for _, path in seeds]


VIEWS = {1: [(0, 0)],
         5: [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
         9: [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]}


def view_images(images: np.ndarray, views: int) -> list[np.ndarray]:
    """The uint8 test images [N,H,W,1] moved by each of `VIEWS[views]`, with
    `sampler.translate` (training's shifts), black background shifted in."""
    return [sampler.translate(images, np.tile(np.array([shift], np.int32), (len(images), 1)),
                              fill=np.uint8(0))
            for shift in VIEWS[views]]


def digit_probs(workdir: str, views: Sequence[np.ndarray]) -> np.ndarray:
    """[N, 10] test digit probabilities of the newest checkpoint, averaged over the
    `view_images` (test-time augmentation when there are several; the digit head does not
    see the number, so any numbers do)."""
    run = trained.load(workdir)
    numbers = np.zeros(len(views[0]), np.int32)
    return np.mean([np.asarray(trained.predict(run, images, numbers).digit_probs)
                    for images in views], axis=0)


def summarise(name: str, probs: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    wrong = np.stack([p.argmax(-1) != labels for p in probs])  # [runs, N]
    ensemble = np.mean(probs, axis=0).argmax(-1) != labels
    return {"variant": name, "runs": len(probs),
            "errors": [int(w.sum()) for w in wrong],
            "errors_mean": float(wrong.sum(1).mean()),
            "shared": int(wrong.all(0).sum()), "union": int(wrong.any(0).sum()),
            "ensemble_errors": int(ensemble.sum()),
            "ensemble_accuracy": float(1 - ensemble.mean())}


def wrong_answer(probs: Sequence[np.ndarray], label: int) -> int:
    """The commonest wrong answer among runs' digit probabilities [10] for one image."""
    answers = np.array([p.argmax() for p in probs])
    counts = np.bincount(answers[answers != label], minlength=10)
    return int(counts.argmax())


def plot_floor(images: np.ndarray, labels: np.ndarray, guesses: np.ndarray,
               misses: np.ndarray, total: int, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 10
    rows = max(1, -(-len(images) // cols))
    fig = Figure(figsize=(cols * 1.1, rows * 1.35))
    FigureCanvasAgg(fig)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i, :, :, 0], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(f"{labels[i]} -> {guesses[i]}  {misses[i]}/{total}", fontsize=8)
    fig.suptitle("test digits most runs miss: label -> the commonest wrong answer, runs that miss it",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="accuracy.py variant folders or workdirs")
    parser.add_argument("--tfds-dir", default="")
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_PLUS_MNIST_DIR", ""))
    parser.add_argument("--json", default="", help="write the summary and the floor's images here")
    parser.add_argument("--figure", default="", help="a PNG of the images most runs miss")
    parser.add_argument("--views", type=int, choices=sorted(VIEWS), default=1,
                        help="average each run's probabilities over the image and its 4 or 8 "
                             "neighbours one pixel away (test-time augmentation); 1: the "
                             "image alone, as evaluation does")
    args = parser.parse_args(argv)
    mnist = data.load_mnist(args.tfds_dir or None, args.mnist_dir or None)
    labels = np.asarray(mnist.test_labels)
    views = view_images(np.asarray(mnist.test_images), args.views)
    rows, every = [], []
    for folder in args.folders:
        name = os.path.basename(os.path.normpath(folder))
        probs = [digit_probs(w, views) for w in workdirs(folder)]
        row = summarise(name, probs, labels)
        rows.append(row)
        every += probs
        print(f"{name}: {row['runs']} runs, errors {row['errors']} (mean "
              f"{row['errors_mean']:.1f}), every run misses {row['shared']}, some run misses "
              f"{row['union']}, their averaged probabilities miss {row['ensemble_errors']} "
              f"({100 * row['ensemble_accuracy']:.2f}%)", flush=True)
    wrong = np.stack([p.argmax(-1) != labels for p in every])
    misses = wrong.sum(0)
    total = len(every)
    order = np.argsort(-misses, kind="stable")
    most = order[misses[order] > total // 2]
    guesses = np.array([wrong_answer([p[i] for p in every], labels[i]) for i in most], dtype=int)
    floor = {"runs": total, "missed_by_all": int((misses == total).sum()),
             "missed_by_most": int(len(most)), "missed_by_any": int((misses > 0).sum()),
             "most": [{"index": int(i), "label": int(labels[i]), "answer": int(g),
                       "runs_missing": int(misses[i])} for i, g in zip(most, guesses)]}
    print(f"over all {total} runs: every run misses {floor['missed_by_all']}, more than half "
          f"miss {floor['missed_by_most']}, some run misses {floor['missed_by_any']}")
    for path in (args.figure, args.json):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if args.figure and len(most):
        plot_floor(np.asarray(mnist.test_images)[most], labels[most], guesses, misses[most],
                   total, args.figure)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"views": args.views, "variants": rows, "floor": floor}, f, indent=1)


if __name__ == "__main__":
    main()
