"""`--profile-steps A:B`: a jax.profiler trace of global steps A..B in `workdir/profile/`.

Steps are counted from 1 as in metrics.jsonl (step k takes the state's step from k - 1
to k). The loop is cut where the state's step is A - 1 and B, the trace is started
before step A and stopped after step B, once its results are computed
(`block_until_ready`), so it holds the device work of those steps and not that of
others. Cutting a segment changes nothing that is computed (the same cut as
`--checkpoint-every-steps`), so a profiled run writes the same numbers.

The trace lands in `workdir/profile/plugins/profile/<time>/` as `<host>.xplane.pb` (for
TensorBoard's profile plugin) and `<host>.trace.json.gz`, plus `perfetto_trace.json.gz`
(for ui.perfetto.dev). The cuts are made on every process of a multi-process run (so all
run the same programs); only the process that writes logs traces.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax


FOLDER = "profile"


class Profiler:
    """Traces global steps A..B: the training loop pauses before step A and after step B
    (`cuts`), and calls `before` and `after` around each piece it runs."""

    def __init__(self, window: tuple[int, int], log_dir: str, trace: bool = True,
                 log: Callable[[str], None] = lambda s: None):
        self._first, self._last = window
        self.log_dir = log_dir
        self._trace, self._log = trace, log
        self._tracing = False
        self._done = False

    @property
    def cuts(self) -> tuple[int, int]:
        """The global steps after which the loop must pause: A - 1 and B."""
        return self._first - 1, self._last

    def before(self, step: int) -> None:
        """The loop is about to run from global step `step`: start tracing if the window
        begins here (also when a resumed run starts inside the window)."""
        if not (self._tracing or self._done) and self._first - 1 <= step < self._last:
            self._tracing = True
            if self._trace:
                os.makedirs(self.log_dir, exist_ok=True)
                jax.profiler.start_trace(self.log_dir, create_perfetto_trace=True)
            self._from, self._t0 = step + 1, time.perf_counter()

    def after(self, state, metrics, step: int) -> None:
        """The loop ran up to global step `step`: stop tracing once it has passed B, after
        the traced steps' results are computed."""
        if not (self._tracing and step >= self._last):
            return
        self._tracing, self._done = False, True
        if self._trace:
            jax.block_until_ready((state, metrics))
            t1 = time.perf_counter()
            jax.profiler.stop_trace()
            self._log(f"profile: trace of steps {self._from}..{step} written to "
                      f"{self.log_dir} (steps traced in {t1 - self._t0:.2f}s, trace written "
                      f"in {time.perf_counter() - t1:.2f}s)")

    def close(self) -> None:
        """After an error inside the window: keep what was traced; the error goes on."""
        if self._tracing and self._trace:
            jax.profiler.stop_trace()
        self._tracing = False


def profiler(window: tuple[int, int] | None, workdir: str, trace: bool = True,
             log: Callable[[str], None] = lambda s: None) -> Profiler | None:
    """A Profiler writing to workdir/profile for `--profile-steps`, or None without one."""
    if window is None:
        return None
    return Profiler(window, os.path.join(workdir, FOLDER), trace=trace, log=log)
