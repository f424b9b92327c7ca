"""Train, evaluate, checkpoint and report: the job behind `python -m mnist_plus.train`.

`train_and_evaluate(config, workdir)` is the whole job (as in Flax's examples); `run`
is what the CLI (`mnist_plus/train.py`) calls once its flags have parsed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax

from mnist_plus import cli
from mnist_plus import config as config_lib
from mnist_plus.cli import config_from_args
from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus.errors import UsageError
from mnist_plus.model import param_count
from mnist_plus.runtime import atomic, compile_cache, distributed, preemption, profiling
from mnist_plus.runtime import tensorboard as tensorboard_lib
from mnist_plus.runtime import workdir as workdir_lib
from mnist_plus.runtime.checkpointing import Checkpointer
from mnist_plus.training import divergence, runs
from mnist_plus.training import mesh as mesh_lib
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.training.state import global_step


def _progress_bar(enabled: bool, total: int, initial: int, epoch: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}", unit="step",
                leave=False, file=sys.stderr, dynamic_ncols=True)


def train_and_evaluate(config: config_lib.Config, workdir: str, *, fresh: bool = False,
                       seeds: Sequence[int] | None = None, seed_map: str = "auto",
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `config` in `workdir`, resuming from its newest checkpoint; returns the summary.

    With `seeds`, train `config` once per seed as one program (runs.Seeds; `config.seed`
    is replaced), through the same loop: metrics.jsonl gets a row per seed per epoch and
    the summary their mean and standard deviation. One training per workdir: a second one
    fails at once (runtime/workdir.py). SIGTERM/SIGINT during training checkpoint the
    current step and raise `Interrupted` (preemption)."""
    config_lib.validate(config)
    workdir = workdir_lib.prepare(workdir)
    with workdir_lib.held(workdir, enabled=jax.process_index() == 0):
        return _train_and_evaluate(config, workdir, fresh=fresh, seeds=seeds,
                                   seed_map=seed_map, log=log)


