"""Shared fixtures: tiny generated MNIST folders, so no test downloads anything."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mnist_plus.data import idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_MNIST_DIR = os.environ.get("MNIST_PLUS_MNIST_DIR") or os.path.join(
    REPO, "..", "shared", "data", "mnist")
# Read once above; gone for the whole session, so that no fixture of any scope (module
# and session fixtures are set up before `_isolated_env` applies) reads real MNIST by
# accident instead of the tiny data it prepared.
os.environ.pop("MNIST_PLUS_MNIST_DIR", None)


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: label d draws a bright bar in row band d, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, d in enumerate(labels):
        images[i, 2 + 2 * d: 4 + 2 * d, 4:24] = 255
    return images[..., None], labels


def write_tiny_mnist(folder: str, n_train: int = 256, n_test: int = 64,
                     compress: bool = True) -> str:
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = synthetic_digits(n, seed)
        idx.write_idx(folder, split, images, labels, compress=compress)
    return folder


@pytest.fixture(scope="session")
def compile_cache_dir(tmp_path_factory) -> str:
    """One persistent XLA compilation cache for every subprocess of the session."""
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="session", autouse=True)
def _compile_cache_in_process(compile_cache_dir):
    """That cache for this process too. Every in-process training builds new jitted
    functions, which JAX's in-memory caches do not match, so without it each one compiled
    every program again (measured: the determinism, checkpoint policy, model, config file
    and report tests took 87 s without it, 62 s with it). A cached executable is the one
    a compile makes, so no test's numbers change."""
    from mnist_plus.runtime import compile_cache

    compile_cache.enable(compile_cache_dir)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, compile_cache_dir):
    """No test reads the user's TFDS dir or MNIST folder, or writes their cache folder."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default_tfds"))
    monkeypatch.delenv("MNIST_PLUS_MNIST_DIR", raising=False)
    monkeypatch.setenv("MNIST_PLUS_COMPILE_CACHE", compile_cache_dir)


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


@pytest.fixture(scope="session")
def real_mnist_run(real_mnist_dir, tmp_path_factory) -> tuple[str, str]:
    """(tfds_dir, workdir) of one epoch of the default config on real MNIST, trained once
    in-process on one device: the slow tests share it (each used to train its own), and
    only read it. Under pytest-xdist the workers share it too: the first to need it trains
    it under a file lock in the session's folder, and the others wait and reuse it (each
    worker trained its own, 35-40 s, when the session fixture was per worker)."""
    import fcntl

    from mnist_plus import config as config_lib
    from mnist_plus.trainer import train_and_evaluate

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # above every worker's own folder, one per session
    root = base / "real_mnist_run"
    root.mkdir(exist_ok=True)
    tfds_dir, workdir = str(root / "tfds"), str(root / "run")
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not os.path.exists(os.path.join(workdir, "summary.json")):
            config = config_lib.Config(epochs=1, tfds_dir=tfds_dir,
                                       mnist_dir=real_mnist_dir, progress=False, report=False)
            train_and_evaluate(config, workdir, log=lambda s: None)
    return tfds_dir, workdir


# ---- Training runs on the tiny data, shared by the resume, determinism and error tests.

# 256 train images at batch 32: 8 steps per epoch, 24 in all. No report: drawing its
# figures took 3.3 of a tiny CLI run's 6.2 s (measured); test_report.py and the CLI's
# end-to-end test ask for it. The default's recomputed BatchNorm statistics are off, so
# that the precise-BN tests compare a run with them against this one without them; its
# affine warps and label smoothing are on, as in the default.
TINY = dict(epochs=3, batch_size=32, width=4, eval_batch_size=64, progress=False,
            report=False, precise_bn=0)
TINY_STEPS_PER_EPOCH = 8


def tiny_config(prepared_tiny, **overrides):
    from mnist_plus import config as config_lib

    tfds_dir, mnist_dir = prepared_tiny
    return config_lib.Config(**{**TINY, "tfds_dir": tfds_dir, "mnist_dir": mnist_dir,
                                **overrides})


def tiny_flags(prepared_tiny, workdir, *extra: str) -> list[str]:
    """CLI flags equal to `tiny_config(prepared_tiny)`, plus `extra`."""
    tfds_dir, mnist_dir = prepared_tiny
    return ["--workdir", str(workdir), "--tfds-dir", tfds_dir, "--mnist-dir", mnist_dir,
            "--epochs", "3", "--batch-size", "32", "--width", "4", "--eval-batch-size", "64",
            "--no-progress", "--no-report", "--precise-bn", "0", *extra]


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def snapshot(folder) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under `folder`: to prove nothing changed."""
    found: dict[str, bytes | None] = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            found[os.path.relpath(os.path.join(root, d), folder) + "/"] = None
        for f in files:
            found[os.path.relpath(os.path.join(root, f), folder)] = read_bytes(
                os.path.join(root, f))
    return found


