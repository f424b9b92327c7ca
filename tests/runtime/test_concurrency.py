"""Two trainings at once on one empty TFDS data dir: MNIST is prepared once, both finish.

The test holds the preparation lock itself until both processes report that they are
waiting for it, so the two really do race for it when it is released (without that,
one process could simply finish before the other starts and prove nothing).
"""

import fcntl
import os
import subprocess
import time

import numpy as np
import pytest

from mnist_plus.data import mnist as data
from mnist_plus.data import tfds_mnist
from tests.helpers import read_bytes, tiny_flags

WAITING = "waiting for another process that is preparing MNIST in"


def _wait_for(paths, text: str, procs, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(text in read_bytes(p).decode(errors="replace") for p in paths):
            return
        for proc, path in zip(procs, paths):
            assert proc.poll() is None, read_bytes(path).decode(errors="replace")
        time.sleep(0.2)
    raise AssertionError(f"not all processes printed {text!r}")


@pytest.mark.slow
def test_two_trainings_share_one_fresh_tfds_dir(cli, prepared_tiny, reference_run, tmp_path):
    tfds_dir = str(tmp_path / "tfds")
    mnist_dir = prepared_tiny[1]
    lock_dir = os.path.join(tfds_dir, data.CACHE_FOLDER)
    os.makedirs(lock_dir)
    procs, logs = [], []
    with open(os.path.join(lock_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for name in ("a", "b"):
                log = str(tmp_path / f"{name}.err")
                logs.append(log)
                with open(log, "w") as err:
                    procs.append(cli.popen(
                        ["-m", "mnist_plus.train",
                         *tiny_flags((tfds_dir, mnist_dir), tmp_path / name)],
                        stdout=subprocess.PIPE, stderr=err))
            _wait_for(logs, WAITING, procs)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    errs = [read_bytes(log).decode() for log in logs]
    for proc, err in zip(procs, errs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err

    # TFDS prepared the dataset once; the other process read the first one's cache.
    prepared = [o + e for o, e in zip(outs, errs) if "Dataset mnist downloaded and prepared" in o + e]
    assert len(prepared) == 1
    # Both trained on the same data as the reference run and got its very numbers.
    for name in ("a", "b"):
        assert read_bytes(tmp_path / name / "metrics.jsonl") == read_bytes(
            os.path.join(reference_run, "metrics.jsonl"))

    # The prepared dataset and the cache are complete and agree with each other.
    version_dir = os.path.join(tfds_dir, "mnist")
    assert sorted(os.listdir(version_dir)) == ["3.0.1"]  # no incomplete.* folder left
    assert [n for n in os.listdir(lock_dir) if n.endswith(".tmp")] == []
    from_tfds = data.Mnist(**tfds_mnist.read_data_source(tfds_dir))
    cached = data._load_cache(data._cache_path(tfds_dir))
    reference = data.load_mnist(prepared_tiny[0])
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(cached, field), getattr(from_tfds, field))
        np.testing.assert_array_equal(getattr(cached, field), getattr(reference, field))
