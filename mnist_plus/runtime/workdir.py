"""The workdir: checked before anything is read, one training at a time, an earlier run
moved aside (never deleted) by --fresh.

One training per workdir: an OS file lock on `workdir/.lock`.

Why a kernel lock (fcntl.flock) and not a pid file: the kernel releases it when the
holder dies, however it dies (SIGKILL, out of memory, a power cut of the host), so a
stale lock never blocks the next run. The holder writes one line into the file (pid,
host, start time) only so that a second training can name it; on release the file
is emptied again, so a run that stops early (bad input) leaves it byte for byte as it
found it. The file itself is never deleted or moved (not even by --fresh): deleting a
lock file lets two processes lock two different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import time
from typing import Callable, Iterator

from mnist_plus.errors import UsageError

LOCK_NAME = ".lock"


def _owner_line() -> str:
    return (f"pid {os.getpid()} on host {socket.gethostname()}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")


def _read_owner(fd: int) -> str:
    """The holder's line; it is written right after the lock is taken, so wait a little."""
    deadline = time.monotonic() + 1.0
    while True:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if text or time.monotonic() >= deadline:
            return text or "owner not recorded yet"
        time.sleep(0.05)


def acquire(workdir: str) -> int:
    """Lock `workdir` (which must exist) for this process; return the lock's descriptor.

    Raises UsageError (exit 2) at once, without waiting, if another process holds it.
    """
    path = os.path.join(workdir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise UsageError(f"cannot write to workdir {workdir} ({e.strerror}: {path}): "
                         f"pass a writable --workdir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise UsageError(f"workdir {workdir} is in use by another training ({owner}): wait "
                         f"for it to finish, or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, _owner_line().encode(), 0)
    return fd


def release(fd: int) -> None:
    """Empty the file (see the module docstring) and unlock it."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def held(workdir: str, enabled: bool = True) -> Iterator[None]:
    """Hold the workdir's lock for the block (`enabled=False`: do nothing, for the
    processes other than 0 of a multi-process run, which share process 0's workdir)."""
    fd = acquire(workdir) if enabled else None
    try:
        yield
    finally:
        if fd is not None:
            release(fd)


def prepare(workdir: str) -> str:
    """Create `workdir`; check that it (and its `checkpoints` folder, if any) takes files.

    Done before any data is read, so an unusable workdir fails in seconds and not
    after an epoch of training when orbax first writes.
    """
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        checkpoints = os.path.join(workdir, "checkpoints")
        for folder in [workdir] + ([checkpoints] if os.path.lexists(checkpoints) else []):
            probe = os.path.join(folder, f".write_test.{os.getpid()}")
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
                       "tensorboard", "report", "config.json", "profile")
           if os.path.exists(os.path.join(workdir, n))]
    if old:
        aside = os.path.join(workdir, "previous-" + time.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(aside, exist_ok=True)
        for n in old:
            shutil.move(os.path.join(workdir, n), os.path.join(aside, n))
        log(f"--fresh: moved the earlier run's files to {aside}")
