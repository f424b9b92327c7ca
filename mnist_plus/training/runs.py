"""What the training loop trains: one seed (`Single`, data-parallel over a mesh) or K
seeds as one program (`Seeds`, mapped over a leading seed axis).

Both offer the same pieces, so trainer.py runs either through its one loop, with the
same checkpoints, resumption, preemption and logs: the fresh state, the zeroed running
sums, the training loop, the BatchNorm statistics pass and the metrics.jsonl rows of an
epoch. Seed k of a K-seed run computes what a single run of seed k computes, up to the
order of float sums (tests/training/test_multiseed.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from mnist_plus import config as config_lib
from mnist_plus.data import mnist as data
from mnist_plus.data import sampler
from mnist_plus.errors import UsageError
from mnist_plus.training import batch_stats, evaluation, loops, multiseed
from mnist_plus.training import mesh as mesh_lib
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.training.state import TrainState, create_state, global_step
from mnist_plus.training.step import Metrics, make_train_step, zero_train_metrics


class Single:
    """One seed, its batch split over the `data` axis of `mesh`."""

    seeds: list[int] | None = None

    def __init__(self, config: config_lib.Config, mnist: data.Mnist, steps_per_epoch: int,
                 mesh: Mesh):
        self.config, self.mesh, self._steps_per_epoch = config, mesh, steps_per_epoch
        self.loop = loops.make_loop(
            config.loop, mnist.train_images, mnist.train_labels, config.seed,
            config.batch_size, sampler.augment_for(config),
            sampler.held_out_pairs(config.holdout, config.seed), mesh,
            step=make_train_step(config.label_smoothing))
        self._evaluator = evaluation.evaluator_for(config, mnist.test_images,
                                                   mnist.test_labels, mesh)
        self.precise_bn = (batch_stats.PreciseBatchStats(
            mnist.train_images, config.precise_bn, config.batch_size, mesh)
            if config.precise_bn else None)

    def describe(self) -> str:
        return f"{mesh_lib.describe(self.mesh)}; loop {loops.choose_loop(self.config.loop)}"

    @property
    def restore_mesh(self) -> Mesh:
        """Where a checkpoint is restored to: replicated over the run's mesh."""
        return self.mesh

    def placed(self, tree: Any) -> Any:
        return tree

    def initial_state(self) -> TrainState:
        return create_state(self.config, self._steps_per_epoch, self.mesh)

    def zero_sums(self) -> Metrics:
        return mesh_lib.put_replicated(zero_train_metrics(), self.mesh)

    def train_counts(self, sums: Metrics) -> dict[str, Any]:
        """The epoch's summed train counts on the host (waits for its last step)."""
        return metrics_lib.to_host(sums)

    def rows(self, epoch: int, state: TrainState, train: dict[str, Any]) -> list[dict]:
        """The epoch's metrics.jsonl line: train counts and the test set's."""
        return [metrics_lib.epoch_row(epoch, int(state.step), train,
                                      self._evaluator.metrics(state))]


class Seeds:
    """`config` once per seed of `seeds`, as one program over a `seed` mesh axis (as many
    devices as divide K); `seed_map` 'vmap', 'map', 'unroll' or 'auto' (see
    multiseed.resolve_seed_map)."""

    def __init__(self, config: config_lib.Config, seeds: Sequence[int], mnist: data.Mnist,
                 steps_per_epoch: int, seed_map: str = "auto"):
        if config.loop == "scan":
            raise UsageError("--loop scan is not available with --seeds (the seeds train "
                             "with the host loop): leave --loop at auto or host")
        seed_map = multiseed.resolve_seed_map(seed_map)
        self.config, self.seeds, self.seed_map = config, [int(s) for s in seeds], seed_map
        self._steps_per_epoch = steps_per_epoch
        self.mesh = multiseed.seed_mesh(len(self.seeds))
        self._place = multiseed.placer(self.mesh)
        augment = sampler.augment_for(config)
        step = multiseed.seeds_train_step(self.mesh, seed_map, config.label_smoothing)
        self.loop = multiseed.seeds_loop(
            step, sampler.as_normalised(mnist.train_images),
            mnist.train_labels.astype(np.int32), self.seeds, config.batch_size, self._place,
            augment, config.holdout)
        self._test = multiseed.place_eval(multiseed.eval_batches(config, self.seeds, mnist),
                                          self.mesh)
        self._eval_step = multiseed.seeds_eval_step(self.mesh, seed_map)
        self.precise_bn = None
        if config.precise_bn:
            shared = (jax.device_put if self.mesh is None else
                      lambda x: jax.device_put(x, mesh_lib.replicated(self.mesh)))
            clean = [shared(b) for b in batch_stats.clean_batches(
                mnist.train_images, config.precise_bn, config.batch_size)]
            bn_step = multiseed.seeds_precise_bn_step(self.mesh, seed_map)
            self.precise_bn = lambda state: multiseed.precise_batch_stats(
                bn_step, state, clean, self._place)

    restore_mesh = None  # restored to the host, then `placed` over the seed axis

    def placed(self, tree: Any) -> Any:
        return self._place(tree)

    def describe(self) -> str:
        devices = 1 if self.mesh is None else self.mesh.size
        return (f"{len(self.seeds)} seeds {self.seeds} in one program ({self.seed_map}) on "
                f"{devices} of {len(jax.devices())} {jax.default_backend()} device(s)")

    def initial_state(self) -> TrainState:
        """Each seed's `create_state`, stacked: the exact states single runs start from."""
        return self._place(multiseed.stack([
            create_state(dataclasses.replace(self.config, seed=s), self._steps_per_epoch)
            for s in self.seeds]))

    def zero_sums(self) -> Metrics:
        return self._place(multiseed.stack([zero_train_metrics()] * len(self.seeds)))

    def train_counts(self, sums: Metrics) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in jax.device_get(dict(sums)).items()}

    def rows(self, epoch: int, state: TrainState, train: dict[str, Any]) -> list[dict]:
        """One metrics.jsonl line per seed, led by its seed."""
        test = multiseed.evaluate(self._eval_step, state, self._test)
        step = global_step(state)
        return [{"seed": seed, **metrics_lib.epoch_row(
                    epoch, step, {k: float(v[i]) for k, v in train.items()},
                    {k: float(v[i]) for k, v in test.items()})}
                for i, seed in enumerate(self.seeds)]


def mean_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean of one epoch's rows over seeds (the row itself for one run)."""
    if len(rows) == 1:
        return dict(rows[0])
    return {k: (rows[0][k] if k in ("epoch", "step") else
                float(np.mean([r[k] for r in rows]))) for k in metrics_lib.KEYS}


def mean_std(rows: Sequence[dict[str, Any]], keys: Sequence[str]
             ) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of each key over rows."""
    out = {}
    for key in keys:
        values = np.array([r[key] for r in rows], np.float64)
        out[key] = (float(values.mean()),
                    float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return out


Run = Single | Seeds
