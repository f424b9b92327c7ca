"""The write-up's MnistPlusNum as pure NumPy: images, random numbers, sum labels.

Every random choice comes from a `np.random.Generator` derived from
(seed, stream, epoch), so an epoch's stream is a function of those numbers
alone: a resumed run, a scanned loop and a vmapped seed all see the same data.
"""

from __future__ import annotations

import functools
import math
from typing import Iterator, NamedTuple

import numpy as np

from mnist_plus.task import HOLDOUTS, NUM_NUMBERS, NUM_SUMS, Batch, steps_per_epoch  # noqa: F401

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
_TRAIN_STREAM = 0
_TEST_STREAM = 1
_SHIFT_STREAM = 2
_HOLDOUT_STREAM = 3
_WARP_STREAM = 4
_ELASTIC_STREAM = 5
# Streams of the image-quality families (`apply_quality`), one each: turning one family on
# leaves every other family's draws, and the order, numbers, shifts and warps, unchanged.
_STROKE_STREAM = 6
_OUTLINE_STREAM = 7
_BLUR_STREAM = 8
_LOWRES_STREAM = 9
_BACKGROUND_STREAM = 10
_NOISE_STREAM = 11
_OCCLUDE_STREAM = 12
ELASTIC_GRID = 7  # control points per side of the elastic field: 4.5 px apart on 28x28


class Augment(NamedTuple):
    """Random transforms of training images (all zero: none). Hashable, so a jitted
    loop can take it as a static argument.

    `shift`: integer translation by up to this many pixels (exact copies of pixels).
    `rotate` (degrees), `scale` (relative zoom) and `shear`: a small random affine map
    per image, resampled bilinearly, the integer shift included in it.
    `elastic`: a smooth random displacement field per image (Simard et al. 2003's
    elastic distortion, drawn on a coarse grid of `ELASTIC_GRID` x `ELASTIC_GRID`
    control points): the root mean square, in pixels, of each pixel's displacement along
    each axis. Simard's alpha 34, sigma 4 on 29x29 images is about 1.4.

    The image-quality families (`apply_quality`, after the warps; host only) are each the
    probability that an image gets that family's transform, with a strength drawn per
    image: `stroke` (thinner or thicker strokes), `outline` (the strokes' inner edge
    only), `blur`, `lowres` (down to fewer pixels and back), `background` (contrast
    lowered and a smooth grey field added), `noise` and `occlude` (a line drawn across or
    a rectangle erased).
    """

    shift: int = 0
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic: float = 0.0
    stroke: float = 0.0
    outline: float = 0.0
    blur: float = 0.0
    lowres: float = 0.0
    background: float = 0.0
    noise: float = 0.0
    occlude: float = 0.0

    @property
    def quality(self) -> bool:
        """Whether any image-quality family is on (`apply_quality`)."""
        return any(self[i] for i in range(5, len(self)))

    @property
    def affine(self) -> bool:
        """Whether images are resampled (`warp`) rather than moved by whole pixels."""
        return bool(self.rotate or self.scale or self.shear or self.elastic)


NO_AUGMENT = Augment()



def _normalise_arithmetic(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / np.float32(255.0) - np.float32(MNIST_MEAN))
            / np.float32(MNIST_STD))


# What `_normalise_arithmetic` gives each of the 256 pixel values: a constant.
_NORMALISED_UINT8 = _normalise_arithmetic(np.arange(256, dtype=np.uint8))


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28,1] -> float32 with MNIST's mean and std (as the write-up).

    uint8 images are looked up in a 256-entry table of the same float32 formula: the same
    bits, in one pass instead of four temporaries (60,000 images in a fresh process: 0.09 s
    against 0.44 s). Within a training start, first touching the 188 MB result of the whole
    training set cost up to 0.56 s either way, so training normalises batch by batch instead
    (`train_batches` takes uint8 images).
    """
    if images.dtype == np.uint8:
        return _NORMALISED_UINT8[images]
    return _normalise_arithmetic(images)


def as_normalised(images: np.ndarray) -> np.ndarray:
    """Training images as the loops take them: uint8 as loaded (normalised here) or
    already normalised floats (unchanged)."""
    return normalise(images) if images.dtype == np.uint8 else images


def one_hot(numbers: np.ndarray) -> np.ndarray:
    return np.eye(NUM_NUMBERS, dtype=np.float32)[numbers]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one training epoch; independent of every other epoch."""
    return np.random.default_rng(np.random.SeedSequence([seed, _TRAIN_STREAM, epoch]))


