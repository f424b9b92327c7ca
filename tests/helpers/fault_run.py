"""Run the training CLI with a disk fault injected at a chosen write: for I/O fault tests.

    python -m tests.fault_run --checkpoint N --how HOW --errno ENOSPC -- <train flags>
    python -m tests.fault_run --metrics N --errno EROFS -- <train flags>

--checkpoint N   the N-th checkpoint save fails, as the file system reports it:
    --how json     its JSON metadata write raises OSError in orbax's writer thread
                   (surfaces at the next save, wait or close)
    --how tensorstore  the same write fails as tensorstore reports its errors (orbax
                   writes arrays through it): a ValueError carrying `[os_error_code='28']`
    --how mkdir    creating its temporary folder raises OSError in the save call
--metrics N      the N-th write of metrics.jsonl fails: EROFS when the temporary file
                 is created, ENOSPC halfway through writing it
"""

from __future__ import annotations

import argparse
import errno
import os
import sys


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=int, default=0)
    parser.add_argument("--how", choices=("json", "tensorstore", "mkdir"), default="json")
    parser.add_argument("--metrics", type=int, default=0)
    parser.add_argument("--errno", choices=("ENOSPC", "EROFS"), default="ENOSPC")
    args, rest = parser.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]
    code = getattr(errno, args.errno)

    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    from mnist_plus import train
    from mnist_plus.runtime import atomic
    from mnist_plus.runtime import checkpointing
    from mnist_plus.runtime import distributed
    from mnist_plus.training import metrics

    failing = {"step": None}
    saves = {"n": 0}
    original_save = checkpointing.Checkpointer.save

    def save(self, state, *a, **kw):
        saves["n"] += 1
        failing["step"] = int(state.step) if saves["n"] == args.checkpoint else None
        return original_save(self, state, *a, **kw)

    checkpointing.Checkpointer.save = save

    if args.how in ("json", "tensorstore"):
        original_json = json_checkpoint_handler.JsonCheckpointHandler._save_fn

        async def json_save(self, x, directory):
            if failing["step"] is not None and x.get("global_step") == failing["step"]:
                path = os.fspath(directory / "metadata")
                if args.how == "json":
                    raise _oserror(code, path)
                raise ValueError(  # the form of tensorstore's errors (orbax's array writes)
                    f"RESOURCE_EXHAUSTED: Error writing local file \"{path}\": Failed to "
                    f"write 2394 bytes to file 14: {os.strerror(code)} [os_error_code='{code}']")
            return await original_json(self, x, directory)

        json_checkpoint_handler.JsonCheckpointHandler._save_fn = json_save
    else:
        original_makedirs = os.makedirs

        def makedirs(path, *a, **kw):
            if failing["step"] is not None and os.fspath(path).endswith(
                    f"{failing['step']}.orbax-checkpoint-tmp"):
                raise _oserror(code, os.fspath(path))
            return original_makedirs(path, *a, **kw)

        os.makedirs = makedirs

    writes = {"n": 0}
    original_replace = atomic.replace_file

    def replace_file(path, write):
        if os.path.basename(path) == "metrics.jsonl":
            writes["n"] += 1
            if writes["n"] == args.metrics:
                if code == errno.EROFS:  # no temporary file can be made
                    raise _oserror(code, os.path.dirname(path))

                def write_half(f):
                    f.write(b'{"epoch": ')
                    raise _oserror(code, "")
                return original_replace(path, write_half)
        return original_replace(path, write)

    metrics.atomic.replace_file = replace_file

    os.environ[distributed.SUPERVISED_ENV] = "1"  # the hooks above must run in this process
    sys.exit(train.main(rest))


if __name__ == "__main__":
    main()
