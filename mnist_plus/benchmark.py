"""Compile, step, epoch, evaluation and start-up times on this backend, time to accuracy
and the PyTorch comparison: `python -m mnist_plus.benchmark`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from mnist_plus import cli
from mnist_plus import config as config_lib
from mnist_plus.errors import UsageError

BENCHMARK_LOOPS = tuple(name for name in config_lib.LOOPS if name != "auto")
# On CPU the scan loop runs about ten times slower per step than the host loop, so by
# default it is timed on this many examples and extrapolated (the host loop: a full epoch).
CPU_SCAN_EPOCH_EXAMPLES = 2560
PYTORCH_REFERENCE = os.path.join("experiments", "pytorch_reference.py")  # in the repository


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         f"integers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more positive integers")
    return values


def _loop_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in BENCHMARK_LOOPS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(BENCHMARK_LOOPS)}")
    return names


def _epoch_examples(text: str) -> dict[str, int] | str:
    """'auto', N (every loop), or 'host=N,scan=M'; 0 means the whole training set."""
    if text == "auto":
        return text
    try:
        if "=" not in text:
            return {name: int(text) for name in BENCHMARK_LOOPS}
        pairs = dict(item.split("=", 1) for item in text.split(","))
        values = {name.strip(): int(v) for name, v in pairs.items()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give auto, N, or host=N,scan=M") from None
    if set(values) - set(BENCHMARK_LOOPS) or any(v < 0 for v in values.values()):
        raise argparse.ArgumentTypeError(f"{text!r}: loops are {', '.join(BENCHMARK_LOOPS)} and "
                                         f"counts are >= 0")
    return values


def benchmark_parser() -> argparse.ArgumentParser:
    """`python -m mnist_plus.benchmark`'s flags: the config's and the measurements'."""
    parser = cli.config_parser("python -m mnist_plus.benchmark",
                           "Measure compile time, step time, epoch time per loop, evaluation "
                           "throughput, FLOPs and utilisation, and start-up on this backend. "
                           "The config flags set the model and the epoch's batch size.")
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--batch-sizes", type=_int_list, default=[128, 512, 2048],
                       help="batch sizes for the train-step timing, comma-separated")
    bench.add_argument("--repeats", type=int, default=5,
                       help="timed repeats per figure (the median is reported)")
    bench.add_argument("--warmup-steps", type=int, default=2,
                       help="untimed steps after the first call, before timing")
    bench.add_argument("--min-repeat-seconds", type=float, default=0.2,
                       help="each timed repeat runs enough steps to last at least this long")
    bench.add_argument("--loops", type=_loop_list, default=list(BENCHMARK_LOOPS),
                       help="training loops whose epoch is timed, comma-separated")
    bench.add_argument("--epoch-examples", type=_epoch_examples, default="auto",
                       help="examples of an epoch to time per loop and extrapolate from: N, "
                            "host=N,scan=M, 0 for a full epoch, or auto (full epochs, except "
                            f"the scan loop on CPU: {CPU_SCAN_EPOCH_EXAMPLES})")
    bench.add_argument("--matmul-size", type=int, default=0,
                       help="side of the reference matmul (0: 2048 on CPU, 8192 elsewhere)")
    bench.add_argument("--real-mnist", action="store_true",
                       help="use real MNIST (from --tfds-dir / --mnist-dir) instead of "
                            "synthetic data of its shape")
    bench.add_argument("--train-examples", type=int, default=0,
                       help="training examples (0: 60000, or all of real MNIST)")
    bench.add_argument("--test-examples", type=int, default=0,
                       help="test examples (0: 10000, or all of real MNIST)")
    bench.add_argument("--device-counts", type=_int_list, default=None,
                       help="device counts for the data-parallel step timing, comma-separated "
                            "(default: 1, 2, 4, ... up to the devices JAX sees; none with one "
                            "device)")
    bench.add_argument("--json", default="", metavar="PATH", help="also write the results here")
    speed = parser.add_argument_group("time to accuracy and the PyTorch baseline")
    speed.add_argument("--time-to-accuracy", type=float, default=0.0, metavar="TARGET",
                       help="instead of the figures above: train the --preset K times (--seeds) "
                            "and report the wall time until test digit and sum accuracy both "
                            "reach TARGET (e.g. 0.99)")
    speed.add_argument("--seeds", type=_int_list, default=[3], metavar="K|S1,S2,..",
                       help="with --time-to-accuracy: K seeds 0..K-1, or a list of seeds")
    speed.add_argument("--compare-pytorch", action="store_true",
                       help="run the write-up in PyTorch (--pytorch-reference; pip install -e "
                            "'.[pytorch]') side by side: per epoch and per image (alone), or its "
                            "time to 99%% digit / 98%% sum (with --time-to-accuracy)")
    speed.add_argument("--pytorch-reference", default=PYTORCH_REFERENCE, metavar="PATH",
                       help="with --compare-pytorch: the write-up's PyTorch script")
    speed.add_argument("--compare-epochs", type=int, default=2,
                       help="with --compare-pytorch alone: epochs of each to time")
    speed.add_argument("--pytorch-epochs", type=int, default=20,
                       help="with --time-to-accuracy --compare-pytorch: most epochs the baseline "
                            "may take to reach its targets")
    speed.add_argument("--pytorch-threads", type=int, default=0,
                       help="torch threads for the baseline (0: torch's default)")
    bench.add_argument("--first-step-only", action="store_true",
                       help="internal: measure process start to first train step and exit")
    # --time-to-accuracy trains the `speedrun` config unless --preset names another.
    parser.default_preset = lambda args: "speedrun" if args.time_to_accuracy else "default"
    return parser


def check_benchmark(args: argparse.Namespace) -> None:
    """The benchmark's flags beyond the config's, checked before anything runs."""
    cli.check_config(args)
    if args.compare_pytorch and not os.path.isfile(args.pytorch_reference):
        raise UsageError(f"--compare-pytorch runs the write-up's PyTorch script, and "
                         f"{args.pytorch_reference} is not a file: run from the repository "
                         f"root or pass --pytorch-reference PATH "
                         f"(experiments/pytorch_reference.py in the repository)")
    if args.time_to_accuracy and not 0 < args.time_to_accuracy < 1:
        raise UsageError(f"--time-to-accuracy {args.time_to_accuracy} is invalid: give a "
                         f"target accuracy between 0 and 1, e.g. 0.99")
    for name in ("compare_epochs", "pytorch_epochs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid: it "
                             f"must be a positive integer")
    for name in ("repeats", "warmup_steps", "min_repeat_seconds", "train_examples",
                 "test_examples", "matmul_size"):
        value, least = getattr(args, name), 1 if name == "repeats" else 0
        if not value >= least:
            raise UsageError(f"--{name.replace('_', '-')} {value} is invalid: it must be "
                             f">= {least}")
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise UsageError(f"cannot write --json {args.json}: {folder} is not a writable "
                             f"folder")



def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of `python -m mnist_plus.benchmark ARGV` (and of
    `mnist-plus-benchmark`)."""
    return cli.launch(benchmark_parser, "mnist_plus.tools.benchmark", argv,
                      check_benchmark)


if __name__ == "__main__":
    sys.exit(main())
