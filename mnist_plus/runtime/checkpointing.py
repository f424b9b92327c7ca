"""Orbax checkpoints under `workdir/checkpoints`: what is saved, and resuming from it.

A checkpoint holds the train state (step, params, batch stats, optimizer state),
the running train metrics of the current epoch, and JSON metadata: the epoch and
step within it that training continues from, and the config. Orbax writes into a
temporary folder (`<step>.orbax-checkpoint-tmp`) and renames it when complete, so a
killed save is never restored; leftover temporary folders are deleted on the next start.
Training checks a state for NaN before saving it (training/divergence.py), so the newest
checkpoint is always one training can continue from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax.sharding import Mesh

from mnist_plus import config as config_lib
from mnist_plus.training import mesh as mesh_lib
from mnist_plus.runtime import storage
from mnist_plus.errors import StorageError, UsageError
from mnist_plus.training.state import TrainState, global_step
from mnist_plus.training.step import Metrics


def _saved_tree(state: TrainState, metrics: Metrics) -> dict[str, Any]:
    return {"state": {"step": state.step, "params": state.params,
                      "batch_stats": state.batch_stats, "opt_state": state.opt_state},
            "train_metrics": metrics}


BEST_METRIC = "test_sum_accuracy"  # what "best" means: the highest test sum accuracy


def _best_metric(metrics: dict[str, Any]) -> float:
    return float(metrics[BEST_METRIC])


class _MidEpochSaves(logging.Filter):
    """Mid-epoch checkpoints have no test metrics on purpose (they must never rank as
    the best); orbax would warn about each one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Also orbax's notes on a read-only manager (readers open it so on purpose).
        return not ("did not provide metrics" in message
                    or "read_only=True, setting" in message
                    or "Given directory is read only" in message)


_QUIET = _MidEpochSaves()


def preservation_policy(keep: int, keep_best: bool) -> ocp.checkpoint_managers.PreservationPolicy:
    """Keep the newest `keep` checkpoints, and with `keep_best` the one with the best
    test sum accuracy. Only end-of-epoch checkpoints carry metrics (mid-epoch ones are
    never the best); the newest is always kept, since resuming needs it."""
    policies = [ocp.checkpoint_managers.LatestN(n=max(1, keep))]
    if keep_best:
        policies.append(ocp.checkpoint_managers.BestN(
            get_metric_fn=_best_metric, reverse=False, n=1,
            keep_checkpoints_without_metrics=False))
    return ocp.checkpoint_managers.AnyPreservationPolicy(policies)


