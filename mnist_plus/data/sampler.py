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

from mnist_plus.data.quality import QUALITY_FAMILIES, apply_quality
from mnist_plus.task import (HOLDOUTS, MNIST_MEAN, MNIST_STD, NUM_NUMBERS, NUM_SUMS,  # noqa: F401
                             Batch, steps_per_epoch)

_TRAIN_STREAM = 0
_TEST_STREAM = 1
_SHIFT_STREAM = 2
_HOLDOUT_STREAM = 3
_WARP_STREAM = 4
_ELASTIC_STREAM = 5  # 6-12: the image-quality families (data/quality.py)
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
