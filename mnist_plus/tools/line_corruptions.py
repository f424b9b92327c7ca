"""MNIST-C's corruptions that draw or trace lines: a dotted line and a zigzag across the
digit, and Canny's edges of its strokes (`corruptions` lists them with the others)."""

from __future__ import annotations

import numpy as np

from mnist_plus.tools.image_shifts import SIZE
from mnist_plus.tools.image_shifts import to_uint8 as _to_uint8
from mnist_plus.tools.image_shifts import unit as _unit

Images = np.ndarray      # uint8 [N, 28, 28]


def _line(c0: np.ndarray, r0: np.ndarray, c1: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Per image, a soft line from (r0, c0) to (r1, c1), [n, 28, 28] in 0..1: brightness
    log(1 - d / 2.3) + 1 at vertical distance d from it (MNIST-C's profile), only between
    its end columns."""
    c0, r0, c1, r1 = (np.asarray(v, np.float64)[:, None, None] for v in (c0, r0, c1, r1))
    cols = np.arange(SIZE, dtype=np.float64)[None, None, :]
    rows = np.arange(SIZE, dtype=np.float64)[None, :, None]
    flat = c1 == c0
    slope = np.where(flat, 0.0, (r1 - r0) / np.where(flat, 1.0, c1 - c0))
    d = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - d / 2.3) + 1, 0, 1)
    inside = (cols >= np.floor(c0)) & (cols < np.ceil(c1))
    return np.where(inside & ~flat, line, 0.0)


def dotted_line(images: Images, rng: np.random.Generator) -> Images:
    """A dashed line (2 pixels on, 2 off) across the image between random rows."""
    n = len(images)
    r0, r1 = rng.integers(0, SIZE - 1, size=(2, n))
    line = _line(np.zeros(n), r0, np.full(n, SIZE - 1), r1)
    line[:, :, (np.arange(SIZE) // 2) % 2 == 0] = 0.0  # MNIST-C: columns 0-1 off
    return _to_uint8(np.clip(_unit(images) + line, 0, 1))


def zigzag(images: Images, rng: np.random.Generator, length: float = 2.0,
           width: float = 2.0) -> Images:
    """A zigzag line across the image (columns 2..25), teeth `length` apart and `width`
    high, along a random row and a slope of up to 5 rows."""
    n = len(images)
    r0 = rng.integers(0, SIZE - 1, n).astype(np.float64)
    r1 = r0 + rng.integers(-5, 5, n)
    c0, c1 = 2.0, 25.0
    theta = np.arctan((r1 - r0) / (c1 - c0))
    run = (c1 - c0) / np.cos(theta)                  # the straight line's length
    teeth = int(np.ceil(run.max() / length))
    # Points along the line every `length`, alternately `width` above and below it.
    along = np.minimum(np.arange(teeth + 1)[None, :] * length, run[:, None])
    across = np.where(np.arange(teeth + 1) % 2 == 1, width, 0.0)[None, :] * \
        (-1.0) ** (np.arange(teeth + 1)[None, :] // 2)
    across = np.where(along >= run[:, None], 0.0, across)
    cs = c0 + along * np.cos(theta)[:, None] - across * np.sin(theta)[:, None]
    rs = r0[:, None] + along * np.sin(theta)[:, None] + across * np.cos(theta)[:, None]
    x = _unit(images)
    for k in range(teeth):
        x = np.clip(x + _line(cs[:, k], rs[:, k], cs[:, k + 1], rs[:, k + 1]), 0, 1)
    return _to_uint8(x)


def _sobel(x: np.ndarray, axis: int) -> np.ndarray:
    """Sobel derivative of each image [N, H, W] along `axis` (1: rows, 2: columns), smoothed
    [1, 2, 1] along the other image axis only (never across images), borders reflected as
    `scipy.ndimage.sobel` does."""
    from scipy import ndimage

    other = 3 - axis
    d = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=axis, mode="reflect")
    return ndimage.correlate1d(d, [1.0, 2.0, 1.0], axis=other, mode="reflect")


def canny_edges(images: Images, rng: np.random.Generator, sigma: float = 1.0,
                low: float = 0.1, high: float = 0.2) -> Images:
    """Only the strokes' outlines: Canny's edge detector as skimage's `feature.canny` with
    its defaults, which MNIST-C applies to the 0..1 image: a Gaussian of `sigma` (zero
    outside the image, renormalised by the smoothed all-ones mask), Sobel gradients,
    non-maximum suppression with the neighbours' magnitudes interpolated along the
    gradient, hysteresis between `low` and `high` (8-connected), the 1-pixel border never
    an edge. Per image, no randomness."""
    from scipy import ndimage

    x = _unit(images)
    smooth = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode="constant", truncate=4.0)
    ones = ndimage.gaussian_filter(np.ones(x.shape[1:]), sigma, mode="constant", truncate=4.0)
    smooth = smooth / (ones + np.finfo(np.float64).eps)
    gi, gj = _sobel(smooth, 1), _sobel(smooth, 2)  # along rows (i) and columns (j)
    magnitude = np.hypot(gi, gj)
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))

    def at(di: int, dj: int) -> np.ndarray:  # magnitude of the neighbour (i + di, j + dj)
        return padded[:, 1 + di: 1 + di + SIZE, 1 + dj: 1 + dj + SIZE]

    ai, aj = np.abs(gi), np.abs(gj)
    inside = np.zeros(magnitude.shape, bool)
    inside[:, 1:-1, 1:-1] = True
    inside &= magnitude > 0
    same, other = (gi >= 0) & (gj >= 0), (gi <= 0) & (gj <= 0)
    cross, cross2 = (gi <= 0) & (gj >= 0), (gi >= 0) & (gj <= 0)
    peak = np.zeros(magnitude.shape, bool)
    # (sector, weight, neighbours ahead (c1, c2), neighbours behind (c1, c2)), in the order
    # of the four gradient sectors 0-45, 45-90, 90-135, 135-180 degrees. A weight that is
    # not finite (a zero gradient component) only lands outside its sector.
    with np.errstate(divide="ignore", invalid="ignore"):
        w_rows, w_cols = aj / ai, ai / aj
        for where, w, ahead, behind in (
                ((same | other) & (ai >= aj), w_rows, ((1, 0), (1, 1)), ((-1, 0), (-1, -1))),
                ((same | other) & (ai <= aj), w_cols, ((0, 1), (1, 1)), ((0, -1), (-1, -1))),
                ((cross | cross2) & (ai <= aj), w_cols, ((0, 1), (-1, 1)), ((0, -1), (1, -1))),
                ((cross | cross2) & (ai >= aj), w_rows, ((-1, 0), (-1, 1)), ((1, 0), (1, -1)))):
            plus = at(*ahead[1]) * w + at(*ahead[0]) * (1 - w) <= magnitude
            minus = at(*behind[1]) * w + at(*behind[0]) * (1 - w) <= magnitude
            peak = np.where(where & inside, plus & minus, peak)
    weak = peak & (magnitude >= low)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, count = ndimage.label(weak, structure=structure)
    keep = np.zeros(count + 1, bool)
    keep[np.unique(labels[weak & (magnitude >= high)])] = True
    keep[0] = False
    return np.where(keep[labels], 255, 0).astype(np.uint8)
