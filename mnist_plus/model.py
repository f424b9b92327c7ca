"""The two-input, two-head network: image -> digit logits; (digit logits, number) -> sum.

Shape of the write-up's model: conv/pool blocks bring the image to 1x1x10 (the
digit head), those 10 are concatenated with the 10-wide one-hot number into 20,
and fully connected layers map the 20 to 19 sum classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_plus.config import ADDER_INPUTS, ADDERS, ARCHS, DIGIT_HEADS, STEMS
from mnist_plus.task import NUM_NUMBERS, NUM_SUMS

BN_MOMENTUM = 0.9  # of BatchNorm's running averages (batch_stats.py recomputes them)
SHIFT_MARGIN = 1e4  # how far below the smallest digit logit ShiftAdder puts impossible sums


class ConvBlock(nn.Module):
    """Conv -> BatchNorm -> ReLU: BatchNorm makes a small net train fast and far."""

    features: int
    kernel: int = 3
    padding: str = "VALID"
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                    padding=self.padding, use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)(x)
        return nn.relu(x)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool (stride 2, odd edge dropped) as a reshape and a max.

    Same values as `nn.max_pool`, but its gradient is an elementwise select where
    `nn.max_pool`'s is XLA's select-and-scatter, which is slow on CPU (measured with
    `python -m experiments.cpu_profile`).
    """
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# Normalised black and white (sampler.normalise of 0 and 255).
CLEAN_LOW = (0.0 - 0.1307) / 0.3081
CLEAN_HIGH = (1.0 - 0.1307) / 0.3081
MIN_SPAN = 0.05  # normalised units (about 4 grey levels): a blank image is not amplified more


def stretch_range(image: jax.Array) -> jax.Array:
    """Each normalised image [B,H,W,C] mapped linearly so its darkest pixel is black and its
    brightest white (`Config.input_stretch`): a lifted background, a grey field's floor
    and lowered contrast are undone; clean MNIST (0 to 255) is unchanged up to rounding."""
    low = jnp.min(image, axis=(1, 2, 3), keepdims=True)
    high = jnp.max(image, axis=(1, 2, 3), keepdims=True)
    scale = (CLEAN_HIGH - CLEAN_LOW) / jnp.maximum(high - low, MIN_SPAN)
    return CLEAN_LOW + (image - low) * scale


