"""Train, evaluate, checkpoint and report: `python -m mnist_plus.train --workdir runs/`.

`train_and_evaluate(config, workdir)` is the whole job (as in Flax's examples);
`main` parses flags into a Config and turns expected errors into one line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Sequence

_PROCESS_START = time.time()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mnist_plus import compile_cache  # noqa: E402
from mnist_plus import config as config_lib  # noqa: E402
from mnist_plus import data, loops, sampler  # noqa: E402
from mnist_plus import metrics as metrics_lib  # noqa: E402
from mnist_plus import tensorboard as tensorboard_lib  # noqa: E402
from mnist_plus.checkpointing import Checkpointer  # noqa: E402
from mnist_plus.cli import config_from_args, config_parser, run_main  # noqa: E402
from mnist_plus.errors import DivergedError, UsageError  # noqa: E402
from mnist_plus.model import MnistPlusNet, param_count  # noqa: E402
from mnist_plus.train_step import (NO_STEP, TrainState, create_state, eval_step,  # noqa: E402
                                   make_optimizer, zero_train_metrics)


def prepare_workdir(workdir: str) -> str:
    """Create `workdir`; check that it (and its `checkpoints` folder, if any) takes files.

    Done before any data is read, so an unusable workdir fails in seconds and not
    after an epoch of training when orbax first writes.
    """
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        checkpoints = os.path.join(workdir, "checkpoints")
        for folder in [workdir] + ([checkpoints] if os.path.lexists(checkpoints) else []):
            probe = os.path.join(folder, ".write_test")
            with open(probe, "w"):
                pass
            os.unlink(probe)
    except OSError as e:
        raise UsageError(f"cannot write to workdir {workdir} ({e.strerror}: {e.filename}): "
                         f"pass a writable --workdir") from None
    return workdir


def move_earlier_run_aside(workdir: str, log: Callable[[str], None]) -> None:
    """--fresh: move an earlier run's files to `previous-<time>/` (never delete).

    Called only once flags and data have been checked, so a failing invocation
    leaves the earlier run where it was.
    """
    old = [n for n in ("checkpoints", "metrics.jsonl", "timing.jsonl", "summary.json",
                       "tensorboard", "report")
           if os.path.exists(os.path.join(workdir, n))]
    if old:
        aside = os.path.join(workdir, "previous-" + time.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(aside, exist_ok=True)
        for n in old:
            shutil.move(os.path.join(workdir, n), os.path.join(aside, n))
        log(f"--fresh: moved the earlier run's files to {aside}")


def build_model(config: config_lib.Config) -> MnistPlusNet:
    return MnistPlusNet(width=config.width, adder_hidden=config.adder_hidden,
                        adder_input=config.adder_input)


def initial_state(config: config_lib.Config, steps_per_epoch: int) -> TrainState:
    """Fresh state from the config: the init key is derived from the seed alone."""
    tx = make_optimizer(config.learning_rate, config.weight_decay, config.warmup_fraction,
                        config.epochs * steps_per_epoch)
    return create_state(build_model(config), tx, jax.random.key(config.seed))


def make_evaluator(config: config_lib.Config, mnist: data.Mnist
                   ) -> Callable[[TrainState], dict[str, float]]:
    """Test-set evaluation with the seed's fixed numbers; returns summed counts."""
    images = sampler.normalise(mnist.test_images)
    numbers = sampler.test_numbers(config.seed, len(mnist.test_labels))
    batches = [jax.device_put(b) for b in sampler.eval_batches(
        images, mnist.test_labels, numbers, config.eval_batch_size)]
    step = jax.jit(eval_step)

    def evaluate(state: TrainState) -> dict[str, float]:
        total = None
        for batch in batches:
            sums = step(state, batch)
            total = sums if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
        return metrics_lib.to_host(total)

    return evaluate


def _check_finite(train_sums: dict[str, Any], epoch: int, last_good: int | None) -> None:
    bad = int(np.asarray(jax.device_get(train_sums["first_nonfinite_step"])))
    if bad != int(NO_STEP):
        kept = (f"the last good checkpoint (step {last_good}) is kept" if last_good is not None
                else "no checkpoint had been written yet")
        raise DivergedError(
            f"the loss became NaN or infinite at step {bad} (epoch {epoch + 1}); {kept}; "
            f"lower --learning-rate and rerun (with --fresh to restart from scratch)")


def _progress_bar(enabled: bool, total: int, initial: int, epoch: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}", unit="step",
                leave=False, file=sys.stderr, dynamic_ncols=True)


