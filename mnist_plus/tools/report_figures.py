"""The report's figures, each a PNG written whole or not at all.

matplotlib is imported inside the plotting functions (training start-up does not pay
for it) and used through `Figure` objects with the Agg canvas: no pyplot state, no
display needed. Each function takes plain arrays (metrics.jsonl rows, counts,
`evaluation.Predictions`), so the figures know nothing of checkpoints or workdirs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mnist_plus.runtime import atomic
from mnist_plus.training.evaluation import Predictions

EXAMPLE_ROWS, EXAMPLE_COLS = 6, 8
_DPI = 110
_LOSS_TICKS = [k * 10.0 ** e for e in range(-4, 2) for k in (1, 2, 5)]
_ACCURACY_TICKS = [0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995,
                   0.9998, 0.9999]


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


def mistakes_first(digits: np.ndarray, numbers: np.ndarray, p: Predictions) -> np.ndarray:
    """Indices: wrong digit or sum first, most confident mistakes first; then the rest."""
    sums = digits + numbers
    wrong = (p.digit != digits) | (p.sum != sums)
    confidence = np.maximum(np.where(p.digit != digits, p.digit_probs.max(-1), 0),
                            np.where(p.sum != sums, p.sum_probs.max(-1), 0))
    wrong_idx = np.flatnonzero(wrong)
    wrong_idx = wrong_idx[np.argsort(-confidence[wrong_idx], kind="stable")]
    return np.concatenate([wrong_idx, np.flatnonzero(~wrong)])


def plot_examples(images: np.ndarray, digits: np.ndarray, numbers: np.ndarray,
                  p: Predictions, path: str, rows: int = EXAMPLE_ROWS,
                  cols: int = EXAMPLE_COLS) -> None:
    """Test images with number, prediction and truth: mistakes first (red, most confident
    first), then correct ones; the last row is kept for correct ones."""
    sums = digits + numbers
    wrong = (p.digit != digits) | (p.sum != sums)
    order = mistakes_first(digits, numbers, p)
    n_wrong = int(wrong.sum())
    shown_wrong = min(n_wrong, (rows - 1) * cols) if rows > 1 else min(n_wrong, cols)
    order = np.concatenate([order[:shown_wrong], order[n_wrong:]])[: rows * cols]
    fig = _figure(1.6 * cols, 2.15 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, order):
        d, n, s = digits[i], numbers[i], sums[i]
        pd, ps = p.digit[i], p.sum[i]
        ax.imshow(images[i, :, :, 0], cmap="gray", vmin=0, vmax=255)
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
    fig.suptitle(f"Test images with their number: {n_wrong:,} of {len(digits):,} "
                 f"have a wrong digit or sum; {shown_wrong} of them first (red, most confident "
                 f"first), then correct ones\n"
                 f"title: the truth, then the predicted digit and sum with their probability "
                 f"(\u2713 right, \u2717 wrong)", fontsize=10)
    _save_figure(fig, path)


def _mark(right: bool) -> str:
    return "\u2713" if right else "\u2717"