def held_out_pairs(kind: str, seed: int) -> np.ndarray:
    """bool [10 digits, 10 numbers]: the (digit, number) pairs training never shows.

    'sum9': every pair that adds up to 9; 'random20': 20 pairs drawn from the seed,
    every digit keeping at least one number; 'none': nothing held out.
    """
    held = np.zeros((NUM_NUMBERS, NUM_NUMBERS), bool)
    if kind == "sum9":
        held[np.arange(10), 9 - np.arange(10)] = True
    elif kind == "random20":
        rng = np.random.default_rng(np.random.SeedSequence([seed, _HOLDOUT_STREAM]))
        while True:
            held[:] = False
            held.flat[rng.choice(100, size=20, replace=False)] = True
            if not held.all(axis=1).any():
                break
    elif kind != "none":
        raise ValueError(f"holdout must be one of {HOLDOUTS}, not {kind!r}")
    return held


def epoch_plan(seed: int, epoch: int, num_examples: int, labels: np.ndarray | None = None,
               held_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(permutation, numbers) of an epoch: example order and each position's number.

    With `held_out` (see `held_out_pairs`) and the dataset's `labels`, a position whose
    (digit, number) pair is held out gets a number redrawn among its digit's allowed ones.
    """
    rng = epoch_rng(seed, epoch)
    permutation = rng.permutation(num_examples)
    numbers = rng.integers(0, NUM_NUMBERS, size=num_examples)
    if held_out is not None and held_out.any():
        digits = np.asarray(labels)[permutation]
        redraw = held_out[digits, numbers]
        allowed = ~held_out[digits[redraw]]                       # [R, 10]
        redraw_rng = np.random.default_rng(np.random.SeedSequence([seed, _HOLDOUT_STREAM, epoch]))
        # Pick uniformly among allowed numbers: the k-th allowed one for a random k.
        k = (redraw_rng.random(int(redraw.sum())) * allowed.sum(1)).astype(np.int64)
        numbers[redraw] = np.argmax(np.cumsum(allowed, axis=1) > k[:, None], axis=1)
    return permutation.astype(np.int32), numbers.astype(np.int32)


def epoch_shifts(seed: int, epoch: int, num_examples: int, max_shift: int) -> np.ndarray:
    """Per-position (dy, dx) translations in [-max_shift, max_shift] for an epoch.

    A stream of its own, so turning augmentation on leaves order and numbers unchanged.
    """
    if max_shift == 0:
        return np.zeros((num_examples, 2), np.int32)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SHIFT_STREAM, epoch]))
    return rng.integers(-max_shift, max_shift + 1, size=(num_examples, 2)).astype(np.int32)


@functools.lru_cache(maxsize=4)
def elastic_weights(side: int, grid: int) -> np.ndarray:
    """[side, grid] float32: one axis's weights of a pixel over the control points of an
    elastic field; the field of control values C [grid, grid] is `W @ C @ W.T`.

    Gaussian weights of width one control spacing: a smooth field (no kinks at control
    points, unlike bilinear), correlated over a few pixels as Simard's Gaussian-filtered
    noise is. Scaled so that independent unit-variance control values displace pixels by
    1 in root mean square over the image, which makes `Augment.elastic` a pixel distance.
    """
    centres = np.linspace(0.0, side - 1.0, grid)
    spacing = (side - 1.0) / max(grid - 1, 1)
    pixels = np.arange(side, dtype=np.float64)
    weights = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) / spacing) ** 2)
    # The field's mean square over pixels is mean_p sum_j (W W')[p, j]**2 per unit variance.
    weights /= np.sqrt(np.mean(np.sum(weights ** 2, axis=1)))
    weights = weights.astype(np.float32)
    weights.flags.writeable = False  # cached: shared by every call
    return weights


def elastic_field(values, side: int, xp=np):
    """[B, side * side] displacements (row-major pixels) from control values [B, grid²].

    Two small matrix products per image by the separable weights (28x7 and 7x7 here),
    not one [B, grid²] x [grid², side²] product: that one is large enough for OpenBLAS to
    wake its threads, which then spin on the cores XLA trains on (measured: a host-loop
    epoch 63% longer); products this small stay on the calling thread.
    """
    grid = math.isqrt(values.shape[-1])
    weights = xp.asarray(elastic_weights(side, grid))
    control = values.reshape(values.shape[0], grid, grid)
    return (weights @ (control @ weights.T)).reshape(values.shape[0], side * side)


def epoch_warps(seed: int, epoch: int, num_examples: int, augment: Augment) -> np.ndarray | None:
    """Per-position maps [N, 2, 2] float32 from an output pixel's offset from the centre
    to its source's (the inverse of the image's transform), or None without affine or
    elastic augmentation. A stream of its own: order, numbers and shifts are unchanged.

    Rotation uniform in +-rotate degrees, zoom log-uniform in [1 - scale, 1 + scale],
    horizontal shear uniform in +-shear. With `elastic`, each map row also carries the
    control values of that coordinate's displacement field ([N, 2, 2 + ELASTIC_GRID**2],
    standard normal times `elastic`; see `elastic_weights`), drawn from a stream of their
    own so the affine part is the same with and without them.
    """
    if not augment.affine:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([seed, _WARP_STREAM, epoch]))
    angle = np.deg2rad(rng.uniform(-augment.rotate, augment.rotate, num_examples))
    zoom = np.exp(rng.uniform(np.log1p(-augment.scale), np.log1p(augment.scale), num_examples))
    shear = rng.uniform(-augment.shear, augment.shear, num_examples)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    # (rotation @ [[1, shear], [0, 1]]) / zoom, acting on (row, column) offsets.
    maps = np.stack([np.stack([cos, cos * shear - sin], -1),
                     np.stack([sin, sin * shear + cos], -1)], -2).astype(np.float32)
    if augment.elastic:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _ELASTIC_STREAM, epoch]))
        field = rng.normal(0.0, augment.elastic, (num_examples, 2, ELASTIC_GRID ** 2))
        maps = np.concatenate([maps, field.astype(np.float32)], axis=-1)
    return maps


def warp(images, maps, shifts, xp=np):
    """Resample each image at `maps[i] @ (pixel - centre - shifts[i]) + centre`, plus
    the elastic displacement where `maps` carries one (see `epoch_warps`), bilinearly,
    with the normalised background outside the image.

    With identity maps it reproduces `translate` bit for bit (weights 0 and 1). Written
    for NumPy and jax.numpy alike (`xp`): the host-fed and the device-resident loops
    build the same batches up to float rounding (interpolation is continuous in the
    coordinates, so a rounding difference moves a pixel value by rounding only).
    """
    b, side = images.shape[0], images.shape[1]
    fill = normalise(np.zeros((1, 1, 1, 1), np.uint8)).reshape(())
    # One row/column of background before, two after: every clipped corner is inside.
    padded = xp.pad(images[..., 0], ((0, 0), (1, 2), (1, 2)), constant_values=fill)
    width = side + 3
    centre = np.float32((side - 1) / 2)
    grid = np.arange(side, dtype=np.float32) - centre
    rows = xp.asarray(np.repeat(grid, side))[None] - shifts[:, 0:1].astype(np.float32)
    cols = xp.asarray(np.tile(grid, side))[None] - shifts[:, 1:2].astype(np.float32)
    src_r = maps[:, 0, 0:1] * rows + maps[:, 0, 1:2] * cols + centre
    src_c = maps[:, 1, 0:1] * rows + maps[:, 1, 1:2] * cols + centre
    if maps.shape[-1] > 2:
        src_r = src_r + elastic_field(maps[:, 0, 2:], side, xp)
        src_c = src_c + elastic_field(maps[:, 1, 2:], side, xp)
    src_r, src_c = xp.clip(src_r, -1, side), xp.clip(src_c, -1, side)
    r0, c0 = xp.floor(src_r), xp.floor(src_c)
    wr, wc = src_r - r0, src_c - c0
    index = (xp.arange(b, dtype=np.int32)[:, None] * (width * width)
             + (r0.astype(np.int32) + 1) * width + c0.astype(np.int32) + 1)
    flat = padded.reshape(-1)
    v00, v01 = flat[index], flat[index + 1]
    v10, v11 = flat[index + width], flat[index + width + 1]
    top = v00 + wc * (v01 - v00)
    bottom = v10 + wc * (v11 - v10)
    return (top + wr * (bottom - top)).reshape(b, side, side, 1)


def augment_images(images, augment: Augment, shifts, maps, xp=np):
    """The training images after `augment`, given the positions' shifts and maps."""
    if augment.affine:
        return warp(images, maps, shifts, xp)
    if augment.shift:
        return translate(images, shifts, xp)
    return images


