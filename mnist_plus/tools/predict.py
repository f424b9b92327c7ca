"""Digit and sum for image files: `python -m mnist_plus.predict --workdir runs/ --number 4 a.png`.

Loads the newest checkpoint of the workdir and prints, per image, the predicted
digit, the predicted sum (digit + number) and their probabilities.

Any PNG/JPEG (any size, colour, or alpha) becomes a 28x28 MNIST-like image:
1. grayscale (transparent pixels count as white paper);
2. white digit on black, as MNIST: `--background white` inverts black-on-white
   images; `auto` (default) inverts when the border is mostly bright;
3. `--fit mnist` (default), as MNIST was made: stretch contrast so the background is
   black and the strokes white, crop to the digit's bounding box, scale it to fit 20x20
   keeping its aspect ratio, and place it in 28x28 so its centre of mass is the centre.
   `--fit resize` only pads to a square and resizes to 28x28, for images that are
   already framed like MNIST (such as MNIST's own test images).
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

import numpy as np

from mnist_plus.runtime import compile_cache
from mnist_plus.tools import trained
from mnist_plus import cli
from mnist_plus.errors import UsageError

SIZE = 28
BOX = 20           # MNIST scaled each digit's bounding box to fit 20x20
INK = 0.2          # after stretching, pixels above this fraction of white are the digit


def read_image(path: str):
    """A PIL grayscale image, or a UsageError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder, not an image")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise UsageError(f"{path} is not an image (PIL cannot identify it; give PNG or JPEG "
                         f"files)") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read the image ({e})") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return image.convert("L")


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def white_on_black(pixels: np.ndarray, background: str = "auto") -> np.ndarray:
    """float [H,W] in 0..255 with the digit white on black (inverted if needed)."""
    invert = (background == "white" or
              (background == "auto" and float(np.median(_border(pixels))) > 127.5))
    return 255.0 - pixels if invert else pixels


def fit_mnist(pixels: np.ndarray) -> np.ndarray:
    """White-on-black float [H,W] -> uint8 [28,28] framed as MNIST's digits are."""
    from PIL import Image

    low = float(np.median(_border(pixels)))
    high = float(pixels.max())
    if high - low < 1.0:  # a blank image: nothing to frame
        return np.zeros((SIZE, SIZE), np.uint8)
    stretched = np.clip((pixels - low) / (high - low), 0.0, 1.0)
    rows = np.flatnonzero((stretched > INK).any(axis=1))
    cols = np.flatnonzero((stretched > INK).any(axis=0))
    crop = stretched[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    digit = np.asarray(Image.fromarray((255 * crop).astype(np.float32), mode="F")
                       .resize((new_w, new_h), Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 255)
    total = digit.sum()
    ys, xs = np.indices(digit.shape)
    cy, cx = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = int(np.clip(round(SIZE / 2 - 0.5 - cy), 0, SIZE - new_h))
    left = int(np.clip(round(SIZE / 2 - 0.5 - cx), 0, SIZE - new_w))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top: top + new_h, left: left + new_w] = digit
    return np.round(out).astype(np.uint8)


def fit_resize(pixels: np.ndarray) -> np.ndarray:
    """White-on-black float [H,W] -> uint8 [28,28]: padded to a square (black), resized."""
    from PIL import Image

    h, w = pixels.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    square[(side - h) // 2: (side - h) // 2 + h, (side - w) // 2: (side - w) // 2 + w] = pixels
    resized = np.asarray(Image.fromarray(square, mode="F")
                         .resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    return np.round(np.clip(resized, 0, 255)).astype(np.uint8)


def preprocess(path: str, background: str = "auto", fit: str = "mnist") -> np.ndarray:
    """The image file at `path` as MNIST's uint8 [28,28,1], white digit on black."""
    pixels = white_on_black(np.asarray(read_image(path), np.float32), background)
    framed = fit_mnist(pixels) if fit == "mnist" else fit_resize(pixels)
    return framed[..., None]


def predict_files(workdir: str, paths: Sequence[str], number: int, background: str = "auto",
                  fit: str = "mnist", step: str | int = "latest") -> list[dict]:
    """One dict per image: path, digit, digit_probability, sum, sum_probability, agree
    (the sum head says digit + number)."""
    images, problems = [], []
    for path in paths:  # read every file first: all bad files are named at once
        try:
            images.append(preprocess(path, background, fit))
        except UsageError as e:
            problems.append(str(e))
    if problems:
        raise UsageError(f"{len(problems)} of {len(paths)} files cannot be used: "
                         + "; ".join(problems))
    model = trained.load(workdir, step)
    numbers = np.full(len(images), number, np.int32)
    p = trained.predict(model, np.stack(images), numbers)
    agree = p.agree(numbers)
    return [{"path": path, "digit": int(p.digit[i]),
             "digit_probability": float(p.digit_probs[i].max()),
             "sum": int(p.sum[i]), "sum_probability": float(p.sum_probs[i].max()),
             "agree": bool(agree[i])}
            for i, path in enumerate(paths)]


def format_table(rows: Sequence[dict], number: int) -> str:
    width = max([len("image")] + [len(r["path"]) for r in rows])
    lines = [f"{'image':<{width}}  number  digit  p(digit)  sum   p(sum)  agree"]
    for r in rows:
        lines.append(f"{r['path']:<{width}}  {number:>6}  {r['digit']:>5}  "
                     f"{100 * r['digit_probability']:>7.2f}%  {r['sum']:>3}  "
                     f"{100 * r['sum_probability']:>6.2f}%  {'yes' if r['agree'] else 'NO':>5}")
    disagree = sum(not r["agree"] for r in rows)
    if disagree:
        lines += ["", f"agree NO ({disagree} of {len(rows)}): the sum is not digit + {number}, "
                      f"so at least one of the two heads is wrong on that image"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    """`python -m mnist_plus.predict` once its flags have parsed."""
    number = cli.predict_number(args.number)
    compile_cache.enable()
    rows = predict_files(args.workdir, args.images, number, args.background, args.fit,
                         args.step)
    print(format_table(rows, number))

