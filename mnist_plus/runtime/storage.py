"""A full disk or a read-only file system, wherever it is reported: one errno, one remedy.

Python reports these as OSError; orbax's array writes go through tensorstore, which
reports them as a ValueError whose text ends in `[os_error_code='28']`, raised in a
background thread and re-raised at the next save or wait. `storage_errno` finds the
code in either form (and in the exceptions they were raised from).
"""

from __future__ import annotations

import errno
import logging
import os
import re

# The faults a user fixes outside the program (free space, remount) and then resumes.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_TENSORSTORE_CODE = re.compile(r"os_error_code='?(\d+)")


def storage_errno(exc: BaseException | None) -> int | None:
    """The errno of a full disk / read-only file system behind `exc`, else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc.errno
        for code in _TENSORSTORE_CODE.findall(str(exc)):
            if int(code) in STORAGE_ERRNOS:
                return int(code)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def remedy(code: int) -> str:
    """What the user does before rerunning."""
    return "make it writable" if code == errno.EROFS else "free space"


def describe(code: int) -> str:
    return os.strerror(code)


class _DropStorageFaults(logging.Filter):
    """Drops library log records about a storage fault that we report in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if storage_errno(exc) is not None:
            return False
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to judge
            return True
        return not any(int(c) in STORAGE_ERRNOS for c in _TENSORSTORE_CODE.findall(message))


_FILTER = _DropStorageFaults()


def quiet_library_logs() -> None:
    """Orbax logs a failed background write with its traceback (through absl) before it
    re-raises it; the CLI reports it as one line instead. Idempotent."""
    logger = logging.getLogger("absl")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
