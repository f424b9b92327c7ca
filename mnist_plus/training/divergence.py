"""Stopping a diverged run before it overwrites a good checkpoint.

Two checks, both raising `DivergedError` with what to do: the loss (the train step
records the first step whose loss was not finite, on the device, so checking costs one
read per segment) and the state about to be saved (the last step of a segment can turn
the parameters to NaN with a finite loss).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from mnist_plus.errors import DivergedError
from mnist_plus.training.state import global_step
from mnist_plus.training.step import NO_STEP, Metrics

_REMEDY = "lower --learning-rate and rerun (with --fresh to restart from scratch)"


def _kept(last_good: int | None) -> str:
    return (f"the last good checkpoint (step {last_good}) is kept" if last_good is not None
            else "no checkpoint had been written yet")


def nonfinite_leaves(tree: Any) -> list[str]:
    """Paths of the floating-point leaves of `tree` that hold a NaN or an infinity."""
    bad = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        value = np.asarray(jax.device_get(leaf))
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad.append(jax.tree_util.keystr(path))
    return bad


def check_losses(train_sums: Metrics, epoch: int, last_good: int | None) -> None:
    """Raise if a step of this epoch so far had a NaN or infinite loss."""
    bad = int(np.min(jax.device_get(train_sums["first_nonfinite_step"])))  # of every seed
    if bad != int(NO_STEP):
        raise DivergedError(f"the loss became NaN or infinite at step {bad} (epoch "
                            f"{epoch + 1}); {_kept(last_good)}; {_REMEDY}")


def check_state(state: Any, last_good: int | None) -> None:
    """Raise if the train state (params, BatchNorm statistics, optimizer state) holds a
    NaN or an infinity: it must not be saved over the last good checkpoint."""
    bad = nonfinite_leaves({"params": state.params, "batch_stats": state.batch_stats,
                            "opt_state": state.opt_state})
    if bad:
        raise DivergedError(
            f"the training state became NaN or infinite by step {global_step(state)} "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); it was not saved and "
            f"{_kept(last_good)}; {_REMEDY}")
