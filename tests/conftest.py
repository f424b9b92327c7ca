"""Shared fixtures: tiny generated MNIST folders, so no test downloads anything; what
they use is in tests/helpers/."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from mnist_plus.data import idx
from tests.helpers import (CACHE_LOCK_ENV, PASSED_ON, REAL_MNIST_DIR, Cli, tiny_config,
                           tiny_flags, write_tiny_mnist)

# Read once (tests/helpers); gone for the whole session, so that no fixture of any scope (module
# and session fixtures are set up before `_isolated_env` applies) reads real MNIST by
# accident instead of the tiny data it prepared. The xdist workers start after this, from
# this environment: they find the folder under another name.
os.environ[PASSED_ON] = REAL_MNIST_DIR
os.environ.pop("MNIST_PLUS_MNIST_DIR", None)


def _pin_this_worker() -> None:
    """Each pytest-xdist worker, and every process it starts, on its own share of the
    CPUs, before jax sizes its thread pools from them. Unpinned, each worker's XLA ran as
    many threads as the machine has cores, twice as many threads as cores in all: the
    suite took 16% more CPU time on 2 cores (measured). Pinned, the two-process tests
    share one core and got slower; almost every other file got faster."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(
        "PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = len(cpus) // int(count)
    if share >= 1:
        index = int(worker.removeprefix("gw"))
        os.sched_setaffinity(0, cpus[index * share:(index + 1) * share])


_pin_this_worker()


@pytest.fixture(scope="session")
def compile_cache_dir(tmp_path_factory) -> str:
    """One persistent XLA compilation cache for every process of the session: both xdist
    workers and all their subprocesses. (A program's cache key includes the cache's path,
    so per-worker folders never shared an entry: each worker compiled every program
    again.) Concurrent processes read and write it under JAX's file lock (see
    `CACHE_LOCK_ENV`), so none reads an entry another is still writing."""
    return str(_session_root(tmp_path_factory) / "jax_cache")


@pytest.fixture(scope="session", autouse=True)
def _compile_cache_in_process(compile_cache_dir):
    """That cache for this process too. Every in-process training builds new jitted
    functions, which JAX's in-memory caches do not match, so without it each one compiled
    every program again (measured: the determinism, checkpoint policy, model, config file
    and report tests took 87 s without it, 62 s with it). A cached executable is the one
    a compile makes, so no test's numbers change."""
    import jax

    from mnist_plus.runtime import compile_cache

    for name, value in CACHE_LOCK_ENV.items():
        jax.config.update(name.lower(), int(value))
    compile_cache.enable(compile_cache_dir)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, compile_cache_dir):
    """No test reads the user's TFDS dir or MNIST folder, or writes their cache folder."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default_tfds"))
    monkeypatch.delenv("MNIST_PLUS_MNIST_DIR", raising=False)
    monkeypatch.setenv("MNIST_PLUS_COMPILE_CACHE", compile_cache_dir)
    for name, value in CACHE_LOCK_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def tiny_mnist_dir(tmp_path) -> str:
    return write_tiny_mnist(str(tmp_path / "idx"))


@pytest.fixture(scope="session")
def prepared_tiny(tmp_path_factory) -> tuple[str, str]:
    """(tfds_dir, mnist_dir) with the tiny MNIST already prepared and cached once."""
    from mnist_plus.data import mnist as data

    root = tmp_path_factory.mktemp("tiny")
    mnist_dir = write_tiny_mnist(str(root / "idx"))
    tfds_dir = str(root / "tfds")
    data.load_mnist(tfds_dir, mnist_dir)
    return tfds_dir, mnist_dir


@pytest.fixture(scope="session")
def real_mnist_dir() -> str:
    folder = os.path.abspath(REAL_MNIST_DIR)
    if not all(os.path.exists(os.path.join(folder, stem + ".gz")) or
               os.path.exists(os.path.join(folder, stem)) for stem in idx.IDX_FILES.values()):
        pytest.skip(f"real MNIST IDX files not found in {folder}; set MNIST_PLUS_MNIST_DIR "
                    f"to a folder with the four MNIST files to run this test")
    return folder


def _session_root(tmp_path_factory):
    """A folder that every pytest-xdist worker of this session shares."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # above every worker's own folder, one per session
    return base


