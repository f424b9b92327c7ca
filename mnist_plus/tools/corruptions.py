"""Corrupted copies of MNIST test images: the 15 MNIST-C corruptions (Mu and Gilmer 2019,
arXiv:1906.02337), rebuilt with NumPy/SciPy/Pillow from the paper's descriptions (nothing
is downloaded), and the list the benchmark runs, with the project's own shifts (stroke
thickness, low resolution, contrast: `image_shifts`).

Each corruption is a pure function `uint8 [N,28,28], np.random.Generator -> uint8 [N,28,28]`
with its strength as keyword arguments: the defaults are the strengths MNIST-C chose (its
published severities, as best reconstructed); `MILD` gives each a strength at which the
digit should still look clean, for the test that the corruption keeps the digit readable.
All randomness comes from the Generator, so a seed gives the same images every time.
docs/robustness.md says where each one follows or departs from the paper.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Callable

import numpy as np

from mnist_plus.tools.image_shifts import SIZE, contrast, low_res, thickness

CENTRE = (SIZE - 1) / 2  # 13.5: MNIST-C's warps keep the image centre fixed
Images = np.ndarray      # uint8 [N, 28, 28]
Corrupt = Callable[[Images, np.random.Generator], Images]


def _to_uint8(x: np.ndarray) -> Images:
    """Float images in 0..1 -> uint8 0..255 (rounded, clipped)."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _unit(images: Images) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=n)


def _warp(images: Images, matrices: np.ndarray, offsets: np.ndarray) -> Images:
    """Each image resampled bilinearly at `matrix @ (row, col) + offset` (black outside),
    as skimage's `warp(image, inverse_map)` that MNIST-C used."""
    from scipy import ndimage

    out = np.empty(images.shape, np.float64)
    x = _unit(images)
    for i in range(len(images)):
        out[i] = ndimage.affine_transform(x[i], matrices[i], offsets[i], order=1,
                                          mode="constant", cval=0.0)
    return _to_uint8(out)


def _centred(matrices: np.ndarray) -> np.ndarray:
    """The offsets that keep the centre (13.5, 13.5) fixed under each matrix."""
    c = np.array([CENTRE, CENTRE])
    return c - matrices @ c


# --- noise -------------------------------------------------------------------------------

def shot_noise(images: Images, rng: np.random.Generator, photons: float = 3.0) -> Images:
    """Poisson noise: each pixel a count of `photons` * brightness, rescaled (fewer photons,
    more noise; black stays black)."""
    return _to_uint8(rng.poisson(_unit(images) * photons) / photons)


def impulse_noise(images: Images, rng: np.random.Generator, amount: float = 0.17) -> Images:
    """Salt and pepper: a fraction `amount` of pixels set to white or black, half each."""
    x = images.copy()
    hit = rng.random(images.shape) < amount
    salt = rng.random(images.shape) < 0.5
    x[hit & salt] = 255
    x[hit & ~salt] = 0
    return x


# --- blur --------------------------------------------------------------------------------

def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)


def glass_blur(images: Images, rng: np.random.Generator, sigma: float = 0.7,
               max_delta: int = 1, iterations: int = 2) -> Images:
    """Gaussian blur, then each pixel swapped with a random neighbour (local shuffling,
    MNIST-C's sweep from the bottom-right corner), then blurred again."""
    x = _to_uint8(_gaussian(_unit(images), sigma))
    n = np.arange(len(x))
    for _ in range(iterations):
        for h in range(SIZE - max_delta, max_delta, -1):      # MNIST-C's sweep: 27 .. 2
            for w in range(SIZE - max_delta, max_delta, -1):
                # MNIST-C draws offsets with randint(-delta, delta): -delta .. delta-1.
                dy, dx = rng.integers(-max_delta, max_delta, size=(2, len(x)))
                h2, w2 = h + dy, w + dx
                here, there = x[n, h, w].copy(), x[n, h2, w2].copy()
                x[n, h, w], x[n, h2, w2] = there, here
    return _to_uint8(_gaussian(_unit(x), sigma))


