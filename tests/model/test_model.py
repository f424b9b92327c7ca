import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.cpu_profile import conv_specs
from mnist_plus.model import MnistPlusNet, ShiftAdder, param_count

EPS32 = float(np.finfo(np.float32).eps)


def _conv_shapes(model):
    """(input side, in channels, out channels, kernel) of each conv of the digit net, read
    by the CPU profile's trace (experiments/cpu_profile.py: only it and these tests need it)."""
    return [spec[:4] for spec in conv_specs(model)]


def _init_shapes(net, *inputs):
    """The variables' shapes, traced without compiling: where a test needs no values,
    this skips initialisation's compile (seconds per model on 2 CPU cores, mostly the
    random number generator of each parameter)."""
    return jax.eval_shape(net.init, jax.random.key(0), *inputs)


@pytest.mark.parametrize("adder_input", ["logits", "probs", "features"])
def test_heads_have_the_right_shapes(adder_input):
    net = MnistPlusNet(width=4, adder_input=adder_input)
    image = jnp.zeros((3, 28, 28, 1))
    number = jax.nn.one_hot(jnp.array([0, 5, 9]), 10)
    variables = _init_shapes(net, image, number)
    digit, total = jax.eval_shape(net.apply, variables, image, number)
    assert digit.shape == (3, 10) and total.shape == (3, 19)
    assert param_count(variables["params"]) > 0


def test_adder_input_is_the_20_wide_concatenation():
    net = MnistPlusNet(width=4)
    variables = _init_shapes(net, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 10)))
    first = variables["params"]["adder"]["Dense_0"]["kernel"]
    assert first.shape[0] == 20


def test_exhaustive_logits_match_one_number_at_a_time():
    net = MnistPlusNet(width=4)
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(2, 28, 28, 1)), jnp.float32)
    variables = net.init(jax.random.key(1), image, jnp.zeros((2, 10)))
    number = jax.nn.one_hot(jnp.array([3, 7]), 10)
    digit_all, total_one, sums_all = net.apply(variables, image, number,
                                               method=MnistPlusNet.heads)
    assert sums_all.shape == (2, 10, 19)
    # `heads`' one-number answer is the plain forward's, the same ops on the same shapes.
    np.testing.assert_array_equal(total_one, net.apply(variables, image, number)[1])
    for n in range(10):
        digit, total = net.apply(variables, image, jax.nn.one_hot(jnp.array([n, n]), 10))
        # The adder runs on [2, 10, 20] here and [2, 20] there: other matmul shapes may
        # sum in another order. Each of its 3 Dense layers sums <= 64 products, so a
        # logit may move by <= 64 eps of its products' magnitudes per layer (Higham),
        # all O(1) at init: 3 * 64 eps absolute.
        np.testing.assert_allclose(total, sums_all[:, n], rtol=0, atol=3 * 64 * EPS32)
        # The conv net runs the same ops on the same [2, 28, 28, 1] images: same bits.
        np.testing.assert_array_equal(digit, digit_all)


def test_digit_head_pool_averages_class_maps_and_conv_weighs_each_position():
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 28, 28, 1)), jnp.float32)
    counts = {}
    for head, kernel_shape in (("pool", (1, 1, 4, 10)), ("conv", (5, 5, 4, 10))):
        net = MnistPlusNet(width=4, digit_head=head, late_width=0)
        variables = _init_shapes(net, image, jnp.zeros((2, 10)))
        assert variables["params"]["digit_net"]["Conv_0"]["kernel"].shape == kernel_shape
        counts[head] = param_count(variables["params"])
        digit, total = jax.eval_shape(net.apply, variables, image, jnp.zeros((2, 10)))
        assert digit.shape == (2, 10) and total.shape == (2, 19)
    assert counts["conv"] - counts["pool"] == (25 - 1) * 4 * 10  # a weight per 5x5 position
    with pytest.raises(ValueError, match="digit_head"):
        _init_shapes(MnistPlusNet(digit_head="dense"), image, jnp.zeros((2, 10)))


