"""The benchmark's instruments: a device-synchronised timer, a median of repeats, XLA's
FLOP count of a compiled program, and synthetic data of MNIST's shapes.

Apart from the measurements (`benchmark`) so that `experiments/` profiling scripts time
and feed their programs as the benchmark does.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

from mnist_plus.data import mnist as data
from mnist_plus.data import sampler


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds for `fn()` to finish on the device (not just to be dispatched).

    The one timer of the benchmark and of `experiments/` profiling scripts."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def median_seconds(fn: Callable[[], Any], repeats: int = 5, inner: int = 1) -> float:
    """Median over `repeats` of the seconds per call of `fn`, each repeat `inner` calls,
    after one untimed call (which compiles)."""
    timed(fn)

    def one() -> float:
        start = time.perf_counter()
        out = None
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / inner

    return statistics.median(one() for _ in range(repeats))


def synthetic_batch(batch_size: int, images: np.ndarray | None = None,
                    labels: np.ndarray | None = None, seed: int = 0) -> sampler.Batch:
    """A training batch of MNIST's shapes: from the first `batch_size` of `images`/`labels`
    (uint8, as loaded) or random ones; numbers cycle through 0..9. Host arrays."""
    if images is None:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (batch_size, 28, 28, 1), dtype=np.uint8)
        labels = rng.integers(0, 10, batch_size).astype(np.int32)
    numbers = np.arange(batch_size) % sampler.NUM_NUMBERS
    return sampler.make_batch(sampler.normalise(images[:batch_size]), labels[:batch_size],
                              numbers)


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled program, from XLA's cost analysis.

    `cost_analysis()` returns a dict in this JAX version and a list of one dict per
    program in older ones; some backends return nothing, hence the None.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # not implemented on some backends
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def synthetic_mnist(train_examples: int, test_examples: int, seed: int = 0) -> data.Mnist:
    """Random uint8 images and labels of MNIST's shapes and dtypes."""
    rng = np.random.default_rng(seed)
    return data.Mnist(
        train_images=rng.integers(0, 256, (train_examples, 28, 28, 1), dtype=np.uint8),
        train_labels=rng.integers(0, 10, train_examples).astype(np.int32),
        test_images=rng.integers(0, 256, (test_examples, 28, 28, 1), dtype=np.uint8),
        test_labels=rng.integers(0, 10, test_examples).astype(np.int32))


def run_steps(step: Callable, state: Any, batch: Any, metrics: Any, n: int) -> Any:
    """`n` calls of a train step, each on the last one's state and metrics."""
    for _ in range(n):
        state, metrics = step(state, batch, metrics)
    return state, metrics


def steady_step_seconds(step: Callable, state: Any, batch: Any, metrics: Any, repeats: int,
                        min_repeat_seconds: float) -> tuple[list[float], int]:
    """Seconds per step of `repeats` timed repeats, each of enough steps (judged from one
    timed step) to last `min_repeat_seconds`; and that number of steps. Consumes `state`
    and `metrics` (the step donates them)."""
    one, (state, metrics) = timed(lambda: step(state, batch, metrics))
    steps_per_repeat = max(1, math.ceil(min_repeat_seconds / max(one, 1e-6)))
    times = []
    for _ in range(repeats):
        seconds, (state, metrics) = timed(lambda: run_steps(step, state, batch, metrics,
                                                            steps_per_repeat))
        times.append(seconds / steps_per_repeat)
    return times, steps_per_repeat
