"""Evaluation, written once: for training's per-epoch test metrics, the report,
`predict` and the many-seeds runner.

One forward per batch (`MnistPlusNet.heads`): the conv net runs once per image and
gives the digit logits, the sum logits with the batch's number and the sum logits
with every number 0..9 (the exhaustive evaluation). `eval_counts` sums them into the
metrics of `metrics.EVAL_COUNT_KEYS` (the only accuracies and agreements computed:
training, the report and the benchmark read them through `Evaluator`); `predict`
returns per-image probabilities, for what needs single images (confusion matrices,
figures, the predict CLI). `heads_agree` is the one definition of the heads'
agreement, on the device and on the host. Batches have one shape (the last one padded,
masked out), so one program is compiled whatever the number of images, and on a mesh
each batch is split over its devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_plus.training import mesh as mesh_lib
from mnist_plus.training import metrics as metrics_lib
from mnist_plus.data import sampler
from mnist_plus.model import MnistPlusNet
from mnist_plus.training.state import TrainState
from mnist_plus.training.step import Metrics, counts, losses


def eval_counts(state: TrainState, batch: sampler.Batch) -> Metrics:
    """Summed test metrics of a (padded) batch, with the exhaustive sum accuracy (the
    sum head judged on all ten numbers for every image) and the heads' agreement."""
    digit_logits, sum_logits, all_sums = state.apply_fn(
        state.variables, batch.image, batch.number, method=MnistPlusNet.heads)
    digit_loss, sum_loss = losses(digit_logits, sum_logits, batch)
    metrics = counts(digit_loss, sum_loss, digit_logits, sum_logits, batch)
    truth = batch.digit[:, None] + jnp.arange(sampler.NUM_NUMBERS)[None, :]
    correct = jnp.sum(jnp.argmax(all_sums, -1) == truth, axis=-1)
    metrics["exhaustive_sum_correct"] = jnp.sum(batch.mask * correct)
    metrics.update(agreement_counts(digit_logits, sum_logits, all_sums, batch))
    return metrics


def heads_agree(digit: Any, total: Any, number: Any) -> Any:
    """Whether the predicted sum is the predicted digit plus the number: the heads tell one
    story. Right or wrong alike: a disagreement shows the adder is not adding the digit
    head's answer, whatever the truth. Predicted classes as NumPy or JAX arrays that
    broadcast, so the device's counts and the host's per-image flags share one definition."""
    return total == digit + number


def agreement_counts(digit_logits: jax.Array, sum_logits: jax.Array, all_sums: jax.Array,
                     batch: sampler.Batch) -> Metrics:
    """How often the heads agree (`heads_agree`), with the batch's number (`sum_agree`)
    and with every number 0..9 (`exhaustive_sum_agree`)."""
    digit = jnp.argmax(digit_logits, -1)
    number = batch.sum - batch.digit  # the int number behind the one-hot batch.number
    agree = heads_agree(digit, jnp.argmax(sum_logits, -1), number)
    all_agree = jnp.sum(heads_agree(digit[:, None], jnp.argmax(all_sums, -1),
                                    jnp.arange(sampler.NUM_NUMBERS)[None, :]), axis=-1)
    return {"sum_agree": jnp.sum(batch.mask * agree),
            "exhaustive_sum_agree": jnp.sum(batch.mask * all_agree)}


def sum_over_batches(step: Callable[[Any, sampler.Batch], Metrics], state: Any,
                     batches: Sequence[sampler.Batch], sync_each_batch: bool = False
                     ) -> Metrics:
    """`step(state, batch)` summed over `batches`, on the device (one sync at the end, or
    one per batch with `sync_each_batch`: see `mesh.one_step_in_flight`)."""
    total = None
    for batch in batches:
        sums = step(state, batch)
        total = sums if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
        if sync_each_batch:
            jax.block_until_ready(total)
    return total


