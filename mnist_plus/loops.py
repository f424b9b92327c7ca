"""Two training loops behind one interface: run steps [start, stop) of an epoch.

- `HostLoop`: a per-step jitted program fed from NumPy, with the next batch
  prepared and transferred in a background thread while the current step runs,
  and the train state donated. Fastest on CPU (measured: see README).
- `ScanLoop`: the normalised training set lives on the device and `lax.scan`
  runs many steps per dispatch; no host round trip per step. Meant for GPUs.

Both draw the same batches from `sampler.epoch_plan` and call the same
`train_step`, so a run may switch between them freely.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mnist_plus import sampler
from mnist_plus.train_step import Metrics, TrainState, train_step

Progress = Callable[[int], None]


def split_at_multiples(start: int, stop: int, every: int,
                       offset: int = 0) -> list[tuple[int, int]]:
    """[start, stop) cut into pieces wherever `offset + step` is a multiple of `every`.

    Where a loop must pause (to checkpoint or log) without changing what it computes.
    `every` <= 0 means no cuts.
    """
    if every <= 0:
        return [(start, stop)]
    cuts = [s for s in range(start + 1, stop) if (offset + s) % every == 0]
    bounds = [start] + cuts + [stop]
    return list(zip(bounds[:-1], bounds[1:]))


def choose_loop(name: str, backend: str | None = None) -> str:
    """'auto' -> the loop measured fastest on this backend (host on CPU, scan elsewhere)."""
    if name != "auto":
        return name
    backend = backend or jax.default_backend()
    return "host" if backend == "cpu" else "scan"


def prefetch(batches: Iterator, size: int = 2) -> Iterator:
    """Yield device-resident batches, preparing the next ones in a thread."""
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                if stop.is_set():
                    return
                q.put(jax.device_put(batch))
            q.put(done)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.01)


class HostLoop:
    name = "host"

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int,
                 max_shift: int = 0, held_out: np.ndarray | None = None):
        self.images, self.labels = images, labels
        self.seed, self.batch_size, self.max_shift = seed, batch_size, max_shift
        self.held_out = held_out
        self._step = jax.jit(train_step, donate_argnums=(0, 2))

    def run(self, state: TrainState, metrics: Metrics, epoch: int, start: int, stop: int,
            progress: Progress = lambda n: None) -> tuple[TrainState, Metrics]:
        batches = sampler.train_batches(self.images, self.labels, self.seed, epoch,
                                        self.batch_size, start_step=start,
                                        max_shift=self.max_shift, held_out=self.held_out)
        for _, batch in zip(range(stop - start), prefetch(batches)):
            state, metrics = self._step(state, batch, metrics)
            progress(1)
        return state, metrics


def _scan_steps(state: TrainState, metrics: Metrics, images: jax.Array, labels: jax.Array,
                permutation: jax.Array, numbers: jax.Array, shifts: jax.Array, start: jax.Array,
                num_steps: int, batch_size: int, max_shift: int) -> tuple[TrainState, Metrics]:
    eye = jnp.eye(sampler.NUM_NUMBERS, dtype=jnp.float32)

    def body(carry, step):
        state, metrics = carry
        offset = step * batch_size
        idx = jax.lax.dynamic_slice_in_dim(permutation, offset, batch_size)
        num = jax.lax.dynamic_slice_in_dim(numbers, offset, batch_size)
        digit = labels[idx]
        image = images[idx]
        if max_shift:
            shift = jax.lax.dynamic_slice_in_dim(shifts, offset, batch_size)
            image = sampler.translate(image, shift, xp=jnp)
        batch = sampler.Batch(image=image, digit=digit, number=eye[num],
                              sum=digit + num, mask=jnp.ones(batch_size, jnp.float32))
        return train_step(state, batch, metrics), None

    (state, metrics), _ = jax.lax.scan(body, (state, metrics), start + jnp.arange(num_steps))
    return state, metrics


class ScanLoop:
    name = "scan"
    chunk = 100  # steps per dispatch: progress updates between chunks, two shapes compiled

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int,
                 max_shift: int = 0, held_out: np.ndarray | None = None):
        self.num_examples = len(labels)
        self.host_labels, self.held_out = labels, held_out
        self.images = jax.device_put(images)
        self.labels = jax.device_put(labels.astype(np.int32))
        self.seed, self.batch_size, self.max_shift = seed, batch_size, max_shift
        self._steps = jax.jit(_scan_steps,
                              static_argnames=("num_steps", "batch_size", "max_shift"),
                              donate_argnums=(0, 1))
        self._plan_epoch = None
        self._plan = None

    def _epoch_plan(self, epoch: int):
        if self._plan_epoch != epoch:
            permutation, numbers = sampler.epoch_plan(self.seed, epoch, self.num_examples,
                                                      self.host_labels, self.held_out)
            shifts = sampler.epoch_shifts(self.seed, epoch, self.num_examples, self.max_shift)
            self._plan = tuple(jax.device_put(x) for x in (permutation, numbers, shifts))
            self._plan_epoch = epoch
        return self._plan

    def run(self, state: TrainState, metrics: Metrics, epoch: int, start: int, stop: int,
            progress: Progress = lambda n: None) -> tuple[TrainState, Metrics]:
        permutation, numbers, shifts = self._epoch_plan(epoch)
        step = start
        while step < stop:
            n = min(self.chunk, stop - step)
            state, metrics = self._steps(state, metrics, self.images, self.labels, permutation,
                                         numbers, shifts, jnp.asarray(step, jnp.int32),
                                         num_steps=n, batch_size=self.batch_size,
                                         max_shift=self.max_shift)
            step += n
            progress(n)
        return state, metrics


def make_loop(name: str, images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int,
              max_shift: int = 0, held_out: np.ndarray | None = None):
    """The loop called `name` ('host', 'scan' or 'auto') over normalised train images."""
    loops = {"host": HostLoop, "scan": ScanLoop}
    return loops[choose_loop(name)](images, labels, seed, batch_size, max_shift, held_out)
