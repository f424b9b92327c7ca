"""The run's configuration as data: defaults in code, overridden by CLI flags.

A `Config` is frozen and JSON-serialisable, so it is stored with every
checkpoint and compared on resume. `help` metadata feeds `--help`; `resume`
metadata marks fields that may change between a run and its resumption
(where data comes from, how it runs) as opposed to fields that define the
numbers a run produces. Of the former, `loop` and `eval_batch_size` change how
XLA orders float operations: changing them on resume gives the same run up to
the last bits, no longer bitwise identical to an uninterrupted one (docs/reproducibility.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from mnist_plus.errors import UsageError
from mnist_plus.task import HOLDOUTS, steps_per_epoch

LOOPS = ("auto", "host", "scan")
SEED_MAPS = ("vmap", "map", "unroll")  # how --seeds maps the step over seeds (multiseed._per_seed)
# The model's choices (model.py builds and checks them). Named here, not in model.py, so
# that flags parse and validate without loading jax and flax.
ADDER_INPUTS = ("logits", "probs", "features")
ADDERS = ("mlp", "shift")
DIGIT_HEADS = ("pool", "conv")
STEMS = ("conv", "patch")
ARCHS = ("mnist_plus", "writeup")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("one_cycle", "constant")
CPU_KERNELS = ("xla", "ynn")  # runtime/host.use_cpu_kernels


def _field(default: Any, help: str, resume: bool = False, choices=None):
    return dataclasses.field(
        default=default, metadata={"help": help, "resume": resume, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Config:
    # What the run computes: must match to resume a checkpoint.
    epochs: int = _field(10, "training epochs")
    batch_size: int = _field(128, "training batch size (the last partial batch of an epoch is dropped)")
    learning_rate: float = _field(0.01, "peak learning rate of the one-cycle schedule (the "
                                  "rate of a constant one)")
    optimizer: str = _field("adamw", "'adamw' (decoupled weight decay) or 'sgd' (with "
                            "--momentum; weight decay added to the gradient, as PyTorch's SGD)",
                            choices=OPTIMIZERS)
    momentum: float = _field(0.9, "momentum of --optimizer sgd (PyTorch's convention: heavy "
                             "ball, no dampening)")
    schedule: str = _field("one_cycle", "learning-rate schedule: 'one_cycle' (warm up for "
                           "--warmup-fraction, then cosine down) or 'constant'",
                           choices=SCHEDULES)
    label_smoothing: float = _field(0.1, "move this fraction of each training target's "
                                    "probability evenly onto the classes the example allows "
                                    "(10 digits; the 10 sums its number leaves possible); "
                                    "0: plain cross-entropy")
    warmup_fraction: float = _field(0.2, "fraction of training spent warming the learning rate up")
    weight_decay: float = _field(1e-4, "weight decay (decoupled for AdamW)")
    seed: int = _field(0, "seed of parameters, data order, random numbers and test numbers")
    arch: str = _field("mnist_plus", "the network: 'mnist_plus' (BatchNorm conv blocks, set "
                       "by the fields below) or 'writeup' (the write-up's: 3x3 conv + ReLU "
                       "blocks of --width channels, 28 -> 26 -> 24 -> pool 12 -> 10 -> 8 -> "
                       "pool 4 -> 2, a 2x2 conv to 1x1x10, no BatchNorm, PyTorch's "
                       "initialisers; only --width, --adder-hidden, --adder-input and "
                       "--adder apply)", choices=ARCHS)
    width: int = _field(16, "channels of the conv blocks (the model's size; the stem's: "
                        "--stem-width, the 5x5 blocks': --late-width)")
    adder_hidden: int = _field(64, "hidden units of each of the adder's two layers")
    adder_input: str = _field("logits", "what the adder sees of the image", choices=ADDER_INPUTS)
    adder: str = _field("mlp", "the sum head: 'mlp' (fully connected layers from [digit logits, "
                        "one-hot number]) or 'shift' (addition built in: p(sum = s) = "
                        "p(digit = s - number); no parameters; reads the digit logits)",
                        choices=ADDERS)
    stem_width: int = _field(0, "channels of the first conv block, the stem (0: --width); "
                             "fewer makes a step cheaper")
    stem: str = _field("patch", "how the 28x28 image becomes the first 13x13 feature map: "
                       "'conv' (a 3x3 conv block at 26x26, then a 2x2 max-pool) or 'patch' "
                       "(one 4x4 stride-2 conv block: each cell sees the same 4x4 pixels, "
                       "with no 26x26 activations)", choices=STEMS)
    extra_convs: int = _field(2, "extra 3x3 'same' conv blocks, one after each of the last N "
                              "of the 11x11, 9x9, 7x7, 5x5 blocks (0..4): depth where pixels "
                              "are few")
    late_width: int = _field(32, "channels of the 5x5 blocks, the last before the digit head "
                             "(0: --width); pixels are few there, so width is cheap")
    digit_head: str = _field("pool", "how the last 5x5 conv features become the 10 digit "
                             "logits: 'pool' (a 1x1 conv to 10, then the average over 5x5) or "
                             "'conv' (one 5x5 conv to 1x1x10, which sees where features are)",
                             choices=DIGIT_HEADS)
    augment_shift: int = _field(1, "randomly translate training images by up to this many pixels "
                                "(0: off)")
    augment_rotate: float = _field(10.0, "randomly rotate training images by up to this many "
                                   "degrees (bilinear; 0: off)")
    augment_scale: float = _field(0.1, "randomly zoom training images by a factor in "
                                  "[1 - s, 1 + s] (log-uniform; 0: off)")
    augment_shear: float = _field(0.1, "randomly shear training images horizontally by up to "
                                  "this factor (0: off)")
    augment_elastic: float = _field(0.0, "randomly distort training images with a smooth "
                                    "(elastic) displacement field that moves pixels by this "
                                    "many pixels per axis, root mean square (0: off)")
    augment_stroke: float = _field(0.0, "probability that a training image's strokes are "
                                   "thinned or thickened (grey min or max over a 2x2 square, "
                                   "a 3x3 cross, or both in turn; after the warps; 0: off)")
    augment_outline: float = _field(0.0, "probability that a training image becomes a "
                                    "contour of its strokes (smoothed by sigma 0..1.2, ink "
                                    "above a random fraction of the brightest, grown by "
                                    "0..2 cross dilations, less its cross erosion: a "
                                    "one-pixel ring, and a brighter level's inside it; "
                                    "0: off)")
    augment_blur: float = _field(0.0, "probability that a training image is blurred "
                                 "(Gaussian, sigma 0.3..1.8 pixels drawn for rows and "
                                 "columns apart; 0: off)")
    augment_lowres: float = _field(0.0, "probability that a training image is brought down "
                                   "to 7..20 pixels a side (tent filter) and back up "
                                   "(linear; 0: off)")
    augment_background: float = _field(0.0, "probability that a training image's ink "
                                       "contrast is cut (x 0.3..1) and a smooth grey field "
                                       "added (level 0..0.5 plus 0..0.5 of a 3x3 bilinear "
                                       "random bump; clipped; 0: off)")
    augment_noise: float = _field(0.0, "probability that a training image gets noise: "
                                  "additive Gaussian (std 0.05..0.35) or salt and pepper "
                                  "(a rate of 0.02..0.12 of pixels), half each (0: off)")
    augment_occlude: float = _field(0.0, "probability that a training image gets a straight "
                                    "line drawn across (random angle, 1..2.5 px, grey "
                                    "0.5..1) or a 4..10 px rectangle painted at a random "
                                    "grey (black to white), half each (0: off)")
    input_stretch: bool = _field(False, "the model first stretches each image's range to "
                                 "clean MNIST's (its darkest pixel to black, its brightest "
                                 "to white), at training, evaluation and prediction alike: "
                                 "brightness, grey backgrounds and contrast no longer matter")
    precise_bn: int = _field(10000, "after every epoch, recompute BatchNorm's statistics from "
                             "the first N training images (all of them if fewer), unaugmented, "
                             "in whole batches of --batch-size, before evaluating and "
                             "checkpointing; the running averages of warped batches "
                             "misdescribe clean images (0: keep them)")
    holdout: str = _field("none", "(digit, number) pairs never shown in training, to test "
                          "whether the adder generalises: 'sum9' (all pairs adding to 9) or "
                          "'random20' (20 pairs drawn from the seed)", choices=HOLDOUTS)
    # How the run goes: may change on resume (loop, eval_batch_size and num_devices: last
    # bits only).
    eval_batch_size: int = _field(1000, "evaluation batch size", resume=True)
    num_devices: int = _field(0, "data-parallel over the first N devices (0: all of the default "
                              "backend's; the batch is split over them, so --batch-size must be "
                              "divisible by N)", resume=True)
    loop: str = _field("auto", "training loop: 'host' (per-step jit fed from NumPy), 'scan' "
                       "(data on device, lax.scan over steps), 'auto' (host on CPU, where it "
                       "is measured faster; scan on other backends)", resume=True, choices=LOOPS)
    cpu_kernels: str = _field("xla", "XLA:CPU's kernels for dots: 'xla' (its default) or 'ynn' "
                              "(YNNPACK, XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot: "
                              "the backward pass's filter convolutions become fast dots; "
                              "docs/performance.md). Read when JAX starts: set it on the "
                              "command line or in a config, not from an already running "
                              "process; the same run up to the last bits", resume=True,
                              choices=CPU_KERNELS)
    checkpoint_every_steps: int = _field(0, "also checkpoint every N steps (0: only at epoch ends)",
                                         resume=True)
    keep_checkpoints: int = _field(3, "how many recent checkpoints to keep", resume=True)
    keep_best: bool = _field(True, "also keep the checkpoint with the best test sum accuracy "
                             "(end-of-epoch checkpoints only)", resume=True)
    tfds_dir: str = _field("", "TFDS data dir (default: TFDS's, or $TFDS_DATA_DIR)", resume=True)
    mnist_dir: str = _field("", "folder of the four MNIST IDX files, to prepare offline "
                            "(default: $MNIST_PLUS_MNIST_DIR, else download)", resume=True)
    progress: bool = _field(True, "show a progress bar per epoch", resume=True)
    log_every_steps: int = _field(100, "also write the train loss of the last N steps to "
                                  "TensorBoard every N steps of an epoch (0: per epoch only)",
                                  resume=True)
    report: bool = _field(True, "write workdir/report/ (figures and report.md) when training "
                          "ends", resume=True)
    robustness: bool = _field(False, "add the corruption benchmark (python -m "
                              "mnist_plus.robustness) to the report: about 20 s more for "
                              "the default model on 2 CPU cores, 35 s the first time",
                              resume=True)
    profile_steps: str = _field("", "A:B writes a jax.profiler trace of global steps A to B "
                                "(counted from 1) into workdir/profile/ ('': off)", resume=True)



def profile_window(text: str) -> tuple[int, int] | None:
    """'A:B' -> (A, B), '' -> None; raises UsageError for anything else."""
    if text == "":
        return None
    first, sep, last = text.partition(":")
    try:
        window = (int(first), int(last)) if sep else None
    except ValueError:
        window = None
    if window is None or window[0] < 1 or window[1] < window[0]:
        raise UsageError(f"--profile-steps {text!r} is invalid: write A:B, the first and last "
                         f"global step to trace, with 1 <= A <= B (e.g. 10:20)")
    return window


def validate(config: Config, train_size: int | None = None) -> Config:
    """Reject values that cannot run, with a message naming the flag."""
    def bad(flag: str, value: Any, why: str) -> UsageError:
        return UsageError(f"--{flag.replace('_', '-')} {value!r} is invalid: {why}")

    for name in ("epochs", "batch_size", "width", "adder_hidden", "eval_batch_size",
                 "keep_checkpoints"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise bad(name, value, "it must be a positive integer")
    if not (isinstance(config.seed, int) and 0 <= config.seed < 2**63):
        # NumPy's SeedSequence takes no negative seeds, jax.random.key none of 2**63 and up.
        raise bad("seed", config.seed, "it must be an integer from 0 to 2**63 - 1")
    if not (isinstance(config.augment_shift, int) and 0 <= config.augment_shift <= 8):
        raise bad("augment_shift", config.augment_shift, "it must be an integer in 0..8")
    for name, top in (("augment_rotate", 90.0), ("augment_scale", 0.5), ("augment_shear", 1.0),
                      ("augment_elastic", 4.0)):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 <= value <= top):
            raise bad(name, value, f"it must be a number from 0 (off) to {top:g}")
    for name in ("augment_stroke", "augment_outline", "augment_blur", "augment_lowres",
                 "augment_background", "augment_noise", "augment_occlude"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 <= value <= 1):
            raise bad(name, value, "it must be a probability from 0 (off) to 1")
    for name in ("stem_width", "late_width"):
        value = getattr(config, name)
        if not (isinstance(value, int) and value >= 0):
            raise bad(name, value, "it must be 0 (--width) or a positive integer")
    if not (isinstance(config.extra_convs, int) and 0 <= config.extra_convs <= 4):
        raise bad("extra_convs", config.extra_convs, "it must be an integer in 0..4")
    if not (isinstance(config.num_devices, int) and config.num_devices >= 0):
        raise bad("num_devices", config.num_devices, "it must be 0 (all devices) or a positive "
                  "number of devices")
    for name in ("checkpoint_every_steps", "log_every_steps"):
        if getattr(config, name) < 0:
            raise bad(name, getattr(config, name),
                      "it must be 0 (off) or a positive number of steps")
    for name in ("learning_rate",):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise bad(name, value, "it must be a positive finite number")
    if not (isinstance(config.label_smoothing, (int, float))
            and 0.0 <= config.label_smoothing < 1.0):
        raise bad("label_smoothing", config.label_smoothing, "it must be in [0, 1)")
    if not (0.0 <= config.warmup_fraction < 1.0):
        raise bad("warmup_fraction", config.warmup_fraction, "it must be in [0, 1)")
    if not (isinstance(config.momentum, (int, float)) and 0.0 <= config.momentum < 1.0):
        raise bad("momentum", config.momentum, "it must be in [0, 1)")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise bad("weight_decay", config.weight_decay, "it must be a non-negative number")
    for f in dataclasses.fields(config):
        choices = f.metadata["choices"]
        if choices and getattr(config, f.name) not in choices:
            raise bad(f.name, getattr(config, f.name), f"choose one of {', '.join(choices)}")
    if config.adder == "shift" and config.adder_input != "logits":
        raise bad("adder_input", config.adder_input,
                  "--adder shift reads the digit logits: leave --adder-input at logits")
    if config.arch == "writeup" and config.precise_bn:
        raise bad("precise_bn", config.precise_bn, "--arch writeup has no BatchNorm: set "
                  "--precise-bn 0")
    window = profile_window(config.profile_steps)
    if train_size is not None and config.batch_size > train_size:
        raise bad("batch_size", config.batch_size,
                  f"it is larger than the {train_size} training examples")
    if not (isinstance(config.precise_bn, int) and not isinstance(config.precise_bn, bool)
            and (config.precise_bn == 0 or config.precise_bn >= config.batch_size)):
        raise bad("precise_bn", config.precise_bn,
                  f"it must be 0 (off) or a number of images of at least one batch "
                  f"({config.batch_size})")
    if train_size is not None and window is not None:
        total = config.epochs * steps_per_epoch(train_size, config.batch_size)
        if window[1] > total:
            raise bad("profile_steps", config.profile_steps,
                      f"the run has only {total} steps; choose A:B within 1..{total}")
    return config


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(values: dict[str, Any]) -> Config:
    """A Config from stored values; unknown keys (from a newer version) are ignored."""
    known = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in values.items() if k in known})


def run_defining_differences(stored: Config, current: Config) -> list[str]:
    """'name: stored -> current' for every field that would change the run's numbers."""
    return [f"{f.name}: {getattr(stored, f.name)!r} -> {getattr(current, f.name)!r}"
            for f in dataclasses.fields(Config)
            if not f.metadata["resume"] and getattr(stored, f.name) != getattr(current, f.name)]


def to_json(config: Config) -> str:
    """`config` as a JSON object; `--config` reads it back."""
    return json.dumps(to_dict(config), indent=2) + "\n"