def _place_batches(batches: Sequence[sampler.Batch], mesh: Mesh | None,
                   batch_size: int) -> list[sampler.Batch]:
    if mesh is None:
        return [jax.device_put(b) for b in batches]
    rows = mesh_lib.process_rows(mesh, batch_size)
    return [mesh_lib.put_split(jax.tree_util.tree_map(lambda x: x[rows], b), mesh, batch_size)
            for b in batches]


class Evaluator:
    """The test set with the seed's fixed numbers, placed once; `metrics(state)` gives
    the summed counts of `metrics.EVAL_COUNT_KEYS` as host floats."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, numbers: np.ndarray,
                 batch_size: int, mesh: Mesh | None = None):
        if mesh is not None:  # whole rows per device: round up (the padding is masked out)
            batch_size = -(-batch_size // mesh.size) * mesh.size
        self.batch_size = batch_size
        self._batches = _place_batches(
            list(sampler.eval_batches(sampler.normalise(images), labels, numbers, batch_size)),
            mesh, batch_size)
        self._sync = mesh_lib.one_step_in_flight(mesh)
        if mesh is None:
            self._step = jax.jit(eval_counts)
        else:
            self._step = jax.jit(eval_counts, in_shardings=(mesh_lib.replicated(mesh),
                                                            mesh_lib.split(mesh)),
                                 out_shardings=mesh_lib.replicated(mesh))

    def metrics(self, state: TrainState) -> dict[str, float]:
        return metrics_lib.to_host(sum_over_batches(self._step, state, self._batches,
                                                    self._sync))


def evaluator_for(config: Any, test_images: np.ndarray, test_labels: np.ndarray,
                   mesh: Mesh | None = None) -> Evaluator:
    """Training's evaluator: the test set with `config.seed`'s fixed numbers."""
    return Evaluator(test_images, test_labels,
                     sampler.test_numbers(config.seed, len(test_labels)),
                     config.eval_batch_size, mesh)


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Per image: probabilities of each digit and of each sum with its number, and the
    predicted sum for every number 0..9 (the exhaustive evaluation)."""

    digit_probs: np.ndarray  # float32 [N, 10]
    sum_probs: np.ndarray    # float32 [N, 19]
    all_sums: np.ndarray     # int32 [N, 10]: predicted sum with number 0..9

    @property
    def digit(self) -> np.ndarray:
        return np.argmax(self.digit_probs, -1)

    @property
    def sum(self) -> np.ndarray:
        return np.argmax(self.sum_probs, -1)

    def agree(self, numbers: np.ndarray) -> np.ndarray:
        """bool [N]: per image, whether the heads agree with its number (`heads_agree`)."""
        return heads_agree(self.digit, self.sum, np.asarray(numbers))


@jax.jit
def _predict_batch(state: TrainState, image: jax.Array, number: jax.Array):
    digit_logits, sum_logits, all_sums = state.apply_fn(state.variables, image, number,
                                                        method=MnistPlusNet.heads)
    return (jax.nn.softmax(digit_logits), jax.nn.softmax(sum_logits),
            jnp.argmax(all_sums, -1).astype(jnp.int32))


def predict(state: TrainState, images: np.ndarray, numbers: np.ndarray,
            batch_size: int) -> Predictions:
    """Predict uint8 images [N,28,28,1] with int numbers [N], in batches of one shape
    (the last one padded), so one program is compiled however large N is. `state` needs
    only `apply_fn` and `variables` (a checkpoint's, see `trained.Trained.state`)."""
    batch_size = min(batch_size, len(images))
    labels = np.zeros(len(images), np.int32)  # unused by the model
    parts: list[tuple[np.ndarray, ...]] = []
    for batch in sampler.eval_batches(sampler.normalise(images), labels, numbers, batch_size):
        n = int(batch.mask.sum())
        out = jax.device_get(_predict_batch(state, batch.image, batch.number))
        parts.append(tuple(np.asarray(x)[:n] for x in out))
    digit_probs, sum_probs, all_sums = (np.concatenate(xs) for xs in zip(*parts))
    return Predictions(digit_probs=digit_probs, sum_probs=sum_probs, all_sums=all_sums)