def translate(images, shifts, xp=np, fill=None):
    """Shift each image by its (dy, dx), filling with the background: `fill`, by default
    the normalised background (training shifts normalised images).

    Written for NumPy and jax.numpy alike (`xp`), so the host-fed and the
    device-resident loops produce bit-identical batches.
    """
    side = images.shape[1]
    if fill is None:
        fill = normalise(np.zeros((1, 1, 1, 1), np.uint8)).reshape(())
    grid = xp.arange(side)[None, :]
    rows = grid - shifts[:, 0:1]
    cols = grid - shifts[:, 1:2]
    inside = (((rows >= 0) & (rows < side))[:, :, None]
              & ((cols >= 0) & (cols < side))[:, None, :])
    batch = xp.arange(images.shape[0])[:, None, None]
    moved = images[batch, xp.clip(rows, 0, side - 1)[:, :, None],
                   xp.clip(cols, 0, side - 1)[:, None, :]]
    return xp.where(inside[..., None], moved, fill)


def augment_for(config) -> Augment:
    """The training-image transforms a Config asks for."""
    return Augment(config.augment_shift, float(config.augment_rotate),
                   float(config.augment_scale), float(config.augment_shear),
                   float(config.augment_elastic),
                   *(float(getattr(config, f"augment_{name}")) for name in QUALITY_FAMILIES))


