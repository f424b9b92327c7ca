"""Run the training CLI and SIGKILL it at a chosen point: for crash/resume tests.

    python -m tests.crash_run --after-saves N [--mid-save] -- <train flags>

--after-saves N   kill right after the N-th checkpoint is completely written
--mid-save        kill while the N-th checkpoint is being written (before orbax
                  finalises it), so a half-written checkpoint is left behind
--after-steps N   kill after N train steps of this process (mid-epoch)
--nan-at-step K   feed NaN images at global step K (0-based; the host loop only), so
                  the loss becomes NaN there: a deterministic divergence
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def _die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--after-saves", type=int, default=0)
    parser.add_argument("--mid-save", action="store_true")
    parser.add_argument("--after-steps", type=int, default=0)
    parser.add_argument("--nan-at-step", type=int, default=-1)
    args, rest = parser.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]

    from mnist_plus import checkpointing, loops, sampler, train

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
        if args.after_saves and saves["n"] == args.after_saves:
            self.wait()
            _die()

    checkpointing.Checkpointer.save = save

    steps = {"n": 0}
    if args.after_steps:
        original_run = loops.HostLoop.run

        def run(self, state, metrics, epoch, start, stop, progress=lambda n: None):
            def counted(n):
                progress(n)
                steps["n"] += n
                if steps["n"] >= args.after_steps:
                    _die()
            return original_run(self, state, metrics, epoch, start, stop, progress=counted)
        loops.HostLoop.run = run
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
    from mnist_plus import distributed

    os.environ[distributed.SUPERVISED_ENV] = "1"  # the hooks above must run in this process
    train.main(rest)


if __name__ == "__main__":
    main()
