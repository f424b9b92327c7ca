"""The machine a timing ran on: its CPU's vector ISA, flags, model and core count.

Printed and stored beside every speed figure, since XLA:CPU and PyTorch both compile or
dispatch for the ISA. Standard library only, so that the benchmark, its PyTorch baseline
and the experiments read the host the same way without importing JAX or torch.
"""

from __future__ import annotations

import os
import platform
import sys

CPUINFO = "/proc/cpuinfo"
# Widest first: the name cpu_isa() gives, and the /proc/cpuinfo flag that shows it.
ISA_FLAGS = (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2"))


def _cpuinfo(path: str) -> list[str] | None:
    """The lines of `path`, or None where it cannot be read (not Linux)."""
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return None


def _field(lines: list[str], name: str) -> str | None:
    """The value of the first `name` line (the first core's), or None."""
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith(name) and ":" in line), None)


def cpu_flags(path: str = CPUINFO) -> set[str] | None:
    """The CPU's feature flags, or None where /proc/cpuinfo cannot be read."""
    lines = _cpuinfo(path)
    return None if lines is None else set((_field(lines, "flags") or "").split())


def cpu_isa(path: str = CPUINFO) -> str:
    """The widest x86 vector extension this CPU has: amx, avx512, avx2, other (none of
    those, or not x86) or unknown (no /proc/cpuinfo to read)."""
    flags = cpu_flags(path)
    if flags is None:
        return "unknown"
    return next((name for name, flag in ISA_FLAGS if flag in flags), "other")


def cpu_model(path: str = CPUINFO) -> str | None:
    """The CPU's model name, as /proc/cpuinfo or else the platform names it."""
    lines = _cpuinfo(path)
    return (lines and _field(lines, "model name")) or platform.processor() or None


def cpu_count() -> int | None:
    """Logical cores of the machine (os.cpu_count: not narrowed to this process's
    affinity), as the benchmark has always reported them."""
    return os.cpu_count()


YNN_DOTS = "--xla_cpu_experimental_ynn_fusion_type=dot"
_KERNEL_FLAGS = {"xla": "", "ynn": YNN_DOTS}


def use_cpu_kernels(kind: str) -> None:
    """Put `Config.cpu_kernels`' XLA flag into XLA_FLAGS, which XLA reads once, when JAX's
    backend starts; the launchers call this before that. Child processes inherit it.

    With YNNPACK for dots, XLA:CPU rewrites a convolution's filter gradient (a contraction
    over batch and pixels into a few outputs, where its own convolution kernel is slow) as
    a dot (`python -m mnist_plus.benchmark --cpu-kernels ynn`; docs/performance.md).
    Where the backend is already running, says so in one line: the process keeps its
    kernels (the same numbers up to the last bits).
    """
    flag = _KERNEL_FLAGS[kind]
    current = os.environ.get("XLA_FLAGS", "")
    if not flag or flag in current.split():
        return
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            print(f"cpu_kernels {kind}: JAX is already running in this process, so XLA "
                  f"keeps its kernels; start a fresh process to use {kind}", file=sys.stderr)
            return
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()