# --- image-quality families: host-side NumPy on a batch, in 0..1 units ---------------------

QUALITY_FAMILIES = ("stroke", "outline", "blur", "lowres", "background", "noise", "occlude")
LOWRES_SIDES = tuple(range(7, 21))     # sides an image is brought down to (`lowres`)
BLUR_SIGMA = (0.3, 1.8)                # per-axis Gaussian sigma range, pixels (`blur`)
BACKGROUND_GAIN = (0.3, 1.0)           # ink contrast kept (`background`)
BACKGROUND_LEVEL = (0.0, 0.5)          # flat part of the grey field (`background`)
BACKGROUND_RELIEF = (0.0, 0.5)         # smooth part's peak (3x3 random control grid)
NOISE_SIGMA = (0.05, 0.35)             # additive Gaussian noise std (`noise`, half of them)
NOISE_RATE = (0.02, 0.12)              # salt-and-pepper rate (`noise`, the other half)


def _family_rng(seed: int, stream: int, epoch: int, step: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, epoch, step]))


def _neighbourhood(u: np.ndarray, offsets, reduce) -> np.ndarray:
    """Min or max (`reduce`) of each pixel's neighbours at `offsets`, background (0)
    outside the image."""
    side = u.shape[1]
    padded = np.zeros((u.shape[0], side + 2, side + 2), u.dtype)
    padded[:, 1:-1, 1:-1] = u
    out = None
    for dr, dc in offsets:
        view = padded[:, 1 + dr: 1 + dr + side, 1 + dc: 1 + dc + side]
        out = view if out is None else reduce(out, view)
    return out


_SQUARE2 = ((0, 0), (0, 1), (1, 0), (1, 1))
_CROSS3 = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def _stroke_draw(rng, n, side):
    return {"op": rng.integers(0, 2, n), "element": rng.integers(0, 3, n)}


def _stroke(u, q):
    """Thinner (min) or thicker (max) strokes, over a 2x2 square, a 3x3 cross, or both
    in turn (a 4x4 octagon: 12 pixels)."""
    out = u.copy()
    for o, reduce in enumerate((np.minimum, np.maximum)):
        for e, elements in enumerate(((_SQUARE2,), (_CROSS3,), (_SQUARE2, _CROSS3))):
            pick = (q["op"] == o) & (q["element"] == e)
            if pick.any():
                x = u[pick]
                for offsets in elements:
                    x = _neighbourhood(x, offsets, reduce)
                out[pick] = x
    return out


