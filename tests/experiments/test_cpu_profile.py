"""experiments/cpu_profile.py times each conv as the model has it: stride and padding."""

import jax
import numpy as np
import pytest

from experiments import cpu_profile
from mnist_plus.model import MnistPlusNet


def test_conv_specs_chain_the_digit_nets_sides():
    """Each conv's output side is the next one's input (the conv stem's pool halves it):
    with the stride of the patch stem and the padding of the 'same' blocks right."""
    for model, pools in ((MnistPlusNet(), {}), (MnistPlusNet(late_width=32, extra_convs=4), {}),
                         (MnistPlusNet(stem="conv", extra_convs=0), {0})):
        specs = cpu_profile.conv_specs(model)
        for i, (a, b) in enumerate(zip(specs, specs[1:])):
            assert (a.out_side // 2 if i in pools else a.out_side) == b.side, (a, b)
        assert specs[-1].out_side == 5  # the 1x1 head over 5x5 features
    stem = cpu_profile.conv_specs(MnistPlusNet())[0]
    assert (stem.kernel, stem.stride, stem.out_side) == (4, 2, 13)


@pytest.mark.parametrize("model", [MnistPlusNet(), MnistPlusNet(stem="conv", extra_convs=2)])
def test_im2col_is_the_same_conv_as_xla(model):
    """They agree within the float32 bound for two orderings of one sum of n products:
    |a - b| <= 2 n eps sum|x_i w_i| at each output, the sum of magnitudes being the same
    conv of |x| and |w|. So the im2col timings are of the same computation."""
    eps = np.finfo(np.float32).eps
    for i, spec in enumerate(cpu_profile.conv_specs(model)):
        kx, kw = jax.random.split(jax.random.key(i))
        x = jax.random.normal(kx, (3, spec.side, spec.side, spec.cin))
        w = jax.random.normal(kw, (spec.kernel, spec.kernel, spec.cin, spec.cout))
        a = np.asarray(cpu_profile.xla_conv(x, w, spec))
        b = np.asarray(cpu_profile.im2col_conv(x, w, spec))
        assert a.shape == b.shape == (3, spec.out_side, spec.out_side, spec.cout)
        magnitude = np.asarray(cpu_profile.xla_conv(abs(x), abs(w), spec), np.float64)
        n = spec.kernel ** 2 * spec.cin
        assert np.all(np.abs(a - b) <= 2 * n * eps * magnitude * 1.01), spec
