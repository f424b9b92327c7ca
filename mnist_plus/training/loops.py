"""Two training loops behind one interface: run steps [start, stop) of an epoch.

- `HostLoop`: a per-step jitted program fed from NumPy, with the next batch
  prepared and transferred in a background thread while the current step runs,
  and the train state donated. Fastest on CPU (docs/performance.md). Each process
  builds only its own rows of every global batch.
- `ScanLoop`: the normalised training set lives on every device and `lax.scan`
  runs many steps per dispatch; no host round trip per step. Meant for GPUs.

Both draw the same batches from `sampler.epoch_plan` and call the same
`train_step`, so a run may switch between them freely. On a mesh the batch is split
over the `data` axis and the state replicated: the step is written for the global
batch, so N devices compute the same optimisation as one.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_plus.errors import UsageError

from mnist_plus.training import mesh as mesh_lib
from mnist_plus.data import sampler
from mnist_plus.training.state import TrainState
from mnist_plus.training.step import Metrics, train_step

# Called with the number of steps just run: `progress` to count them (a progress bar),
# `should_stop` to ask whether to stop there, at a step boundary (`state.step` then says
# how far the loop got): see runtime/preemption.py.
Progress = Callable[[int], None]
ShouldStop = Callable[[int], bool]


def _never(n: int) -> bool:
    return False


def _ignore(n: int) -> None:
    return None


def choose_loop(name: str, backend: str | None = None) -> str:
    """'auto' -> the loop measured fastest on this backend (host on CPU, scan elsewhere)."""
    if name != "auto":
        return name
    backend = backend or jax.default_backend()
    return "host" if backend == "cpu" else "scan"


def jit_step(step: Callable, mesh: Mesh | None) -> Callable:
    """`step(state, batch, metrics)` jitted with state and metrics donated; on a mesh,
    with the state and metrics replicated and the batch split over the mesh's axis."""
    if mesh is None:
        return jax.jit(step, donate_argnums=(0, 2))
    rep, split = mesh_lib.replicated(mesh), mesh_lib.split(mesh)
    return jax.jit(step, donate_argnums=(0, 2), in_shardings=(rep, split, rep),
                   out_shardings=(rep, rep))


def prefetch(batches: Iterator, size: int = 2,
             place: Callable[[Any], Any] = jax.device_put) -> Iterator:
    """Yield device-resident batches (`place`d), preparing the next ones in a thread."""
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                if stop.is_set():
                    return
                q.put(place(batch))
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
    """Steps fed from the host: `batches(epoch, start)` yields the host rows of each
    step's batch, `place` puts them on the devices, `step` is the jitted step."""

    name = "host"

    def __init__(self, batches: Callable[[int, int], Iterator], step: Callable,
                 place: Callable[[Any], Any] = jax.device_put, sync_each_step: bool = False):
        self._batches, self._step, self._place = batches, step, place
        self._sync = sync_each_step

    def run(self, state: TrainState, metrics: Metrics, epoch: int, start: int, stop: int,
            progress: Progress = _ignore, should_stop: ShouldStop = _never
            ) -> tuple[TrainState, Metrics]:
        for _, batch in zip(range(stop - start),
                            prefetch(self._batches(epoch, start), place=self._place)):
            state, metrics = self._step(state, batch, metrics)
            if self._sync:
                jax.block_until_ready(metrics)
            progress(1)
            if should_stop(1):
                break
        return state, metrics


def host_loop(images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int,
              augment: sampler.Augment = sampler.NO_AUGMENT, held_out: np.ndarray | None = None,
              mesh: Mesh | None = None, step: Callable = train_step) -> HostLoop:
    """The single-run host loop: `sampler.train_batches`, this process's rows only;
    `step` is `train_step` with the run's loss settings (`step.make_train_step`)."""
    rows = slice(None) if mesh is None else mesh_lib.process_rows(mesh, batch_size)

    def batches(epoch: int, start: int) -> Iterator[sampler.Batch]:
        return sampler.train_batches(images, labels, seed, epoch, batch_size, start_step=start,
                                     augment=augment, held_out=held_out, rows=rows)

    place = (jax.device_put if mesh is None
             else lambda b: mesh_lib.put_split(b, mesh, batch_size))
    return HostLoop(batches, jit_step(step, mesh), place,
                    sync_each_step=mesh_lib.one_step_in_flight(mesh))