def _join_orbax_threads(timeout: float = 120.0) -> None:
    """Wait for orbax's writer threads that outlive a failed save.

    Orbax re-raises the first failed write of a save while the others still run; left
    running, they fail at interpreter exit (no new futures then) and print tracebacks
    after our one-line error. Python would wait for them at exit anyway."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if (thread is not threading.current_thread() and not thread.daemon
                and type(thread).__module__.startswith("orbax.")):
            threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))


class Checkpointer:
    """A thin wrapper that fixes the layout and the resume rules of this project."""

    _in_flight: int | None = None  # the step of a save not yet known to be complete
    _faulted = False  # a save failed for lack of space or a read-only file system

    def __init__(self, workdir: str, keep: int, read_only: bool = False,
                 keep_best: bool = True, data_fingerprint: dict[str, str] | None = None,
                 seeds: list[int] | None = None):
        """`read_only`: for readers (report, predict): never creates, prunes or cleans
        anything, and involves only this process, so process 0 of a multi-process run
        can read checkpoints alone (a writer's manager synchronises all processes).

        `best_fn` is set in both modes: orbax writes a save's metrics only when it is
        set, and `best_step` needs it; which checkpoints are kept is decided by the
        `preservation_policy` alone.

        `data_fingerprint` (data.Mnist.fingerprint): saved in the metadata and checked on
        restore, so resuming on other data is refused. `seeds`: the seeds of a many-seed
        run (None: one run of the config's seed), saved and checked the same way."""
        self.data_fingerprint = data_fingerprint
        self.seeds = seeds
        logging.getLogger("absl").removeFilter(_QUIET)  # once, however many are made
        logging.getLogger("absl").addFilter(_QUIET)
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if read_only:
            me = jax.process_index()
            options = ocp.CheckpointManagerOptions(
                read_only=True, best_fn=_best_metric, best_mode="max",
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=me, active_processes={me}))
        else:
            options = ocp.CheckpointManagerOptions(
                preservation_policy=preservation_policy(keep, keep_best),
                best_fn=_best_metric, best_mode="max", create=True,
                cleanup_tmp_directories=True)
            # Folders made in the save call: made in a thread, a failure (read-only file
            # system) leaves orbax's writer threads waiting 20 minutes for them at exit.
            options.async_options = ocp.AsyncOptions(create_directories_asynchronously=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def best_step(self) -> int | None:
        """The checkpoint with the best test sum accuracy (ties: the newer), or None if
        no checkpoint has test metrics (mid-epoch ones, or a run from before they were
        saved)."""
        return self._manager.best_step()

    def save(self, state: TrainState, metrics: Metrics, *, epoch: int, step_in_epoch: int,
             config: config_lib.Config, test_metrics: dict[str, float] | None = None) -> None:
        """Save asynchronously; `epoch`/`step_in_epoch` say where training resumes.
        `test_metrics`: the epoch's test metrics, at epoch ends only (they rank the best).
        """
        step = global_step(state)
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": step,
                "config": config_lib.to_dict(config)}
        if self.data_fingerprint is not None:
            meta["data_fingerprint"] = self.data_fingerprint
        if self.seeds is not None:
            meta["seeds"] = list(self.seeds)
        self.wait()  # the previous save's write error surfaces here, named by its step
        with self._storage_errors(step):
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(_saved_tree(state, metrics)),
                meta=ocp.args.JsonSave(meta)), metrics=test_metrics)
        self._in_flight = step

    def read_meta(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta

    def restore(self, state: TrainState, metrics: Metrics, config: config_lib.Config,
                step: int | None = None, mesh: Mesh | None = None,
                ) -> tuple[TrainState, Metrics, dict[str, Any]] | None:
        """Checkpoint `step` (default: the newest complete one), or None if there is none;
        refuses one written with another config.

        With `mesh`, arrays are restored replicated over it, whatever mesh saved them
        (a run saved on 4 devices resumes on 1 and the other way round); without, as
        host NumPy arrays. `state` and `metrics` give the structure (shapes suffice)."""
        step = self.latest_step() if step is None else step
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
        self._check_data(meta)
        if meta.get("seeds") != self.seeds:
            def what(seeds: list[int] | None) -> str:
                return f"seeds {seeds}" if seeds else "one seed (no --seeds)"
            raise UsageError(
                f"the checkpoint in {self.directory} is of a run of {what(meta.get('seeds'))}, "
                f"not {what(self.seeds)}: rerun with the same --seeds, use another --workdir, "
                f"or pass --fresh to start over (old files are moved aside)")
        if mesh is None:
            target = jax.tree_util.tree_map(
                lambda x: np.zeros(x.shape, x.dtype), _saved_tree(state, metrics))
        else:
            rep = mesh_lib.replicated(mesh)
            target = jax.tree_util.tree_map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                _saved_tree(state, metrics))
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target))).state
        s = restored["state"]
        state = state.replace(step=s["step"], params=s["params"],
                              batch_stats=s["batch_stats"], opt_state=s["opt_state"])
        return state, restored["train_metrics"], meta

    def _check_data(self, meta: dict[str, Any]) -> None:
        """Refuse to resume on other data than the checkpoint was trained on (another
        --mnist-dir, an edited file): its numbers would no longer follow from the seed."""
        if self.data_fingerprint is None:
            return
        stored = meta.get("data_fingerprint")
        if stored is None:
            if jax.process_index() == 0:
                print(f"warning: the checkpoint in {self.directory} records no data "
                      f"fingerprint (written by an older version); resuming without checking "
                      f"that it was trained on the same data", file=sys.stderr, flush=True)
            return
        changed = [f"{part.replace('_', ' ')}: sha256 {stored.get(part, '?')[:8]}.. -> "
                   f"{now[:8]}.." for part, now in self.data_fingerprint.items()
                   if stored.get(part) != now]
        if changed:
            raise UsageError(
                f"the checkpoint in {self.directory} was trained on other data "
                f"({'; '.join(changed)}): rerun with the data it was trained on, use another "
                f"--workdir, or pass --fresh to start over")

    def wait(self) -> None:
        step, self._in_flight = self._in_flight, None
        with self._storage_errors(step):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()
            if self._faulted:
                _join_orbax_threads()

    def _complete_steps(self) -> list[int]:
        """Steps with a finalised folder on disk (orbax renames `<step>.orbax-checkpoint-tmp`
        to `<step>` when a save is complete): what a rerun resumes from."""
        try:
            return sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
        except OSError:
            return []

    @contextlib.contextmanager
    def _storage_errors(self, step: int | None) -> Iterator[None]:
        """A full disk or read-only file system while writing checkpoint `step`: one line.

        Orbax writes in background threads and re-raises their error at the next save or
        wait (as OSError, or tensorstore's ValueError carrying the errno); a failed save
        is never finalised and deletes no older checkpoint."""
        storage.quiet_library_logs()
        try:
            yield
        except Exception as e:
            code = storage.storage_errno(e)
            if code is None:
                raise
            self._faulted = True
            complete = self._complete_steps()
            kept = (f"the newest complete checkpoint (step {complete[-1]}) and metrics.jsonl "
                    f"are intact" if complete else
                    "metrics.jsonl is intact (no checkpoint was complete yet)")
            at = f" at step {step}" if step is not None else ""
            raise StorageError(
                f"cannot write the checkpoint{at} in {self.directory} "
                f"({storage.describe(code)}): {kept}; {storage.remedy(code)} and rerun to "
                f"resume") from None
