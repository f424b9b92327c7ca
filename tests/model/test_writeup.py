"""`--preset writeup` is the write-up's model and training as experiments/pytorch_reference.py
builds them in PyTorch: the same layers, initial-weight law, forward pass and SGD step."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_plus import configs
from mnist_plus.model import build_model, param_count
from mnist_plus.training.state import create_state, make_optimizer

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed; pip install -e '.[pytorch]' to compare with it")

WRITEUP = configs.get("writeup")
EPS32 = float(np.finfo(np.float32).eps)


def _params():
    return create_state(WRITEUP, steps_per_epoch=1).params


def _torch_net_with(params):
    """The PyTorch reference's Net with the Flax parameters copied in (HWIO -> OIHW)."""
    import torch
    from experiments.pytorch_reference import Net

    net = Net().double()
    convs = [m for m in net.convs.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.fc.modules() if isinstance(m, torch.nn.Linear)]
    flax_convs = [params["digit_net"][f"Conv_{i}"] for i in range(len(convs))]
    flax_dense = [params["adder"][f"Dense_{i}"] for i in range(len(linears))]
    with torch.no_grad():
        for m, p in zip(convs, flax_convs):
            m.weight.copy_(torch.from_numpy(np.asarray(p["kernel"], np.float64)
                                            .transpose(3, 2, 0, 1)))
            m.bias.copy_(torch.from_numpy(np.asarray(p["bias"], np.float64)))
        for m, p in zip(linears, flax_dense):
            m.weight.copy_(torch.from_numpy(np.asarray(p["kernel"], np.float64).T))
            m.bias.copy_(torch.from_numpy(np.asarray(p["bias"], np.float64)))
    return net


def test_writeup_preset_has_the_writeups_16829_parameters_and_no_batchnorm():
    state = create_state(WRITEUP, steps_per_epoch=1)
    assert param_count(state.params) == 16_829
    assert state.batch_stats == {}


@needs_torch
def test_writeup_layers_have_the_pytorch_references_shapes():
    import torch
    from experiments.pytorch_reference import Net

    ours = sorted(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(_params()))
    theirs = sorted(p.numel() for p in Net().parameters())
    assert ours == theirs
    assert sum(theirs) == 16_829 and isinstance(Net().convs[0][0], torch.nn.Conv2d)


def test_initial_weights_follow_pytorchs_uniform_law():
    """PyTorch draws every weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a
    uniform sample of n values reaches past 90% of the bound unless n is tiny."""
    params = _params()
    layers = [params["digit_net"][f"Conv_{i}"] for i in range(6)]
    layers += [params["adder"][f"Dense_{i}"] for i in range(3)]
    for layer in layers:
        kernel = np.asarray(layer["kernel"])
        bound = float(np.prod(kernel.shape[:-1])) ** -0.5
        for values in (kernel, np.asarray(layer["bias"])):
            assert np.all(np.abs(values) <= bound)
        assert np.abs(kernel).max() > 0.9 * bound
        assert np.any(np.asarray(layer["bias"]) != 0)


@needs_torch
def test_forward_pass_equals_the_pytorch_references_with_the_same_weights():
    """Float32 (ours) against float64 (theirs): each of the 9 layers sums at most 144
    products, so rounding moves a logit by at most about 9 * 144 * eps32 times the sum of
    the magnitudes along its path (bounded here by 10x the logits' largest magnitude)."""
    import torch

    params = _params()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 28, 28, 1)).astype(np.float32)
    number = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)]
    digit, total = build_model(WRITEUP).apply({"params": params}, image, number)
    net = _torch_net_with(params)
    with torch.no_grad():
        t_digit, t_total = net(torch.from_numpy(image.transpose(0, 3, 1, 2)).double(),
                               torch.from_numpy(number).double())
    for ours, theirs in ((digit, t_digit), (total, t_total)):
        theirs = theirs.numpy()
        tol = 9 * 144 * EPS32 * 10 * np.abs(theirs).max()
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=tol)


@needs_torch
def test_sgd_update_equals_torch_optim_sgd_with_momentum():
    """Three steps on the same gradients: optax's chain and torch.optim.SGD(lr, momentum,
    weight_decay) compute v = m v + (g + wd p), p -= lr v, in the same order."""
    import torch

    rng = np.random.default_rng(1)
    p0 = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(3)]
    tx = make_optimizer(0.01, 0.001, 0.2, 3, optimizer="sgd", momentum=0.9,
                        schedule="constant")
    p = jnp.asarray(p0, jnp.float32)
    state = tx.init(p)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.SGD([tp], lr=0.01, momentum=0.9, weight_decay=0.001)
    for g in grads:
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, p)
        p = optax.apply_updates(p, updates)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    # float32 against float64 over 3 steps of O(1) values: a few eps32 of |p|
    np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=0,
                               atol=16 * EPS32 * np.abs(p0).max())


def test_constant_schedule_keeps_the_rate_and_one_cycle_changes_it():
    g = jnp.ones(3)
    for schedule, same in (("constant", True), ("one_cycle", False)):
        tx = make_optimizer(0.01, 0.0, 0.2, 100, optimizer="sgd", momentum=0.0,
                            schedule=schedule)
        state = tx.init(g)
        first, state = tx.update(g, state, g)
        for _ in range(30):
            last, state = tx.update(g, state, g)
        assert bool(jnp.allclose(first, last)) is same
        if same:
            np.testing.assert_allclose(np.asarray(first), -0.01, rtol=1e-6)


def test_precise_bn_is_refused_for_the_writeup_net_in_one_line():
    from mnist_plus import config as config_lib
    from mnist_plus.errors import UsageError

    with pytest.raises(UsageError, match="--precise-bn 10000 is invalid: --arch writeup"):
        config_lib.validate(configs.get("writeup", precise_bn=10000))
