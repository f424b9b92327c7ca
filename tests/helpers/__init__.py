"""What the tests share besides fixtures: tiny generated MNIST, the tiny config (written
once: `TINY` gives both `tiny_config` and `tiny_flags`), state assertions and the
subprocess runner `Cli`. Fixtures are in tests/conftest.py."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import numpy as np

from mnist_plus.data import idx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# conftest removes MNIST_PLUS_MNIST_DIR from the environment, before pytest-xdist starts its
# workers; it passes the folder on to them in this variable.
PASSED_ON = "MNIST_PLUS_TESTS_REAL_MNIST_DIR"
REAL_MNIST_DIR = (os.environ.get("MNIST_PLUS_MNIST_DIR") or os.environ.get(PASSED_ON)
                  or os.path.join(REPO, "..", "shared", "data", "mnist"))


HIDE_DIR = os.path.join(REPO, "tests", "helpers", "hide")
# What the lent GPU machine's image lacks, of this project's dependencies.
NOT_ON_GPU_IMAGE = ("tensorflow_datasets", "array_record", "tensorboardX")
# Everything but the five core packages (jax, flax, optax, orbax-checkpoint, numpy).
NOT_CORE = (*NOT_ON_GPU_IMAGE, "matplotlib", "tqdm", "PIL", "importlib_resources", "torch")


def hiding_env(*modules: str) -> dict[str, str]:
    """Environment variables under which Python subprocesses (and theirs) cannot import
    `modules`, as if not installed (tests/helpers/hide/sitecustomize.py), running this
    repository's code."""
    path = [HIDE_DIR, REPO, os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in path if p),
            "MNIST_PLUS_HIDE_MODULES": ",".join(modules)}


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


def flags_for(fields: dict) -> list[str]:
    """The command-line flags that set these Config fields."""
    flags = []
    for name, value in fields.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def tiny_flags(prepared_tiny, workdir, *extra: str) -> list[str]:
    """CLI flags equal to `tiny_config(prepared_tiny)`, plus `extra`."""
    tfds_dir, mnist_dir = prepared_tiny
    return ["--workdir", str(workdir), *flags_for({**TINY, "tfds_dir": tfds_dir,
                                                   "mnist_dir": mnist_dir}), *extra]


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


# A size limit turns on the lock of JAX's compilation cache (it needs `filelock`, in the
# test extra): every read and write of an entry holds it, so a process never reads an entry
# that another is still writing (JAX writes them in place; a torn read costs a warning on
# stderr and a recompile). The limit itself, 4 GiB, is far above a session's 30 MB.
CACHE_LOCK_ENV = {"JAX_COMPILATION_CACHE_MAX_SIZE": str(4 << 30)}


class Cli:
    """Runs `python -m ...` in a subprocess from the repository root, as a user would.

    Subprocesses share a persistent XLA compilation cache: it cuts each run's start
    from about 15 s to about 6 s on 2 cores and holds exactly the executables a fresh
    compile makes (the in-process reference run compiles without it).
    """

    def __init__(self, cache_dir: str):
        self.cache_env = {"JAX_COMPILATION_CACHE_DIR": cache_dir,
                          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", **CACHE_LOCK_ENV}

    def _env(self, env) -> dict[str, str]:
        # os.environ at call time: each test isolates TFDS_DATA_DIR (see _isolated_env).
        return {**os.environ, **self.cache_env, **(env or {})}

    def popen(self, args, env=None, **kw):
        return subprocess.Popen([sys.executable, *args], cwd=REPO, text=True,
                                env=self._env(env), **kw)

    def run(self, args, env=None, timeout=300):
        return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env=self._env(env))

    def train(self, *flags, env=None):
        return self.run(["-m", "mnist_plus.train", *flags], env=env)

    def crash(self, crash_flags, train_flags, env=None):
        return self.run(["-m", "tests.helpers.crash_run", *crash_flags, "--", *train_flags],
                        env=env)


def train_in_process(*flags: str) -> subprocess.CompletedProcess:
    """`python -m mnist_plus.train FLAGS` as the pytest process itself: the same `main`, its
    exit status and printed lines captured as a subprocess's. For the rerun that resumes
    a killed or failed run, whose test is about what it computes and prints, not how a
    process starts: a subprocess would add 2-3 s of interpreter start and imports."""
    from mnist_plus import train

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main(list(flags))
    return subprocess.CompletedProcess(["mnist_plus.train", *flags], code, out.getvalue(),
                                       err.getvalue())
