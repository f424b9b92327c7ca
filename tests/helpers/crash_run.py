"""Run the training CLI and SIGKILL it at a chosen point: for crash/resume tests.

    python -m tests.crash_run --after-saves N [--mid-save] -- <train flags>

--after-saves N   kill right after the N-th checkpoint is completely written
--mid-save        kill while the N-th checkpoint is being written (before orbax
                  finalises it), so a half-written checkpoint is left behind
--after-steps N   kill after N train steps of this process (mid-epoch)
--nan-at-step K   feed NaN images at global step K (0-based; the host loop only), so
                  the loss becomes NaN there: a deterministic divergence

Signals instead of SIGKILL (preemption tests), --signal TERM or INT (default TERM):
--pause-after-steps N  after N train steps of this process print "paused after step N"
                       and wait (up to 120 s) until a signal arrives from outside
--signal-after-steps N send the signal to this process after N train steps
--signal-at-eval N     send it as the N-th evaluation starts (it then runs to its end)
--signal-mid-save N    send it right after the N-th checkpoint save was started, while
                       orbax still writes it in the background; with --second-signal,
                       then also SIGINT (a second signal while shutting down)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def _die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--after-saves", type=int, default=0)
    parser.add_argument("--mid-save", action="store_true")
    parser.add_argument("--after-steps", type=int, default=0)
    parser.add_argument("--nan-at-step", type=int, default=-1)
    parser.add_argument("--signal", choices=("TERM", "INT"), default="TERM")
    parser.add_argument("--pause-after-steps", type=int, default=0)
    parser.add_argument("--signal-after-steps", type=int, default=0)
    parser.add_argument("--signal-at-eval", type=int, default=0)
    parser.add_argument("--signal-mid-save", type=int, default=0)
    parser.add_argument("--second-signal", action="store_true")
    args, rest = parser.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]
    signum = getattr(signal, "SIG" + args.signal)

    from mnist_plus import train
    from mnist_plus.runtime import checkpointing
    from mnist_plus.training import evaluation
    from mnist_plus.training import loops
    from mnist_plus.runtime import preemption
    from mnist_plus.data import sampler

    received = []  # signals seen by training's handler
    original_handle = preemption.Preemption._handle

    def handle(self, sig, frame):
        received.append(sig)
        original_handle(self, sig, frame)
    preemption.Preemption._handle = handle

    saves = {"n": 0}
    original_save = checkpointing.Checkpointer.save

    def save(self, *a, **kw):
        saves["n"] += 1
        if args.after_saves and saves["n"] == args.after_saves and args.mid_save:
            import orbax.checkpoint as ocp

            # Let orbax start writing into its temporary folder, then die.
            original_finalize = ocp.CheckpointManager._finalize

            def finalize(*fa, **fkw):
                _die()
            ocp.CheckpointManager._finalize = finalize
            original_save(self, *a, **kw)
            self.wait()
            ocp.CheckpointManager._finalize = original_finalize
            _die()
        original_save(self, *a, **kw)
        if saves["n"] == args.signal_mid_save:
            os.kill(os.getpid(), signum)
            if args.second_signal:  # while shutting down: must change nothing
                os.kill(os.getpid(), signal.SIGINT)
        if args.after_saves and saves["n"] == args.after_saves:
            self.wait()
            _die()

    checkpointing.Checkpointer.save = save

    steps = {"n": 0}
    if args.after_steps or args.pause_after_steps or args.signal_after_steps:
        original_run = loops.HostLoop.run

        def run(self, state, metrics, epoch, start, stop, progress=lambda n: None,
                should_stop=lambda n: False):
            def counted(n):
                steps["n"] += n
                if steps["n"] == args.signal_after_steps:
                    os.kill(os.getpid(), signum)
                if steps["n"] == args.pause_after_steps:
                    print(f"paused after step {steps['n']}", flush=True)
                    deadline = time.monotonic() + 120
                    while not received and time.monotonic() < deadline:
                        time.sleep(0.02)
                stopping = should_stop(n)
                if args.after_steps and steps["n"] >= args.after_steps:
                    _die()
                return stopping
            return original_run(self, state, metrics, epoch, start, stop, progress=progress,
                                should_stop=counted)
        loops.HostLoop.run = run
    if args.signal_at_eval:
        original_metrics = evaluation.Evaluator.metrics
        evals = {"n": 0}

        def metrics(self, state):
            evals["n"] += 1
            if evals["n"] == args.signal_at_eval:
                os.kill(os.getpid(), signum)
            return original_metrics(self, state)
        evaluation.Evaluator.metrics = metrics
    if args.nan_at_step >= 0:
        original_batches = sampler.train_batches

        def train_batches(images, labels, seed, epoch, batch_size, start_step=0, **kwargs):
            base = epoch * sampler.steps_per_epoch(len(labels), batch_size)
            for step, batch in enumerate(original_batches(images, labels, seed, epoch,
                                                          batch_size, start_step, **kwargs),
                                         start_step):
                if base + step == args.nan_at_step:
                    batch = batch._replace(image=batch.image * float("nan"))
                yield batch
        sampler.train_batches = train_batches
    from mnist_plus.runtime import distributed

    os.environ[distributed.SUPERVISED_ENV] = "1"  # the hooks above must run in this process
    sys.exit(train.main(rest))


if __name__ == "__main__":
    main()
