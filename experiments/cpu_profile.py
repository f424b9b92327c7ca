"""Where a training step's time goes on this backend, and what XLA CPU settings change.

    python -m experiments.cpu_profile [--width W] [--batch-size B]

Prints (1) the step split into forward, backward and optimizer update, (2) each
conv layer's forward and forward+backward time, both as XLA's convolution and as
an im2col matmul, (3) the host cost of building a batch, and (4) the step time
under alternative XLA CPU flags (each in a fresh subprocess, since flags are read
at start-up). Figures are medians of repeated timings after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from mnist_plus.data import sampler
    from mnist_plus.model import MnistPlusNet

# The repository root: the flag runs start `python -m experiments.cpu_profile` from there.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG_SETS = {
    "default": "",
    "no Eigen multithreading": "--xla_cpu_multi_thread_eigen=false",
    "legacy (non-thunk) runtime": "--xla_cpu_use_thunk_runtime=false",
}


def _median_ms(fn, *args, repeats: int = 5, inner: int = 10) -> float:
    from mnist_plus.tools.benchmark import median_seconds

    return median_seconds(lambda: fn(*args), repeats=repeats, inner=inner) * 1e3


def step_ms(width: int, batch_size: int) -> dict[str, float]:
    """Full train step, and its forward / gradient parts, in ms."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax

    from mnist_plus.tools.benchmark import synthetic_batch
    from mnist_plus.config import Config
    from mnist_plus.model import build_model
    from mnist_plus.training.state import init_state
    from mnist_plus.training.step import train_step, zero_train_metrics

    net = build_model(dataclasses.replace(Config(), width=width))
    state = init_state(net, optax.adamw(1e-3), jax.random.key(0))
    batch = jax.device_put(synthetic_batch(batch_size))
    variables = state.variables

    def loss(params, batch):
        (d, s), _ = net.apply({"params": params, "batch_stats": state.batch_stats}, batch.image,
                              batch.number, train=True, mutable=["batch_stats"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(d, batch.digit)
                        + optax.softmax_cross_entropy_with_integer_labels(s, batch.sum))

    forward = jax.jit(lambda v, b: net.apply(v, b.image, b.number, train=True,
                                             mutable=["batch_stats"]))
    grad = jax.jit(jax.grad(loss))
    step = jax.jit(train_step)
    metrics = zero_train_metrics()
    return {"forward": _median_ms(forward, variables, batch),
            "forward+backward": _median_ms(grad, state.params, batch),
            "train step": _median_ms(step, state, batch, metrics)}


class ConvSpec(NamedTuple):
    """One conv of the digit net, as profiling needs it."""

    side: int       # input height = width
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: str    # 'VALID' or 'SAME'

    @property
    def out_side(self) -> int:
        if self.padding == "SAME":
            return -(-self.side // self.stride)
        return (self.side - self.kernel) // self.stride + 1


def conv_specs(model: MnistPlusNet) -> list[ConvSpec]:
    """Every conv of `model`'s digit net in order, read off a shape-only trace (so each
    conv is timed with the stride and padding the model gives it)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from mnist_plus.task import NUM_NUMBERS

    image = jnp.zeros((1, 28, 28, 1), jnp.float32)
    number = jnp.zeros((1, NUM_NUMBERS), jnp.float32)
    specs: list[ConvSpec] = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
            conv = context.module
            stride = conv.strides if isinstance(conv.strides, int) else (conv.strides or (1,))[0]
            specs.append(ConvSpec(args[0].shape[1], args[0].shape[-1], conv.features,
                                  conv.kernel_size[0], stride, str(conv.padding)))
        return next_fun(*args, **kwargs)

    def init(key):
        with nn.intercept_methods(record):
            return model.init(key, image, number, train=False)

    jax.eval_shape(init, jax.random.key(0))
    return specs


def xla_conv(x, w, spec):
    """`spec`'s conv (a `ConvSpec`) as XLA's convolution, as `nn.Conv` runs it."""
    import jax

    return jax.lax.conv_general_dilated(x, w, (spec.stride, spec.stride), spec.padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def im2col_conv(x, w, spec):
    """The same conv as one matmul over the k*k shifted (strided) copies of the input."""
    import jax.numpy as jnp

    k, s, out = spec.kernel, spec.stride, spec.out_side
    if spec.padding == "SAME":  # XLA's SAME: the odd pixel of padding goes after
        total = max((out - 1) * s + k - x.shape[1], 0)
        edge = (total // 2, total - total // 2)
        x = jnp.pad(x, ((0, 0), edge, edge, (0, 0)))
    span = s * (out - 1) + 1
    patches = jnp.concatenate([x[:, i:i + span:s, j:j + span:s, :] for i in range(k)
                               for j in range(k)], -1)
    return patches @ w.reshape(-1, w.shape[-1])


def conv_layers(width: int, batch_size: int) -> list[dict]:
    """Each conv of DigitNet (with its stride and padding) timed as XLA's convolution and
    as im2col + matmul. The backward pass differentiates the input too, except for the
    first conv, whose input is the image (training never needs its gradient)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from mnist_plus.config import Config
    from mnist_plus.model import build_model

    rows = []
    specs = conv_specs(build_model(dataclasses.replace(Config(), width=width)))
    for index, spec in enumerate(specs):
        k, s, out = spec.kernel, spec.stride, spec.out_side
        x = jnp.ones((batch_size, spec.side, spec.side, spec.cin))
        w = jnp.full((k, k, spec.cin, spec.cout), 0.1)
        same = ", same" if spec.padding == "SAME" and k > 1 else ""
        row = {"layer": f"{spec.side}x{spec.side}x{spec.cin} -> {out}x{out}x{spec.cout} "
                        f"({k}x{k}/{s}{same})",
               "MFLOP": 2 * batch_size * out ** 2 * k * k * spec.cin * spec.cout / 1e6}
        argnums = (1,) if index == 0 else (0, 1)
        for name, conv in (("xla conv", xla_conv), ("im2col", im2col_conv)):
            def f(x, w, conv=conv, spec=spec):
                return conv(x, w, spec)
            both = jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2), argnums=argnums))
            row[f"{name} fwd ms"] = _median_ms(jax.jit(f), x, w)
            row[f"{name} fwd+bwd ms"] = _median_ms(both, x, w)
        rows.append(row)
    return rows