def final_state_leaves(workdir, config, step=None) -> tuple[list[np.ndarray], dict]:
    """Leaves of (params, batch_stats, opt_state) of a checkpoint, and its metadata."""
    import jax

    from mnist_plus.runtime.checkpointing import Checkpointer
    from mnist_plus.training.state import create_state as initial_state
    from mnist_plus.training.step import zero_train_metrics

    state = initial_state(config, TINY_STEPS_PER_EPOCH)
    ckpt = Checkpointer(str(workdir), config.keep_checkpoints)
    try:
        state, _, meta = ckpt.restore(state, zero_train_metrics(), config, step=step)
    finally:
        ckpt.close()
    leaves = jax.tree_util.tree_leaves(jax.device_get(
        (state.params, state.batch_stats, state.opt_state)))
    return [np.asarray(x) for x in leaves], meta


def assert_same_state(leaves_a, leaves_b) -> None:
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # bitwise for floats: NaN never occurs here


def assert_same_as_reference(workdir, reference_run, prepared_tiny) -> None:
    """`workdir` ended with the reference run's metrics.jsonl bytes and final state bits."""
    assert read_bytes(os.path.join(workdir, "metrics.jsonl")) == read_bytes(
        os.path.join(reference_run, "metrics.jsonl"))
    config = tiny_config(prepared_tiny)
    leaves, meta = final_state_leaves(workdir, config)
    reference, reference_meta = final_state_leaves(reference_run, config)
    assert meta["global_step"] == reference_meta["global_step"] == 3 * TINY_STEPS_PER_EPOCH
    assert_same_state(leaves, reference)


@pytest.fixture(scope="session")
def reference_run(prepared_tiny, tmp_path_factory) -> str:
    """Workdir of an uninterrupted in-process run of `tiny_config` (3 epochs, 24 steps)."""
    from mnist_plus.trainer import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("reference"))
    train_and_evaluate(tiny_config(prepared_tiny), workdir, log=lambda s: None)
    return workdir


class Cli:
    """Runs `python -m ...` in a subprocess from the repository root, as a user would.

    Subprocesses share a persistent XLA compilation cache: it cuts each run's start
    from about 15 s to about 6 s on 2 cores and holds exactly the executables a fresh
    compile makes (the in-process reference run compiles without it).
    """

    def __init__(self, cache_dir: str):
        self.cache_env = {"JAX_COMPILATION_CACHE_DIR": cache_dir,
                          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}

    def _env(self, env) -> dict[str, str]:
        # os.environ at call time: each test isolates TFDS_DATA_DIR (see _isolated_env).
        return {**os.environ, **self.cache_env, **(env or {})}

    def popen(self, args, env=None, **kw):
        import subprocess
        import sys

        return subprocess.Popen([sys.executable, *args], cwd=REPO, text=True,
                                env=self._env(env), **kw)

    def run(self, args, env=None, timeout=300):
        import subprocess
        import sys

        return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env=self._env(env))

    def train(self, *flags, env=None):
        return self.run(["-m", "mnist_plus.train", *flags], env=env)

    def crash(self, crash_flags, train_flags, env=None):
        return self.run(["-m", "tests.crash_run", *crash_flags, "--", *train_flags], env=env)


@pytest.fixture(scope="session")
def cli(compile_cache_dir) -> Cli:
    return Cli(compile_cache_dir)


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses real MNIST `real_mnist` (select or skip them with -m)."""
    for item in items:
        if {"real_mnist_dir", "real_mnist_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_mnist)
