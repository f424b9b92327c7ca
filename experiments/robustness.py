"""How does a trained run hold up when the test digits move away from MNIST's framing?

    python -m experiments.robustness --workdir runs/ [--workdir runs_b/ ...]
                                     [--out experiments/results/robustness] [--limit N]

Evaluates the newest checkpoint of each workdir on MNIST's test images under controlled
shifts, one transform at a time, at several severities:
  rotation   about the image centre, -30..+30 degrees (bilinear, black fill)
  scale      about the image centre, x0.6..x1.3 (bilinear affine warp, black fill)
  thickness  strokes eroded (3x3 min filter) or dilated (3x3 max filter), once or twice
  blur       Gaussian, sigma 0.5..2 pixels (separable, zero padding)
  low-res    area-downsampled to 16x16, 12x12 or 8x8 and bilinearly upsampled to 28x28
  contrast   every pixel times 0.8, 0.6 or 0.4 (not asked for: blur and low-res dim the
             strokes too, and this tells dimming apart from blurring)
and reports, per condition: digit accuracy, sum accuracy (with the seed's fixed test
numbers, as training's evaluation), the heads' agreement (predicted sum == predicted
digit + number) and the sum accuracy with all ten numbers per image.

It also checks `predict`'s framing: the test images pasted into larger canvases (centred,
off-centre, enlarged, on white paper) and passed through predict's own preprocessing
(`white_on_black` then `fit_mnist` or `fit_resize`), against the plain 28x28 images.

Writes robustness.json, robustness.md (tables) and robustness.png / examples.png into --out.
The transforms are mnist_plus/tools/corruptions.py's: this experiment sweeps their
severities, where `python -m mnist_plus.robustness` (the benchmark, with the 15 MNIST-C
corruptions) measures one strength each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from mnist_plus.data import mnist as data
from mnist_plus.tools import corruptions, image_shifts
from mnist_plus.tools import predict
from mnist_plus.data import sampler
from mnist_plus.tools import trained
from mnist_plus.cli import run_main, usage_parser
from mnist_plus.errors import UsageError

SIZE = 28
Images = np.ndarray  # uint8 [N, 28, 28]


# --- transforms: mnist_plus/tools/corruptions.py's (the benchmark's), at several severities

rotate, scale = corruptions.rotate_by, corruptions.scale_by
thickness, blur = image_shifts.thickness, image_shifts.blur
low_res, contrast = image_shifts.low_res, image_shifts.contrast


# (transform, x-axis label, [(severity, label, function)]); severity 0 is the clean image.
SHIFTS: list[tuple[str, str, list[tuple[float, str, Callable[[Images], Images]]]]] = [
    ("rotation", "degrees (counter-clockwise)",
     [(d, f"{d:+d}°", lambda x, d=d: rotate(x, d)) for d in (-30, -20, -10, 10, 20, 30)]),
    ("scale", "zoom factor",
     [(f, f"x{f:.1f}", lambda x, f=f: scale(x, f)) for f in (0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.3)]),
    ("thickness", "3x3 filter passes (- erode, + dilate)",
     [(s, ("erode" if s < 0 else "dilate") + f" x{abs(s)}", lambda x, s=s: thickness(x, s))
      for s in (-2, -1, 1, 2)]),
    ("blur", "Gaussian sigma (pixels)",
     [(s, f"sigma {s}", lambda x, s=s: blur(x, s)) for s in (0.5, 1.0, 1.5, 2.0)]),
    ("low-res", "pixels per side of the low-res copy",
     [(s, f"{s}x{s}", lambda x, s=s: low_res(x, s)) for s in (16, 12, 8)]),
    ("contrast", "brightness factor",
     [(f, f"x{f}", lambda x, f=f: contrast(x, f)) for f in (0.8, 0.6, 0.4)]),
]
CLEAN_SEVERITY = {"rotation": 0, "scale": 1.0, "thickness": 0, "blur": 0.0, "low-res": 28,
                  "contrast": 1.0}


# --- predict's framing ----------------------------------------------------------------

def canvas(image: np.ndarray, height: int, width: int, top: int, left: int, zoom: int = 1,
           paper: bool = False) -> np.ndarray:
    """A 28x28 white-on-black digit enlarged `zoom` times (nearest) and pasted at
    (top, left) in a black canvas; `paper` makes it a dark digit on white."""
    digit = np.kron(image, np.ones((zoom, zoom), np.uint8)) if zoom > 1 else image
    out = np.zeros((height, width), np.uint8)
    out[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return 255 - out if paper else out


# (name, how each 28x28 image becomes a canvas)
CANVASES: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
    ("28x28 as is", lambda x: x),
    ("56x56, centred", lambda x: canvas(x, 56, 56, 14, 14)),
    ("100x60 (w x h), off-centre", lambda x: canvas(x, 60, 100, 4, 63)),
    ("28x88, wide margin on the right", lambda x: canvas(x, 28, 88, 0, 0)),
    ("100x60, 2x enlarged, off-centre", lambda x: canvas(x, 60, 100, 2, 10, zoom=2)),
    ("100x60, 2x enlarged, black on white paper", lambda x: canvas(x, 60, 100, 2, 10, zoom=2,
                                                                    paper=True)),
]


def framed(images: Images, make: Callable[[np.ndarray], np.ndarray], fit: str) -> Images:
    """What `predict` feeds the model for each canvas (as `predict.preprocess` does after
    reading a grayscale PNG, which gives exactly these pixels)."""
    fitter = predict.fit_mnist if fit == "mnist" else predict.fit_resize
    return np.stack([fitter(predict.white_on_black(make(x).astype(np.float32)))
                     for x in images])


# --- evaluation -----------------------------------------------------------------------

def scores(model: trained.Trained, images: Images, digits: np.ndarray,
           numbers: np.ndarray) -> dict[str, float]:
    p = trained.predict(model, images[..., None], numbers)
    every = digits[:, None] + np.arange(sampler.NUM_NUMBERS)[None, :]
    predicted = np.bincount(p.digit, minlength=sampler.NUM_NUMBERS)
    return {"most_common_digit": int(predicted.argmax()),
            "most_common_share": float(predicted.max() / len(digits)),
            "digit_accuracy": float(np.mean(p.digit == digits)),
            "sum_accuracy": float(np.mean(p.sum == digits + numbers)),
            "sum_agreement": float(np.mean(p.agree(numbers))),
            "exhaustive_sum_accuracy": float(np.mean(p.all_sums == every))}


def evaluate_run(workdir: str, images: Images, digits: np.ndarray,
                 log: Callable[[str], None]) -> dict[str, Any]:
    model = trained.load(workdir)
    numbers = sampler.test_numbers(model.config.seed, len(digits))
    start = time.perf_counter()
    clean = scores(model, images, digits, numbers)
    log(f"{workdir}: clean digit {100 * clean['digit_accuracy']:.2f}% "
        f"sum {100 * clean['sum_accuracy']:.2f}% agree {100 * clean['sum_agreement']:.2f}%")
    shifts = []
    for name, _, levels in SHIFTS:
        for severity, label, fn in levels:
            row = {"transform": name, "severity": severity, "label": label,
                   **scores(model, fn(images), digits, numbers)}
            shifts.append(row)
            log(f"  {name:9s} {label:10s} digit {100 * row['digit_accuracy']:6.2f}%  "
                f"sum {100 * row['sum_accuracy']:6.2f}%  agree {100 * row['sum_agreement']:6.2f}%")
    framing = []
    for name, make in CANVASES:
        for fit in ("mnist", "resize"):
            row = {"canvas": name, "fit": fit,
                   **scores(model, framed(images, make, fit), digits, numbers)}
            framing.append(row)
            log(f"  {name:42s} --fit {fit:6s} digit {100 * row['digit_accuracy']:6.2f}%  "
                f"sum {100 * row['sum_accuracy']:6.2f}%")
    c = model.config
    return {"workdir": os.path.abspath(workdir), "step": model.step, "epoch": model.epoch,
            "config": {"seed": c.seed, "epochs": c.epochs, "width": c.width,
                       "augment_shift": c.augment_shift},
            "clean": clean, "shifts": shifts, "framing": framing,
            "seconds": round(time.perf_counter() - start, 1)}


# --- outputs --------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(results: dict[str, Any]) -> str:
    runs = results["runs"]
    names = list(runs)
    head = " | ".join(f"{n}: digit | sum | agree" for n in names)
    lines = [f"Test images: {results['images']:,}; numbers fixed by each run's seed.", "",
             f"| transform | severity | {head} |",
             "|---|---|" + "---|---|---|" * len(names)]

    def cells(rows):
        return " | ".join(f"{_pct(r['digit_accuracy'])} | {_pct(r['sum_accuracy'])} | "
                          f"{_pct(r['sum_agreement'])}" for r in rows)

    lines.append(f"| none | clean | {cells([runs[n]['clean'] for n in names])} |")
    for i, row in enumerate(runs[names[0]]["shifts"]):
        lines.append(f"| {row['transform']} | {row['label']} | "
                     f"{cells([runs[n]['shifts'][i] for n in names])} |")
    head = " | ".join(f"{n}: digit | sum" for n in names)
    lines += ["", "predict's preprocessing on test images pasted into larger canvases:", "",
              f"| canvas | --fit | {head} |", "|---|---|" + "---|---|" * len(names)]
    for i, row in enumerate(runs[names[0]]["framing"]):
        values = " | ".join(f"{_pct(runs[n]['framing'][i]['digit_accuracy'])} | "
                            f"{_pct(runs[n]['framing'][i]['sum_accuracy'])}" for n in names)
        lines.append(f"| {row['canvas']} | {row['fit']} | {values} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: str) -> None:
    """Accuracy and agreement against severity, one panel per transform."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    runs = results["runs"]
    fig = Figure(figsize=(14, 8.5), dpi=100, layout="constrained")
    axes = fig.subplots(2, (len(SHIFTS) + 1) // 2, sharey=True).flat
    metrics = (("digit_accuracy", "digit acc", "tab:blue"),
               ("sum_accuracy", "sum acc", "tab:orange"),
               ("sum_agreement", "heads agree", "tab:green"))
    styles = ("-", "--", ":", "-.")
    for ax, (name, xlabel, _) in zip(axes, SHIFTS):
        for style, (run, result) in zip(styles, runs.items()):
            rows = [{"severity": CLEAN_SEVERITY[name], **result["clean"]}] + \
                   [r for r in result["shifts"] if r["transform"] == name]
            rows.sort(key=lambda r: r["severity"])
            x = [r["severity"] for r in rows]
            for key, label, colour in metrics:
                ax.plot(x, [r[key] for r in rows], style, color=colour, marker="o",
                        markersize=3.5, label=f"{label} ({run})")
        ax.axvline(CLEAN_SEVERITY[name], color="0.6", linewidth=0.8)
        ax.set_xticks(x)
        if name in ("low-res", "contrast"):
            ax.invert_xaxis()  # fewer pixels = more severe, to the right
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    axes = list(fig.axes)
    for ax in axes[::3]:
        ax.set_ylabel(f"on {results['images']:,} test images")
    axes[0].legend(fontsize=7.5, loc="lower center")
    fig.suptitle("Robustness to shifts of the test digits (grey line: the clean images)",
                 fontsize=12)
    fig.savefig(path)


def plot_examples(images: Images, path: str, count: int = 2) -> None:
    """Example test images under every transform and severity, and predict's framing."""
    from matplotlib.figure import Figure

    strips = [("clean", [("clean", images)])]
    strips += [(name, [(label, fn(images)) for _, label, fn in levels])
               for name, _, levels in SHIFTS]
    frames = [(f"{name.split(',')[0]}\n{fit}", framed(images, make, fit))
              for name, make in CANVASES[1:4] for fit in ("mnist", "resize")]
    strips.append(("framing", frames))
    cols = max(len(s) for _, s in strips)
    fig = Figure(figsize=(1.25 * cols, 1.45 * count * len(strips)), dpi=100,
                 layout="constrained")
    axes = fig.subplots(count * len(strips), cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for s, (name, levels) in enumerate(strips):
        for c, (label, transformed) in enumerate(levels):
            for r in range(count):
                ax = axes[s * count + r, c]
                ax.imshow(transformed[r], cmap="gray", vmin=0, vmax=255)
                if r == 0:
                    ax.set_title(f"{name}: {label}" if c == 0 else label, fontsize=7.5)
    fig.suptitle("Test images under each shift (two per transform); last "
                 "strip: canvases framed by predict --fit mnist / resize", fontsize=10)
    fig.savefig(path)


# --- command line ---------------------------------------------------------------------

def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = usage_parser("python -m experiments.robustness",
                          "Evaluate trained runs on shifted MNIST test images.")
    parser.add_argument("--workdir", action="append", required=True,
                        help="a trained run's workdir (repeat to compare runs)")
    parser.add_argument("--name", action="append", default=[],
                        help="a short name for each --workdir, in order (default: its folder)")
    parser.add_argument("--out", default="experiments/results/robustness")
    parser.add_argument("--limit", type=int, default=0, help="first N test images only (0: all)")
    parser.add_argument("--mnist-dir", default="", help="MNIST IDX folder (default: the run's)")
    parser.add_argument("--tfds-dir", default="", help="TFDS data dir (default: the run's)")
    args = parser.parse_args(argv)
    if args.name and len(args.name) != len(args.workdir):
        raise UsageError(f"--name was given {len(args.name)} times for {len(args.workdir)} "
                         f"--workdir: give one name per workdir or none")
    if args.limit < 0:
        raise UsageError(f"--limit {args.limit} is invalid: give 0 (all) or a positive count")
    return args


def _main(argv: Sequence[str] | None) -> None:
    args = _parse(argv)
    names = args.name or [os.path.basename(os.path.normpath(w)) for w in args.workdir]
    first = trained.load(args.workdir[0])  # a one-line error before loading any data
    mnist = data.load_mnist(args.tfds_dir or first.config.tfds_dir or None,
                            args.mnist_dir or first.config.mnist_dir or None)
    n = args.limit or len(mnist.test_labels)
    images = mnist.test_images[:n, :, :, 0]
    digits = mnist.test_labels[:n].astype(np.int64)
    log = lambda s: print(s, flush=True)  # noqa: E731
    results = {"images": n, "runs": {name: evaluate_run(w, images, digits, log)
                                     for name, w in zip(names, args.workdir)}}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "robustness.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "robustness.md"), "w") as f:
        f.write(markdown(results))
    plot(results, os.path.join(args.out, "robustness.png"))
    plot_examples(images[:3], os.path.join(args.out, "examples.png"))
    print(f"wrote {args.out}/robustness.json, robustness.md, robustness.png, examples.png")


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_main(_main, argv))


if __name__ == "__main__":
    main()
