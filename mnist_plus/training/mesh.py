"""Where arrays live: one device mesh, its axes, and placing host data onto it.

Every placement decision of the project is here, so training, evaluation and the
many-seeds runner agree on it:

- a `Mesh` over the first N devices of the default backend (all processes' devices
  when `jax.distributed` is initialised), with one named axis: `data` for a training
  run (the batch is split across devices, the train state replicated) or `seed` for
  the many-seeds runner (each device holds whole seeds);
- `NamedSharding`s for batches (split on the axis) and for state (replicated);
- host NumPy rows -> global `jax.Array`s: each process passes only the rows of the
  global batch that its own devices hold (`process_rows`), and
  `jax.make_array_from_process_local_data` assembles the global array, so no process
  reads another's rows.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnist_plus.errors import UsageError

DATA_AXIS = "data"
SEED_AXIS = "seed"


def mesh_devices(num_devices: int | None = None) -> list[jax.Device]:
    """The first `num_devices` devices (all if None), each process's devices together.

    Ordered by (process, id) so that a process's devices hold consecutive rows of a
    batch split over them: each process then builds one contiguous block of rows.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if num_devices is None:
        return devices
    if not 1 <= num_devices <= len(devices):
        raise UsageError(f"--num-devices {num_devices} is invalid: this run sees "
                         f"{len(devices)} {jax.default_backend()} device(s); pass 1.."
                         f"{len(devices)}, or 0 for all of them")
    chosen = devices[:num_devices]
    if jax.process_count() > 1 and {d.process_index for d in chosen} != set(
            range(jax.process_count())):
        raise UsageError(f"--num-devices {num_devices} leaves some processes without a "
                         f"device: with {jax.process_count()} processes use at least one "
                         f"device per process (0: all {len(devices)})")
    return chosen


def make_mesh(num_devices: int | None = None, axis: str = DATA_AXIS,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `axis` over `devices` (default: `mesh_devices(num_devices)`)."""
    devices = list(devices) if devices is not None else mesh_devices(num_devices)
    return Mesh(np.array(devices), (axis,))


def split(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's axis (a batch's rows, or seeds)."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh (the train state of a data-parallel run)."""
    return NamedSharding(mesh, PartitionSpec())


def describe(mesh: Mesh) -> str:
    """For the start-up log: 'mesh data=4 (4 cpu devices, 1 process)'."""
    kinds = {d.platform for d in mesh.devices.flat}
    processes = len({d.process_index for d in mesh.devices.flat})
    return (f"mesh {mesh.axis_names[0]}={mesh.size} ({mesh.size} {'/'.join(sorted(kinds))} "
            f"device{'s' * (mesh.size != 1)}, {processes} process"
            f"{'es' * (processes != 1)})")


def check_divisible(mesh: Mesh, flag: str, size: int) -> None:
    """A batch split over the mesh needs a whole number of rows per device."""
    if size % mesh.size:
        raise UsageError(f"--{flag} {size} is invalid: it must be divisible by the "
                         f"{mesh.size} devices of the mesh (pass --num-devices N with N "
                         f"dividing it, or another --{flag})")


def process_rows(mesh: Mesh, rows: int) -> slice:
    """The rows of a `rows`-row array split over `mesh` that this process's devices hold."""
    devices = list(mesh.devices.flat)
    per_device = rows // len(devices)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    if not mine:
        return slice(0, 0)
    return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)


def is_multiprocess(mesh: Mesh) -> bool:
    return len({d.process_index for d in mesh.devices.flat}) > 1


def put_split(tree: Any, mesh: Mesh, global_rows: int) -> Any:
    """Host arrays holding this process's rows (see `process_rows`) -> global arrays
    split on the mesh's axis. In one process this is a plain `device_put`."""
    sharding = split(mesh)
    if not is_multiprocess(mesh):
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(
            sharding, np.asarray(x), (global_rows,) + np.shape(x)[1:]), tree)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Host values every process holds in full -> arrays replicated over the mesh."""
    sharding = replicated(mesh)
    if not is_multiprocess(mesh):
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def one_step_in_flight(mesh: Mesh | None) -> bool:
    """Whether to wait for each step before dispatching the next: on a CPU mesh of several
    devices. Why: XLA:CPU runs each device's program on a shared thread pool, and with
    many steps queued, devices that ran ahead wait in an all-reduce while the threads the
    others need are taken: measured here, 4 forced CPU devices on 2 cores deadlocked
    within 300 queued steps ("Expected 4 threads to join the rendezvous, but only 2
    arrived"), and not once with one step in flight. The host loop's batch building still
    overlaps the step (prefetch thread)."""
    return (mesh is not None and mesh.size > 1
            and any(d.platform == "cpu" for d in mesh.devices.flat))