def _train_and_evaluate(config: config_lib.Config, workdir: str, *, fresh: bool,
                        seeds: Sequence[int] | None, seed_map: str,
                        log: Callable[[str], None]) -> dict[str, Any]:
    """The body of `train_and_evaluate`, in a prepared (absolute) and locked workdir."""
    if seeds:
        if jax.process_count() > 1:
            raise UsageError("--seeds runs in one process: start it without --coordinator "
                             "or --distributed")
        mesh = None
    else:
        mesh = mesh_lib.make_mesh(config.num_devices or None)
        mesh_lib.check_divisible(mesh, "batch-size", config.batch_size)
    primary = jax.process_index() == 0  # the one process that writes logs and reports
    if not primary:
        log = lambda s: None  # noqa: E731
    t0 = time.time()
    mnist = data.load_mnist(config.tfds_dir or None, config.mnist_dir or None)
    load_seconds = time.time() - t0
    config_lib.validate(config, train_size=len(mnist.train_labels))
    if fresh and primary:
        workdir_lib.move_earlier_run_aside(workdir, log)
    if jax.process_count() > 1:  # no process reads the workdir before it is moved aside
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("mnist_plus: workdir ready")
    log(f"data: {len(mnist.train_labels)} train / {len(mnist.test_labels)} test images "
        f"loaded in {load_seconds:.2f}s")

    steps_per_epoch = sampler.steps_per_epoch(len(mnist.train_labels), config.batch_size)
    run = (runs.Seeds(config, seeds, mnist, steps_per_epoch, seed_map) if seeds
           else runs.Single(config, mnist, steps_per_epoch, mesh))
    state = run.initial_state()
    train_sums = run.zero_sums()
    params = param_count(state.params) // (len(seeds) if seeds else 1)
    log(f"model: {params:,} parameters; backend {jax.default_backend()}; {run.describe()}")

    checkpointer = Checkpointer(workdir, config.keep_checkpoints, keep_best=config.keep_best,
                                data_fingerprint=mnist.fingerprint, seeds=run.seeds)
    metrics_log = metrics_lib.JsonlLog(os.path.join(workdir, "metrics.jsonl"), enabled=primary)
    timing_log = metrics_lib.JsonlLog(os.path.join(workdir, "timing.jsonl"), enabled=primary)
    epoch, start = 0, 0
    tensorboard, profiler = None, None
    preempt = preemption.Preemption(multiprocess=jax.process_count() > 1)
    try:
        restored = checkpointer.restore(state, train_sums, config, mesh=run.restore_mesh)
        if restored is not None:
            state, train_sums, meta = restored
            state, train_sums = run.placed(state), run.placed(train_sums)
            epoch, start = meta["epoch"], meta["step_in_epoch"]
            if epoch < config.epochs:
                log(f"resumed from checkpoint at step {meta['global_step']} "
                    f"(epoch {epoch + 1}, step {start} of {steps_per_epoch})")
        if primary:  # the effective config (defaults, --config file, flags), for --config;
            # written once the resume checks have passed: a refused run writes nothing
            atomic.replace_file(os.path.join(workdir, "config.json"),
                                lambda f: f.write(config_lib.to_json(config).encode()))
        metrics_log.truncate_after(epoch)
        timing_log.truncate_after(epoch)
        if epoch >= config.epochs:
            log(f"training already finished ({config.epochs} epochs, checkpoint at step "
                f"{global_step(state)}); nothing to do")
            if primary and not seeds:
                _report(config, workdir, mnist, log)
            return _finish(workdir, metrics_log, timing_log, load_seconds, None, run, log)

        # The periodic actions, each a hook called where the one loop below pauses.
        window = config_lib.profile_window(config.profile_steps)
        profiler = profiling.profiler(window, workdir, trace=primary, log=log)
        if primary and not seeds:  # many seeds: their rows are in metrics.jsonl
            tensorboard = tensorboard_lib.open_tensorboard(workdir, int(state.step), log)
        log_every = config.log_every_steps if tensorboard is not None else 0
        first_step_seconds = None
        last_good = checkpointer.latest_step()
        preempt.install()
        while epoch < config.epochs:
            t_epoch = time.time()
            offset = epoch * steps_per_epoch
            bar = _progress_bar(config.progress and primary, steps_per_epoch, start, epoch)

            def progress(n: int) -> None:
                nonlocal first_step_seconds
                if first_step_seconds is None:
                    first_step_seconds = time.time() - cli.IMPORTED_AT
                if bar:
                    bar.update(n)

            if tensorboard is not None:
                tensorboard.start_window(train_sums)
            ends = pauses(start, steps_per_epoch, offset, config.checkpoint_every_steps,
                          log_every, profiler.cuts if profiler else ())
            for a, b in zip([start] + ends[:-1], ends):
                if profiler:
                    profiler.before(offset + a)
                state, train_sums = run.loop.run(state, train_sums, epoch, a, b,
                                                 progress=progress, should_stop=preempt.step)
                divergence.check_losses(train_sums, epoch, last_good)
                done = global_step(state) - offset if preempt.stopped else b  # perhaps < b
                if profiler:
                    profiler.after(state, train_sums, offset + done)
                if log_every and done == b and b % log_every == 0:
                    tensorboard.end_window(train_sums, step=offset + b)
                every = config.checkpoint_every_steps
                if done < steps_per_epoch and (preempt.stopped
                                               or (every and (offset + done) % every == 0)):
                    divergence.check_state(state, last_good)
                    checkpointer.save(state, train_sums, epoch=epoch, step_in_epoch=done,
                                      config=config)
                    last_good = global_step(state)
                    if preempt.poll():
                        break
            if bar:
                bar.close()
            if preempt.stopped and done < steps_per_epoch:
                break  # mid-epoch: saved above
            train_host = run.train_counts(train_sums)  # waits for the epoch's last step
            t_eval = time.time()
            if run.precise_bn is not None:  # what is evaluated and saved; training never
                state = run.precise_bn(state)  # reads it
            rows = run.rows(epoch + 1, state, train_host)
            row = runs.mean_row(rows)
            seconds = time.time() - t_epoch
            eval_seconds = time.time() - t_eval
            metrics_log.append(*rows)
            if tensorboard is not None:
                tensorboard.epoch(row)
            timing_log.append({"epoch": epoch + 1, "seconds": seconds,
                               "eval_seconds": eval_seconds})
            log(metrics_lib.format_epoch(row, seconds)
                + (f"  (mean of {len(rows)} seeds)" if seeds else ""))
            epoch, start = epoch + 1, 0
            train_sums = run.zero_sums()
            divergence.check_state(state, last_good)
            checkpointer.save(state, train_sums, epoch=epoch, step_in_epoch=0, config=config,
                              test_metrics={k: v for k, v in row.items()
                                            if k.startswith("test_")})
            last_good = global_step(state)
            if preempt.poll():  # e.g. a signal during the evaluation or the save
                break
        if tensorboard is not None and epoch >= config.epochs:  # finished: `row` is the last
            tensorboard.hparams(config_lib.to_dict(config), row)
    finally:
        if profiler:
            profiler.close()
        checkpointer.close()  # waits for the last save, also after a signal
        if tensorboard is not None:
            tensorboard.close()
        preempt.restore()
    if preempt.pending():
        raise preemption.interrupted(preempt.pending(), global_step(state), steps_per_epoch,
                                     config.epochs)
    if primary and not seeds:
        _report(config, workdir, mnist, log)
    return _finish(workdir, metrics_log, timing_log, load_seconds, first_step_seconds, run,
                   log)



