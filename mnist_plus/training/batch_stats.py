"""BatchNorm statistics recomputed from clean training images ("precise BN").

Training keeps BatchNorm's running averages (momentum `model.BN_MOMENTUM`) of the
statistics of its batches, and those batches are augmented: shifted, and with
`--augment-rotate/scale/shear/elastic` warped. Test images are not, so with a warp the
averages describe other inputs than the ones evaluated (measured on finished runs, mean
change of test digit accuracy once the statistics were recomputed: -0.03 to +0.03
points for the measured configs' mild warps, +0.06 and +0.20 with elastic distortion of
0.7 and 1.4 pixels on the conv stem; experiments/README.md, "Precise BatchNorm").
`--precise-bn N` recomputes them after every epoch, before the evaluation and the
checkpoint: the mean over the first N training images (whole batches of the training
batch size, so that each layer sees its input normalised as in training) of each
batch's mean and variance. The running averages do not feed back into training
(training normalises with each batch's own statistics), so this changes only what is
evaluated, checkpointed and predicted with.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_plus.training import mesh as mesh_lib
from mnist_plus.data import sampler
from mnist_plus.model import BN_MOMENTUM
from mnist_plus.training.state import TrainState


def batch_moments(state: TrainState, image: jax.Array) -> Any:
    """Each BatchNorm layer's batch mean and variance of `image` (a tree shaped like
    `state.batch_stats`), in training mode.

    Flax returns only updated running averages; from zero, the update is exactly
    (1 - momentum) times the batch's statistic (0 * momentum adds nothing)."""
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.batch_stats)
    _, updated = state.apply_fn({"params": state.params, "batch_stats": zeros}, image, True,
                                method=lambda model, x, train: model.digit_net(x, train),
                                mutable=["batch_stats"])
    return jax.tree_util.tree_map(lambda s: s / (1.0 - BN_MOMENTUM), updated["batch_stats"])


def accumulate(total: Any, state: TrainState, image: jax.Array) -> Any:
    """`total` plus `image`'s `batch_moments` (one step of the pass; jitted by callers)."""
    return jax.tree_util.tree_map(jnp.add, total, batch_moments(state, image))


def clean_batches(train_images: np.ndarray, num_examples: int, batch_size: int
                  ) -> list[np.ndarray]:
    """The first `num_examples` training images (uint8, as loaded; all of them if there are
    fewer, so the default's 10,000 suits any training set), normalised, in whole batches of
    `batch_size`: what the pass reads."""
    batches = min(num_examples, len(train_images)) // batch_size
    if batches < 1:
        raise ValueError(f"{num_examples} examples make no batch of {batch_size}")
    images = sampler.normalise(train_images[:batches * batch_size])
    return [images[i * batch_size:(i + 1) * batch_size] for i in range(batches)]


class PreciseBatchStats:
    """The first `num_examples` (whole batches) of the training images as loaded (uint8),
    normalised and placed once; `__call__(state)` returns `state` with recomputed
    BatchNorm statistics."""

    def __init__(self, train_images: np.ndarray, num_examples: int, batch_size: int,
                 mesh: Mesh | None = None):
        chunks = clean_batches(train_images, num_examples, batch_size)
        batches = len(chunks)
        self.num_examples = batches * batch_size
        zeros = lambda stats: jax.tree_util.tree_map(jnp.zeros_like, stats)  # noqa: E731
        mean = lambda total: jax.tree_util.tree_map(lambda s: s / batches, total)  # noqa: E731
        if mesh is None:
            self._batches = [jax.device_put(c) for c in chunks]
            self._zeros, self._mean = jax.jit(zeros), jax.jit(mean)
            self._step = jax.jit(accumulate, donate_argnums=0)
        else:
            rows = mesh_lib.process_rows(mesh, batch_size)
            self._batches = [mesh_lib.put_split(c[rows], mesh, batch_size) for c in chunks]
            full = mesh_lib.replicated(mesh)
            self._zeros = jax.jit(zeros, out_shardings=full)
            self._mean = jax.jit(mean, out_shardings=full)
            self._step = jax.jit(accumulate, donate_argnums=0,
                                 in_shardings=(full, full, mesh_lib.split(mesh)),
                                 out_shardings=full)
        self._sync = mesh_lib.one_step_in_flight(mesh)

    def __call__(self, state: TrainState) -> TrainState:
        total = self._zeros(state.batch_stats)
        for batch in self._batches:
            total = self._step(total, state, batch)
            if self._sync:
                jax.block_until_ready(total)
        return state.replace(batch_stats=self._mean(total))
