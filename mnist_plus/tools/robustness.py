"""A trained run on corrupted MNIST test sets: `python -m mnist_plus.robustness --workdir runs/`.

The 15 MNIST-C corruptions and the project's own shifts (`corruptions.CORRUPTIONS`) are
applied to the test images with a seeded Generator each, and cached (one .npy per
corruption, keyed by seed, corruption, version and the test images' sha256), so a rerun
only evaluates. Accuracies and agreement come from training's own `evaluation.Evaluator`
with the seed's fixed test numbers, so they mean what the report's test figures mean.
Writes robustness.json, robustness.md and robustness.png (an example per corruption) into
`workdir/report/` (or --out).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from typing import Any, Callable

import numpy as np

from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus.runtime import atomic
from mnist_plus.runtime import compile_cache
from mnist_plus.tools import corruptions
from mnist_plus.tools import trained
from mnist_plus.training import evaluation
from mnist_plus.training import metrics as metrics_lib

VERSION = 3  # bump when a corruption's images change: old cache files are then ignored
JSON, MARKDOWN, FIGURE = "robustness.json", "robustness.md", "robustness.png"
CACHE = os.path.join(data.CACHE_FOLDER, "robustness")


def fingerprint(images: np.ndarray) -> str:
    """sha256 of the uint8 image bytes: the cache key's part for the data."""
    return hashlib.sha256(np.ascontiguousarray(images, np.uint8)).hexdigest()


def cache_path(cache_dir: str, name: str, seed: int, images: np.ndarray) -> str:
    return os.path.join(cache_dir, f"{name}-seed{seed}-v{VERSION}-{fingerprint(images)[:16]}"
                                   f"-n{len(images)}.npy")


def corrupted(images: np.ndarray, name: str, seed: int, cache_dir: str | None = None
              ) -> np.ndarray:
    """`images` uint8 [N,28,28] under corruption `name` with `seed`, read from `cache_dir`
    when there, else made and (with a `cache_dir`) written atomically for next time."""
    path = cache_path(cache_dir, name, seed, images) if cache_dir else None
    if path and os.path.exists(path):
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == images.shape and cached.dtype == np.uint8:
                return cached
        except (OSError, ValueError):
            pass  # unreadable: made again and replaced below
    out = corruptions.by_name(name).apply(images, corruptions.rng_for(seed, name))
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, out, allow_pickle=False)
        atomic.replace_file(path, lambda f: f.write(buffer.getvalue()))
    return out


def _scores(evaluator: evaluation.Evaluator, state: Any) -> dict[str, float]:
    test = metrics_lib.summarise("test", evaluator.metrics(state))
    return {"digit_accuracy": test["test_digit_accuracy"],
            "sum_accuracy": test["test_sum_accuracy"],
            "agreement": test["test_sum_agreement"]}