@contextlib.contextmanager
def _once_per_session(tmp_path_factory, name: str):
    """A folder that every pytest-xdist worker of this session shares, held under a file
    lock: the first worker to need it makes its content while the others wait, then they
    reuse it. (Each worker made its own when session fixtures were per worker.)"""
    import fcntl

    root = _session_root(tmp_path_factory) / name
    root.mkdir(exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield root


@pytest.fixture(scope="session")
def real_mnist_run(real_mnist_dir, tmp_path_factory) -> tuple[str, str]:
    """(tfds_dir, workdir) of one epoch of the default config on real MNIST, trained once
    in-process on one device, shared by every worker: the slow tests only read it (each
    used to train its own, 35-40 s)."""
    from mnist_plus import config as config_lib
    from mnist_plus.trainer import train_and_evaluate

    with _once_per_session(tmp_path_factory, "real_mnist_run") as root:
        tfds_dir, workdir = str(root / "tfds"), str(root / "run")
        if not os.path.exists(os.path.join(workdir, "summary.json")):
            config = config_lib.Config(epochs=1, tfds_dir=tfds_dir,
                                       mnist_dir=real_mnist_dir, progress=False, report=False)
            train_and_evaluate(config, workdir, log=lambda s: None)
    return tfds_dir, workdir


@pytest.fixture(scope="session")
def device_split_runs(prepared_tiny, cli, tmp_path_factory):
    """`tests/helpers/dp_steps.py`'s runs of 24 tiny steps with 4 forced CPU devices (one
    subprocess, shared by every worker): 1 device, 4 devices, the rounding-level
    perturbations of the 1-device run and another seed's data. The data-parallel and the
    two-process tests both calibrate their bounds on it (each ran its own, 45 s of CPU)."""
    from tests.helpers import dp_steps

    with _once_per_session(tmp_path_factory, "device_split_runs") as root:
        out = root / "runs.npz"
        if not out.exists():
            dp_steps.measure(cli, prepared_tiny[0], str(out), dp_steps.STEPS,
                             {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
        with np.load(out) as runs:
            return dict(runs)


@pytest.fixture(scope="session")
def four_device_run(prepared_tiny, cli, tmp_path_factory) -> tuple[str, str]:
    """(workdir, stdout) of the tiny training in one `python -m mnist_plus.train` process
    with 4 forced CPU devices (the default loop: host on CPU), BatchNorm statistics
    recomputed on the mesh (`--precise-bn 64`) and an evaluation batch the devices do not
    divide (50). The data-parallel test reads what it reports, the two-process test
    compares its parameters: one subprocess for both, shared by every worker."""
    with _once_per_session(tmp_path_factory, "four_device_run") as root:
        workdir, stdout = root / "run", root / "stdout.txt"
        if not stdout.exists():
            result = cli.train(*tiny_flags(prepared_tiny, workdir, "--precise-bn", "64",
                                           "--eval-batch-size", "50"),
                               env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
            assert result.returncode == 0, result.stderr
            stdout.write_text(result.stdout)
        return str(workdir), stdout.read_text()


# ---- Training runs on the tiny data, shared by the resume, determinism and error tests.

@pytest.fixture(scope="session")
def reference_run(prepared_tiny, tmp_path_factory) -> str:
    """Workdir of an uninterrupted in-process run of `tiny_config` (3 epochs, 24 steps)."""
    from mnist_plus.trainer import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("reference"))
    train_and_evaluate(tiny_config(prepared_tiny), workdir, log=lambda s: None)
    return workdir


@pytest.fixture(scope="session")
def cli(compile_cache_dir) -> Cli:
    return Cli(compile_cache_dir)


# The files that take longest (test seconds on 2 AVX2 cores, with --durations: about 185,
# 110, 110, 105, 70, 85, 100 and 70), run first: `--dist loadfile` hands the two workers
# whole files in collection order, so long files left to the end keep one worker busy
# while the other has nothing left to do. The GPU check's tiny run comes after the
# benchmark's tests, whose compiled programs it reuses.
HEAVY_FIRST = ("training/test_data_parallel.py", "training/test_multiseed.py",
               "runtime/test_multiprocess.py", "runtime/test_preemption.py",
               "runtime/test_faults.py", "tools/test_benchmark.py",
               "tools/test_corruptions.py", "experiments/test_gpu_check.py")


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses real MNIST `real_mnist` (select or skip them with -m), and
    put the `HEAVY_FIRST` files first (in that order; every other file keeps its place)."""
    for item in items:
        if {"real_mnist_dir", "real_mnist_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_mnist)
    tests_dir = os.path.dirname(os.path.abspath(__file__))

    def rank(item) -> int:
        path = os.path.relpath(str(item.fspath), tests_dir).replace(os.sep, "/")
        return HEAVY_FIRST.index(path) if path in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)  # stable: the order within each file and among the rest is kept