def pauses(start: int, stop: int, offset: int, checkpoint_every: int, log_every: int,
           profile_cuts: Sequence[int] = ()) -> list[int]:
    """The steps of an epoch, after `start`, where the loop pauses for a periodic action,
    ending with `stop` (the epoch's end): a checkpoint where the global step (`offset +
    step`) is a multiple of `checkpoint_every`, a TensorBoard window at multiples of
    `log_every` within the epoch, the profile window's ends (global steps). Pausing
    changes nothing that is computed. 0 turns an action off."""
    return [s for s in range(start + 1, stop)
            if (checkpoint_every and (offset + s) % checkpoint_every == 0)
            or (log_every and s % log_every == 0) or offset + s in profile_cuts] + [stop]


def _report(config: config_lib.Config, workdir: str, mnist: data.Mnist,
            log: Callable[[str], None]) -> None:
    """With `config.report`, write `workdir/report/` unless it is up to date."""
    if config.report:
        from mnist_plus.tools import report  # matplotlib is only imported now

        if not report.is_current(workdir, config.robustness):
            path = report.write_report(workdir, mnist, log=log, robustness=config.robustness)
            log(f"report: {path}")


def _finish(workdir: str, metrics_log: metrics_lib.JsonlLog, timing_log: metrics_lib.JsonlLog,
            load_seconds: float, first_step_seconds: float | None, run: runs.Run,
            log: Callable[[str], None]) -> dict[str, Any]:
    rows = metrics_log.read()
    times = [r["seconds"] for r in timing_log.read()]
    per_epoch = len(run.seeds) if run.seeds else 1
    final = rows[-per_epoch:]
    summary: dict[str, Any] = {"epochs": len(rows) // per_epoch,
                               "final": runs.mean_row(final) if rows else None,
                               "train_seconds": sum(times), "data_load_seconds": load_seconds,
                               "num_devices": 1 if run.mesh is None else int(run.mesh.size),
                               "num_processes": jax.process_count()}
    if run.seeds:
        summary["seeds"] = run.seeds
        summary["final_per_seed"] = final
        tests = [k for k in metrics_lib.KEYS if k.startswith("test_")]
        summary["final_mean_std"] = runs.mean_std(final, tests) if rows else None
    if first_step_seconds is not None:
        summary["process_start_to_first_step_seconds"] = first_step_seconds
    if rows:
        epochs = [runs.mean_row(rows[i:i + per_epoch]) for i in range(0, len(rows), per_epoch)]
        summary["best_sum_epoch"] = max(epochs, key=lambda r: r["test_sum_accuracy"])["epoch"]
        last = summary["final"]
        of = f" (mean of {per_epoch} seeds)" if run.seeds else ""
        log(f"done: {len(epochs)} epochs; final test digit accuracy "
            f"{100 * last['test_digit_accuracy']:.2f}%, sum accuracy "
            f"{100 * last['test_sum_accuracy']:.2f}% (all 10 numbers per image: "
            f"{100 * last['test_exhaustive_sum_accuracy']:.2f}%){of}; training time "
            f"{sum(times):.1f}s; results in {workdir}")
    if jax.process_index() == 0:
        atomic.replace_file(os.path.join(workdir, "summary.json"),
                            lambda f: f.write(json.dumps(summary, indent=2).encode()))
    return summary


def run(args: argparse.Namespace) -> None:
    """`python -m mnist_plus.train` once its flags have parsed: start jax.distributed if
    they ask for it, then train."""
    config = config_lib.validate(config_from_args(args))
    compile_cache.enable()
    def train() -> None:
        train_and_evaluate(config, args.workdir, fresh=args.fresh, seeds=args.seeds,
                           seed_map=args.seed_map, log=lambda s: print(s, flush=True))

    if not distributed.initialize(args):
        return train()
    try:
        train()
    except jax.errors.JaxRuntimeError as e:
        first = (str(e).strip().splitlines() or ["?"])[0][:300]
        print(f"error: process {jax.process_index()} of {jax.process_count()} stopped: a "
              f"collective operation failed, most likely because another process of the run "
              f"died ({first}); restart every process with the same command to resume from "
              f"the newest checkpoint", file=sys.stderr, flush=True)
        # Not a normal exit: jax.distributed's shutdown would wait for the dead process.
        os._exit(distributed.ProcessLostError.exit_code)