class DigitNet(nn.Module):
    """28x28x1 -> 1x1x10 digit logits, plus pooled features for the adder experiment.

    Pooling right after the first conv keeps every later conv at 13x13 or less:
    on a CPU, XLA's convolutions dominate the step and cost in proportion to the
    pixels they visit (measured with `python -m experiments.cpu_profile`). The 'patch'
    stem reaches the same 13x13 grid, each cell seeing the same 4x4 pixels, with one 4x4
    stride-2 conv: no 26x26 activations, whose conv (one input channel), BatchNorm and
    pool cost far more than their FLOPs on XLA:CPU.
    """

    width: int = 16
    head: str = "pool"  # 5x5xwidth -> 1x1x10: see DIGIT_HEADS and Config.digit_head
    stem_width: int = 0  # channels of the stem's conv (0: width)
    extra_convs: int = 2  # 'same' blocks after the last N of the 11, 9, 7, 5 blocks
    stem: str = "patch"  # how 28x28 becomes 13x13: see STEMS and Config.stem
    late_width: int = 32  # channels of the 5x5 blocks (0: width)

    @nn.compact
    def __call__(self, image: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        stem_width = self.stem_width or self.width
        if self.stem == "patch":                     # 28x28 -> 13x13 in one block
            x = ConvBlock(stem_width, kernel=4, stride=2)(image, train)
        else:
            x = ConvBlock(stem_width)(image, train)  # 26x26
            x = max_pool_2x2(x)                      # 13x13
        for i in range(4):
            width = (self.late_width or self.width) if i == 3 else self.width
            x = ConvBlock(width)(x, train)           # 11, 9, 7, 5
            if i >= 4 - self.extra_convs:            # keeps the side: depth where it is cheap
                x = ConvBlock(width, padding="SAME")(x, train)
        features = jnp.mean(x, axis=(1, 2))          # [B, late_width or width]
        if self.head == "conv":
            x = nn.Conv(NUM_NUMBERS, x.shape[1:3], padding="VALID")(x)  # 1x1x10
        else:
            x = nn.Conv(NUM_NUMBERS, (1, 1))(x)      # 5x5x10
            x = nn.avg_pool(x, x.shape[1:3])         # 1x1x10
        return x.reshape(x.shape[0], NUM_NUMBERS), features


def torch_init(fan_in: int) -> dict[str, Any]:
    """PyTorch's default initialisers of Conv2d and Linear, as Flax initialisers.

    PyTorch draws weights with kaiming_uniform_(a=sqrt(5)), i.e. U(-b, b) with
    b = sqrt(1 / fan_in), and biases from U(-b, b) too; Flax's defaults are LeCun normal
    weights (variance 1 / fan_in: sqrt(3) times PyTorch's spread) and zero biases. The
    write-up's net has no BatchNorm, so the scale of the initial weights shapes training.
    """
    bound = fan_in ** -0.5

    def bias(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return {"kernel_init": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
            "bias_init": bias}


class OneChannelConv3x3(nn.Module):
    """A 3x3 'valid' conv (with bias) of a one-channel image, as one matmul of its 3x3
    patches: the same sums as `nn.Conv` (to float rounding) and parameters of the same
    names and shapes. XLA:CPU's convolution kernel is slow for one input channel: forward
    and filter gradient together took 9-12 ms against 4-5 ms at batch 128 (2 AVX2 cores)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = torch_init(9)
        kernel = self.param("kernel", init["kernel_init"], (3, 3, 1, self.features))
        bias = self.param("bias", init["bias_init"], (self.features,))
        b, h, w, _ = x.shape
        patches = jnp.concatenate([x[:, i:i + h - 2, j:j + w - 2, :]
                                   for i in range(3) for j in range(3)], axis=-1)
        return patches @ kernel.reshape(9, self.features) + bias


class WriteupDigitNet(nn.Module):
    """The write-up's image path (experiments/pytorch_reference.py's `Net.convs`): 3x3
    conv + ReLU blocks, 28 -> 26 -> 24, pool 12, -> 10 -> 8, pool 4, -> 2, then a 2x2
    conv to 1x1x10. No BatchNorm; PyTorch's initialisers (`torch_init`)."""

    width: int = 16

    @nn.compact
    def __call__(self, image: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        del train  # no BatchNorm, no dropout: the same in both modes

        def conv(x: jax.Array, features: int, kernel: int, i: int) -> jax.Array:
            return nn.Conv(features, (kernel, kernel), padding="VALID", name=f"Conv_{i}",
                           **torch_init(kernel * kernel * x.shape[-1]))(x)

        x = OneChannelConv3x3(self.width, name="Conv_0")(image)
        for i in range(5):
            x = nn.relu(conv(x, self.width, 3, i) if i else x)
            if i in (1, 3):
                x = max_pool_2x2(x)
        features = jnp.mean(x, axis=(1, 2))          # [B, width]
        x = conv(x, NUM_NUMBERS, 2, 5)               # 1x1x10
        return x.reshape(x.shape[0], NUM_NUMBERS), features


class Adder(nn.Module):
    """Fully connected layers from [digit representation, one-hot number] to 19 sums."""

    hidden: int = 64
    torch_init: bool = False  # PyTorch's initialisers (the write-up's net), else Flax's

    @nn.compact
    def __call__(self, digit: jax.Array, number: jax.Array) -> jax.Array:
        def dense(x: jax.Array, features: int) -> jax.Array:
            return nn.Dense(features, **(torch_init(x.shape[-1]) if self.torch_init else {}))(x)

        x = jnp.concatenate([digit, number], axis=-1)
        x = nn.relu(dense(x, self.hidden))
        x = nn.relu(dense(x, self.hidden))
        return dense(x, NUM_SUMS)


class ShiftAdder(nn.Module):
    """Addition built in: sum logits[s] = digit logits[s - n], so p(sum | image, n) is
    p(digit | image) moved up by n and the answer is a function of digit and number alone.

    The in-range entries are the digit logits themselves (a gather copies bits), so
    argmax(sum) == argmax(digit) + n exactly. Softmax ignores a per-row shift, so these
    give the same distribution as log_softmax(digit)[s - n] without its rounding, which
    could tie two nearly equal logits. The 9 impossible sums get `min(logits) -
    SHIFT_MARGIN`: finite (no inf - inf in a loss or metric), below every real entry
    while |logits| < 1e11 (float32 spacing there is under the margin; trained logits
    are tens), and exp(-1e4) is 0 in float32, so they carry no probability and no gradient.
    No parameters. The number is read as the argmax of its one-hot.
    """

    @nn.compact
    def __call__(self, digit: jax.Array, number: jax.Array) -> jax.Array:
        n = jnp.argmax(number, axis=-1)[..., None]                   # [..., 1]
        source = jnp.arange(NUM_SUMS) - n                             # [..., 19]: s - n
        valid = (source >= 0) & (source < NUM_NUMBERS)
        copied = jnp.take_along_axis(digit, jnp.clip(source, 0, NUM_NUMBERS - 1), axis=-1)
        fill = jax.lax.stop_gradient(jnp.min(digit, axis=-1, keepdims=True)) - SHIFT_MARGIN
        return jnp.where(valid, copied, fill)


class MnistPlusNet(nn.Module):
    """Returns (digit_logits [B,10], sum_logits [B,19])."""

    width: int = 16
    adder_hidden: int = 64
    adder_input: str = "logits"  # what the adder sees of the image: see ADDER_INPUTS
    adder_kind: str = "mlp"      # the sum head (Config.adder): see ADDERS
    digit_head: str = "pool"     # how 5x5 features become 10 digit logits: see DIGIT_HEADS
    stem_width: int = 0          # channels of the stem's conv; 0: width
    extra_convs: int = 2         # extra 'same' conv blocks at the smallest sides (0..4)
    stem: str = "patch"          # how 28x28 becomes 13x13: see STEMS and Config.stem
    late_width: int = 32         # channels of the 5x5 blocks; 0: width
    arch: str = "mnist_plus"     # or "writeup", the write-up's net: see ARCHS, Config.arch
    input_stretch: bool = False  # stretch each image's range to clean MNIST's first

    def setup(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, not {self.arch!r}")
        if self.adder_input not in ADDER_INPUTS:
            raise ValueError(f"adder_input must be one of {ADDER_INPUTS}, not {self.adder_input!r}")
        if self.adder_kind not in ADDERS:
            raise ValueError(f"adder_kind must be one of {ADDERS}, not {self.adder_kind!r}")
        if self.adder_kind == "shift" and self.adder_input != "logits":
            raise ValueError(f"the shift adder reads digit logits, not {self.adder_input!r}")
        if self.digit_head not in DIGIT_HEADS:
            raise ValueError(f"digit_head must be one of {DIGIT_HEADS}, not {self.digit_head!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, not {self.stem!r}")
        writeup = self.arch == "writeup"
        self.digit_net = (WriteupDigitNet(self.width) if writeup else
                          DigitNet(self.width, self.digit_head, self.stem_width,
                                   self.extra_convs, self.stem, self.late_width))
        # Named `adder` either way: the MLP's parameters keep their checkpoint path.
        self.adder = (Adder(self.adder_hidden, torch_init=writeup) if self.adder_kind == "mlp"
                      else ShiftAdder())

    def _input(self, image: jax.Array) -> jax.Array:
        return stretch_range(image) if self.input_stretch else image

    def _adder_view(self, logits: jax.Array, features: jax.Array) -> jax.Array:
        if self.adder_input == "probs":
            return jax.nn.softmax(logits)
        if self.adder_input == "features":
            return features
        return logits

    def __call__(self, image: jax.Array, number: jax.Array,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        logits, features = self.digit_net(self._input(image), train)
        return logits, self.adder(self._adder_view(logits, features), number)

    def heads(self, image: jax.Array, number: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(digit logits [B,10], sum logits [B,19] with `number`, sum logits [B,10,19]
        with every number 0..9), in inference mode: what evaluation and prediction need,
        with the conv net run once per image (only the small adder runs eleven times)."""
        logits, features = self.digit_net(self._input(image), False)
        view = self._adder_view(logits, features)
        return logits, self.adder(view, number), self._all_numbers(view)

    def _all_numbers(self, view: jax.Array) -> jax.Array:
        b = view.shape[0]
        numbers = jnp.broadcast_to(jnp.eye(NUM_NUMBERS, dtype=view.dtype), (b, NUM_NUMBERS, NUM_NUMBERS))
        views = jnp.broadcast_to(view[:, None, :], (b, NUM_NUMBERS, view.shape[-1]))
        return self.adder(views, numbers)


# Model fields whose Config field has another name (`adder` would clash with the
# submodule attribute `self.adder`, whose name fixes the parameters' paths and init keys).
_CONFIG_NAME = {"adder_kind": "adder"}


def model_fields() -> tuple[str, ...]:
    """The hyperparameters of `MnistPlusNet`; `Config` has a field for each (of the same
    name, or the one `_CONFIG_NAME` gives)."""
    return tuple(f.name for f in dataclasses.fields(MnistPlusNet)
                 if f.name not in ("parent", "name"))


def build_model(config: Any) -> MnistPlusNet:
    """The model a config describes: the one place a model is made from a config, so a
    new model field is added to `MnistPlusNet` and `Config` and nowhere else."""
    return MnistPlusNet(**{name: getattr(config, _CONFIG_NAME.get(name, name))
                           for name in model_fields()})


def param_count(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