def test_stem_width_and_extra_convs_shape_the_digit_net():
    # (input side, in channels, out channels, kernel) of every conv, in order.
    assert _conv_shapes(MnistPlusNet(width=16, stem="conv", stem_width=8, extra_convs=2,
                                     late_width=0)) == [
        (28, 1, 8, 3), (13, 8, 16, 3), (11, 16, 16, 3), (9, 16, 16, 3),
        (7, 16, 16, 3), (7, 16, 16, 3),   # an extra 'same' block keeps the side: 7 -> 7
        (5, 16, 16, 3), (5, 16, 10, 1)]
    assert _conv_shapes(MnistPlusNet(width=16, stem="conv", extra_convs=0, late_width=0)) == [
        (28, 1, 16, 3), (13, 16, 16, 3), (11, 16, 16, 3), (9, 16, 16, 3), (7, 16, 16, 3),
        (5, 16, 10, 1)]
    # The patch stem replaces only the first block: a 4x4 conv, then the same 13x13 body.
    assert _conv_shapes(MnistPlusNet(width=16, stem="patch", extra_convs=0, late_width=0)) == [
        (28, 1, 16, 4), (13, 16, 16, 3), (11, 16, 16, 3), (9, 16, 16, 3), (7, 16, 16, 3),
        (5, 16, 10, 1)]
    # The default: the patch stem, a 'same' block after the 7x7 and 5x5 blocks, and the
    # 7->5 block and its 'same' block 32 wide.
    from mnist_plus.config import Config
    from mnist_plus.model import build_model
    assert _conv_shapes(build_model(Config())) == _conv_shapes(MnistPlusNet()) == [
        (28, 1, 16, 4), (13, 16, 16, 3), (11, 16, 16, 3), (9, 16, 16, 3), (7, 16, 16, 3),
        (7, 16, 32, 3), (5, 32, 32, 3), (5, 32, 10, 1)]
    with pytest.raises(ValueError, match="stem"):
        _init_shapes(MnistPlusNet(stem="pool"), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 10)))


def test_late_width_widens_only_the_5x5_blocks():
    assert _conv_shapes(MnistPlusNet(late_width=0))[-3:] == [
        (7, 16, 16, 3), (5, 16, 16, 3), (5, 16, 10, 1)]
    assert _conv_shapes(MnistPlusNet(late_width=32)) == [
        (28, 1, 16, 4), (13, 16, 16, 3), (11, 16, 16, 3), (9, 16, 16, 3), (7, 16, 16, 3),
        (7, 16, 32, 3), (5, 32, 32, 3), (5, 32, 10, 1)]
    assert _conv_shapes(MnistPlusNet(late_width=32, extra_convs=0))[-3:] == [
        (9, 16, 16, 3), (7, 16, 32, 3), (5, 32, 10, 1)]


def test_patch_stem_gives_each_cell_of_the_13x13_map_one_4x4_patch_at_stride_2():
    """The geometry the conv stem has (a 3x3 conv then a 2x2 pool: cell i sees rows
    2i..2i+3), so the body after it is unchanged: a pixel reaches exactly the cells whose
    patch holds it, and every pixel reaches some cell."""
    from mnist_plus.model import ConvBlock

    block = ConvBlock(8, kernel=4, stride=2)
    image = jnp.zeros((1, 28, 28, 1))
    variables = block.init(jax.random.key(0), image, False)
    base = np.asarray(block.apply(variables, image, False))
    assert base.shape == (1, 13, 13, 8)

    def cells(pixel: int) -> set[int]:
        return {i for i in range(13) if 2 * i <= pixel <= 2 * i + 3}

    for r, c in [(0, 0), (2, 2), (13, 6), (27, 27), (26, 1)]:
        changed = np.zeros((13, 13), bool)
        for sign in (1.0, -1.0):  # one of the two passes the ReLU in some channel
            out = np.asarray(block.apply(variables, image.at[0, r, c, 0].set(sign), False))
            changed |= np.any(out[0] != base[0], axis=-1)
        assert {tuple(ij) for ij in np.argwhere(changed)} == {
            (i, j) for i in cells(r) for j in cells(c)}
    assert all(cells(p) for p in range(28))


