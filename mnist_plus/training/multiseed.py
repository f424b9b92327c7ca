"""K seeds of one config trained as one program: `jax.vmap` over a leading seed axis.

Why: this model is far too small to fill a device, and a mean and standard deviation
over seeds needs K runs. Stacking the seeds' params, optimizer states and batches on
a leading axis turns K small programs into one wide one (and, with several devices,
that axis is the `seed` axis of a mesh from `mnist_plus.mesh`, since seeds never
exchange data).

These are the pieces of `runs.Seeds`, which the trainer's one loop runs: each seed's
state is `state.create_state` with its seed, the step is `step.train_step` mapped over
seeds, the loop is `loops.HostLoop` (batches built one step ahead in a thread), the test
metrics are `evaluation.eval_counts` mapped over seeds and the rows `metrics.epoch_row`. So each
seed computes what a single run of that seed computes, up to float summation order:
its batches come from `sampler.epoch_plan(seed, epoch)` and its test numbers from
`sampler.test_numbers(seed)`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from mnist_plus import config as config_lib
from mnist_plus.training import batch_stats
from mnist_plus.data import mnist as data
from mnist_plus.training import evaluation
from mnist_plus.training import loops
from mnist_plus.data import quality, sampler
from mnist_plus.training import mesh as mesh_lib
from mnist_plus.training.mesh import SEED_AXIS
from mnist_plus.training.state import TrainState
from mnist_plus.training.step import make_train_step

T = TypeVar("T")


# ------------------------------------------------------------------- stacking seeds

def stack(trees: Sequence[T]) -> T:
    """Stack same-shaped pytrees on a new leading axis.

    The first tree's structure is kept: train states built separately differ only in
    static fields (`apply_fn`, `tx` are new objects per call, equal in behaviour).
    """
    leaves = [jax.tree_util.tree_leaves(t) for t in trees]
    if len({len(x) for x in leaves}) != 1:
        raise ValueError("cannot stack pytrees with different numbers of leaves")
    treedef = jax.tree_util.tree_structure(trees[0])
    return treedef.unflatten([np.stack([np.asarray(x) for x in xs]) for xs in zip(*leaves)])


def unstack(tree: T, index: int) -> T:
    """Seed `index`'s slice of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def seed_mesh(num_seeds: int, devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A `seed` mesh over as many devices as divide `num_seeds`; None for one device."""
    devices = list(devices if devices is not None else mesh_lib.mesh_devices())
    used = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    if used == 1:
        return None
    return mesh_lib.make_mesh(axis=SEED_AXIS, devices=devices[:used])


def placer(mesh: Mesh | None) -> Callable[[Any], Any]:
    if mesh is None:
        return jax.device_put
    return lambda tree: jax.device_put(tree, mesh_lib.split(mesh))


# --------------------------------------------------------------------------- training

