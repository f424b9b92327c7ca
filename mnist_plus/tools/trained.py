"""A trained model for inference: a checkpoint of a workdir (the newest by default), and a
jitted predictor.

Shared by `report` and `predict`, which only read a workdir: nothing here writes to it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from mnist_plus import config as config_lib
from mnist_plus.training import evaluation
from mnist_plus.runtime.checkpointing import Checkpointer
from mnist_plus.errors import UsageError
from mnist_plus.model import MnistPlusNet, build_model
from mnist_plus.training.state import TrainState, abstract_state
from mnist_plus.training.step import zero_train_metrics


@dataclasses.dataclass(frozen=True)
class Trained:
    config: config_lib.Config
    step: int             # global step of the checkpoint
    epoch: int            # epochs completed when it was written
    variables: dict[str, Any]  # {'params', 'batch_stats'} for `model.apply`
    model: MnistPlusNet

    def state(self) -> TrainState:
        """The checkpoint as evaluation takes a state (`evaluation.Evaluator.metrics`,
        `evaluation.predict`): its variables and `apply_fn`, no optimizer. Every call has
        the same `apply_fn`, so the programs jitted for one call serve the next."""
        return TrainState(step=np.asarray(self.step, np.int32), params=self.variables["params"],
                          batch_stats=self.variables["batch_stats"], opt_state=None,
                          apply_fn=self.model.apply, tx=None)


def latest_step(workdir: str) -> int | None:
    """The step of the newest complete checkpoint in `workdir`, or None."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return None
    checkpointer = Checkpointer(workdir, keep=0, read_only=True)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


def _resolve(checkpointer: Checkpointer, which: str | int) -> int:
    """The step of checkpoint `which`; a UsageError listing the steps there are if none."""
    steps = checkpointer.all_steps()
    if which == "latest":
        step = checkpointer.latest_step()
    elif which == "best":
        step = checkpointer.best_step()
        if step is None:
            raise UsageError(
                f"--step best: no checkpoint in {checkpointer.directory} has test metrics "
                f"(only end-of-epoch checkpoints have); choose latest or one of the steps "
                f"{', '.join(map(str, steps))}")
    else:
        step = which if which in steps else None
        if step is None:
            raise UsageError(
                f"--step {which}: there is no checkpoint at step {which} in "
                f"{checkpointer.directory}; choose latest, best or one of the steps "
                f"{', '.join(map(str, steps))}")
    return step


def load(workdir: str, step: str | int = "latest") -> Trained:
    """Checkpoint `step` ('latest', 'best' or a step number) of `workdir`, with the config
    it was trained with."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    # Check first: opening a CheckpointManager would create the folder.
    if not os.path.isdir(directory):
        raise UsageError(f"no checkpoint in {directory}: train first with "
                         f"`python -m mnist_plus.train --workdir {workdir}`, or pass the "
                         f"--workdir of a trained run")
    checkpointer = Checkpointer(workdir, keep=0, read_only=True)
    try:
        if checkpointer.latest_step() is None:
            raise UsageError(f"no complete checkpoint in {directory}: train first with "
                             f"`python -m mnist_plus.train --workdir {workdir}`")
        step = _resolve(checkpointer, step)
        meta = checkpointer.read_meta(step)
        config = config_lib.from_dict(meta["config"])
        # Restoring needs only the state's structure: traced, not computed (initialising
        # for real costs seconds).
        state, _, meta = checkpointer.restore(abstract_state(config), zero_train_metrics(),
                                              config, step=step)
    finally:
        checkpointer.close()
    return Trained(config=config, step=int(meta["global_step"]), epoch=int(meta["epoch"]),
                   variables={"params": state.params, "batch_stats": state.batch_stats},
                   model=build_model(config))


Predictions = evaluation.Predictions


def predict(trained: Trained, images: np.ndarray, numbers: np.ndarray,
            batch_size: int | None = None) -> Predictions:
    """Predict uint8 images [N,28,28,1] with int numbers [N] (see `evaluation.predict`)."""
    return evaluation.predict(trained.state(), images, numbers,
                              batch_size or trained.config.eval_batch_size)