def _outline_draw(rng, n, side):
    return {"smooth": rng.uniform(0.0, 1.2, (n, 1)).repeat(2, axis=1).astype(np.float32),
            "threshold": rng.uniform(0.1, 0.6, n), "grow": rng.integers(0, 3, n),
            "grey": rng.uniform(0.6, 1.0, n), "inner": rng.uniform(0.0, 0.8, n)}


def _ring(mask):
    return mask - _neighbourhood(mask, _CROSS3, np.minimum)


def _outline(u, q):
    """Only contours of the strokes: the image smoothed (Gaussian, sigma 0..1.2, none
    under 0.3), the part above a random fraction of its brightest pixel, grown by 0..2
    steps of a 3x3 cross, less its own cross erosion: a one-pixel ring, with the ring of
    a brighter level inside it where one exists; at a random grey."""
    smooth = q["smooth"][:, 0] >= 0.3
    if smooth.any():
        u = u.copy()
        u[smooth] = _blur(u[smooth], {"sigma": q["smooth"][smooth]})
    top = u.max(axis=(1, 2))[:, None, None]
    mask = (u > q["threshold"][:, None, None] * top).astype(np.float32)
    grown = mask
    for _ in range(2):
        bigger = _neighbourhood(grown, _CROSS3, np.maximum)
        grown = np.where(q["grow"][:, None, None] > _, bigger, grown)
    ring = _ring(grown)
    # Half the images also get the ring of a brighter level (`inner` above the first
    # threshold, up to 1 unseen): nested contours, as a stroke's ridge gives.
    inner_level = (q["threshold"] + q["inner"])[:, None, None] * top
    ring = np.maximum(ring, _ring((u > inner_level).astype(np.float32)))
    return ring * q["grey"][:, None, None].astype(np.float32)


@functools.lru_cache(maxsize=64)
def _lowres_matrix(side: int, low: int) -> np.ndarray:
    """[side, side]: one axis down to `low` samples by a tent (linear) filter as wide as
    two low pixels, then back up by linear interpolation between the low samples."""
    scale = side / low
    centres_low = (np.arange(low) + 0.5) * scale - 0.5          # in high-pixel coordinates
    pixels = np.arange(side, dtype=np.float64)
    down = np.clip(1.0 - np.abs(pixels[None, :] - centres_low[:, None]) / scale, 0, None)
    down /= down.sum(axis=1, keepdims=True)                      # [low, side]
    pos = np.clip((pixels + 0.5) / scale - 0.5, 0, low - 1)     # in low-pixel coordinates
    up = np.clip(1.0 - np.abs(pos[:, None] - np.arange(low)[None, :]), 0, None)  # [side, low]
    matrix = (up @ down).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def _lowres_draw(rng, n, side):
    return {"low": rng.choice(np.array(LOWRES_SIDES), n)}


def _lowres(u, q):
    """Down to a random number of pixels a side (`LOWRES_SIDES`) and back up."""
    m = np.stack([_lowres_matrix(u.shape[1], int(k)) for k in q["low"]])
    return m @ u @ np.swapaxes(m, 1, 2)


def _blur_draw(rng, n, side):
    return {"sigma": rng.uniform(*BLUR_SIGMA, (n, 2)).astype(np.float32)}


def _blur(u, q):
    """A Gaussian blur with its own random sigma along rows and along columns."""
    side = u.shape[1]
    d = np.arange(side, dtype=np.float32)
    d = d[:, None] - d[None, :]
    k = np.exp(-0.5 * (d[None, None] / q["sigma"][:, :, None, None]) ** 2)  # [B, 2, s, s]
    k /= k.sum(axis=-1, keepdims=True)
    return k[:, 0] @ u @ np.swapaxes(k[:, 1], 1, 2)


def _background_draw(rng, n, side):
    return {"gain": rng.uniform(*BACKGROUND_GAIN, n), "level": rng.uniform(*BACKGROUND_LEVEL, n),
            "relief": rng.uniform(*BACKGROUND_RELIEF, n), "control": rng.random((n, 3, 3))}


def _background(u, q):
    """Lower the ink's contrast by a random gain and add a smooth grey field: a flat level
    plus a bump field bilinear between 3x3 random control values."""
    side = u.shape[1]
    pos = np.linspace(0.0, 2.0, side)
    up = np.clip(1.0 - np.abs(pos[:, None] - np.arange(3)[None, :]), 0, None)  # [side, 3]
    field = q["level"][:, None, None] + q["relief"][:, None, None] * (up @ q["control"] @ up.T)
    return np.clip(q["gain"][:, None, None] * u + field, 0.0, 1.0)


