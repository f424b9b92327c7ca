"""Image-quality augmentation families: host-side NumPy on a batch, in 0..1 units.

Stroke width, outline, blur, low resolution, background, noise and occlusion, each drawn
from its own stream of (seed, stream, epoch, step): turning one family on leaves every
other family's draws, and the sampler's order, numbers, shifts and warps, unchanged.
"""

from __future__ import annotations

import functools

import numpy as np

from mnist_plus.task import MNIST_MEAN, MNIST_STD

_STROKE_STREAM = 6
_OUTLINE_STREAM = 7
_BLUR_STREAM = 8
_LOWRES_STREAM = 9
_BACKGROUND_STREAM = 10
_NOISE_STREAM = 11
_OCCLUDE_STREAM = 12
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


def apply_quality(images: np.ndarray, augment: tuple, seed: int, epoch: int, step: int,
                  positions: np.ndarray | None = None, batch_size: int | None = None
                  ) -> np.ndarray:
    """Normalised float images [B', 28, 28, 1] of step `step`'s batch after the enabled
    image-quality families, in the order of `QUALITY_FAMILIES`. `augment` is the
    sampler's `Augment` (not imported here: the sampler imports this module).

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