def evaluate(model: trained.Trained, images: np.ndarray, labels: np.ndarray, *,
             seed: int = 0, cache_dir: str | None = None,
             names: tuple[str, ...] = corruptions.NAMES,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The robustness results of `model` on uint8 `images` [N,28,28] with their `labels`:
    clean and per corruption digit accuracy, sum accuracy and the heads' agreement, the
    mean over the MNIST-C corruptions evaluated, and the worst of them."""
    start = time.perf_counter()
    state = model.state()
    numbers = sampler.test_numbers(model.config.seed, len(labels))

    def score(x: np.ndarray) -> dict[str, float]:
        return _scores(evaluation.Evaluator(x[..., None], labels, numbers,
                                            model.config.eval_batch_size), state)

    results: dict[str, Any] = {"images": int(len(labels)), "seed": seed,
                               "step": model.step, "epoch": model.epoch,
                               "clean": score(images), "corruptions": {}}
    for name in names:
        row = score(corrupted(images, name, seed, cache_dir))
        row["mnist_c"] = corruptions.by_name(name).mnist_c
        results["corruptions"][name] = row
        log(f"  {name:14s} digit {100 * row['digit_accuracy']:6.2f}%  "
            f"sum {100 * row['sum_accuracy']:6.2f}%  agree {100 * row['agreement']:6.2f}%")
    mnist_c = {k: v for k, v in results["corruptions"].items() if v["mnist_c"]}
    if mnist_c:
        results["mnist_c_mean_digit_accuracy"] = float(
            np.mean([v["digit_accuracy"] for v in mnist_c.values()]))
        results["mnist_c_mean_sum_accuracy"] = float(
            np.mean([v["sum_accuracy"] for v in mnist_c.values()]))
        worst = min(mnist_c, key=lambda k: mnist_c[k]["digit_accuracy"])
        results["worst"] = {"name": worst, "digit_accuracy": mnist_c[worst]["digit_accuracy"],
                            "sum_accuracy": mnist_c[worst]["sum_accuracy"]}
    results["seconds"] = round(time.perf_counter() - start, 2)
    return results


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(results: dict[str, Any]) -> str:
    """The results as a table, one row per corruption, then MNIST-C's mean and worst."""
    lines = [f"Test images: {results['images']:,}; corruption seed {results['seed']}; "
             f"numbers fixed by the run's seed; checkpoint step {results['step']:,}.", "",
             "| corruption | MNIST-C | digit accuracy | sum accuracy | heads agree |",
             "|---|---|---|---|---|"]
    clean = results["clean"]
    lines.append(f"| none (clean) | - | {_pct(clean['digit_accuracy'])} | "
                 f"{_pct(clean['sum_accuracy'])} | {_pct(clean['agreement'])} |")
    for name, row in results["corruptions"].items():
        lines.append(f"| {name} | {'yes' if row['mnist_c'] else 'no'} | "
                     f"{_pct(row['digit_accuracy'])} | {_pct(row['sum_accuracy'])} | "
                     f"{_pct(row['agreement'])} |")
    if "worst" in results:
        lines += ["", f"MNIST-C mean: digit {_pct(results['mnist_c_mean_digit_accuracy'])}, "
                      f"sum {_pct(results['mnist_c_mean_sum_accuracy'])}. Worst: "
                      f"{results['worst']['name']} (digit "
                      f"{_pct(results['worst']['digit_accuracy'])})."]
    return "\n".join(lines) + "\n"


def plot_examples(images: np.ndarray, seed: int, path: str,
                  names: tuple[str, ...] = corruptions.NAMES, count: int = 2) -> None:
    """`count` test images under every corruption (made afresh: a few images are quick)."""
    from mnist_plus.tools import report_figures as figures

    columns = [("clean", images[:count])] + [
        (name, corruptions.by_name(name).apply(images[:count],
                                               corruptions.rng_for(seed, name)))
        for name in names]
    per_row = 11
    rows = -(-len(columns) // per_row)
    fig = figures._figure(1.1 * per_row, 1.25 * count * rows)
    axes = fig.subplots(count * rows, per_row, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for c, (name, shown) in enumerate(columns):
        for r in range(count):
            ax = axes[(c // per_row) * count + r, c % per_row]
            ax.imshow(shown[r], cmap="gray", vmin=0, vmax=255)
            if r == 0:
                ax.set_title(name, fontsize=7)
    fig.suptitle("Test images under each corruption", fontsize=9)
    figures._save_figure(fig, path)


def write(results: dict[str, Any], images: np.ndarray, folder: str) -> None:
    """robustness.json, robustness.md and robustness.png into `folder`."""
    os.makedirs(folder, exist_ok=True)
    plot_examples(images, results["seed"], os.path.join(folder, FIGURE),
                  tuple(results["corruptions"]))
    text = markdown(results)
    atomic.replace_file(os.path.join(folder, MARKDOWN), lambda f: f.write(text.encode()))
    atomic.replace_file(os.path.join(folder, JSON),
                        lambda f: f.write(json.dumps(results, indent=1).encode()))


def default_cache_dir(tfds_dir: str | None) -> str:
    """Beside the prepared MNIST: `TFDS_DIR/mnist_plus_cache/robustness`."""
    return os.path.join(tfds_dir or data.default_tfds_dir(), CACHE)


def run_benchmark(workdir: str, *, out: str = "", limit: int = 0, seed: int = 0,
                  tfds_dir: str = "", mnist_dir: str = "", cache_dir: str = "",
                  step: str | int = "latest", mnist: data.Mnist | None = None,
                  log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Evaluate checkpoint `step` of `workdir` on the corrupted test sets and write the
    results into `out` (default `workdir/report/`); returns them."""
    model = trained.load(workdir, step)
    tfds_dir = tfds_dir or model.config.tfds_dir
    if mnist is None:
        mnist = data.load_mnist(tfds_dir or None, mnist_dir or model.config.mnist_dir or None)
    n = min(limit or len(mnist.test_labels), len(mnist.test_labels))
    images = mnist.test_images[:n, :, :, 0]
    results = evaluate(model, images, mnist.test_labels[:n], seed=seed,
                       cache_dir=cache_dir or default_cache_dir(tfds_dir or None), log=log)
    write(results, images, out or os.path.join(os.path.abspath(workdir), "report"))
    return results


def run(args: argparse.Namespace) -> None:
    """`python -m mnist_plus.robustness` once its flags have parsed."""
    compile_cache.enable()
    results = run_benchmark(args.workdir, out=args.out, limit=args.limit, seed=args.seed,
                            tfds_dir=args.tfds_dir, mnist_dir=args.mnist_dir,
                            cache_dir=args.cache_dir, step=args.step,
                            log=lambda s: print(s, flush=True))
    folder = args.out or os.path.join(os.path.abspath(args.workdir), "report")
    print(f"MNIST-C mean digit accuracy {_pct(results['mnist_c_mean_digit_accuracy'])}, "
          f"worst {results['worst']['name']} {_pct(results['worst']['digit_accuracy'])}; "
          f"{results['seconds']:.1f}s; wrote {os.path.join(folder, JSON)}, {MARKDOWN}, "
          f"{FIGURE}")
