"""The pure, jittable training step and the per-batch counts it sums.

Everything here is a function of its arguments: the train state is an explicit
pytree, metrics are summed on the device (no host sync per step), and the same
`train_step` serves the host-fed loop, the scanned loop, a data-parallel mesh (the
step is written for the global batch; jit's partitioner splits it) and the vmapped
seeds.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from mnist_plus.training.metrics import COUNT_KEYS
from mnist_plus.task import NUM_NUMBERS, NUM_SUMS, Batch
from mnist_plus.training.state import TrainState

Metrics = dict[str, jax.Array]
NO_STEP = jnp.iinfo(jnp.int32).max


def losses(digit_logits: jax.Array, sum_logits: jax.Array,
           batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Per-example cross-entropies of the digit and the sum head."""
    digit = optax.softmax_cross_entropy_with_integer_labels(digit_logits, batch.digit)
    total = optax.softmax_cross_entropy_with_integer_labels(sum_logits, batch.sum)
    return digit, total


def smoothed_losses(digit_logits: jax.Array, sum_logits: jax.Array, batch: Batch,
                    smoothing: float) -> tuple[jax.Array, jax.Array]:
    """Per-example cross-entropies against targets that move `smoothing` of the mass
    evenly onto the classes the example allows: the 10 digits, and the 10 sums that the
    number leaves possible (number..number + 9), never onto a sum it rules out."""
    digit_target = optax.smooth_labels(jax.nn.one_hot(batch.digit, NUM_NUMBERS), smoothing)
    first = jnp.argmax(batch.number, axis=-1)[:, None]
    sums = jnp.arange(NUM_SUMS)[None, :]
    possible = ((sums >= first) & (sums < first + NUM_NUMBERS)).astype(sum_logits.dtype)
    sum_target = ((1 - smoothing) * jax.nn.one_hot(batch.sum, NUM_SUMS)
                  + smoothing / NUM_NUMBERS * possible)
    return (optax.softmax_cross_entropy(digit_logits, digit_target),
            optax.softmax_cross_entropy(sum_logits, sum_target))


def counts(digit_loss, sum_loss, digit_logits, sum_logits, batch: Batch) -> Metrics:
    """The batch's sums of `metrics.COUNT_KEYS` (padding rows masked out)."""
    m = batch.mask
    values = {
        "count": jnp.sum(m),
        "loss": jnp.sum(m * (digit_loss + sum_loss)),
        "digit_loss": jnp.sum(m * digit_loss),
        "sum_loss": jnp.sum(m * sum_loss),
        "digit_correct": jnp.sum(m * (jnp.argmax(digit_logits, -1) == batch.digit)),
        "sum_correct": jnp.sum(m * (jnp.argmax(sum_logits, -1) == batch.sum)),
    }
    return {k: values[k] for k in COUNT_KEYS}


def zero_train_metrics() -> Metrics:
    """The running sums a train loop starts each epoch with."""
    metrics = {k: jnp.zeros((), jnp.float32) for k in COUNT_KEYS}
    metrics["first_nonfinite_step"] = jnp.asarray(NO_STEP, jnp.int32)
    return metrics


def train_step(state: TrainState, batch: Batch, metrics: Metrics,
               label_smoothing: float = 0.0) -> tuple[TrainState, Metrics]:
    """One optimiser step on digit + sum cross-entropy; adds this batch to `metrics`.
    `label_smoothing` is part of the objective, fixed per run: `make_train_step`."""

    def loss_fn(params):
        (digit_logits, sum_logits), updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch.image, batch.number, train=True, mutable=["batch_stats"])
        digit_loss, sum_loss = losses(digit_logits, sum_logits, batch)
        if label_smoothing:  # the objective; the metrics stay plain cross-entropy
            loss = jnp.mean(sum(smoothed_losses(digit_logits, sum_logits, batch,
                                                label_smoothing)))
        else:
            loss = jnp.mean(digit_loss + sum_loss)
        return loss, (updates.get("batch_stats", {}), digit_loss, sum_loss, digit_logits, sum_logits)

    (loss, (batch_stats, *aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    batch_counts = counts(*aux, batch)
    new_metrics = {k: metrics[k] + batch_counts[k] for k in batch_counts}
    new_metrics["first_nonfinite_step"] = jnp.where(
        jnp.isfinite(loss), metrics["first_nonfinite_step"],
        jnp.minimum(metrics["first_nonfinite_step"], state.step))
    return new_state, new_metrics


def make_train_step(label_smoothing: float = 0.0) -> Callable[..., tuple[TrainState, Metrics]]:
    """`train_step(state, batch, metrics)` with a config's loss settings closed over (they
    are constants of the compiled program, not part of the state that is saved)."""
    if not label_smoothing:
        return train_step
    return functools.partial(train_step, label_smoothing=float(label_smoothing))
