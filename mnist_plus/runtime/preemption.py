"""SIGTERM and SIGINT during training: stop at a step boundary, checkpoint, then exit.

A cluster preempts a job with SIGTERM (and a grace period); a user stops one with
Ctrl-C (SIGINT). Either way the run should keep every finished step. The handler
only records the signal: it runs between two bytecodes of the main thread,
possibly inside orbax or a jitted call's dispatch, where doing real work would be
unsafe. The training loop asks `step(n)` after each step (chunk of steps) and
stops when it says so; train.py then saves a checkpoint at that step, waits for it,
and raises `Interrupted` (exit status 128 + the signal number). Later signals while
shutting down are ignored: the save that is under way completes.

Many processes must stop at the same step (the save is collective), but a signal
reaches each one at a different moment. So in a multi-process run the processes
agree: every `AGREE_EVERY_STEPS` steps, and after every checkpoint, each process
contributes the signal it received (0 if none) to a tiny all-gather, and all stop
if any got one. Between agreements a signal waits, so a stop comes at most that
many steps later. Every process calls `step`/`poll` at the same points because
they run the same steps and segments.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import numpy as np

from mnist_plus.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)
AGREE_EVERY_STEPS = 20  # one host sync per 20 steps in a multi-process run


class Preemption:
    """The stop request of one training session; `install`/`restore` its handlers."""

    def __init__(self, multiprocess: bool = False, agree_every: int = AGREE_EVERY_STEPS):
        self.received: int | None = None  # the first signal this process got
        self.signum: int | None = None  # the signal training stops for (all processes agree)
        self._multiprocess = multiprocess
        self._agree_every = agree_every
        self._since = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> "Preemption":
        """Take over SIGTERM/SIGINT. Only the main thread may set handlers: called from
        another thread (a library use), the handlers stay as they are."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers `install` replaced (train_and_evaluate is a library call)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:  # a second signal changes nothing
            self.received = signum

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    def step(self, n: int) -> bool:
        """After `n` more steps: whether to stop now (every process gets the same answer)."""
        if self.signum is not None:
            return True
        self._since += n
        if self._multiprocess and self._since < self._agree_every:
            return False
        return self.poll()

    def poll(self) -> bool:
        """Whether to stop now; in a multi-process run a collective every process must call."""
        self._since = 0
        if self.signum is None:
            if not self._multiprocess:
                self.signum = self.received
            else:
                from jax.experimental import multihost_utils

                got = np.asarray(multihost_utils.process_allgather(
                    np.array([self.received or 0], np.int32))).ravel()
                self.signum = int(got[got != 0][0]) if (got != 0).any() else None
        return self.signum is not None

    def pending(self) -> int | None:
        """The signal to exit for: the agreed one, else one received after the last poll."""
        return self.signum or self.received


def interrupted(signum: int, global_step: int, steps_per_epoch: int,
                epochs: int) -> Interrupted:
    """The one-line error for a run stopped by `signum` with a checkpoint at `global_step`."""
    name = signal.Signals(signum).name
    if global_step >= epochs * steps_per_epoch:
        return Interrupted(f"interrupted by {name} after the last step (step {global_step}): "
                           f"training is finished and checkpointed; rerun the same command "
                           f"to write the summary and report", signum)
    epoch, step = divmod(global_step, steps_per_epoch)
    return Interrupted(f"interrupted by {name} at step {global_step} (epoch {epoch + 1}, step "
                       f"{step} of {steps_per_epoch}): checkpoint saved; rerun the same "
                       f"command to resume", signum)