def train_and_evaluate(config: config_lib.Config, workdir: str, *, fresh: bool = False,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `config` in `workdir`, resuming from its newest checkpoint; returns the summary."""
    config_lib.validate(config)
    workdir = prepare_workdir(workdir)
    t0 = time.time()
    mnist = data.load_mnist(config.tfds_dir or None, config.mnist_dir or None)
    load_seconds = time.time() - t0
    config_lib.validate(config, train_size=len(mnist.train_labels))
    if fresh:
        move_earlier_run_aside(workdir, log)
    log(f"data: {len(mnist.train_labels)} train / {len(mnist.test_labels)} test images "
        f"loaded in {load_seconds:.2f}s")

    steps_per_epoch = sampler.steps_per_epoch(len(mnist.train_labels), config.batch_size)
    state = initial_state(config, steps_per_epoch)
    train_sums = zero_train_metrics()
    log(f"model: {param_count(state.params):,} parameters; backend {jax.default_backend()}; "
        f"loop {loops.choose_loop(config.loop)}")

    checkpointer = Checkpointer(workdir, config.keep_checkpoints)
    metrics_log = metrics_lib.JsonlLog(os.path.join(workdir, "metrics.jsonl"))
    timing_log = metrics_lib.JsonlLog(os.path.join(workdir, "timing.jsonl"))
    epoch, start = 0, 0
    tensorboard = None
    try:
        restored = checkpointer.restore(state, train_sums, config)
        if restored is not None:
            state, train_sums, meta = restored
            epoch, start = meta["epoch"], meta["step_in_epoch"]
            if epoch < config.epochs:
                log(f"resumed from checkpoint at step {meta['global_step']} "
                    f"(epoch {epoch + 1}, step {start} of {steps_per_epoch})")
        metrics_log.truncate_after(epoch)
        timing_log.truncate_after(epoch)
        if epoch >= config.epochs:
            log(f"training already finished ({config.epochs} epochs, checkpoint at step "
                f"{int(state.step)}); nothing to do")
            _report(config, workdir, mnist, log)
            return _finish(workdir, metrics_log, timing_log, load_seconds, None, log)

        tensorboard = tensorboard_lib.TensorBoard(workdir, config.log_every_steps,
                                                  purge_step=int(state.step))
        loop = tensorboard.wrap(loops.make_loop(
            config.loop, sampler.normalise(mnist.train_images), mnist.train_labels, config.seed,
            config.batch_size, config.augment_shift,
            sampler.held_out_pairs(config.holdout, config.seed)))
        evaluate = make_evaluator(config, mnist)
        first_step_seconds = None
        last_good = checkpointer.latest_step()
        while epoch < config.epochs:
            t_epoch = time.time()
            bar = _progress_bar(config.progress, steps_per_epoch, start, epoch)

            def progress(n: int) -> None:
                nonlocal first_step_seconds
                if first_step_seconds is None:
                    first_step_seconds = time.time() - _PROCESS_START
                if bar:
                    bar.update(n)

            # Cut where the global step hits a multiple of --checkpoint-every-steps.
            for seg_start, seg_stop in loops.split_at_multiples(
                    start, steps_per_epoch, config.checkpoint_every_steps,
                    offset=epoch * steps_per_epoch):
                state, train_sums = loop.run(state, train_sums, epoch, seg_start, seg_stop,
                                             progress=progress)
                _check_finite(train_sums, epoch, last_good)
                if seg_stop < steps_per_epoch:
                    checkpointer.save(state, train_sums, epoch=epoch, step_in_epoch=seg_stop,
                                      config=config)
                    last_good = int(state.step)
            if bar:
                bar.close()
            train_row = metrics_lib.summarise("train", metrics_lib.to_host(train_sums))
            test_row = metrics_lib.summarise("test", evaluate(state))
            row = {"epoch": epoch + 1, "step": int(state.step), **train_row, **test_row}
            row = {k: row[k] for k in metrics_lib.KEYS}
            seconds = time.time() - t_epoch
            metrics_log.append(row)
            tensorboard.epoch(row)
            timing_log.append({"epoch": epoch + 1, "seconds": seconds})
            log(metrics_lib.format_epoch(row, seconds))
            epoch, start = epoch + 1, 0
            train_sums = zero_train_metrics()
            checkpointer.save(state, train_sums, epoch=epoch, step_in_epoch=0, config=config)
            last_good = int(state.step)
    finally:
        checkpointer.close()
        if tensorboard is not None:
            tensorboard.close()
    _report(config, workdir, mnist, log)
    return _finish(workdir, metrics_log, timing_log, load_seconds, first_step_seconds, log)


def _report(config: config_lib.Config, workdir: str, mnist: data.Mnist,
            log: Callable[[str], None]) -> None:
    """With `config.report`, write `workdir/report/` unless it is up to date."""
    if config.report:
        from mnist_plus import report  # matplotlib is only imported now

        if not report.is_current(workdir):
            log(f"report: {report.write_report(workdir, mnist, log=log)}")


def _finish(workdir: str, metrics_log: metrics_lib.JsonlLog, timing_log: metrics_lib.JsonlLog,
            load_seconds: float, first_step_seconds: float | None,
            log: Callable[[str], None]) -> dict[str, Any]:
    rows = metrics_log.read()
    times = [r["seconds"] for r in timing_log.read()]
    summary: dict[str, Any] = {"epochs": len(rows), "final": rows[-1] if rows else None,
                               "train_seconds": sum(times), "data_load_seconds": load_seconds}
    if first_step_seconds is not None:
        summary["process_start_to_first_step_seconds"] = first_step_seconds
    if rows:
        best = max(rows, key=lambda r: r["test_sum_accuracy"])
        summary["best_sum_epoch"] = best["epoch"]
        final = rows[-1]
        log(f"done: {len(rows)} epochs; final test digit accuracy "
            f"{100 * final['test_digit_accuracy']:.2f}%, sum accuracy "
            f"{100 * final['test_sum_accuracy']:.2f}% (all 10 numbers per image: "
            f"{100 * final['test_exhaustive_sum_accuracy']:.2f}%); training time "
            f"{sum(times):.1f}s; results in {workdir}")
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def parse_args(argv: Sequence[str] | None = None):
    parser = config_parser("python -m mnist_plus.train",
                           "Train the MNIST digit + number model; rerun to resume.")
    parser.add_argument("--workdir", default="runs",
                        help="where checkpoints, metrics.jsonl and the summary go")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move the workdir's earlier run aside instead of resuming")
    return parser.parse_args(argv)


def _main(argv: Sequence[str] | None) -> None:
    args = parse_args(argv)
    compile_cache.enable()
    train_and_evaluate(config_from_args(args), args.workdir, fresh=args.fresh,
                       log=lambda s: print(s, flush=True))


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_main(_main, argv))


if __name__ == "__main__":
    main()
