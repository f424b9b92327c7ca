"""Head agreement: argmax(sum logits) == argmax(digit logits) + number, defined once
(`evaluation.heads_agree`): counted by training's `eval_counts` (what metrics.jsonl and
the report show) and flagged per image by `Predictions.agree` (what `predict` prints)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_plus.training import metrics as metrics_lib
from mnist_plus.data import sampler
from mnist_plus.training.evaluation import Predictions, eval_counts, heads_agree, predict
from mnist_plus.model import MnistPlusNet
from mnist_plus.training.state import init_state
from tests.helpers import synthetic_digits

# Five rows, the last one padding. (true digit, number, predicted digit, predicted sum,
# how many of the ten numbers the all-numbers sum head gets "digit + n" for).
ROWS = [(3, 2, 3, 5, 10),   # both heads right: agree
        (3, 2, 3, 6, 0),    # sum head off by one: disagree
        (1, 0, 7, 7, 5),    # both wrong, but consistently: agree (agreement is not accuracy)
        (0, 9, 0, 9, 1),    # agree
        (4, 4, 4, 0, 10)]   # padding (mask 0), disagrees: must not count
MASK = np.array([1, 1, 1, 1, 0], np.float32)
SUM_AGREE, EXHAUSTIVE_AGREE, REAL = 3, 10 + 0 + 5 + 1, 4


def _made_up_heads():
    """Logits whose argmaxes are ROWS' predictions (one-hot times 5)."""
    digit_logits = np.zeros((5, 10), np.float32)
    sum_logits = np.zeros((5, 19), np.float32)
    all_sums = np.zeros((5, 10, 19), np.float32)
    for i, (_, _, digit, total, agreeing) in enumerate(ROWS):
        digit_logits[i, digit] = 5
        sum_logits[i, total] = 5
        for n in range(10):
            # the first `agreeing` numbers say digit + n, the rest digit + n + 1 (mod 19)
            all_sums[i, n, (digit + n + (n >= agreeing)) % 19] = 5
    return digit_logits, sum_logits, all_sums


def _batch():
    digits = np.array([r[0] for r in ROWS])
    numbers = np.array([r[1] for r in ROWS])
    return sampler.make_batch(np.zeros((5, 28, 28, 1), np.float32), digits, numbers, mask=MASK)


def test_eval_counts_count_agreement_exactly_and_skip_padding():
    heads = tuple(jnp.asarray(x) for x in _made_up_heads())
    state = types.SimpleNamespace(variables={}, apply_fn=lambda *args, method: heads)
    sums = metrics_lib.to_host(eval_counts(state, _batch()))
    assert sums["count"] == REAL
    assert sums["sum_agree"] == SUM_AGREE
    assert sums["exhaustive_sum_agree"] == EXHAUSTIVE_AGREE
    # Agreement is not accuracy: row 2 agrees with a wrong digit, row 1 has the right digit.
    assert sums["digit_correct"] == 3 and sums["sum_correct"] == 2
    row = metrics_lib.summarise("test", sums)
    # Small integer counts in float32 are exact; the division is the same as here.
    assert row["test_sum_agreement"] == SUM_AGREE / REAL
    assert row["test_exhaustive_sum_agreement"] == EXHAUSTIVE_AGREE / (10 * REAL)


def test_predictions_flag_each_image_right_or_wrong_alike():
    """Per image, with its own number: agreement is not accuracy (row 2 agrees with a
    wrong digit), and the all-numbers form broadcasts the same definition."""
    digit_logits, sum_logits, all_sums = (x[:REAL] for x in _made_up_heads())
    predictions = Predictions(digit_probs=np.asarray(jax.nn.softmax(digit_logits)),
                              sum_probs=np.asarray(jax.nn.softmax(sum_logits)),
                              all_sums=np.argmax(all_sums, -1).astype(np.int32))
    numbers = np.array([r[1] for r in ROWS[:REAL]])
    np.testing.assert_array_equal(predictions.agree(numbers), [True, False, True, True])
    every = heads_agree(predictions.digit[:, None], predictions.all_sums, np.arange(10)[None])
    np.testing.assert_array_equal(every.sum(axis=1), [r[4] for r in ROWS[:REAL]])


@pytest.mark.slow
def test_predict_gives_each_image_what_the_evaluator_counts():
    """The report's confusion matrices come from `predict`, its accuracies from
    `eval_counts`: on a real (untrained, so often wrong and self-contradicting) net,
    padded batches and all, both must tell one story image for image."""
    model = MnistPlusNet(width=4)
    state = init_state(model, optax.adam(1e-3), jax.random.key(3))
    images, labels = synthetic_digits(48, seed=1)
    numbers = np.random.default_rng(2).integers(0, 10, 48)
    batches = list(sampler.eval_batches(sampler.normalise(images), labels, numbers, 20))
    total = {}
    for batch in batches:  # 20 + 20 + 8 padded to 20
        for k, v in metrics_lib.to_host(jax.jit(eval_counts)(state, batch)).items():
            total[k] = total.get(k, 0.0) + v
    p = predict(state, images, numbers, batch_size=20)
    assert total["count"] == len(p.digit) == 48
    assert total["digit_correct"] == np.sum(p.digit == labels)
    assert total["sum_correct"] == np.sum(p.sum == labels + numbers)
    every = labels[:, None] + np.arange(10)[None, :]
    assert total["exhaustive_sum_correct"] == np.sum(p.all_sums == every)
    assert total["sum_agree"] == p.agree(numbers).sum()
    assert total["sum_agree"] < 48  # else the check above could not fail


def test_agreement_keys_are_appended_after_the_old_ones():
    old_counts = ("count", "loss", "digit_loss", "sum_loss", "digit_correct", "sum_correct",
                  "exhaustive_sum_correct")
    assert metrics_lib.EVAL_COUNT_KEYS == old_counts + ("sum_agree", "exhaustive_sum_agree")
    assert metrics_lib.KEYS[-3:] == ("test_exhaustive_sum_accuracy", "test_sum_agreement",
                                     "test_exhaustive_sum_agreement")
    assert "train_sum_agreement" not in metrics_lib.KEYS  # the train step does not count it
    heads = tuple(jnp.asarray(x) for x in _made_up_heads())
    state = types.SimpleNamespace(variables={}, apply_fn=lambda *args, method: heads)
    assert tuple(eval_counts(state, _batch())) == metrics_lib.EVAL_COUNT_KEYS
