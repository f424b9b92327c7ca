"""A trained model for inference: the newest checkpoint of a workdir, and a jitted predictor.

Shared by `report` and `predict`, which only read a workdir: nothing here writes to it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from mnist_plus import config as config_lib
from mnist_plus import evaluation
from mnist_plus.checkpointing import Checkpointer
from mnist_plus.errors import UsageError
from mnist_plus.model import MnistPlusNet, build_model
from mnist_plus.state import abstract_state
from mnist_plus.train_step import zero_train_metrics


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
    checkpointer = Checkpointer(workdir, keep=0, read_only=True)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


def load(workdir: str) -> Trained:
    """The newest checkpoint in `workdir`, with the config it was trained with."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    # Check first: opening a CheckpointManager would create the folder.
    if not os.path.isdir(directory):
        raise UsageError(f"no checkpoint in {directory}: train first with "
                         f"`python -m mnist_plus.train --workdir {workdir}`, or pass the "
                         f"--workdir of a trained run")
    checkpointer = Checkpointer(workdir, keep=0, read_only=True)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise UsageError(f"no complete checkpoint in {directory}: train first with "
                             f"`python -m mnist_plus.train --workdir {workdir}`")
        meta = checkpointer.read_meta(step)
        config = config_lib.from_dict(meta["config"])
        # Restoring needs only the state's structure: traced, not computed (initialising
        # for real costs seconds).
        state, _, meta = checkpointer.restore(abstract_state(config), zero_train_metrics(),
                                              config)
    finally:
        checkpointer.close()
    return Trained(config=config, step=int(meta["global_step"]), epoch=int(meta["epoch"]),
                   variables={"params": state.params, "batch_stats": state.batch_stats},
                   model=build_model(config))


Predictions = evaluation.Predictions


def predict(trained: Trained, images: np.ndarray, numbers: np.ndarray,
            batch_size: int | None = None) -> Predictions:
    """Predict uint8 images [N,28,28,1] with int numbers [N] (see `evaluation.predict`)."""
    return evaluation.predict(trained.model, trained.variables, images, numbers,
                              batch_size or trained.config.eval_batch_size)
