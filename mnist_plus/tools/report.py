"""Figures and `report.md` for a trained run: `python -m mnist_plus.report --workdir runs/`.

Training calls `write_report` when it ends; this CLI redoes it on demand. Everything
is read from the workdir: the curves from `metrics.jsonl`, the rest from evaluating
the newest checkpoint on the test set with the seed's fixed numbers (the same
numbers training evaluated with, so the accuracies match `metrics.jsonl`). The
config and the data location come from the checkpoint.

matplotlib is imported inside the plotting functions (training start-up does not pay
for it) and used through `Figure` objects with the Agg canvas: no pyplot state, no
display needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from mnist_plus.runtime import compile_cache
from mnist_plus import config as config_lib
from mnist_plus.runtime import atomic
from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus.tools import trained
from mnist_plus.training import metrics as metrics_lib

FOLDER = "report"
CURVES = "curves.png"
CONFUSION_DIGIT = "confusion_digit.png"
CONFUSION_SUM = "confusion_sum.png"
PAIR_ACCURACY = "pair_accuracy.png"
EXAMPLES = "examples.png"
FIGURES = (CURVES, CONFUSION_DIGIT, CONFUSION_SUM, PAIR_ACCURACY, EXAMPLES)
EXAMPLE_ROWS, EXAMPLE_COLS = 6, 8
_DPI = 110
_LOSS_TICKS = [k * 10.0 ** e for e in range(-4, 2) for k in (1, 2, 5)]
_ACCURACY_TICKS = [0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995,
                   0.9998, 0.9999]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The checkpoint on the test set, with the seed's fixed numbers."""

    images: np.ndarray       # uint8 [N, 28, 28, 1]
    digits: np.ndarray       # int [N], truth
    numbers: np.ndarray      # int [N], the fixed test numbers
    predictions: trained.Predictions

    @property
    def sums(self) -> np.ndarray:
        return self.digits + self.numbers

    @property
    def digit_accuracy(self) -> float:
        return float(np.mean(self.predictions.digit == self.digits))

    @property
    def sum_accuracy(self) -> float:
        return float(np.mean(self.predictions.sum == self.sums))

    @property
    def exhaustive_sum_accuracy(self) -> float:
        return float(np.mean(self.predictions.all_sums == self._all_true_sums()))

    @property
    def sum_agreement(self) -> float:
        """Fraction where the sum head says digit head + number (right or wrong)."""
        return float(np.mean(self.predictions.agree(self.numbers)))

    @property
    def exhaustive_sum_agreement(self) -> float:
        return float(np.mean(self.predictions.exhaustive_agree()))

    def _all_true_sums(self) -> np.ndarray:
        return self.digits[:, None] + np.arange(sampler.NUM_NUMBERS)[None, :]

    def digit_confusion(self) -> np.ndarray:
        """[true digit, predicted digit] counts."""
        return _confusion(self.digits, self.predictions.digit, sampler.NUM_NUMBERS)

    def sum_confusion(self) -> np.ndarray:
        """[true sum, predicted sum] counts, with each image's fixed number."""
        return _confusion(self.sums, self.predictions.sum, sampler.NUM_SUMS)

    def pair_accuracy(self) -> np.ndarray:
        """[digit, number] sum accuracy over the test images of that digit."""
        correct = self.predictions.all_sums == self._all_true_sums()   # [N, 10 numbers]
        grid = np.zeros((sampler.NUM_NUMBERS, sampler.NUM_NUMBERS))
        for d in range(sampler.NUM_NUMBERS):
            rows = correct[self.digits == d]
            grid[d] = rows.mean(axis=0) if len(rows) else np.nan
        return grid

    def mistakes_first(self) -> np.ndarray:
        """Indices: wrong digit or sum first, most confident mistakes first; then the rest."""
        p = self.predictions
        wrong = (p.digit != self.digits) | (p.sum != self.sums)
        confidence = np.maximum(np.where(p.digit != self.digits, p.digit_probs.max(-1), 0),
                                np.where(p.sum != self.sums, p.sum_probs.max(-1), 0))
        wrong_idx = np.flatnonzero(wrong)
        wrong_idx = wrong_idx[np.argsort(-confidence[wrong_idx], kind="stable")]
        return np.concatenate([wrong_idx, np.flatnonzero(~wrong)])