def _noise_draw(rng, n, side):
    return {"gaussian": rng.random(n) < 0.5, "sigma": rng.uniform(*NOISE_SIGMA, n),
            "rate": rng.uniform(*NOISE_RATE, n), "salt": rng.random(n)}


def _noise(u, q, rng):
    """Additive Gaussian noise (half the images) or salt and pepper (the other half),
    each with a random strength; clipped to 0..1. Per-pixel draws from `rng`."""
    normal = rng.standard_normal(u.shape, np.float32)
    hits = rng.random(u.shape, np.float32)
    colour = rng.random(u.shape, np.float32)
    gaussian = q["gaussian"][:, None, None]
    noisy = np.where(gaussian, u + q["sigma"][:, None, None] * normal, u)
    sp = ~gaussian & (hits < q["rate"][:, None, None])
    noisy = np.where(sp, (colour < q["salt"][:, None, None]).astype(np.float32), noisy)
    return np.clip(noisy, 0.0, 1.0)


def _occlude_draw(rng, n, side):
    return {"line": rng.random(n) < 0.5, "theta": rng.uniform(0, np.pi, n),
            "centre": rng.uniform(6, side - 6, (n, 2)), "width": rng.uniform(1.0, 2.5, n),
            "grey": rng.uniform(0.5, 1.0, n), "size": rng.integers(4, 11, (n, 2)),
            "corner": rng.random((n, 2)), "fill": rng.random(n)}


def _occlude(u, q):
    """A straight line drawn across at a random angle, width and grey (half the images),
    or a random rectangle of 4..10 x 4..10 pixels painted over at a random grey, black
    (erased) to white (the other half)."""
    side = u.shape[1]
    grid = np.arange(side, dtype=np.float32)
    rows, cols = grid[None, :, None], grid[None, None, :]
    e = lambda a: a[:, None, None]  # noqa: E731
    dist = np.abs((rows - e(q["centre"][:, 0])) * np.cos(e(q["theta"]))
                  - (cols - e(q["centre"][:, 1])) * np.sin(e(q["theta"])))
    ink = np.clip(e(q["width"]) / 2 + 0.5 - dist, 0.0, 1.0) * e(q["grey"])
    h, w = e(q["size"][:, 0]), e(q["size"][:, 1])
    top = np.floor(e(q["corner"][:, 0]) * (side - h + 1))
    left = np.floor(e(q["corner"][:, 1]) * (side - w + 1))
    box = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    return np.where(e(q["line"]), np.maximum(u, ink), np.where(box, e(q["fill"]), u))


_FAMILIES = (("stroke", _STROKE_STREAM, _stroke_draw, _stroke),
             ("outline", _OUTLINE_STREAM, _outline_draw, _outline),
             ("blur", _BLUR_STREAM, _blur_draw, _blur),
             ("lowres", _LOWRES_STREAM, _lowres_draw, _lowres),
             ("background", _BACKGROUND_STREAM, _background_draw, _background),
             ("noise", _NOISE_STREAM, _noise_draw, _noise),
             ("occlude", _OCCLUDE_STREAM, _occlude_draw, _occlude))


