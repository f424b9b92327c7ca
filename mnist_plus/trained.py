"""A trained model for inference: the newest checkpoint of a workdir, and a jitted predictor.

Shared by `report` and `predict`, which only read a workdir: nothing here writes to it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mnist_plus import config as config_lib
from mnist_plus import sampler
from mnist_plus.checkpointing import Checkpointer
from mnist_plus.errors import UsageError
from mnist_plus.model import MnistPlusNet


@dataclasses.dataclass(frozen=True)
class Trained:
    config: config_lib.Config
    step: int             # global step of the checkpoint
    epoch: int            # epochs completed when it was written
    variables: dict[str, Any]  # {'params', 'batch_stats'} for `model.apply`
    model: MnistPlusNet


def latest_step(workdir: str) -> int | None:
    """The step of the newest complete checkpoint in `workdir`, or None."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return None
    checkpointer = Checkpointer(workdir, keep=1_000_000)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


def load(workdir: str) -> Trained:
    """The newest checkpoint in `workdir`, with the config it was trained with."""
    from mnist_plus.train import build_model, initial_state
    from mnist_plus.train_step import zero_train_metrics

    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    # Check first: opening a CheckpointManager would create the folder.
    if not os.path.isdir(directory):
        raise UsageError(f"no checkpoint in {directory}: train first with "
                         f"`python -m mnist_plus.train --workdir {workdir}`, or pass the "
                         f"--workdir of a trained run")
    checkpointer = Checkpointer(workdir, keep=1_000_000)  # never prunes: we do not save
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise UsageError(f"no complete checkpoint in {directory}: train first with "
                             f"`python -m mnist_plus.train --workdir {workdir}`")
        meta = checkpointer.read_meta(step)
        config = config_lib.from_dict(meta["config"])
        # Restoring needs only the state's structure: traced, not computed (initialising
        # for real costs seconds). The schedule's length does not change the structure.
        abstract = jax.eval_shape(lambda: initial_state(config, steps_per_epoch=1))
        state = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract)
        state, _, meta = checkpointer.restore(state, zero_train_metrics(), config)
    finally:
        checkpointer.close()
    return Trained(config=config, step=int(meta["global_step"]), epoch=int(meta["epoch"]),
                   variables={"params": state.params, "batch_stats": state.batch_stats},
                   model=build_model(config))


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Per image: probabilities of each digit and of each sum with its number, and the
    predicted sum for every number 0..9 (the exhaustive evaluation)."""

    digit_probs: np.ndarray  # float32 [N, 10]
    sum_probs: np.ndarray    # float32 [N, 19]
    all_sums: np.ndarray     # int32 [N, 10]: predicted sum with number 0..9

    @property
    def digit(self) -> np.ndarray:
        return np.argmax(self.digit_probs, -1)

    @property
    def sum(self) -> np.ndarray:
        return np.argmax(self.sum_probs, -1)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: MnistPlusNet, variables, image: jax.Array, number: jax.Array):
    digit_logits, sum_logits = model.apply(variables, image, number, train=False)
    _, all_sum_logits = model.apply(variables, image, method=MnistPlusNet.exhaustive_sum_logits)
    return (jax.nn.softmax(digit_logits), jax.nn.softmax(sum_logits),
            jnp.argmax(all_sum_logits, -1).astype(jnp.int32))


def predict(trained: Trained, images: np.ndarray, numbers: np.ndarray,
            batch_size: int | None = None) -> Predictions:
    """Predict uint8 images [N,28,28,1] with int numbers [N], in batches of one shape
    (the last one padded), so one program is compiled however large N is."""
    batch_size = batch_size or trained.config.eval_batch_size
    parts: list[tuple[np.ndarray, ...]] = []
    for batch in _batches(images, numbers, batch_size):
        n = int(batch.mask.sum())
        out = jax.device_get(_apply(trained.model, trained.variables, batch.image, batch.number))
        parts.append(tuple(np.asarray(x)[:n] for x in out))
    digit_probs, sum_probs, all_sums = (np.concatenate(xs) for xs in zip(*parts))
    return Predictions(digit_probs=digit_probs, sum_probs=sum_probs, all_sums=all_sums)


def _batches(images: np.ndarray, numbers: np.ndarray,
             batch_size: int) -> Iterator[sampler.Batch]:
    batch_size = min(batch_size, len(images))
    labels = np.zeros(len(images), np.int32)  # unused by the model
    return sampler.eval_batches(sampler.normalise(images), labels, numbers, batch_size)