def motion_blur(images: Images, rng: np.random.Generator, radius: int = 15,
                sigma: float = 5.0) -> Images:
    """A one-sided Gaussian streak (ImageMagick's motion blur, which MNIST-C used): each
    pixel the weighted mean of the pixels behind it along a random angle in -45..45
    degrees, weights exp(-d^2 / 2 sigma^2) for d = 0..radius pixels."""
    n = len(images)
    angle = np.deg2rad(rng.uniform(-45.0, 45.0, n))
    d = np.arange(radius + 1, dtype=np.float64)
    weights = np.exp(-d ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    pad = radius + 1
    padded = np.pad(_unit(images), ((0, 0), (pad, pad), (pad, pad)))
    rows, cols = np.indices((SIZE, SIZE))
    index = np.arange(n)[:, None, None]
    out = np.zeros((n, SIZE, SIZE))
    for k, w in zip(d, weights):
        dy = np.round(k * np.sin(angle)).astype(int)[:, None, None]
        dx = np.round(k * np.cos(angle)).astype(int)[:, None, None]
        out += w * padded[index, rows + dy + pad, cols + dx + pad]
    return _to_uint8(out)


# --- geometry (MNIST-C's strengths: shear 0.4, rotate 0.4 rad, scale 0.7, translate 3) ----

def shear(images: Images, rng: np.random.Generator, amount: float = 0.4) -> Images:
    """Horizontal shear by `amount` radians, left or right at random, about the centre."""
    s = _signs(rng, len(images)) * amount
    m = np.zeros((len(images), 2, 2))
    # skimage's AffineTransform(shear=s) in (x, y): x' = x - sin(s) y, y' = cos(s) y.
    m[:, 0, 0] = np.cos(s)
    m[:, 1, 0] = -np.sin(s)
    m[:, 1, 1] = 1.0
    return _warp(images, m, _centred(m))


def rotate(images: Images, rng: np.random.Generator, radians: float = 0.4) -> Images:
    """Rotation by `radians`, either way at random, about the centre."""
    a = _signs(rng, len(images)) * radians
    return rotate_by(images, np.rad2deg(a))


def rotate_by(images: Images, degrees: np.ndarray | float) -> Images:
    """Each image rotated counter-clockwise by its `degrees` about the centre."""
    a = np.deg2rad(np.broadcast_to(np.asarray(degrees, np.float64), (len(images),)))
    m = np.zeros((len(images), 2, 2))
    # Output (row, col) samples the input rotated back: counter-clockwise on screen.
    m[:, 0, 0], m[:, 0, 1] = np.cos(a), np.sin(a)
    m[:, 1, 0], m[:, 1, 1] = -np.sin(a), np.cos(a)
    return _warp(images, m, _centred(m))


def scale(images: Images, rng: np.random.Generator, factor: float = 0.7) -> Images:
    """Zoom by `factor` about the centre (< 1 shrinks the digit). No randomness."""
    return scale_by(images, factor)


def scale_by(images: Images, factor: float) -> Images:
    """Zoom by `factor` about the centre, keeping 28x28."""
    m = np.broadcast_to(np.eye(2) / factor, (len(images), 2, 2)).copy()
    return _warp(images, m, _centred(m))


def translate(images: Images, rng: np.random.Generator, pixels: int = 3) -> Images:
    """Shift by `pixels` along both axes, each direction random (black fills in)."""
    dy, dx = (_signs(rng, len(images)).astype(int) * pixels for _ in range(2))
    out = np.zeros_like(images)
    for i in range(len(images)):
        out[i] = np.roll(images[i], (dy[i], dx[i]), axis=(0, 1))
        if dy[i] > 0:
            out[i, :dy[i]] = 0
        elif dy[i] < 0:
            out[i, dy[i]:] = 0
        if dx[i] > 0:
            out[i, :, :dx[i]] = 0
        elif dx[i] < 0:
            out[i, :, dx[i]:] = 0
    return out


# --- lighting and occlusion --------------------------------------------------------------

def brightness(images: Images, rng: np.random.Generator, amount: float = 0.4) -> Images:
    """Every pixel brightened by `amount` of full scale (HSV value + amount on grey)."""
    return _to_uint8(_unit(images) + amount)


def stripe(images: Images, rng: np.random.Generator, width: int = 7) -> Images:
    """The leftmost and rightmost `width` columns inverted. No randomness."""
    x = images.copy()
    x[:, :, :width] = 255 - x[:, :, :width]
    x[:, :, SIZE - width:] = 255 - x[:, :, SIZE - width:]
    return x


def plasma(rng: np.random.Generator, n: int, size: int = 32, decay: float = 1.5
           ) -> np.ndarray:
    """n diamond-square fractal maps [n, size, size] in 0..1 (`size` a power of 2):
    the noise behind fog."""
    maps = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def mean_plus_noise(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        maps[:, half:size:step, half:size:step] = mean_plus_noise(square)
        centres = maps[:, half:size:step, half:size:step]
        corners = maps[:, 0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        maps[:, 0:size:step, half:size:step] = mean_plus_noise(left)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        maps[:, half:size:step, 0:size:step] = mean_plus_noise(top)
        step //= 2
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(images: Images, rng: np.random.Generator, strength: float = 2.5,
        decay: float = 1.5) -> Images:
    """Plasma-fractal haze added (`strength` times a 0..1 map), then the image rescaled
    so its brightest pixel keeps its value."""
    x = _unit(images)
    top = x.max(axis=(1, 2), keepdims=True)
    # MNIST-C crops 28x28 from a 256x256 map normalised as a whole: such a crop spans about
    # 0.26 of the range around a mean of 0.47 (measured on 250 maps at decay 1.5). A 32x32
    # map (80 times cheaper) rescaled to that span stands in for it.
    haze = 0.34 + 0.26 * plasma(rng, len(images), 32, decay)[:, :SIZE, :SIZE]
    x = x + strength * haze
    return _to_uint8(x * top / (top + strength))


def spatter(images: Images, rng: np.random.Generator, mean: float = 0.65,
            spread: float = 0.3, smooth: float = 1.0, threshold: float = 0.65,
            soften: float = 1.5, shade: float = 63 / 255) -> Images:
    """Mud splashes: smoothed Gaussian noise above `threshold` marks blobs, which are
    softened and, where solid (>= 0.8), painted grey `shade` over the image."""
    liquid = _gaussian(rng.normal(mean, spread, images.shape), smooth)
    mud = _gaussian((liquid > threshold).astype(np.float64), soften)
    mud[mud < 0.8] = 0.0
    return _to_uint8(_unit(images) * (1 - mud) + shade * mud)


# --- lines -------------------------------------------------------------------------------

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
    line[:, :, (np.arange(SIZE) // 2) % 2 == 1] = 0.0
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


def _seedless(fn: Callable[..., Images], *args) -> Corrupt:
    return lambda images, rng: fn(images, *args)


# --- the benchmark's list ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Corruption:
    name: str
    apply: Corrupt              # at the benchmark's strength
    mnist_c: bool               # one of MNIST-C's 15 (the mean and the worst are over these)
    # A strength at which the digit still looks clean, if any. Glass blur's has no shuffle:
    # one sweep already drags pixels several places (as MNIST-C's does).
    mild: Corrupt | None = None
    # The mild strength moves the background's level (brightness, fog): readable once
    # contrast is stretched, as `predict` does, not necessarily by a model as is.
    shifts_level: bool = False


P = functools.partial
CORRUPTIONS: tuple[Corruption, ...] = (
    Corruption("shot_noise", shot_noise, True, P(shot_noise, photons=60.0)),
    Corruption("impulse_noise", impulse_noise, True, P(impulse_noise, amount=0.01)),
    Corruption("glass_blur", glass_blur, True, P(glass_blur, sigma=0.5, iterations=0)),
    Corruption("motion_blur", motion_blur, True, P(motion_blur, radius=1, sigma=1.0)),
    Corruption("shear", shear, True, P(shear, amount=0.1)),
    Corruption("scale", scale, True, P(scale, factor=0.9)),
    Corruption("rotate", rotate, True, P(rotate, radians=0.1)),
    Corruption("brightness", brightness, True, P(brightness, amount=0.1), True),
    Corruption("translate", translate, True, P(translate, pixels=1)),
    Corruption("stripe", stripe, True, P(stripe, width=1)),
    Corruption("fog", fog, True, P(fog, strength=0.2), True),
    Corruption("spatter", spatter, True, P(spatter, mean=0.4)),
    Corruption("dotted_line", dotted_line, True),
    Corruption("zigzag", zigzag, True),
    Corruption("canny_edges", canny_edges, True),
    Corruption("erode", _seedless(thickness, -1), False),
    Corruption("dilate", _seedless(thickness, 1), False),
    Corruption("low_res_16", _seedless(low_res, 16), False),
    Corruption("low_res_12", _seedless(low_res, 12), False),
    Corruption("low_res_8", _seedless(low_res, 8), False),
    Corruption("contrast", _seedless(contrast, 0.4), False),
)
NAMES = tuple(c.name for c in CORRUPTIONS)
MNIST_C = tuple(c.name for c in CORRUPTIONS if c.mnist_c)


def by_name(name: str) -> Corruption:
    return CORRUPTIONS[NAMES.index(name)]


def rng_for(seed: int, name: str) -> np.random.Generator:
    """The Generator of corruption `name` under `seed`: one independent stream each, keyed
    by the name, so adding, dropping or reordering corruptions changes no other's images."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])
