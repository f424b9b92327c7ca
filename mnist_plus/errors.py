"""Errors a user can act on: the CLI prints their one-line message, never a traceback."""


class MnistPlusError(Exception):
    """An expected failure with a message that says what was wrong and what to do."""

    exit_code = 1


class UsageError(MnistPlusError):
    """Bad flags, bad input files or an unusable workdir (exit status 2)."""

    exit_code = 2


class DataError(UsageError):
    """MNIST files are missing, corrupt or inconsistent."""


class DivergedError(MnistPlusError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(MnistPlusError):
    """SIGTERM or SIGINT stopped training after a checkpoint was saved; rerun to resume.

    The exit status is the shell's for a process ended by that signal (128 + number),
    so schedulers and scripts see the cause they sent."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StorageError(MnistPlusError):
    """A write failed for lack of space or a read-only file system; what was complete is kept."""