def _confusion(truth: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def evaluate(model: trained.Trained, mnist: data.Mnist) -> Evaluation:
    numbers = sampler.test_numbers(model.config.seed, len(mnist.test_labels))
    predictions = trained.predict(model, mnist.test_images, numbers)
    return Evaluation(images=mnist.test_images, digits=mnist.test_labels.astype(np.int64),
                      numbers=numbers.astype(np.int64), predictions=predictions)


# --- figures -------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save_figure(fig, path: str) -> None:
    """A PNG written whole or not at all (see atomic.replace_file)."""
    atomic.replace_file(path, lambda f: fig.savefig(f, format="png"))


def plot_curves(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Loss (log scale) and accuracy per epoch, train and test, digit and sum head."""
    from matplotlib.ticker import (FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter,
                                   PercentFormatter)

    fig = _figure(11, 7.5)
    axes = fig.subplots(2, 2, sharex=True)
    epochs = [r["epoch"] for r in rows]
    marker = "o" if len(rows) <= 30 else None
    for col, head in enumerate(("digit", "sum")):
        ax = axes[0, col]
        for split, style in (("train", "-"), ("test", "--")):
            values = [r[f"{split}_{head}_loss"] for r in rows]
            ax.plot(epochs, values, style, marker=marker,
                    label=f"{split} (final {values[-1]:.4f})")
        ax.set_yscale("log")
        losses = [r[f"{split}_{head}_loss"] for r in rows for split in ("train", "test")]
        # Plain numbers (0.02, 0.05, 0.1), not powers of ten: at fixed ticks over a wide
        # range, at matplotlib's minor ticks over a narrow one.
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        if _ticks_within(losses, _LOSS_TICKS) >= 2:
            ax.yaxis.set_major_locator(FixedLocator(_LOSS_TICKS))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_title(f"{head} head: cross-entropy loss")
        ax.set_ylabel("loss per example (log scale)")
        ax.legend()
        ax = axes[1, col]
        series = [("train", f"train_{head}_accuracy", "-"),
                  ("test", f"test_{head}_accuracy", "--")]
        if head == "sum":
            series.append(("test, all 10 numbers per image", "test_exhaustive_sum_accuracy", ":"))
        plotted = []
        for label, key, style in series:
            values = [r[key] for r in rows]
            plotted += values
            ax.plot(epochs, values, style, marker=marker,
                    label=f"{label} (final {100 * values[-1]:.2f}%)")
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
        ax.set_title(f"{head} head: accuracy")
        ax.set_ylabel("accuracy")
        if 0 < min(plotted) and max(plotted) < 1 and _ticks_within(plotted, _ACCURACY_TICKS) >= 3:
            # Logit scale: 90%, 99% and 99.9% are evenly spaced, so the late epochs, all
            # near 99%, stay apart instead of merging into one line at the top.
            ax.set_yscale("logit")
            ax.yaxis.set_major_locator(FixedLocator(_ACCURACY_TICKS))
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel("accuracy (logit scale)")
        ax.set_xlabel("epoch")
        ax.legend(loc="best")
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    plural = "" if len(rows) == 1 else "s"
    fig.suptitle(f"Training curves per epoch ({len(rows)} epoch{plural})\n"
                 f"train: mean over the epoch while training; test: after the epoch",
                 fontsize=13)
    _save_figure(fig, path)


def _ticks_within(values: Sequence[float], ticks: Sequence[float]) -> int:
    return sum(min(values) <= t <= max(values) for t in ticks)


def plot_confusion(matrix: np.ndarray, what: str, path: str) -> None:
    """Counts [true, predicted] on a log colour scale, so single mistakes stay visible."""
    from matplotlib.colors import LogNorm

    k = len(matrix)
    size = 6.5 if k <= 10 else 10
    fig = _figure(size + 1.2, size)
    ax = fig.subplots()
    shown = np.ma.masked_equal(matrix, 0)
    image = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(int(matrix.max()), 2)))
    fig.colorbar(image, ax=ax, shrink=0.8, label="test images (log scale)")
    font = 9 if k <= 10 else 7
    threshold = np.sqrt(max(int(matrix.max()), 1))  # middle of the log scale
    for t in range(k):
        for p in range(k):
            if matrix[t, p]:
                ax.text(p, t, str(matrix[t, p]), ha="center", va="center", fontsize=font,
                        color="white" if matrix[t, p] > threshold else "black",
                        fontweight="normal" if t == p else "bold")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel(f"true {what}")
    ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    total = int(matrix.sum())
    accuracy = 100 * np.trace(matrix) / max(total, 1)
    ax.set_title(f"{what} head on the test set: confusion matrix\n"
                 f"{total:,} images, accuracy {accuracy:.2f}%, "
                 f"{total - int(np.trace(matrix))} mistakes (off the diagonal)")
    _save_figure(fig, path)


def plot_pair_accuracy(grid: np.ndarray, counts: np.ndarray, path: str) -> None:
    """Sum accuracy for each (digit, number): where the adder, not the digit net, fails."""
    fig = _figure(8.6, 7.2)
    ax = fig.subplots()
    percent = 100 * grid
    low = float(np.nanmin(percent)) if np.isfinite(percent).any() else 0.0
    vmin = min(np.floor(low) - 0.5, 99.0)
    image = ax.imshow(percent, cmap="RdYlGn", vmin=vmin, vmax=100)
    fig.colorbar(image, ax=ax, shrink=0.85, label="sum accuracy (%)")
    for d in range(grid.shape[0]):
        for n in range(grid.shape[1]):
            v = percent[d, n]
            text = "-" if not np.isfinite(v) else ("100" if v >= 100 else f"{v:.1f}")
            ax.text(n, d, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(grid.shape[1]))
    ax.set_yticks(range(grid.shape[0]),
                  labels=[f"{d}  ({counts[d]:,} images)" for d in range(grid.shape[0])])
    ax.set_xlabel("number added")
    ax.set_ylabel("true digit of the image")
    overall = 100 * np.nansum(grid * counts[:, None]) / max(10 * counts.sum(), 1)
    ax.set_title("Sum accuracy for every (digit, number) pair\n"
                 f"each test image with all 10 numbers: {overall:.2f}% overall")
    _save_figure(fig, path)


def plot_examples(evaluation: Evaluation, path: str, rows: int = EXAMPLE_ROWS,
                  cols: int = EXAMPLE_COLS) -> None:
    """Test images with number, prediction and truth: mistakes first (red, most confident
    first), then correct ones; the last row is kept for correct ones."""
    p = evaluation.predictions
    wrong = (p.digit != evaluation.digits) | (p.sum != evaluation.sums)
    order = evaluation.mistakes_first()
    n_wrong = int(wrong.sum())
    shown_wrong = min(n_wrong, (rows - 1) * cols) if rows > 1 else min(n_wrong, cols)
    order = np.concatenate([order[:shown_wrong], order[n_wrong:]])[: rows * cols]
    fig = _figure(1.6 * cols, 2.15 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, order):
        d, n, s = evaluation.digits[i], evaluation.numbers[i], evaluation.sums[i]
        pd, ps = p.digit[i], p.sum[i]
        ax.imshow(evaluation.images[i, :, :, 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"truth {d} + {n} = {s}\n"
                     f"digit {pd} ({100 * p.digit_probs[i].max():.0f}%) {_mark(pd == d)}\n"
                     f"sum {ps} ({100 * p.sum_probs[i].max():.0f}%) {_mark(ps == s)}",
                     fontsize=8.5, color="tab:red" if wrong[i] else "black")
        if wrong[i]:
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("tab:red")
                spine.set_linewidth(2)
    fig.suptitle(f"Test images with their number: {n_wrong:,} of {len(evaluation.digits):,} "
                 f"have a wrong digit or sum; {shown_wrong} of them first (red, most confident "
                 f"first), then correct ones\n"
                 f"title: the truth, then the predicted digit and sum with their probability "
                 f"(\u2713 right, \u2717 wrong)", fontsize=10)
    _save_figure(fig, path)


def _mark(right: bool) -> str:
    return "\u2713" if right else "\u2717"


# --- report --------------------------------------------------------------------------

_WHICH = {"latest": "newest checkpoint", "best": "best checkpoint (test sum accuracy)"}


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _markdown(workdir: str, model: trained.Trained, evaluation: Evaluation,
              rows: list[dict[str, Any]], requested: str | int = "latest") -> str:
    config = model.config
    final = rows[-1] if rows else None
    lines = [
        "# mnist_plus report",
        "",
        f"Run in `{workdir}`, {_WHICH.get(requested, 'checkpoint')}: step {model.step:,}, "
        f"after epoch {model.epoch} of {config.epochs}.",
        "",
        f"## Final figures (test set: {len(evaluation.digits):,} images, numbers fixed by the "
        f"seed)",
        "",
        "| | digit accuracy | sum accuracy | sum accuracy, all 10 numbers per image | loss "
        "| heads agree | heads agree, all 10 numbers |",
        "|---|---|---|---|---|---|---|",
    ]
    if final is not None:
        lines.append(f"| train, epoch {final['epoch']} (running mean) | "
                     f"{_percent(final['train_digit_accuracy'])} | "
                     f"{_percent(final['train_sum_accuracy'])} | - | {final['train_loss']:.4f} "
                     f"| - | - |")
    loss = f"{final['test_loss']:.4f}" if final is not None else "-"
    lines += [
        f"| test, checkpoint at step {model.step:,} | {_percent(evaluation.digit_accuracy)} | "
        f"{_percent(evaluation.sum_accuracy)} | {_percent(evaluation.exhaustive_sum_accuracy)} | "
        f"{loss} | {_percent(evaluation.sum_agreement)} | "
        f"{_percent(evaluation.exhaustive_sum_agreement)} |",
        "",
        "Heads agree: the predicted sum equals the predicted digit plus the number, whether "
        "or not both are right.",
        "",
    ]
    if final is not None and final["step"] != model.step:
        lines += [f"Note: the last line of metrics.jsonl is from step {final['step']}, not "
                  f"the checkpoint's step {model.step}.", ""]
    if rows:
        best = max(rows, key=lambda r: r["test_sum_accuracy"])
        lines += [f"Best test sum accuracy: {_percent(best['test_sum_accuracy'])} at epoch "
                  f"{best['epoch']}.", ""]
    grid = evaluation.pair_accuracy()
    worst = np.dstack(np.unravel_index(np.argsort(grid, axis=None)[:3], grid.shape))[0]
    lines += [
        "## Training curves",
        "",
        f"![Loss and accuracy per epoch, train and test, digit and sum heads]({CURVES})",
        "",
        "## Confusion matrices (test set)",
        "",
        f"![Digit head confusion matrix]({CONFUSION_DIGIT})",
        "",
        f"![Sum head confusion matrix]({CONFUSION_SUM})",
        "",
        "## Sum accuracy for every (digit, number) pair",
        "",
        f"![Sum accuracy per digit and number]({PAIR_ACCURACY})",
        "",
        "Weakest pairs: " + ", ".join(f"{d} + {n} ({100 * grid[d, n]:.1f}%)" for d, n in worst)
        + ".",
        "",
        "## Test images, mistakes first",
        "",
        f"![Test images with number, prediction and truth]({EXAMPLES})",
        "",
        "## Config",
        "",
        "| field | value |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | `{v!r}` |" for k, v in config_lib.to_dict(config).items()]
    return "\n".join(lines) + "\n"


def report_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), FOLDER)


def is_current(workdir: str) -> bool:
    """Whether `workdir/report/` is complete and made from the newest checkpoint."""
    folder = report_dir(workdir)
    try:
        with open(os.path.join(folder, "report.json")) as f:
            made_from = json.load(f)["step"]
    except (OSError, ValueError, KeyError):
        return False
    complete = all(os.path.exists(os.path.join(folder, name)) for name in (*FIGURES, "report.md"))
    return complete and made_from == trained.latest_step(workdir)


def write_report(workdir: str, mnist: data.Mnist | None = None, *, tfds_dir: str | None = None,
                 mnist_dir: str | None = None, step: str | int = "latest",
                 log: Callable[[str], None] = lambda s: None) -> str:
    """Evaluate checkpoint `step` ('latest', 'best' or a number), write figures, report.md
    and report.json into `workdir/report/`; returns the path of report.md.
    `tfds_dir`/`mnist_dir` override the data location stored with the checkpoint."""
    model = trained.load(workdir, step)
    if mnist is None:
        mnist = data.load_mnist(tfds_dir or model.config.tfds_dir or None,
                                mnist_dir or model.config.mnist_dir or None)
    evaluation = evaluate(model, mnist)
    rows = metrics_lib.JsonlLog(os.path.join(workdir, "metrics.jsonl")).read()
    folder = report_dir(workdir)
    os.makedirs(folder, exist_ok=True)
    if rows:
        plot_curves(rows, os.path.join(folder, CURVES))
    else:
        log("report: no metrics.jsonl in the workdir, so no training curves")
    plot_confusion(evaluation.digit_confusion(), "digit", os.path.join(folder, CONFUSION_DIGIT))
    plot_confusion(evaluation.sum_confusion(), "sum", os.path.join(folder, CONFUSION_SUM))
    counts = np.bincount(evaluation.digits, minlength=sampler.NUM_NUMBERS)
    plot_pair_accuracy(evaluation.pair_accuracy(), counts, os.path.join(folder, PAIR_ACCURACY))
    plot_examples(evaluation, os.path.join(folder, EXAMPLES))
    path = os.path.join(folder, "report.md")
    markdown = _markdown(os.path.abspath(workdir), model, evaluation, rows, step)
    atomic.replace_file(path, lambda f: f.write(markdown.encode()))
    summary = {
        "step": model.step, "epoch": model.epoch, "requested_step": step,
        "test_digit_accuracy": evaluation.digit_accuracy,
        "test_sum_accuracy": evaluation.sum_accuracy,
        "test_exhaustive_sum_accuracy": evaluation.exhaustive_sum_accuracy,
        "test_sum_agreement": evaluation.sum_agreement,
        "test_exhaustive_sum_agreement": evaluation.exhaustive_sum_agreement,
        "digit_confusion": evaluation.digit_confusion().tolist(),
        "sum_confusion": evaluation.sum_confusion().tolist(),
        "pair_accuracy": evaluation.pair_accuracy().tolist(),
    }
    # Written last: its step marks the report complete (see is_current).
    atomic.replace_file(os.path.join(folder, "report.json"),
                        lambda f: f.write(json.dumps(summary, indent=1).encode()))
    return path


def run(args: argparse.Namespace) -> None:
    """`python -m mnist_plus.report` once its flags have parsed."""
    compile_cache.enable()
    path = write_report(args.workdir, tfds_dir=args.tfds_dir or None,
                        mnist_dir=args.mnist_dir or None, step=args.step,
                        log=lambda s: print(s, flush=True))
    print(f"report: {path}")

