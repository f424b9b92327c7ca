"""Run K training steps of the tiny data on meshes of 1 and N devices; save the params.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.helpers.dp_steps \
        --tfds-dir D --out F.npz --steps 24

Writes, for each run, the flattened parameters after `--steps` steps:
- `one`: a mesh of 1 device; `many`: a mesh of all devices (the batch split over them);
- `one_nudged`: 1 device, every initial parameter moved by one float32 ulp, and
  `one_reversed` / `one_rolled`: 1 device, every batch's rows reversed / rolled by one
  (the same maths, another float order of every batch reduction at every step, which
  is what splitting a batch over devices changes): how far rounding-level differences
  carry in `--steps` steps of this training, measured on this very machine;
- `one_other_seed`: 1 device, another seed's data order: what a real mistake moves.
"""

from __future__ import annotations

import argparse
from typing import Callable

import jax
import numpy as np

from mnist_plus import config as config_lib
from mnist_plus.data import mnist as data
from mnist_plus.training import loops
from mnist_plus.data import sampler
from mnist_plus.training import mesh as mesh_lib
from mnist_plus.training.state import create_state
from mnist_plus.training.step import train_step, zero_train_metrics


def run(config: config_lib.Config, mnist: data.Mnist, num_devices: int, steps: int,
        nudge: bool = False, data_seed: int | None = None,
        rows: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    mesh = mesh_lib.make_mesh(num_devices)
    steps_per_epoch = sampler.steps_per_epoch(len(mnist.train_labels), config.batch_size)
    state = create_state(config, steps_per_epoch, mesh)
    if nudge:
        params = jax.tree_util.tree_map(
            lambda p: np.nextafter(np.asarray(p), np.float32(np.inf)), state.params)
        state = state.replace(params=mesh_lib.put_replicated(params, mesh))
    loop = loops.make_loop("host", sampler.normalise(mnist.train_images), mnist.train_labels,
                           config.seed if data_seed is None else data_seed, config.batch_size,
                           sampler.augment_for(config), mesh=mesh)
    if rows is not None:  # the same batches, their rows in another order
        images = sampler.normalise(mnist.train_images)

        def batches(epoch: int, start: int):
            for b in sampler.train_batches(images, mnist.train_labels, config.seed, epoch,
                                           config.batch_size, start_step=start,
                                           augment=sampler.augment_for(config)):
                yield sampler.Batch(*(rows(np.asarray(x)) for x in b))

        loop = loops.HostLoop(batches, loops.jit_step(train_step, mesh),
                              lambda b: mesh_lib.put_split(b, mesh, config.batch_size))
    metrics = mesh_lib.put_replicated(zero_train_metrics(), mesh)
    done, epoch = 0, 0
    while done < steps:
        n = min(steps - done, steps_per_epoch)
        state, metrics = loop.run(state, metrics, epoch, 0, n)
        done, epoch = done + n, epoch + 1
    leaves = jax.tree_util.tree_leaves(jax.device_get(state.params))
    return np.concatenate([np.ravel(x) for x in leaves]).astype(np.float64)


PERTURBED = ("one_nudged", "one_reversed", "one_rolled")
STEPS = 24  # three epochs of the tiny data at batch 32, as the tiny trainings run


def measure(cli, tfds_dir: str, out: str, steps: int, env: dict[str, str]) -> None:
    """Run this script through the tests' `cli` fixture with `env` (the forced devices),
    saving the runs to `out`."""
    result = cli.run(["-m", "tests.helpers.dp_steps", "--tfds-dir", tfds_dir, "--out", out,
                      "--steps", str(steps)], env=env)
    assert result.returncode == 0, result.stderr


def rounding_drift(runs) -> float:
    """The largest mean absolute parameter drift that a rounding-level perturbation of
    the 1-device run reaches: the unit the tests' bounds are measured in."""
    return max(float(np.mean(np.abs(runs[k] - runs["one"]))) for k in PERTURBED)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tfds-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    config = config_lib.Config(batch_size=args.batch_size, width=4, epochs=3, augment_shift=1)
    mnist = data.load_mnist(args.tfds_dir)
    n = len(jax.devices())
    np.savez(args.out, devices=n,
             one=run(config, mnist, 1, args.steps),
             many=run(config, mnist, n, args.steps),
             one_nudged=run(config, mnist, 1, args.steps, nudge=True),
             one_reversed=run(config, mnist, 1, args.steps, rows=lambda x: x[::-1]),
             one_rolled=run(config, mnist, 1, args.steps, rows=lambda x: np.roll(x, 1, 0)),
             one_other_seed=run(config, mnist, 1, args.steps, data_seed=config.seed + 1))


if __name__ == "__main__":
    main()