def device_batch(images: jax.Array, labels: jax.Array, permutation: jax.Array,
                 numbers: jax.Array, shifts: jax.Array, maps: jax.Array | None, step: jax.Array,
                 batch_size: int, augment: sampler.Augment) -> sampler.Batch:
    """Step `step`'s batch of an epoch plan, built on the device: `sampler.train_batches`'
    batch, bit for bit without affine augmentation and to float rounding with it."""
    offset = step * batch_size
    idx = jax.lax.dynamic_slice_in_dim(permutation, offset, batch_size)
    num = jax.lax.dynamic_slice_in_dim(numbers, offset, batch_size)
    digit = labels[idx]
    shift = jax.lax.dynamic_slice_in_dim(shifts, offset, batch_size)
    map_ = None if maps is None else jax.lax.dynamic_slice_in_dim(maps, offset, batch_size)
    image = sampler.augment_images(images[idx], augment, shift, map_, xp=jnp)
    return sampler.Batch(image=image, digit=digit,
                         number=jnp.eye(sampler.NUM_NUMBERS, dtype=jnp.float32)[num],
                         sum=digit + num, mask=jnp.ones(batch_size, jnp.float32))


def _scan_steps(state: TrainState, metrics: Metrics, images: jax.Array, labels: jax.Array,
                permutation: jax.Array, numbers: jax.Array, shifts: jax.Array,
                maps: jax.Array | None, start: jax.Array, num_steps: int, batch_size: int,
                augment: sampler.Augment, batch_sharding: Any = None,
                step_fn: Callable = train_step) -> tuple[TrainState, Metrics]:
    def body(carry, step):
        state, metrics = carry
        batch = device_batch(images, labels, permutation, numbers, shifts, maps, step,
                             batch_size, augment)
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return step_fn(state, batch, metrics), None

    (state, metrics), _ = jax.lax.scan(body, (state, metrics), start + jnp.arange(num_steps))
    return state, metrics


class ScanLoop:
    name = "scan"
    chunk = 100  # steps per dispatch: progress updates between chunks, two shapes compiled

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int,
                 augment: sampler.Augment = sampler.NO_AUGMENT,
                 held_out: np.ndarray | None = None, mesh: Mesh | None = None,
                 step: Callable = train_step):
        self.num_examples = len(labels)
        self.host_labels, self.held_out = labels, held_out
        self._put = (jax.device_put if mesh is None
                     else lambda x: mesh_lib.put_replicated(x, mesh))
        self.images = self._put(sampler.as_normalised(images))
        self.labels = self._put(labels.astype(np.int32))
        self.seed, self.batch_size, self.augment = seed, batch_size, augment
        self._batch_sharding = None if mesh is None else mesh_lib.split(mesh)
        self._steps = jax.jit(_scan_steps,
                              static_argnames=("num_steps", "batch_size", "augment",
                                               "batch_sharding", "step_fn"),
                              donate_argnums=(0, 1))
        self._step_fn = step
        self._plan_epoch = None
        self._plan = None

    def _epoch_plan(self, epoch: int):
        if self._plan_epoch != epoch:
            permutation, numbers = sampler.epoch_plan(self.seed, epoch, self.num_examples,
                                                      self.host_labels, self.held_out)
            shifts = sampler.epoch_shifts(self.seed, epoch, self.num_examples, self.augment.shift)
            maps = sampler.epoch_warps(self.seed, epoch, self.num_examples, self.augment)
            self._plan = tuple(None if x is None else self._put(x)
                               for x in (permutation, numbers, shifts, maps))
            self._plan_epoch = epoch
        return self._plan

    def run(self, state: TrainState, metrics: Metrics, epoch: int, start: int, stop: int,
            progress: Progress = _ignore, should_stop: ShouldStop = _never
            ) -> tuple[TrainState, Metrics]:
        permutation, numbers, shifts, maps = self._epoch_plan(epoch)
        step = start
        while step < stop:
            n = min(self.chunk, stop - step)
            state, metrics = self._steps(state, metrics, self.images, self.labels, permutation,
                                         numbers, shifts, maps, self._put(np.int32(step)),
                                         num_steps=n, batch_size=self.batch_size,
                                         augment=self.augment,
                                         batch_sharding=self._batch_sharding,
                                         step_fn=self._step_fn)
            step += n
            progress(n)
            if should_stop(n):
                break
        return state, metrics


def make_loop(name: str, images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int,
              augment: sampler.Augment = sampler.NO_AUGMENT,
              held_out: np.ndarray | None = None, mesh: Mesh | None = None,
              step: Callable = train_step):
    """The loop called `name` ('host', 'scan' or 'auto') over the train images: uint8 as
    loaded (the host loop normalises each batch, the scan loop the whole set once) or
    already normalised. `step`: `train_step` with the run's loss settings."""
    if choose_loop(name) == "host":
        return host_loop(images, labels, seed, batch_size, augment, held_out, mesh, step)
    if augment.quality:
        raise UsageError("the --augment-stroke/outline/blur/lowres/background/noise/occlude "
                         "families run on the host: use --loop host")
    return ScanLoop(images, labels, seed, batch_size, augment, held_out, mesh, step)