def apply_quality(images: np.ndarray, augment: Augment, seed: int, epoch: int, step: int,
                  positions: np.ndarray | None = None, batch_size: int | None = None
                  ) -> np.ndarray:
    """Normalised float images [B', 28, 28, 1] of step `step`'s batch after the enabled
    image-quality families, in the order of `QUALITY_FAMILIES`.

    Each family draws, from a Generator of (seed, its own stream, epoch, step), which
    images of the global batch (`batch_size`, default B') it changes (probability as
    `augment` says) and every image's strength; then the per-pixel draws (noise) of the
    changed images, in batch order. `positions` [B'] are these images' places in the
    global batch (default all): a process that builds only its own rows draws as the
    others do. Unchanged images keep their bits; changed ones stay in the clean range.
    """
    if not augment.quality:
        return images
    size = len(images) if batch_size is None else batch_size
    positions = np.arange(len(images)) if positions is None else np.asarray(positions)
    u = images[..., 0] * np.float32(MNIST_STD) + np.float32(MNIST_MEAN)
    changed = np.zeros(len(images), bool)
    for name, stream, draw, fn in _FAMILIES:
        p = getattr(augment, name)
        if not p:
            continue
        rng = _family_rng(seed, stream, epoch, step)
        hit_global = rng.random(size) < p
        params = draw(rng, size, images.shape[1])
        hit = hit_global[positions]
        if not hit.any():
            continue
        local = {k: v[positions[hit]] for k, v in params.items()}
        if fn is _noise:
            # Per-pixel draws for every changed image of the global batch, in order.
            pixel_rng = np.random.default_rng(rng.integers(2**63))
            n_hit = int(hit_global.sum())
            order = np.cumsum(hit_global) - 1          # index among the changed images
            drawn = fn(_pad_to(u[hit], order[positions[hit]], n_hit), 
                       {k: _pad_to(v, order[positions[hit]], n_hit) for k, v in local.items()},
                       pixel_rng)[order[positions[hit]]]
        else:
            drawn = fn(u[hit], local)
        u[hit] = drawn.astype(np.float32)
        changed |= hit
    out = images.copy()
    out[changed, ..., 0] = (u[changed] - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return out


def _pad_to(values: np.ndarray, places: np.ndarray, n: int) -> np.ndarray:
    """`values` at `places` of an array of `n` rows, zeros elsewhere."""
    if len(places) == n:
        return values
    full = np.zeros((n,) + values.shape[1:], values.dtype)
    full[places] = values
    return full



def make_batch(images: np.ndarray, labels: np.ndarray, numbers: np.ndarray,
               mask: np.ndarray | None = None) -> Batch:
    """A batch from already-selected normalised images, labels and numbers."""
    labels = labels.astype(np.int32)
    numbers = numbers.astype(np.int32)
    if mask is None:
        mask = np.ones(len(labels), np.float32)
    return Batch(image=images, digit=labels, number=one_hot(numbers),
                 sum=labels + numbers, mask=mask)


def train_batches(images: np.ndarray, labels: np.ndarray, seed: int, epoch: int,
                  batch_size: int, start_step: int = 0, augment: Augment = NO_AUGMENT,
                  held_out: np.ndarray | None = None,
                  rows: slice = slice(None)) -> Iterator[Batch]:
    """The batches of one epoch from `start_step` on (resuming mid-epoch is exact).

    `images` are normalised, or uint8 as loaded: then each batch's rows are normalised as
    they are picked (the same bits; a training start need not write 188 MB of floats).
    Each image is randomly transformed as `augment` says; `held_out` pairs (see
    `held_out_pairs`) never appear. `rows` selects the rows of each global batch to build
    (a process of a multi-host run builds only its own); every process computes the same
    plan, so the rows fit together.
    """
    permutation, numbers = epoch_plan(seed, epoch, len(labels), labels, held_out)
    shifts = epoch_shifts(seed, epoch, len(labels), augment.shift)
    maps = epoch_warps(seed, epoch, len(labels), augment)
    for step in range(start_step, steps_per_epoch(len(labels), batch_size)):
        sl = np.arange(step * batch_size, (step + 1) * batch_size)[rows]
        idx = permutation[sl]
        batch_images = augment_images(as_normalised(images[idx]), augment, shifts[sl],
                                      None if maps is None else maps[sl])
        batch_images = apply_quality(batch_images, augment, seed, epoch, step,
                                     sl - step * batch_size, batch_size)
        yield make_batch(batch_images, labels[idx], numbers[sl])


def test_numbers(seed: int, num_examples: int) -> np.ndarray:
    """Fixed numbers for the test set, from the seed, so evaluations are comparable."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TEST_STREAM]))
    return rng.integers(0, NUM_NUMBERS, size=num_examples).astype(np.int32)


def eval_batches(images: np.ndarray, labels: np.ndarray, numbers: np.ndarray,
                 batch_size: int) -> Iterator[Batch]:
    """All examples in order, the last batch padded (mask 0) to keep one shape."""
    n = len(labels)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        take = np.concatenate([np.arange(start, stop), np.zeros(pad, np.int64)])
        mask = np.concatenate([np.ones(stop - start, np.float32), np.zeros(pad, np.float32)])
        yield make_batch(images[take], labels[take], numbers[take], mask)
