"""Figures and `report.md` for a trained run: `python -m mnist_plus.report --workdir runs/`.

Training calls `write_report` when it ends; this CLI redoes it on demand. Everything
is read from the workdir: the curves from `metrics.jsonl`, the rest from the newest
checkpoint on the test set with the seed's fixed numbers. Its accuracies, agreements and
losses come from training's own `evaluation.Evaluator` (so they are the figures
`metrics.jsonl` has for that checkpoint); the confusion matrices, pair accuracies and
examples from per-image `evaluation.predict`. The config and the data location come
from the checkpoint. The figures are drawn by `report_figures`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np

from mnist_plus import config as config_lib
from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus.runtime import atomic
from mnist_plus.runtime import compile_cache
from mnist_plus.tools import report_figures as figures
from mnist_plus.tools import trained
from mnist_plus.training import evaluation
from mnist_plus.training import metrics as metrics_lib

FOLDER = "report"
CURVES = "curves.png"
CONFUSION_DIGIT = "confusion_digit.png"
CONFUSION_SUM = "confusion_sum.png"
PAIR_ACCURACY = "pair_accuracy.png"
EXAMPLES = "examples.png"
FIGURES = (CURVES, CONFUSION_DIGIT, CONFUSION_SUM, PAIR_ACCURACY, EXAMPLES)


@dataclasses.dataclass(frozen=True)
class CheckpointResults:
    """A checkpoint on the test set, with the seed's fixed numbers: training's test
    metrics of it, and its per-image predictions."""

    metrics: dict[str, float]  # `metrics.summarise("test", ...)`: test_digit_accuracy, ...
    images: np.ndarray       # uint8 [N, 28, 28, 1]
    digits: np.ndarray       # int [N], truth
    numbers: np.ndarray      # int [N], the fixed test numbers
    predictions: evaluation.Predictions

    @property
    def sums(self) -> np.ndarray:
        return self.digits + self.numbers

    def digit_confusion(self) -> np.ndarray:
        """[true digit, predicted digit] counts."""
        return _confusion(self.digits, self.predictions.digit, sampler.NUM_NUMBERS)

    def sum_confusion(self) -> np.ndarray:
        """[true sum, predicted sum] counts, with each image's fixed number."""
        return _confusion(self.sums, self.predictions.sum, sampler.NUM_SUMS)

    def pair_accuracy(self) -> np.ndarray:
        """[digit, number] sum accuracy over the test images of that digit."""
        truth = self.digits[:, None] + np.arange(sampler.NUM_NUMBERS)[None, :]
        correct = self.predictions.all_sums == truth   # [N, 10 numbers]
        grid = np.zeros((sampler.NUM_NUMBERS, sampler.NUM_NUMBERS))
        for d in range(sampler.NUM_NUMBERS):
            rows = correct[self.digits == d]
            grid[d] = rows.mean(axis=0) if len(rows) else np.nan
        return grid


