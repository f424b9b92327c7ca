import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_plus.model import MnistPlusNet, param_count

EPS32 = float(np.finfo(np.float32).eps)


@pytest.mark.parametrize("adder_input", ["logits", "probs", "features"])
def test_heads_have_the_right_shapes(adder_input):
    net = MnistPlusNet(width=4, adder_input=adder_input)
    image = jnp.zeros((3, 28, 28, 1))
    number = jax.nn.one_hot(jnp.array([0, 5, 9]), 10)
    variables = net.init(jax.random.key(0), image, number)
    digit, total = net.apply(variables, image, number)
    assert digit.shape == (3, 10) and total.shape == (3, 19)
    assert param_count(variables["params"]) > 0


def test_adder_input_is_the_20_wide_concatenation():
    net = MnistPlusNet(width=4)
    variables = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 10)))
    first = variables["params"]["adder"]["Dense_0"]["kernel"]
    assert first.shape[0] == 20


def test_exhaustive_logits_match_one_number_at_a_time():
    net = MnistPlusNet(width=4)
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(2, 28, 28, 1)), jnp.float32)
    variables = net.init(jax.random.key(1), image, jnp.zeros((2, 10)))
    digit_all, sums_all = net.apply(variables, image, method=MnistPlusNet.exhaustive_sum_logits)
    assert sums_all.shape == (2, 10, 19)
    for n in range(10):
        digit, total = net.apply(variables, image, jax.nn.one_hot(jnp.array([n, n]), 10))
        # The adder runs on [2, 10, 20] here and [2, 20] there: other matmul shapes may
        # sum in another order. Each of its 3 Dense layers sums <= 64 products, so a
        # logit may move by <= 64 eps of its products' magnitudes per layer (Higham),
        # all O(1) at init: 3 * 64 eps absolute.
        np.testing.assert_allclose(total, sums_all[:, n], rtol=0, atol=3 * 64 * EPS32)
        # The conv net runs the same ops on the same [2, 28, 28, 1] images: same bits.
        np.testing.assert_array_equal(digit, digit_all)


def test_unknown_adder_input_is_refused():
    with pytest.raises(ValueError, match="adder_input"):
        MnistPlusNet(adder_input="pixels").init(
            jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 10)))
