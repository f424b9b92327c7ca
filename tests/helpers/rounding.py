"""Self-calibrating tolerances for two programs that compute the same training.

The vmapped seeds and a single run (or the scanned and the host loop) do the same
arithmetic in another float order (other fusions, grouped convolutions, another
vector width on another CPU). Training amplifies those last-bit differences, and by
how much depends on the run and the machine: on this model a one-ulp nudge of the
initial parameters ends 16 steps anywhere from 1e-7 to 1e-4 away (measured), so no
fixed tolerance holds on every CPU. Instead, each test measures on the machine it
runs on how far the SAME single-seed run moves when its arithmetic is perturbed at
the rounding level, and allows `C` times that, plus a floor from float32's eps.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import jax
import numpy as np

from mnist_plus.training import metrics as metrics_lib
from mnist_plus.data import sampler
from mnist_plus.training.evaluation import eval_counts as eval_step
from mnist_plus.training.step import make_train_step, train_step, zero_train_metrics

EPS32 = float(np.finfo(np.float32).eps)

# The perturbations below are rounding-level, like the difference between the two
# programs, but not the same rounding: grouped convolutions or a scan body reorder
# more sums, at every step. Measured on AVX-512 (seeds 0-3): vmapped-vs-single
# differences are at most 1.9x the largest perturbation's effect in every state
# leaf, scan-vs-host 0.04x; C = 100 leaves a factor 50 for CPUs whose vector width
# rounds the two programs further apart. Wrong runs land far outside the bound:
# another seed or data stream >= 1.3e3 bounds away in the state and >= 90 in the
# losses, one step more or fewer >= 300 (measured; the tests assert >= 10).
# Limit: a run's sensitivity comes in bursts (seed 0: both one-ulp nudges grow to
# 1e-4 over epoch 2, reordered rows stay at 2e-6). If the two programs set one off
# and none of the perturbations does, a state leaf can exceed C x their effect: the
# four perturbations make that unlikely, not impossible.
C = 100

# Rounding-level perturbations of one single-seed run: (name, ulp direction of the
# initial params or None, batch rows permutation). Reordering a batch's rows changes
# nothing mathematically (batch means, BatchNorm statistics and metric sums do not
# depend on the order) but changes every batch reduction's float order, every step.
# Several, because a run's sensitivity comes in bursts (a one-ulp nudge may set off a
# cascade that reordered rows do not, or the reverse): the bound takes the largest.
PERTURBATIONS: tuple[tuple[str, float | None, Callable[[sampler.Batch], sampler.Batch]], ...] = (
    ("params +1 ulp", np.inf, lambda b: b),
    ("params -1 ulp", -np.inf, lambda b: b),
    ("batch rows reversed", None, lambda b: sampler.Batch(*(x[::-1] for x in b))),
    ("batch rows rolled", None, lambda b: sampler.Batch(*(np.roll(x, 1, 0) for x in b))),
)

_STEPS = {0.0: jax.jit(train_step)}  # by label smoothing: the step's one loss setting
_EVAL = jax.jit(eval_step)


def nudged(state, direction: float):
    """`state` with every parameter moved by one float32 ulp towards `direction`."""
    params = jax.tree_util.tree_map(
        lambda x: np.nextafter(np.asarray(x), np.float32(direction)), state.params)
    return state.replace(params=params)


def float_leaves(state) -> list[np.ndarray]:
    """The float leaves of (params, batch_stats, opt_state), as float64 host arrays."""
    leaves = jax.tree_util.tree_leaves(jax.device_get(
        (state.params, state.batch_stats, state.opt_state)))
    return [np.asarray(x, np.float64) for x in leaves
            if np.issubdtype(np.asarray(x).dtype, np.floating)]


def leaf_gaps(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """max |a - b| per leaf."""
    return np.array([np.abs(x - y).max() for x, y in zip(a, b)])


def state_bound(reference: Sequence[np.ndarray], perturbed: Iterable[Sequence[np.ndarray]],
                steps: int) -> np.ndarray:
    """Per-leaf tolerance: C x the largest perturbation effect, plus a floor.

    The floor: each of `steps` updates rounds a value once more (<= eps/2 relative)
    in either program, so unamplified rounding alone parts them by <= steps * eps of
    the leaf's largest magnitude. It matters only where the perturbations left a
    leaf bit-identical (a 4-element BatchNorm scale, say).
    """
    effect = np.max([leaf_gaps(p, reference) for p in perturbed], axis=0)
    floor = np.array([steps * EPS32 * np.abs(x).max() for x in reference])
    return C * effect + floor


def excess(got: Sequence[np.ndarray], reference: Sequence[np.ndarray],
           bound: np.ndarray) -> float:
    """How many bounds away `got` is in its worst leaf: <= 1 passes."""
    return float(np.max(leaf_gaps(got, reference) / bound))


# ------------------------------------------------------------ metrics.jsonl rows

LOSS_KEYS = tuple(k for k in metrics_lib.KEYS if k.endswith("_loss"))
ACCURACY_KEYS = tuple(k for k in metrics_lib.KEYS if k.endswith("_accuracy"))


def predictions(key: str, train_examples: int, test_examples: int) -> int:
    """How many predictions an accuracy (or examples a mean loss) is taken over."""
    n = train_examples if key.startswith("train_") else test_examples
    return 10 * n if key == "test_exhaustive_sum_accuracy" else n


def row_bounds(reference: Sequence[dict], perturbed: Iterable[Sequence[dict]],
               train_examples: int, test_examples: int) -> dict[str, float]:
    """Per-key tolerance of the float values of metrics.jsonl rows (over all epochs).

    Losses: C x the largest perturbation effect, plus the float32 summation error
    of the n >= 0 terms summed on the device: at most (n - 1) eps of the sum
    (Higham's bound for recursive summation of positive terms), i.e. n eps relative.
    Accuracies are counts / n: a rounding-level difference can only flip a
    prediction whose two best logits are that close. The perturbations show how
    many such near-ties the run has (the most predictions any of them flipped);
    one more is allowed, as whether an exact near-tie flips is a coin toss per
    CPU. More than that means the two programs really predicted differently.
    """
    perturbed = list(perturbed)
    bounds = {}
    for key in LOSS_KEYS + ACCURACY_KEYS:
        n = predictions(key, train_examples, test_examples)
        effect = max(abs(p[key] - r[key]) for rows in perturbed for p, r in zip(rows, reference))
        if key in LOSS_KEYS:
            bounds[key] = C * effect + n * EPS32 * max(abs(r[key]) for r in reference)
        else:
            bounds[key] = (round(effect * n) + 1) / n
    return bounds


def row_excess(rows: Sequence[dict], reference: Sequence[dict], bounds: dict[str, float],
               keys: Sequence[str] = LOSS_KEYS + ACCURACY_KEYS) -> float:
    """How many bounds away `rows` are in their worst key and epoch: <= 1 passes."""
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in reference]
    return max(abs(g[k] - w[k]) / bounds[k] for g, w in zip(rows, reference) for k in keys)


# ---------------------------------------------------- the single-seed run, plainly

def train_epochs(state, images: np.ndarray, labels: np.ndarray, seed: int, epochs: int,
                 batch_size: int, augment: sampler.Augment = sampler.NO_AUGMENT,
                 reorder: Callable[[sampler.Batch], sampler.Batch] = lambda b: b,
                 evaluate: Callable | None = None, extra_steps: int = 0,
                 keep: Sequence[int] = (), label_smoothing: float = 0.0):
    """The host loop's training written out: `train_step` on `seed`'s batch stream.

    Returns the final state, a metrics row ({"epoch", "step", train and, with
    `evaluate(state) -> summed counts`, test metrics}) per completed epoch, and
    {step: state} after each global step in `keep`. `extra_steps` >= 0 steps of
    the next epoch follow the last (for a deliberately wrong run: a step too many).
    """
    if label_smoothing not in _STEPS:
        _STEPS[label_smoothing] = jax.jit(make_train_step(label_smoothing))
    step = _STEPS[label_smoothing]
    per_epoch = sampler.steps_per_epoch(len(labels), batch_size)
    total = epochs * per_epoch + extra_steps
    rows, kept, done, epoch = [], {}, 0, 0
    while done < total:
        sums = zero_train_metrics()
        for batch in sampler.train_batches(images, labels, seed, epoch, batch_size,
                                           augment=augment):
            if done == total:
                break
            state, sums = step(state, reorder(batch), sums)
            done += 1
            if done in keep:
                kept[done] = state
        if epoch < epochs:
            row = {"epoch": epoch + 1, "step": done,
                   **metrics_lib.summarise("train", metrics_lib.to_host(sums))}
            if evaluate is not None:
                row.update(metrics_lib.summarise("test", evaluate(state)))
            rows.append(row)
        epoch += 1
    return state, rows, kept


def evaluator(test_images: np.ndarray, test_labels: np.ndarray, seed: int,
              batch_size: int) -> Callable:
    """`state -> summed test counts` on `seed`'s fixed test numbers (as training does)."""
    batches = list(sampler.eval_batches(sampler.normalise(test_images), test_labels,
                                        sampler.test_numbers(seed, len(test_labels)),
                                        batch_size))

    def evaluate(state) -> dict[str, float]:
        total = None
        for batch in batches:
            sums = _EVAL(state, batch)
            total = sums if total is None else jax.tree_util.tree_map(
                lambda a, b: a + b, total, sums)
        return metrics_lib.to_host(total)

    return evaluate


def elastic_basis(side: int, grid: int) -> np.ndarray:
    """[side * side, grid * grid]: `sampler.elastic_weights` as one matrix over row-major
    pixels and control points (`field = basis @ values`): the whole field at once, which
    the sampler never builds (it applies the separable weights)."""
    weights = sampler.elastic_weights(side, grid)
    return np.kron(weights, weights)


def warp_bound(images: np.ndarray, maps: np.ndarray) -> float:
    """The most that NumPy's and XLA's `sampler.warp` of `images` by `maps` can differ,
    from what the code guarantees rather than from one machine's rounding.

    Each source coordinate is a sum of products (2 affine terms, the centre, and the
    G*G elastic terms, summed as two products of G terms each, which rounds no worse
    than one sum of G*G): each program's rounding error is at most (terms + 1) * u times
    the sum of the terms' magnitudes (u = 2**-24), so the two differ by at most twice
    that. Bilinear interpolation is continuous in the coordinates (the floor's
    remainder is exact), with slope at most the largest step between neighbouring
    pixels (background padding included), per coordinate. The lerps add a few ulps of
    the largest pixel value on each side.
    """
    u = EPS32 / 2
    side = images.shape[1]
    fill = float(sampler.normalise(np.zeros((1, 1, 1, 1), np.uint8)).reshape(()))
    padded = np.pad(images[..., 0].astype(np.float64), ((0, 0), (1, 2), (1, 2)),
                    constant_values=fill)
    step = max(np.abs(np.diff(padded, axis=1)).max(), np.abs(np.diff(padded, axis=2)).max())
    offset = (side - 1) / 2 + 8.0                   # |pixel - centre - shift|, shifts <= 8
    maps = np.abs(maps.astype(np.float64))
    magnitude = (maps[:, :, 0] + maps[:, :, 1]) * offset + (side - 1) / 2   # [N, 2]
    terms = 3
    if maps.shape[-1] > 2:
        basis = np.abs(elastic_basis(side, int(np.sqrt(maps.shape[-1] - 2))))
        magnitude = magnitude + (maps[:, :, 2:] @ basis.T.astype(np.float64)).max(axis=-1)
        terms += maps.shape[-1] - 2
    coordinate = 2 * (terms + 1) * u * magnitude.max(axis=0)              # [row, column]
    lerps = 2 * 8 * u * np.abs(padded).max()
    return float(step * coordinate.sum() + lerps)
