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
MIN_CONTRAST = 24.0  # find_digit: ink must be this much brighter than the paper (of 255),
NOISE_MARGIN = 8.0   # and this many of the paper's noise standard deviations
BRIDGE = 0.2         # gaps up to this fraction of the largest piece's size are bridged
SPECK = 0.1          # pieces under this fraction of the largest are dust, not the digit
BLOB = 0.3           # a second piece this large beside the largest: several blobs
THICK = 6.0          # strokes wider than this (pixels at 28x28: MNIST's widest) are thinned


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


def flatten_background(pixels: np.ndarray) -> np.ndarray:
    """White-on-black float [H,W] less its slowly varying background (a grey opening as
    wide as half the image: strokes are narrower, so only uneven lighting is removed; on
    MNIST's black background it removes nothing)."""
    from scipy import ndimage

    side = max(3, max(pixels.shape) // 2)
    return pixels - ndimage.grey_opening(pixels, size=(side, side), mode="nearest")


def _stretch(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Pixels scaled so the border's median is 0 and the brightest is 1, and the span."""
    low = float(np.median(_border(pixels)))
    high = float(pixels.max())
    if high - low < 1.0:
        return np.zeros(pixels.shape), high - low
    return np.clip((pixels - low) / (high - low), 0.0, 1.0), high - low


def find_digit(pixels: np.ndarray, path: str) -> np.ndarray:
    """The digit's ink in white-on-black float [H,W] (bool [H,W]), or a one-line UsageError
    naming `path` when there is no ink (a blank or uniform image, or only noise) or several
    blobs of ink of comparable size (more than one digit, or a digit and something else).

    Ink is what stands above INK after the contrast stretch; pieces closer than BRIDGE of
    the digit's size count as one (MNIST's 4s and 5s have broken strokes), and pieces
    under SPECK of the largest are dust, left out of the digit."""
    from scipy import ndimage

    stretched, span = _stretch(pixels)
    spread = 1.4826 * float(np.median(np.abs(pixels - np.median(pixels))))  # noise sigma
    if span < max(MIN_CONTRAST, NOISE_MARGIN * spread):
        raise UsageError(f"{path}: no ink found (the image is blank, uniform or only noise, "
                         f"or --background is the wrong way round): give an image of one "
                         f"digit")
    ink = stretched > INK
    eight = np.ones((3, 3), bool)
    pieces, count = ndimage.label(ink, structure=eight)
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)[1:]
    biggest = np.flatnonzero(pieces == 1 + int(sizes.argmax()))
    rows, cols = np.unravel_index(biggest, ink.shape)
    reach = max(1, round(BRIDGE * max(np.ptp(rows) + 1, np.ptp(cols) + 1)))
    grown = ndimage.maximum_filter(ink, size=2 * reach + 1)
    groups, _ = ndimage.label(grown, structure=eight)
    mass = np.bincount(groups[ink], minlength=groups.max() + 1)
    mass[0] = 0
    order = np.argsort(mass)[::-1]
    blobs = int(np.sum(mass >= BLOB * mass[order[0]]))
    if blobs > 1:
        raise UsageError(f"{path}: several blobs of ink found ({blobs} of comparable size, "
                         f"apart): crop the image to one digit")
    return ink & (mass[groups] >= SPECK * mass[order[0]])


def fit_mnist(pixels: np.ndarray, digit: np.ndarray | None = None) -> np.ndarray:
    """White-on-black float [H,W] -> uint8 [28,28] framed as MNIST's digits are; `digit`
    (from `find_digit`) picks the ink to crop to, else every pixel above INK."""
    from PIL import Image

    stretched, span = _stretch(pixels)
    if span < 1.0:  # a blank image: nothing to frame
        return np.zeros((SIZE, SIZE), np.uint8)
    ink = stretched > INK if digit is None else digit
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
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


def stroke_width(image: np.ndarray) -> float:
    """Typical stroke width in pixels of a uint8 [28,28] digit: twice the median depth of
    its strokes' centre lines (MNIST's: 2 to 4, at most 6)."""
    from scipy import ndimage

    ink = image > 128
    depth = ndimage.distance_transform_edt(ink)
    ridge = ink & (depth >= ndimage.maximum_filter(depth, size=3))
    return 2.0 * float(np.median(depth[ridge])) if ridge.any() else 0.0


def thin_strokes(image: np.ndarray) -> np.ndarray:
    """A framed digit drawn bolder than any MNIST digit (a brush, a marker) eroded, one
    pixel per side at a time, until its strokes are no wider than THICK: the model never
    saw such strokes. MNIST's own digits are left as they are."""
    from scipy import ndimage

    for _ in range(3):
        if stroke_width(image) <= THICK:
            break
        image = ndimage.grey_erosion(image, size=(3, 3))
    return image


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
    """The image file at `path` as MNIST's uint8 [28,28,1], white digit on black; a
    one-line UsageError when it does not look like one digit (see `find_digit`)."""
    pixels = white_on_black(np.asarray(read_image(path), np.float32), background)
    flat = flatten_background(pixels)
    digit = find_digit(flat, path)
    framed = thin_strokes(fit_mnist(flat, digit)) if fit == "mnist" else fit_resize(pixels)
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

