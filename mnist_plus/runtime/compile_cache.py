"""JAX's persistent compilation cache in the user's cache folder: faster second starts.

Every CLI compiles the same few XLA programs on every start (the train and eval steps,
initialisation); on 2 CPU cores that is seconds before the first
step. With the cache on, a second start loads the executables from disk instead.

The cache lives in `$XDG_CACHE_HOME/mnist_plus/jax` (`~/.cache/mnist_plus/jax`), never
in the workdir, so every run of every workdir shares it. `MNIST_PLUS_COMPILE_CACHE=DIR`
puts it elsewhere, `MNIST_PLUS_COMPILE_CACHE=off` turns it off. A cache folder that cannot
be created or written costs one warning line, never the run. A cached executable is the
one a fresh compile makes (the key covers the program, the compile options, the backend
and the jax/jaxlib versions), so results do not depend on whether the cache was warm.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

ENV = "MNIST_PLUS_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "none")

_result: list[str | None] = []  # enable()'s answer, once it has run


def default_dir(environ: Mapping[str, str] | None = None) -> str:
    """`$XDG_CACHE_HOME/mnist_plus/jax`, or `~/.cache/mnist_plus/jax`."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnist_plus", "jax")


def resolve_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The folder to use: `$MNIST_PLUS_COMPILE_CACHE`, else JAX's own setting, else ours.

    None when the variable says off. `JAX_COMPILATION_CACHE_DIR` (or a
    `jax_compilation_cache_dir` set in code) is kept when our variable is unset, so a
    user who already runs a JAX cache keeps theirs.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return os.path.abspath(os.path.expanduser(value))
    jax_dir = environ.get("JAX_COMPILATION_CACHE_DIR") or _jax_configured_dir()
    return jax_dir or default_dir(environ)


def _jax_configured_dir() -> str | None:
    if "jax" not in sys.modules:
        return None
    import jax

    return jax.config.jax_compilation_cache_dir


def _writable(folder: str) -> str | None:
    """None if `folder` can be created and takes a file; else why not, in a few words."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write_test.{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        return f"{e.strerror}: {e.filename}" if e.filename else str(e)
    return None


def enable(cache_dir: str | None = None) -> str | None:
    """Turn the persistent compilation cache on; returns its folder, or None if off.

    Call before the first compile. `cache_dir` overrides `resolve_dir()`. Programs are
    cached whatever their compile time or size (JAX's defaults skip compiles under 1 s,
    which is every program of this small model), unless the user set those thresholds
    through their `JAX_PERSISTENT_CACHE_*` variables. Only the first call in a process
    acts (JAX reads the folder once, at the first compile); later calls return its answer.
    """
    if not _result:
        _result.append(_enable(cache_dir))
    return _result[0]


def _enable(cache_dir: str | None) -> str | None:
    import jax

    folder = cache_dir or resolve_dir()
    problem = None if folder is None else _writable(folder)
    if problem is not None:
        print(f"warning: compilation cache off, cannot write {folder} ({problem}); set "
              f"{ENV} to a writable folder or to 'off' to silence this", file=sys.stderr,
              flush=True)
    if folder is None or problem is not None:
        # Off means off, even with JAX_COMPILATION_CACHE_DIR set.
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder


def entry_count(folder: str | None) -> int:
    """Cached executables in `folder` (JAX writes one `*-cache` file per program)."""
    if not folder or not os.path.isdir(folder):
        return 0
    return sum(1 for name in os.listdir(folder) if name.endswith("-cache"))


def describe(probe: dict) -> str:
    """'compile cache off / cold / warm (N entries)' for a first-step probe's result."""
    folder = probe.get("compile_cache")
    if not folder:
        return "compile cache off"
    n = probe.get("compile_cache_entries_before", 0)
    return f"compile cache warm ({n} entries)" if n else "compile cache cold"
