"""Corrupted copies of MNIST test images: the 15 MNIST-C corruptions (Mu and Gilmer 2019,
arXiv:1906.02337), rebuilt with NumPy/SciPy/Pillow from the paper's descriptions (nothing
is downloaded; the three that draw or trace lines are in `line_corruptions`), and the
list the benchmark runs, with the project's own shifts (stroke thickness, low
resolution, contrast: `image_shifts`).

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
from mnist_plus.tools.image_shifts import to_uint8 as _to_uint8
from mnist_plus.tools.image_shifts import unit as _unit
from mnist_plus.tools.line_corruptions import canny_edges, dotted_line, zigzag

CENTRE = (SIZE - 1) / 2  # 13.5: MNIST-C's warps keep the image centre fixed
Images = np.ndarray      # uint8 [N, 28, 28]
Corrupt = Callable[[Images, np.random.Generator], Images]


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
                                          mode="grid-constant", cval=0.0)
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
    """Gaussian blur down the columns, then pixels swapped with a random neighbour (local
    shuffling, MNIST-C's sweep from the bottom-right corner, each position swapped with
    probability 1/2), then blurred again. MNIST-C calls skimage's `gaussian(...,
    multichannel=True)` on its 2-D image, which (skimage <= 0.18) takes the columns for
    channels: the blur runs along axis 0 (rows) only. Its first result is truncated to
    uint8 (`np.uint8`), not rounded."""
    from scipy import ndimage

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=(0, sigma, 0), mode="nearest", truncate=4.0)

    x = np.clip(blur(_unit(images)) * 255.0, 0, 255).astype(np.uint8)
    n = np.arange(len(x))
    for _ in range(iterations):
        for h in range(SIZE - max_delta, max_delta, -1):      # MNIST-C's sweep: 27 .. 2
            for w in range(SIZE - max_delta, max_delta, -1):
                swap = rng.random(len(x)) < 0.5               # MNIST-C's coin per position
                # MNIST-C draws offsets with randint(-delta, delta): -delta .. delta-1.
                dy, dx = rng.integers(-max_delta, max_delta, size=(2, len(x)))
                i, h2, w2 = n[swap], h + dy[swap], w + dx[swap]
                here, there = x[i, h, w].copy(), x[i, h2, w2].copy()
                x[i, h, w], x[i, h2, w2] = there, here
    return _to_uint8(blur(_unit(x)))


def motion_blur(images: Images, rng: np.random.Generator, radius: int = 10,
                sigma: float = 3.0) -> Images:
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

def brightness(images: Images, rng: np.random.Generator, amount: float = 0.5) -> Images:
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


def fog(images: Images, rng: np.random.Generator, strength: float = 3.0,
        decay: float = 1.4) -> Images:
    """Plasma-fractal haze added (`strength` times the top-left 28x28 crop of a 256x256
    map normalised as a whole, as MNIST-C), then the image rescaled so its brightest pixel
    keeps its value. The crop's level varies much from image to image (mean 0.51, sd 0.2
    over maps), which a smaller map rescaled cannot give."""
    x = _unit(images)
    top = x.max(axis=(1, 2), keepdims=True)
    chunk = 128  # 128 maps of 256x256 floats: 64 MiB at a time
    haze = np.concatenate([plasma(rng, min(chunk, len(x) - i), 256, decay)[:, :SIZE, :SIZE]
                           for i in range(0, len(x), chunk)]) if len(x) else x
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