def batch_build_ms(batch_size: int, augment: "sampler.Augment") -> float:
    import numpy as np

    from mnist_plus.data import sampler

    rng = np.random.default_rng(0)
    images = sampler.normalise(rng.integers(0, 256, (60000, 28, 28, 1)).astype(np.uint8))
    labels = rng.integers(0, 10, 60000)
    batches = sampler.train_batches(images, labels, 0, 0, batch_size, augment=augment)
    next(batches)
    start = time.perf_counter()
    for _ in range(100):
        next(batches)
    return (time.perf_counter() - start) / 100 * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=None, help="model width (default: Config's)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--step-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from mnist_plus.data import sampler
    from mnist_plus.config import Config
    from mnist_plus.data.sampler import augment_for as augment_of

    width = args.width or Config().width
    if args.step_only:
        print(json.dumps(step_ms(width, args.batch_size)))
        return
    import jax

    print(f"backend {jax.default_backend()}, {os.cpu_count()} CPUs, width {width}, "
          f"batch {args.batch_size}")
    print("\n## train step")
    for k, v in step_ms(width, args.batch_size).items():
        print(f"{k:>18}: {v:7.2f} ms")
    print("\n## conv layers (one batch)")
    rows = conv_layers(width, args.batch_size)
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    print("\n## host: building one batch (sampler)")
    for augment in (sampler.NO_AUGMENT, sampler.Augment(shift=1), augment_of(Config())):
        print(f"{augment}: {batch_build_ms(args.batch_size, augment):.3f} ms")
    print("\n## XLA CPU flags (train step ms, fresh process each)")
    for name, flags in FLAG_SETS.items():
        env = {**os.environ, "XLA_FLAGS": flags}
        out = subprocess.run([sys.executable, "-m", "experiments.cpu_profile", "--width",
                              str(width), "--batch-size", str(args.batch_size), "--step-only"],
                             env=env, cwd=REPO, text=True, capture_output=True)
        figure = json.loads(out.stdout)["train step"] if out.returncode == 0 else float("nan")
        print(f"{name:>26}: {figure:7.2f} ms")


if __name__ == "__main__":
    main()