def _confusion(truth: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def evaluate_checkpoint(model: trained.Trained, mnist: data.Mnist) -> CheckpointResults:
    """`model` on the test set: training's evaluator for the figures, `predict` per image."""
    state = model.state()
    evaluator = evaluation.evaluator_for(model.config, mnist.test_images, mnist.test_labels)
    test_metrics = metrics_lib.summarise("test", evaluator.metrics(state))
    numbers = sampler.test_numbers(model.config.seed, len(mnist.test_labels))
    predictions = evaluation.predict(state, mnist.test_images, numbers,
                                     model.config.eval_batch_size)
    return CheckpointResults(metrics=test_metrics, images=mnist.test_images,
                             digits=mnist.test_labels.astype(np.int64),
                             numbers=numbers.astype(np.int64), predictions=predictions)


_WHICH = {"latest": "newest checkpoint", "best": "best checkpoint (test sum accuracy)"}


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _markdown(workdir: str, model: trained.Trained, results: CheckpointResults,
              rows: list[dict[str, Any]], requested: str | int = "latest") -> str:
    config = model.config
    test = results.metrics
    final = rows[-1] if rows else None
    lines = [
        "# mnist_plus report",
        "",
        f"Run in `{workdir}`, {_WHICH.get(requested, 'checkpoint')}: step {model.step:,}, "
        f"after epoch {model.epoch} of {config.epochs}.",
        "",
        f"## Final figures (test set: {len(results.digits):,} images, numbers fixed by the "
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
    lines += [
        f"| test, checkpoint at step {model.step:,} | {_percent(test['test_digit_accuracy'])} | "
        f"{_percent(test['test_sum_accuracy'])} | "
        f"{_percent(test['test_exhaustive_sum_accuracy'])} | {test['test_loss']:.4f} | "
        f"{_percent(test['test_sum_agreement'])} | "
        f"{_percent(test['test_exhaustive_sum_agreement'])} |",
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
    grid = results.pair_accuracy()
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


def is_current(workdir: str, robustness: bool = False) -> bool:
    """Whether `workdir/report/` is complete and made from the newest checkpoint (with
    `robustness`: and has the corruption benchmark)."""
    folder = report_dir(workdir)
    try:
        with open(os.path.join(folder, "report.json")) as f:
            written = json.load(f)
        made_from = written["step"]
    except (OSError, ValueError, KeyError):
        return False
    if robustness and "robustness" not in written:
        return False
    complete = all(os.path.exists(os.path.join(folder, name)) for name in (*FIGURES, "report.md"))
    return complete and made_from == trained.latest_step(workdir)


def write_report(workdir: str, mnist: data.Mnist | None = None, *, tfds_dir: str | None = None,
                 mnist_dir: str | None = None, step: str | int = "latest",
                 log: Callable[[str], None] = lambda s: None, robustness: bool = False) -> str:
    """Evaluate checkpoint `step` ('latest', 'best' or a number), write figures, report.md
    and report.json into `workdir/report/`; returns the path of report.md.
    `tfds_dir`/`mnist_dir` override the data location stored with the checkpoint.
    `robustness` adds the corruption benchmark (`tools.robustness`): its files and a
    section of report.md (about 20 s for the default model on 2 CPU cores)."""
    model = trained.load(workdir, step)
    if mnist is None:
        mnist = data.load_mnist(tfds_dir or model.config.tfds_dir or None,
                                mnist_dir or model.config.mnist_dir or None)
    results = evaluate_checkpoint(model, mnist)
    rows = metrics_lib.JsonlLog(os.path.join(workdir, "metrics.jsonl")).read()
    folder = report_dir(workdir)
    os.makedirs(folder, exist_ok=True)
    if rows:
        figures.plot_curves(rows, os.path.join(folder, CURVES))
    else:
        log("report: no metrics.jsonl in the workdir, so no training curves")
    digit_confusion, sum_confusion = results.digit_confusion(), results.sum_confusion()
    pair_accuracy = results.pair_accuracy()
    figures.plot_confusion(digit_confusion, "digit", os.path.join(folder, CONFUSION_DIGIT))
    figures.plot_confusion(sum_confusion, "sum", os.path.join(folder, CONFUSION_SUM))
    counts = np.bincount(results.digits, minlength=sampler.NUM_NUMBERS)
    figures.plot_pair_accuracy(pair_accuracy, counts, os.path.join(folder, PAIR_ACCURACY))
    figures.plot_examples(results.images, results.digits, results.numbers, results.predictions,
                          os.path.join(folder, EXAMPLES))
    path = os.path.join(folder, "report.md")
    markdown = _markdown(os.path.abspath(workdir), model, results, rows, step)
    shifted = None
    if robustness:
        from mnist_plus.tools import robustness as robustness_lib

        images = mnist.test_images[..., 0]
        shifted = robustness_lib.evaluate(
            model, images, mnist.test_labels,
            cache_dir=robustness_lib.default_cache_dir(tfds_dir or model.config.tfds_dir),
            log=log)
        robustness_lib.write(shifted, images, folder)
        markdown += ("\n## Robustness (corrupted test sets)\n\n"
                     + robustness_lib.markdown(shifted)
                     + f"\n![Test images under each corruption]({robustness_lib.FIGURE})\n")
    atomic.replace_file(path, lambda f: f.write(markdown.encode()))
    summary = {
        "step": model.step, "epoch": model.epoch, "requested_step": step,
        **results.metrics,  # the keys and values metrics.jsonl has for this checkpoint
        "digit_confusion": digit_confusion.tolist(),
        "sum_confusion": sum_confusion.tolist(),
        "pair_accuracy": pair_accuracy.tolist(),
    }
    if shifted is not None:
        summary["robustness"] = {k: shifted[k] for k in (
            "mnist_c_mean_digit_accuracy", "mnist_c_mean_sum_accuracy", "worst")}
    # Written last: its step marks the report complete (see is_current).
    atomic.replace_file(os.path.join(folder, "report.json"),
                        lambda f: f.write(json.dumps(summary, indent=1).encode()))
    return path


def run(args: argparse.Namespace) -> None:
    """`python -m mnist_plus.report` once its flags have parsed."""
    compile_cache.enable()
    path = write_report(args.workdir, tfds_dir=args.tfds_dir or None,
                        mnist_dir=args.mnist_dir or None, step=args.step,
                        log=lambda s: print(s, flush=True), robustness=args.robustness)
    print(f"report: {path}")

