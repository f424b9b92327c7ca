"""The project's own image shifts beside MNIST-C's: stroke thickness, blur, contrast and
low resolution, on uint8 [N, 28, 28] images, deterministic (no random draws). The
corruption benchmark (`corruptions`) and experiments/robustness.py's sweeps use them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SIZE = 28
Images = np.ndarray      # uint8 [N, 28, 28]


def to_uint8(x: np.ndarray) -> Images:
    """Float images in 0..1 -> uint8 0..255 (rounded, clipped)."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def unit(images: Images) -> np.ndarray:
    """uint8 images as float64 in 0..1."""
    return images.astype(np.float64) / 255.0


def _window(images: Images, reduce: Callable) -> Images:
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))  # black outside the image
    shifted = [padded[:, dy: dy + SIZE, dx: dx + SIZE] for dy in range(3) for dx in range(3)]
    return reduce(np.stack(shifted), axis=0).astype(np.uint8)


def thickness(images: Images, steps: int) -> Images:
    """Dilate (`steps` > 0: 3x3 max filter) or erode (< 0: 3x3 min filter) |steps| times."""
    for _ in range(abs(steps)):
        images = _window(images, np.max if steps > 0 else np.min)
    return images


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian, cut at 3 sigma."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(images: Images, sigma: float) -> Images:
    """Separable Gaussian blur, zero (black) outside the image."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    out = images.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        padded = np.pad(out, pad)
        out = sum(w * np.take(padded, np.arange(i, i + SIZE), axis=axis)
                  for i, w in enumerate(k))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def contrast(images: Images, factor: float) -> Images:
    """Every pixel times `factor`: dimmer strokes, same shape."""
    return np.round(images * factor).astype(np.uint8)


def low_res(images: Images, side: int) -> Images:
    """Down to side x side by area averaging (PIL BOX), back up to 28x28 bilinearly."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(x).resize((side, side), Image.Resampling.BOX)
                                .resize((SIZE, SIZE), Image.Resampling.BILINEAR))
                     for x in images]).astype(np.uint8)
