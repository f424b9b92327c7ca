import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_plus.data import sampler
from mnist_plus.model import MnistPlusNet
from mnist_plus.training.evaluation import eval_counts as eval_step
from mnist_plus.training.state import init_state as create_state
from mnist_plus.training.step import NO_STEP, make_train_step, train_step, zero_train_metrics
from tests.helpers import synthetic_digits


def _batch(n=64, seed=0):
    images, labels = synthetic_digits(n, seed)
    numbers = np.random.default_rng(seed).integers(0, 10, n)
    return sampler.make_batch(sampler.normalise(images), labels, numbers)


def _state(lr=1e-2):
    return create_state(MnistPlusNet(width=8), optax.adam(lr), jax.random.key(0))


@pytest.mark.slow
def test_train_steps_lower_both_losses():
    state, batch = _state(), _batch()
    step = jax.jit(train_step)
    history = []
    for _ in range(30):
        state, m = step(state, batch, zero_train_metrics())
        history.append({k: float(m[k] / m["count"]) for k in ("digit_loss", "sum_loss")})
    assert history[-1]["digit_loss"] < 0.7 * history[0]["digit_loss"]
    assert history[-1]["sum_loss"] < 0.8 * history[0]["sum_loss"]
    assert int(state.step) == 30


def test_metrics_accumulate_counts_and_losses():
    state, batch = _state(), _batch(32)
    state, m = jax.jit(train_step)(state, batch, zero_train_metrics())
    state, m = jax.jit(train_step)(state, batch, m)
    assert float(m["count"]) == 64
    assert 0 <= float(m["digit_correct"]) <= 64
    assert np.isfinite(float(m["loss"])) and float(m["loss"]) > 0
    assert int(m["first_nonfinite_step"]) == int(NO_STEP)


def test_nonfinite_loss_is_flagged_with_its_step():
    state, batch = _state(), _batch(16)
    step = jax.jit(train_step)
    state, m = step(state, batch, zero_train_metrics())
    bad = batch._replace(image=np.full_like(batch.image, np.nan))
    state, m = step(state, bad, m)
    assert int(m["first_nonfinite_step"]) == 1


def test_eval_ignores_padding_and_counts_all_numbers():
    state = _state()
    batch = _batch(8)
    padded = sampler.make_batch(
        np.concatenate([batch.image, batch.image[:2]]),
        np.concatenate([batch.digit, batch.digit[:2]]),
        np.concatenate([np.argmax(batch.number, 1), np.argmax(batch.number, 1)[:2]]),
        mask=np.array([1] * 8 + [0, 0], np.float32))
    step = jax.jit(eval_step)  # eagerly, each op compiled apart took ~15 s a call
    a, b = step(state, batch), step(state, padded)
    assert float(a["count"]) == float(b["count"]) == 8  # integer sums: exact in float32
    # Exactly, whatever the padding holds: with the same shapes it is the same program,
    # each row computes the same bits whatever the other rows hold, and a masked row
    # adds an exact 0. (Comparing with the unpadded batch `a` would compare two
    # programs: another batch size may sum the convolutions in another order.)
    other = padded._replace(image=np.concatenate([batch.image, -batch.image[:2]]),
                            digit=np.concatenate([batch.digit, (batch.digit[:2] + 1) % 10]))
    c = step(state, other)
    for k in b:
        np.testing.assert_array_equal(b[k], c[k], err_msg=k)
    assert 0 <= float(a["exhaustive_sum_correct"]) <= 80



def test_label_smoothing_spreads_mass_only_over_allowed_classes():
    from mnist_plus.training.step import losses, smoothed_losses
    batch = _batch(8)
    rng = np.random.default_rng(1)
    digit_logits = jnp.asarray(rng.normal(size=(8, 10)), jnp.float32)
    sum_logits = jnp.asarray(rng.normal(size=(8, 19)), jnp.float32)
    # 0: exactly the plain cross-entropies.
    for got, want in zip(smoothed_losses(digit_logits, sum_logits, batch, 0.0),
                         losses(digit_logits, sum_logits, batch)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # The smoothed sum target, read off the loss's gradient (softmax - target): an
    # impossible sum has target 0, every possible wrong one 0.1 / 10, the true one 0.91.
    grad = jax.grad(lambda s: jnp.sum(smoothed_losses(digit_logits, s, batch, 0.1)[1]))(sum_logits)
    target = np.asarray(jax.nn.softmax(sum_logits) - grad)
    numbers = np.argmax(batch.number, -1)
    for i in range(8):
        possible = np.zeros(19, bool)
        possible[numbers[i]:numbers[i] + 10] = True
        np.testing.assert_allclose(target[i, ~possible], 0, atol=1e-6)
        want = np.where(np.arange(19) == batch.sum[i], 0.9 + 0.01, 0.01)[possible]
        np.testing.assert_allclose(target[i, possible], want, atol=1e-6)


def test_smoothing_changes_the_update_but_not_what_the_metrics_report():
    batch = _batch(32)
    (p, pm), (s, sm) = (jax.jit(make_train_step(ls))(_state(), batch, zero_train_metrics())
                        for ls in (0.0, 0.1))
    for k in ("loss", "digit_loss", "sum_loss", "digit_correct"):  # same forward, plain CE
        np.testing.assert_allclose(sm[k], pm[k], rtol=1e-6)
    gaps = [float(jnp.max(jnp.abs(a - b))) for a, b in
            zip(jax.tree_util.tree_leaves(p.params), jax.tree_util.tree_leaves(s.params))]
    assert max(gaps) > 1e-4