def epoch_plans(seeds: Sequence[int], epoch: int, labels: np.ndarray,
                augment: sampler.Augment = sampler.NO_AUGMENT, holdout: str = "none"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """[K, N] example orders, numbers, [K, N, 2] shifts and [K, N, 2, 2(+G*G)] warp maps
    (None without affine or elastic augmentation): each seed's own stream, as the
    single-seed loops draw it (`sampler.epoch_plan`, `sampler.epoch_shifts`,
    `sampler.epoch_warps`)."""
    n = len(labels)
    plans = [sampler.epoch_plan(s, epoch, n, labels, sampler.held_out_pairs(holdout, s))
             for s in seeds]
    shifts = [sampler.epoch_shifts(s, epoch, n, augment.shift) for s in seeds]
    maps = None if not augment.affine else np.stack(
        [sampler.epoch_warps(s, epoch, n, augment) for s in seeds])
    return (np.stack([p for p, _ in plans]), np.stack([k for _, k in plans]), np.stack(shifts),
            maps)


def stacked_batch(images: np.ndarray, labels: np.ndarray, plans: tuple[np.ndarray, ...],
                  step: int, batch_size: int, augment: sampler.Augment = sampler.NO_AUGMENT,
                  seeds: Sequence[int] = (), epoch: int = 0) -> sampler.Batch:
    """Step `step` of every seed's epoch as one [K, B, ...] batch (as `train_batches`).
    `seeds` and `epoch` key the image-quality families' draws (`quality.apply_quality`);
    they are needed only when `augment` turns one on."""
    permutations, numbers, shifts, maps = plans
    sl = slice(step * batch_size, (step + 1) * batch_size)
    idx = permutations[:, sl]
    batch_images = images[idx]
    flat = batch_images.reshape((-1,) + batch_images.shape[2:])
    batch_images = sampler.augment_images(
        flat, augment, shifts[:, sl].reshape(-1, 2),
        None if maps is None else maps[:, sl].reshape((-1,) + maps.shape[2:])
    ).reshape(batch_images.shape)
    if augment.quality:
        if len(seeds) != len(batch_images):
            raise ValueError("stacked_batch needs the seeds with image-quality augmentation")
        batch_images = np.stack([quality.apply_quality(b, augment, int(s), epoch, step)
                                 for b, s in zip(batch_images, seeds)])
    return sampler.make_batch(batch_images, labels[idx], numbers[:, sl],
                              mask=np.ones(idx.shape, np.float32))


_EVAL_SHARED = ("image", "digit", "mask")  # test batch fields common to every seed


def resolve_seed_map(how: str) -> str:
    """'auto': 'unroll' on CPU, where K ordinary convolutions run 2-3x faster than the
    grouped ones 'vmap' makes of them (docs/distributed.md#many-seeds); 'vmap' elsewhere."""
    if how == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return how


def _unrolled(fn: Callable, in_axes: tuple) -> Callable:
    """`fn` over a leading seed axis as K copies of itself in one program (K is the static
    length of that axis): each copy is the single run's own computation, ordinary
    convolutions included. `in_axes` as `jax.vmap`'s: 0 (per seed) or None (shared), a
    prefix of each argument."""
    def per_seed(i: int, axes, arg):
        return jax.tree_util.tree_map(
            lambda a, x: x if a is None else jax.tree_util.tree_map(lambda y: y[i], x),
            axes, arg, is_leaf=lambda a: a is None)

    def unrolled(*args):
        k = next(jax.tree_util.tree_leaves(arg)[0].shape[0]
                 for axes, arg in zip(in_axes, args) if axes is not None)
        outs = [fn(*(per_seed(i, axes, arg) for axes, arg in zip(in_axes, args)))
                for i in range(k)]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)

    return unrolled


def _per_seed(fn: Callable, how: str, shared: Sequence[str] = ()) -> Callable:
    """`fn(state, batch, *rest)` over a leading seed axis; `shared` batch fields have none.

    'vmap' batches the seeds into one wide program; 'map' (`lax.map`) runs the seeds one
    after another inside one program; 'unroll' writes the single run's step out once per
    seed in one program. They compute the same numbers up to float order; which is
    faster depends on the backend (vmapped convolutions become grouped convolutions,
    which XLA:CPU runs far slower than K ordinary ones: there 'unroll' is the fastest).
    """
    axes = sampler.Batch(**{f: None if f in shared else 0 for f in sampler.Batch._fields})
    if how in ("vmap", "unroll"):
        over = jax.vmap if how == "vmap" else _unrolled  # the same in_axes convention
        return lambda state, batch, *rest: over(fn, (0, axes) + (0,) * len(rest))(
            state, batch, *rest)
    if how != "map":
        raise ValueError(f"seed map must be one of {config_lib.SEED_MAPS}, not {how!r}")

    def looped(state, batch, *rest):
        common = {f: getattr(batch, f) for f in shared}
        own = batch._replace(**{f: None for f in shared})
        return jax.lax.map(lambda xs: fn(xs[0], xs[1]._replace(**common), *xs[2]),
                           (state, own, rest))

    return looped


def _over_seeds(fn: Callable, mesh: Mesh | None, in_specs, out_specs) -> Callable:
    """`fn` over the seed axis; on a mesh, each device maps over its own seeds.

    Why `shard_map` rather than jit's sharding propagation: in JAX 0.10.2 both
    partitioners (Shardy and GSPMD) mis-partition a vmapped convolution (a grouped
    convolution over seeds x channels) whose seed axis is sharded: wrong numbers, or a
    compile error for 1x1 kernels. Seeds never interact, so a per-device map is exact.
    """
    if mesh is None:
        return fn
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def seeds_train_step(mesh: Mesh | None = None, how: str = "vmap",
                     label_smoothing: float = 0.0) -> Callable:
    """`train_step` over the seed axis, jitted with state and metrics donated."""
    seed = PartitionSpec(SEED_AXIS)
    step = make_train_step(label_smoothing)
    return jax.jit(_over_seeds(_per_seed(step, how), mesh, (seed, seed, seed),
                               (seed, seed)), donate_argnums=(0, 2))