def test_unknown_adder_input_is_refused():
    with pytest.raises(ValueError, match="adder_input"):
        _init_shapes(MnistPlusNet(adder_input="pixels"), jnp.zeros((1, 28, 28, 1)),
                     jnp.zeros((1, 10)))


# ---- The shift adder (--adder shift): addition built into the sum head.

def _shift_net_and_variables(batch: int = 4):
    net = MnistPlusNet(width=4, adder_kind="shift")
    image = jnp.asarray(np.random.default_rng(3).normal(size=(batch, 28, 28, 1)), jnp.float32)
    variables = net.init(jax.random.key(2), image, jnp.zeros((batch, 10)))
    return net, image, variables


def test_shift_adder_sum_is_argmax_digit_plus_number_for_every_number():
    # Exact by construction: the sum logits in range are bit copies of the digit logits and
    # the impossible sums lie below all of them, so no tolerance is involved.
    net, image, variables = _shift_net_and_variables()
    digit_all, _, sums_all = net.apply(variables, image, jnp.zeros((4, 10)),
                                       method=MnistPlusNet.heads)
    assert digit_all.shape == (4, 10) and sums_all.shape == (4, 10, 19)
    digit = np.argmax(digit_all, -1)
    for n in range(10):
        np.testing.assert_array_equal(np.argmax(sums_all[:, n], -1), digit + n)
        _, total = net.apply(variables, image, jax.nn.one_hot(jnp.full((4,), n), 10))
        assert total.shape == (4, 19)
        np.testing.assert_array_equal(total, sums_all[:, n])  # same gather, same bits
        np.testing.assert_array_equal(total[:, n:n + 10], digit_all)


def test_shift_adder_keeps_near_ties_that_log_softmax_would_merge():
    # Logits 1e-8 apart near 0 (a normal float32, so no flush to zero): subtracting the
    # logsumexp (about 2.3, float32 spacing 2.4e-7 there) rounds both to the same value, so a
    # head built on log_softmax would answer the first of the two.
    digit = jnp.zeros((1, 10)).at[0, 7].set(1e-8)
    assert int(jnp.argmax(digit)) == 7
    assert int(jnp.argmax(jax.nn.log_softmax(digit))) == 0  # the hazard is real here
    number = jax.nn.one_hot(jnp.array([5]), 10)
    total = ShiftAdder().apply({}, digit, number)
    assert int(jnp.argmax(total)) == 12


def test_shift_adder_probabilities_are_the_digit_probabilities_moved_by_the_number():
    rng = np.random.default_rng(0)
    digit = jnp.asarray(rng.normal(scale=5.0, size=(6, 10)), jnp.float32)
    numbers = np.array([0, 1, 4, 5, 8, 9])
    total = ShiftAdder().apply({}, digit, jax.nn.one_hot(numbers, 10))
    p_sum, p_digit = np.asarray(jax.nn.softmax(total)), np.asarray(jax.nn.softmax(digit))
    for i, n in enumerate(numbers):
        # Same exponentials (same max subtracted); only the order of the sum of 10 positive
        # terms may differ: relative error at most about 10 * 2**-24 each way, 1e-5 covers it.
        np.testing.assert_allclose(p_sum[i, n:n + 10], p_digit[i], rtol=1e-5)
        outside = np.r_[p_sum[i, :n], p_sum[i, n + 10:]]
        assert np.all(outside == 0.0)  # exp(-1e4) underflows to exactly 0 in float32


