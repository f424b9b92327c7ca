"""Pure, jittable training and evaluation steps and the state they carry.

Everything here is a function of its arguments: the train state is an explicit
pytree, metrics are summed on the device (no host sync per step), and the same
`train_step` serves the host-fed loop, the scanned loop and the vmapped seeds.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mnist_plus.model import MnistPlusNet
from mnist_plus.sampler import NUM_NUMBERS, Batch

Metrics = dict[str, jax.Array]
NO_STEP = jnp.iinfo(jnp.int32).max


class TrainState(struct.PyTreeNode):
    """Everything training changes. `apply_fn` and `tx` are static (not saved)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)


def create_state(model: MnistPlusNet, tx: optax.GradientTransformation,
                 key: jax.Array) -> TrainState:
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
                          batch_stats=variables["batch_stats"], opt_state=tx.init(params),
                          apply_fn=model.apply, tx=tx)

    return jax.jit(init)(key)


def _losses(digit_logits, sum_logits, batch: Batch) -> tuple[jax.Array, jax.Array]:
    digit = optax.softmax_cross_entropy_with_integer_labels(digit_logits, batch.digit)
    total = optax.softmax_cross_entropy_with_integer_labels(sum_logits, batch.sum)
    return digit, total


def _counts(digit_loss, sum_loss, digit_logits, sum_logits, batch: Batch) -> Metrics:
    m = batch.mask
    return {
        "count": jnp.sum(m),
        "loss": jnp.sum(m * (digit_loss + sum_loss)),
        "digit_loss": jnp.sum(m * digit_loss),
        "sum_loss": jnp.sum(m * sum_loss),
        "digit_correct": jnp.sum(m * (jnp.argmax(digit_logits, -1) == batch.digit)),
        "sum_correct": jnp.sum(m * (jnp.argmax(sum_logits, -1) == batch.sum)),
    }


def zero_train_metrics() -> Metrics:
    """The running sums a train loop starts each epoch with."""
    metrics = {k: jnp.zeros((), jnp.float32) for k in ("count", "loss", "digit_loss", "sum_loss",
                                 "digit_correct", "sum_correct")}
    metrics["first_nonfinite_step"] = jnp.asarray(NO_STEP, jnp.int32)
    return metrics


def train_step(state: TrainState, batch: Batch,
               metrics: Metrics) -> tuple[TrainState, Metrics]:
    """One optimiser step on digit + sum cross-entropy; adds this batch to `metrics`."""

    def loss_fn(params):
        (digit_logits, sum_logits), updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch.image, batch.number, train=True, mutable=["batch_stats"])
        digit_loss, sum_loss = _losses(digit_logits, sum_logits, batch)
        loss = jnp.mean(digit_loss + sum_loss)
        return loss, (updates["batch_stats"], digit_loss, sum_loss, digit_logits, sum_logits)

    (loss, (batch_stats, *aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    counts = _counts(*aux, batch)
    new_metrics = {k: metrics[k] + counts[k] for k in counts}
    new_metrics["first_nonfinite_step"] = jnp.where(
        jnp.isfinite(loss), metrics["first_nonfinite_step"],
        jnp.minimum(metrics["first_nonfinite_step"], state.step))
    return new_state, new_metrics


def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Summed test metrics of a (padded) batch, with the exhaustive sum accuracy:
    the sum head judged on all ten numbers for every image."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    digit_logits, sum_logits = state.apply_fn(variables, batch.image, batch.number, train=False)
    digit_loss, sum_loss = _losses(digit_logits, sum_logits, batch)
    metrics = _counts(digit_loss, sum_loss, digit_logits, sum_logits, batch)
    _, all_sums = state.apply_fn(variables, batch.image,
                                 method=MnistPlusNet.exhaustive_sum_logits)
    truth = batch.digit[:, None] + jnp.arange(NUM_NUMBERS)[None, :]
    correct = jnp.sum(jnp.argmax(all_sums, -1) == truth, axis=-1)
    metrics["exhaustive_sum_correct"] = jnp.sum(batch.mask * correct)
    return metrics


def make_optimizer(learning_rate: float, weight_decay: float, warmup_fraction: float,
                   total_steps: int) -> optax.GradientTransformation:
    """AdamW on a one-cycle schedule: reaches high accuracy in few epochs."""
    schedule = optax.cosine_onecycle_schedule(
        transition_steps=max(total_steps, 1), peak_value=learning_rate,
        pct_start=max(warmup_fraction, 1e-6), div_factor=25.0, final_div_factor=1e3)
    return optax.adamw(schedule, weight_decay=weight_decay)

