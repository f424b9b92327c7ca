"""The train state: what training changes, its optimizer, and how it starts.

A pure function of the config: parameters come from `jax.random.key(config.seed)`,
the optimizer's schedule from the config and the number of steps. Made by one jitted
program whose outputs are placed where training keeps them (replicated over the
mesh), so the state is placed once rather than built on one device and copied.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from mnist_plus.training import mesh as mesh_lib
from mnist_plus.model import MnistPlusNet, build_model
from mnist_plus.task import NUM_NUMBERS


class TrainState(struct.PyTreeNode):
    """Everything training changes. `apply_fn` and `tx` are static (not saved)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        """What `apply_fn` takes: {'params', 'batch_stats'}."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def make_optimizer(learning_rate: float, weight_decay: float, warmup_fraction: float,
                   total_steps: int, optimizer: str = "adamw", momentum: float = 0.9,
                   schedule: str = "one_cycle") -> optax.GradientTransformation:
    """AdamW on a one-cycle schedule (the default: high accuracy in few epochs), or SGD
    with momentum as PyTorch's `torch.optim.SGD` (the write-up's), on a constant rate."""
    if schedule == "constant":
        rate: optax.ScalarOrSchedule = learning_rate
    else:
        rate = optax.cosine_onecycle_schedule(
            transition_steps=max(total_steps, 1), peak_value=learning_rate,
            pct_start=max(warmup_fraction, 1e-6), div_factor=25.0, final_div_factor=1e3)
    if optimizer == "sgd":
        # torch.optim.SGD: g += wd * p; v = momentum * v + g; p -= lr * v.
        return optax.chain(optax.add_decayed_weights(weight_decay) if weight_decay
                           else optax.identity(),
                           optax.sgd(rate, momentum=momentum or None))
    return optax.adamw(rate, weight_decay=weight_decay)


def init_state(model: MnistPlusNet, tx: optax.GradientTransformation, key: jax.Array,
               sharding: jax.sharding.Sharding | None = None) -> TrainState:
    """Initialise parameters from `key` (derived from the config's seed by the caller).

    Jitted as one program: run eagerly, every initialiser op compiles on its own
    first use, which took seconds (most of the time to the first train step).
    """
    image = jnp.zeros((1, 28, 28, 1), jnp.float32)
    number = jnp.zeros((1, NUM_NUMBERS), jnp.float32)

    def init(key: jax.Array) -> TrainState:
        variables = model.init(key, image, number, train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params),
                          apply_fn=model.apply, tx=tx)

    if sharding is None:
        return jax.jit(init)(key)
    return jax.jit(init, out_shardings=sharding)(key)


def optimizer_for(config: Any, steps_per_epoch: int) -> optax.GradientTransformation:
    return make_optimizer(config.learning_rate, config.weight_decay, config.warmup_fraction,
                          config.epochs * steps_per_epoch, config.optimizer, config.momentum,
                          config.schedule)


def create_state(config: Any, steps_per_epoch: int, mesh: Mesh | None = None) -> TrainState:
    """The fresh state of `config`, replicated over `mesh` (default: one device)."""
    return init_state(build_model(config), optimizer_for(config, steps_per_epoch),
                      jax.random.key(config.seed),
                      mesh_lib.replicated(mesh) if mesh is not None else None)


def global_step(state: TrainState) -> int:
    """The state's step; every seed of a stacked many-seed state is at the same one."""
    return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def abstract_state(config: Any) -> TrainState:
    """Shapes and dtypes of `config`'s state, traced and not computed (to restore into).
    The schedule's length does not change the structure."""
    return jax.eval_shape(lambda: create_state(config, steps_per_epoch=1))