def test_shift_adder_loss_is_finite_with_sane_gradients_even_for_extreme_logits():
    for scale in (1.0, 1e3):
        digit = scale * jnp.asarray(np.random.default_rng(1).normal(size=(8, 10)), jnp.float32)
        digits = jnp.argmin(digit, -1)   # the least likely digit: the largest loss
        numbers = jnp.arange(8) % 10
        def loss(d):
            total = ShiftAdder().apply({}, d, jax.nn.one_hot(numbers, 10))
            return optax.softmax_cross_entropy_with_integer_labels(total, digits + numbers).sum()
        value, grad = jax.value_and_grad(loss)(digit)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        # d(loss)/d(digit logits) of the shifted head is the digit head's own: p - onehot.
        expected = jax.nn.softmax(digit) - jax.nn.one_hot(digits, 10)
        np.testing.assert_allclose(grad, expected, atol=1e-5)  # probabilities: see above


def test_shift_adder_has_no_parameters():
    shift = _init_shapes(MnistPlusNet(width=4, adder_kind="shift"), jnp.zeros((1, 28, 28, 1)),
                         jnp.zeros((1, 10)))
    mlp = _init_shapes(MnistPlusNet(width=4), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 10)))
    assert "adder" not in shift["params"]
    assert param_count(shift["params"]) == (param_count(mlp["params"])
                                            - param_count(mlp["params"]["adder"]))


def test_adder_flag_takes_only_known_heads_and_shift_only_with_logits():
    from mnist_plus import config as config_lib
    from mnist_plus.cli import config_from_args, config_parser
    from mnist_plus.errors import UsageError

    parser = config_parser("mnist_plus.train", "test")
    assert config_from_args(parser.parse_args(["--adder", "shift"])).adder == "shift"
    assert config_from_args(parser.parse_args([])).adder == "mlp"
    with pytest.raises(UsageError, match="argument --adder: invalid choice: 'sum'"):
        parser.parse_args(["--adder", "sum"])
    with pytest.raises(UsageError, match="--adder-input 'probs' is invalid: --adder shift"):
        config_lib.validate(config_lib.Config(adder="shift", adder_input="probs"))
    with pytest.raises(ValueError, match="adder_kind"):
        _init_shapes(MnistPlusNet(adder_kind="sum"), jnp.zeros((1, 28, 28, 1)),
                     jnp.zeros((1, 10)))


@pytest.mark.slow
def test_shift_adder_trains_on_tiny_data_and_resume_refuses_another_adder(prepared_tiny,
                                                                         tmp_path):
    from mnist_plus.errors import UsageError
    from mnist_plus.trainer import train_and_evaluate
    from tests.helpers import tiny_config

    config = tiny_config(prepared_tiny, adder="shift")
    summary = train_and_evaluate(config, str(tmp_path), log=lambda s: None)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert summary["epochs"] == len(rows) == 3
    assert all(np.isfinite(r[k]) for r in rows for k in ("train_loss", "test_loss"))
    # 24 steps barely move the tiny net (about 10-20% accuracy) but the loss does fall.
    assert rows[0]["train_loss"] > rows[1]["train_loss"] > rows[2]["train_loss"]
    for r in rows:
        # A sum is right exactly when the digit is, with any number: equal counts, no tolerance.
        assert r["test_sum_accuracy"] == r["test_digit_accuracy"]
        assert r["test_exhaustive_sum_accuracy"] == r["test_digit_accuracy"]
        # Same cross-entropy up to the order of a 10-term logsumexp: float32 rounding only.
        assert r["test_sum_loss"] == pytest.approx(r["test_digit_loss"], rel=1e-5)
    with pytest.raises(UsageError, match="adder: 'shift' -> 'mlp'"):
        train_and_evaluate(tiny_config(prepared_tiny, adder="mlp"),
                           str(tmp_path), log=lambda s: None)
