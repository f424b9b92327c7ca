"""Orbax checkpoints under `workdir/checkpoints`: what is saved, and resuming from it.

A checkpoint holds the train state (step, params, batch stats, optimizer state),
the running train metrics of the current epoch, and JSON metadata: the epoch and
step within it that training continues from, and the config. Orbax writes into a
temporary folder and renames it when complete, so a killed save is never restored.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mnist_plus import config as config_lib
from mnist_plus.errors import UsageError
from mnist_plus.train_step import Metrics, TrainState


def _saved_tree(state: TrainState, metrics: Metrics) -> dict[str, Any]:
    return {"state": {"step": state.step, "params": state.params,
                      "batch_stats": state.batch_stats, "opt_state": state.opt_state},
            "train_metrics": metrics}


class Checkpointer:
    """A thin wrapper that fixes the layout and the resume rules of this project."""

    def __init__(self, workdir: str, keep: int):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState, metrics: Metrics, *, epoch: int, step_in_epoch: int,
             config: config_lib.Config) -> None:
        """Save asynchronously; `epoch`/`step_in_epoch` say where training resumes."""
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": int(state.step),
                "config": config_lib.to_dict(config)}
        self._manager.save(int(state.step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(_saved_tree(state, metrics)),
            meta=ocp.args.JsonSave(meta)))

    def read_meta(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta

    def restore(self, state: TrainState, metrics: Metrics, config: config_lib.Config,
                ) -> tuple[TrainState, Metrics, dict[str, Any]] | None:
        """The newest complete checkpoint, or None; refuses one of another config."""
        step = self.latest_step()
        if step is None:
            return None
        meta = self.read_meta(step)
        stored = config_lib.from_dict(meta["config"])
        differences = config_lib.run_defining_differences(stored, config)
        if differences:
            raise UsageError(
                f"the checkpoint in {self.directory} was written with another config "
                f"({'; '.join(differences)}): rerun with the same flags, use another "
                f"--workdir, or pass --fresh to start over (old files are moved aside)")
        target = jax.tree_util.tree_map(np.asarray, _saved_tree(state, metrics))
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target))).state
        s = restored["state"]
        state = state.replace(step=s["step"], params=s["params"],
                              batch_stats=s["batch_stats"], opt_state=s["opt_state"])
        return state, restored["train_metrics"], meta

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
