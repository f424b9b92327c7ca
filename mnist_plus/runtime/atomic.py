"""Whole-file replacement: a kill or a power cut leaves the old file or the new one,
never half of one.

Used for everything this project writes outside orbax (the MNIST cache and its record,
the JSON-lines logs, summary.json, the report). The temporary file is made in the
target's folder, so the final `os.replace` is an atomic rename on one file system. The
file is fsynced before the rename (else a crash can leave the new name pointing at
unwritten blocks) and the folder after it (else the rename itself can be lost). A
failed write (a full disk) raises and leaves the old file as it was.
"""

from __future__ import annotations

import errno
import os
import tempfile
from typing import BinaryIO, Callable


def _process_umask() -> int:
    # Read once, at import (before orbax or the prefetcher start threads):
    # os.umask can only be read by setting it, which would race with other threads.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _process_umask()


def replace_file(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(file)` into a temporary file, then rename it over `path`.

    The file gets the permissions of a normally created one (mkstemp's 0600 would hide
    a shared data dir's cache, or the logs, from other users).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems refuse fsync on a folder; the data is synced
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
