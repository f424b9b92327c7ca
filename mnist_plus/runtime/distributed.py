"""Many processes, one run: `jax.distributed` set up from flags, or detected.

`python -m mnist_plus.train --coordinator HOST:PORT --num-processes N --process-id I`
starts process I of N (process 0 runs the coordinator service at HOST:PORT);
`--distributed auto` lets JAX read the cluster's environment (SLURM, Open MPI, Cloud
TPU, ...). With neither, nothing is initialised and a run is one process as always.

After `initialize`, `jax.devices()` lists every process's devices, so the mesh of
`mnist_plus.mesh` spans them all; each process feeds its own devices' rows.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from typing import Any, Sequence

from mnist_plus.errors import MnistPlusError, UsageError

# How long a process waits for all others to join before it gives up (seconds), and
# how long the coordinator waits for a silent process before it declares it dead.
DEFAULT_INIT_TIMEOUT = 60
DEFAULT_HEARTBEAT_TIMEOUT = 20


class ProcessLostError(MnistPlusError):
    """Another process of a multi-process run stopped; this one cannot go on."""

    exit_code = 1


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("many processes (jax.distributed)")
    group.add_argument("--coordinator", default="", metavar="HOST:PORT",
                       help="address of process 0's coordinator service; with "
                            "--num-processes and --process-id, starts a multi-process run")
    group.add_argument("--num-processes", type=int, default=0,
                       help="how many processes the run has (with --coordinator)")
    group.add_argument("--process-id", type=int, default=-1,
                       help="this process's index, 0..N-1 (with --coordinator)")
    group.add_argument("--distributed", choices=("off", "auto"), default="off",
                       help="'auto': let JAX detect the cluster (SLURM, Open MPI, Cloud TPU, "
                            "...) and initialise from its environment")
    group.add_argument("--distributed-timeout", type=int, default=DEFAULT_INIT_TIMEOUT,
                       metavar="SECONDS",
                       help="give up if the other processes have not all joined after this "
                            "long; also how long a lost process may stay silent before the "
                            "others stop (at least 10 s)")


def _check(args: argparse.Namespace) -> None:
    defaults = {"coordinator": "", "num_processes": 0, "process_id": -1}
    given = [n for n, default in defaults.items() if getattr(args, n) != default]
    if args.distributed == "auto" and given:
        raise UsageError("--distributed auto takes the cluster's own settings: drop "
                         + ", ".join("--" + n.replace("_", "-") for n in given))
    if given and len(given) < 3:
        missing = sorted({"coordinator", "num_processes", "process_id"} - set(given))
        raise UsageError("a multi-process run needs --coordinator HOST:PORT, --num-processes N "
                         "and --process-id I together; missing "
                         + ", ".join("--" + n.replace("_", "-") for n in missing))
    if given:
        host, sep, port = args.coordinator.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise UsageError(f"--coordinator {args.coordinator!r} is invalid: give HOST:PORT, "
                             f"for example 127.0.0.1:12355")
        if args.num_processes < 1:
            raise UsageError(f"--num-processes {args.num_processes} is invalid: it must be a "
                             f"positive integer")
        if not 0 <= args.process_id < args.num_processes:
            raise UsageError(f"--process-id {args.process_id} is invalid: with "
                             f"--num-processes {args.num_processes} it must be 0.."
                             f"{args.num_processes - 1}")
    if args.distributed_timeout < 10:
        raise UsageError(f"--distributed-timeout {args.distributed_timeout} is invalid: give "
                         f"at least 10 seconds")


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Poll HOST:PORT until it accepts a TCP connection, or raise a one-line UsageError.

    Why: a JAX process that cannot reach the coordinator is terminated by the runtime
    with a fatal C++ log after `initialization_timeout`; checking first gives a clear
    error within the same documented time."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as e:
            last = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise UsageError(f"cannot reach the coordinator at --coordinator {address} after "
                             f"{timeout:.0f} s ({last}): start process 0 first (or within "
                             f"--distributed-timeout), and check the address and port")
        time.sleep(0.5)


def initialize(args: argparse.Namespace) -> bool:
    """Start `jax.distributed` if the flags ask for it; True if this run is multi-process.

    Must run before anything touches a JAX backend.
    """
    _check(args)
    if args.distributed == "off" and not args.coordinator:
        return False
    import jax

    kwargs: dict[str, Any] = {"initialization_timeout": args.distributed_timeout,
                              "heartbeat_timeout_seconds": max(10, min(
                                  DEFAULT_HEARTBEAT_TIMEOUT, args.distributed_timeout))}
    if args.coordinator:
        kwargs.update(coordinator_address=args.coordinator, num_processes=args.num_processes,
                      process_id=args.process_id)
        if args.process_id != 0:
            wait_for_coordinator(args.coordinator, args.distributed_timeout)
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if args.coordinator:
            raise UsageError(
                f"could not join the run at --coordinator {args.coordinator} as process "
                f"{args.process_id} of {args.num_processes} within "
                f"{args.distributed_timeout} s ({first[:200]}): start every process with "
                f"the same --coordinator and --num-processes, process 0 first or within "
                f"--distributed-timeout, and check the address is reachable") from None
        raise UsageError(f"--distributed auto found no cluster to join ({first[:200]}): run "
                         f"under SLURM, Open MPI or on Cloud TPU, or pass --coordinator, "
                         f"--num-processes and --process-id") from None
    return True


# ------------------------------------------------------------------ the supervisor

SUPERVISED_ENV = "MNIST_PLUS_SUPERVISED"
_RUNTIME_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")
_FATAL_LOG = re.compile(r"^F\d{4} \d\d:\d\d:\d\d")


def wants_distributed(argv: Sequence[str]) -> bool:
    """Whether these train flags start a multi-process run (checked before parsing)."""
    return any(a.split("=", 1)[0] in ("--coordinator", "--distributed") and
               not a.endswith("=off") for a in argv) and not os.environ.get(SUPERVISED_ENV)


def supervise(module: str, argv: Sequence[str]) -> int:
    """Run `python -m module argv` as a child process and turn the JAX runtime's fatal
    abort into one line.

    Why: when another process of the run dies, or never joins, the JAX distributed
    client terminates this process from C++ (a fatal log and a stack trace; no Python
    exception to catch). The child does the work; this parent, which never starts
    JAX, passes its output through, forwards SIGTERM/SIGINT to it, and if it was
    aborted by the runtime prints what happened and how to resume, exit status 1.
    """
    env = {**os.environ, SUPERVISED_ENV: "1"}
    child = subprocess.Popen([sys.executable, "-m", module, *argv], env=env,
                             stderr=subprocess.PIPE, text=True, errors="replace")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    fatal: str | None = None
    explained = False  # the child already said what went wrong, in one line
    held: list[str] = []  # the runtime's own (glog) messages, from the first one on
    assert child.stderr is not None
    for line in child.stderr:
        if not held and not _RUNTIME_LOG.match(line):
            explained = explained or line.startswith("error: ")
            sys.stderr.write(line)
            sys.stderr.flush()
            continue
        held.append(line)
        if fatal is None and _FATAL_LOG.match(line):
            fatal = line.split("]", 1)[-1].strip()
    code = child.wait()
    if fatal is None:
        sys.stderr.writelines(held)
        return code if code >= 0 else 128 - code
    if explained:  # the runtime aborted while the child was exiting after its own error
        return 1
    fd, log_path = tempfile.mkstemp(prefix="mnist_plus-runtime-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.writelines(held)
    detail = fatal.split(". ")[0][:160]
    print(f"error: this process stopped because the JAX distributed runtime reported a "
          f"fatal error ({detail}; full log: {log_path}): another process of the run died "
          f"or never joined; restart every process with the same command to resume from "
          f"the newest checkpoint", file=sys.stderr)
    return 1