def seeds_loop(step: Callable, images: np.ndarray, labels: np.ndarray, seeds: Sequence[int],
               batch_size: int, place: Callable[[Any], Any] = jax.device_put,
               augment: sampler.Augment = sampler.NO_AUGMENT, holdout: str = "none"
               ) -> loops.HostLoop:
    """The single run's `loops.HostLoop`, fed every seed's batch of a step at once."""

    def batches(epoch: int, start: int) -> Iterator[sampler.Batch]:
        plans = epoch_plans(seeds, epoch, labels, augment, holdout)
        for i in range(start, sampler.steps_per_epoch(len(labels), batch_size)):
            yield stacked_batch(images, labels, plans, i, batch_size, augment, seeds, epoch)

    return loops.HostLoop(batches, step, place)


# ------------------------------------------------------------------------- evaluation

def eval_batches(config: config_lib.Config, seeds: Sequence[int], mnist: data.Mnist
                 ) -> list[sampler.Batch]:
    """Test batches whose images are shared and whose numbers and sums are per seed."""
    images = sampler.normalise(mnist.test_images)
    per_seed = [list(sampler.eval_batches(images, mnist.test_labels,
                                          sampler.test_numbers(s, len(mnist.test_labels)),
                                          config.eval_batch_size)) for s in seeds]
    return [batches[0]._replace(number=np.stack([b.number for b in batches]),
                                sum=np.stack([b.sum for b in batches]))
            for batches in zip(*per_seed)]  # one test batch in every seed's version


def seeds_eval_step(mesh: Mesh | None = None, how: str = "vmap") -> Callable:
    """`evaluation.eval_counts` over the seed axis; the test images are not copied per seed."""
    seed, common = PartitionSpec(SEED_AXIS), PartitionSpec()
    batch_specs = sampler.Batch(**{f: common if f in _EVAL_SHARED else seed
                                   for f in sampler.Batch._fields})
    return jax.jit(_over_seeds(_per_seed(evaluation.eval_counts, how, _EVAL_SHARED), mesh,
                               (seed, batch_specs), seed))


def seeds_precise_bn_step(mesh: Mesh | None = None, how: str = "vmap") -> Callable:
    """`batch_stats.accumulate` over the seed axis: every seed's BatchNorm moments of one
    clean batch that all seeds share (as `--precise-bn` computes them for a single run)."""
    if how in ("vmap", "unroll"):
        fn = (jax.vmap if how == "vmap" else _unrolled)(batch_stats.accumulate, (0, 0, None))
    elif how == "map":
        def fn(total, state, image):
            return jax.lax.map(lambda xs: batch_stats.accumulate(xs[0], xs[1], image),
                               (total, state))
    else:
        raise ValueError(f"seed map must be one of {config_lib.SEED_MAPS}, not {how!r}")
    seed = PartitionSpec(SEED_AXIS)
    return jax.jit(_over_seeds(fn, mesh, (seed, seed, PartitionSpec()), seed),
                   donate_argnums=0)


def precise_batch_stats(step: Callable, state: TrainState, batches: Sequence[jax.Array],
                        place: Callable[[Any], Any]) -> TrainState:
    """`state` with every seed's BatchNorm statistics recomputed from `batches`."""
    total = place(jax.tree_util.tree_map(np.zeros_like, jax.device_get(state.batch_stats)))
    for batch in batches:
        total = step(total, state, batch)
    return state.replace(batch_stats=jax.tree_util.tree_map(lambda s: s / len(batches), total))


def evaluate(step: Callable, state: TrainState, batches: Sequence[sampler.Batch]
             ) -> dict[str, np.ndarray]:
    """Summed test counts per seed: {name: [K]}."""
    total = evaluation.sum_over_batches(step, state, batches)
    return {k: np.asarray(v, np.float64) for k, v in jax.device_get(total).items()}


def place_eval(batches: list[sampler.Batch], mesh: Mesh | None):
    if mesh is None:
        return jax.device_put(batches)
    shared, split = mesh_lib.replicated(mesh), mesh_lib.split(mesh)
    spec = sampler.Batch(image=shared, digit=shared, number=split, sum=split, mask=shared)
    return [jax.device_put(b, spec) for b in batches]
