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


class ProfilingLoop:
    """`loop` with the same `run`, cut at the trace window's ends, tracing inside it."""

    def __init__(self, loop, window: tuple[int, int], steps_per_epoch: int, log_dir: str,
                 trace: bool = True, log: Callable[[str], None] = lambda s: None):
        self._loop = loop
        self._first, self._last = window
        self._steps_per_epoch = steps_per_epoch
        self.log_dir = log_dir
        self._trace, self._log = trace, log
        self._tracing = False
        self._done = False

    def __getattr__(self, name: str):
        return getattr(self._loop, name)

    def _start(self, step: int) -> None:
        self._tracing = True
        if self._trace:
            os.makedirs(self.log_dir, exist_ok=True)
            jax.profiler.start_trace(self.log_dir, create_perfetto_trace=True)
        self._from, self._t0 = step + 1, time.perf_counter()

    def _stop(self, state, metrics, step: int) -> None:
        self._tracing, self._done = False, True
        if self._trace:
            jax.block_until_ready((state, metrics))
            t1 = time.perf_counter()
            jax.profiler.stop_trace()
            self._log(f"profile: trace of steps {self._from}..{step} written to "
                      f"{self.log_dir} (steps traced in {t1 - self._t0:.2f}s, trace written "
                      f"in {time.perf_counter() - t1:.2f}s)")

    def run(self, state, metrics, epoch: int, start: int, stop: int, progress=lambda n: None):
        offset = epoch * self._steps_per_epoch
        before_first, last = self._first - 1, self._last
        cuts = [s for s in range(start + 1, stop) if offset + s in (before_first, last)]
        bounds = [start] + cuts + [stop]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if not (self._tracing or self._done) and before_first <= offset + a < last:
                self._start(offset + a)  # also when a resumed run starts inside the window
            try:
                state, metrics = self._loop.run(state, metrics, epoch, a, b, progress=progress)
            except BaseException:
                if self._tracing and self._trace:  # keep what was traced; the error goes on
                    jax.profiler.stop_trace()
                    self._tracing = False
                raise
            if self._tracing and offset + b >= last:
                self._stop(state, metrics, offset + b)
        return state, metrics


def wrap(loop, profile_steps: tuple[int, int] | None, steps_per_epoch: int, workdir: str,
         trace: bool = True, log: Callable[[str], None] = lambda s: None):
    """`loop` unchanged without a window; else a ProfilingLoop writing to workdir/profile."""
    if profile_steps is None:
        return loop
    return ProfilingLoop(loop, profile_steps, steps_per_epoch,
                         os.path.join(workdir, FOLDER), trace=trace, log=log)
