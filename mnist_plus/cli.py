"""Every CLI's flags (the config's generated from `Config`) and its launch, with one-line
usage errors. Nothing here imports jax: `launch` parses and checks the flags first, so
`--help` and a mistyped flag answer at once, and only then imports the tool's module."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from typing import Callable, Sequence

from mnist_plus import config as config_lib
from mnist_plus import configs
from mnist_plus.config import Config
from mnist_plus.errors import Interrupted, MnistPlusError, UsageError

IMPORTED_AT = time.time()  # the first of our modules a CLI imports: its start, near enough


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Names each flag's default, unless its help already does or it is empty."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in ("", None) or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2
        raise UsageError(f"{message} (see {self.prog} --help)")


def _number(kind):
    what = {"int": "an integer", "float": "a number"}[kind.__name__]

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    parse.__name__ = kind.__name__
    return parse


class _ConfigFileParser(_Parser):
    """Applies `--preset NAME`, then `--config FILE`, as the defaults of the Config flags,
    then parses again, so that flags given on the command line override both."""

    default_preset: Callable[[argparse.Namespace], str] = staticmethod(lambda args: "default")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        first = argparse.Namespace(**vars(namespace)) if namespace is not None else None
        found, _ = super().parse_known_args(args, first)
        fields = configs.preset_fields(found.preset or self.default_preset(found))
        if found.config:
            fields.update(configs.load_file(found.config))
        self.set_defaults(**{**self._config_defaults, **fields})
        return super().parse_known_args(args, namespace)


def usage_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser whose errors are one-line UsageErrors (exit status 2)."""
    return _Parser(prog=prog, description=description,
                   formatter_class=_Help)


def config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per Config field (`--batch-size` for `batch_size`), and
    `--config FILE` to set them from a file (flags given on the command line win)."""
    parser = _ConfigFileParser(prog=prog, description=description,
                               formatter_class=_Help)
    parser.add_argument("--preset", default="", metavar="NAME",
                        help=f"a named config (mnist_plus/configs/NAME.py): "
                             f"{', '.join(configs.NAMES)}; --config and flags override it "
                             f"(default: default)")
    parser.add_argument("--config", default="", metavar="FILE",
                        help="a .json file (an object of config fields) or a .py file whose "
                             "get_config() returns them; it overrides --preset, and flags on "
                             "the command line override it")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        kwargs = {"default": f.default, "help": f.metadata["help"]}
        if f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type in ("int", int):
            kwargs["type"] = _number(int)
        elif f.type in ("float", float):
            kwargs["type"] = _number(float)
        if f.metadata["choices"]:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag, dest=f.name, **kwargs)
    parser._config_defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def train_parser() -> argparse.ArgumentParser:
    """`python -m mnist_plus.train`'s flags: the config's, the workdir's and jax.distributed's."""
    from mnist_plus.runtime import distributed

    parser = config_parser("python -m mnist_plus.train",
                           "Train the MNIST digit + number model; rerun to resume.")
    parser.add_argument("--workdir", default="runs",
                        help="where checkpoints, metrics.jsonl and the summary go")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move the workdir's earlier run aside instead of resuming")
    seeds = parser.add_argument_group("many seeds in one program")
    seeds.add_argument("--seeds", type=parse_seeds, default=None, metavar="A-B|S1,S2,..",
                       help="train the config once per seed (e.g. 0-4), all seeds as one "
                            "program through the same loop: metrics.jsonl gets a row per seed, "
                            "summary.json their mean and standard deviation (--seed is ignored)")
    seeds.add_argument("--seed-map", choices=("auto",) + config_lib.SEED_MAPS, default="auto",
                       help="with --seeds: 'vmap' batches the seeds into one wide program, "
                            "'map' loops over them inside it, 'unroll' writes the step out "
                            "once per seed in it (the same numbers up to float order); "
                            "auto: unroll on CPU, vmap elsewhere")
    distributed.add_flags(parser)
    return parser



def parse_seeds(text: str) -> list[int]:
    """--seeds: 'A-B' (A to B inclusive) or a comma-separated list of distinct seeds."""
    try:
        if "-" in text.strip("-") and "," not in text:
            first, last = (int(v) for v in text.split("-", 1))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a seed range or list: write A-B (e.g. 0-4) or S1,S2,.. of "
            f"distinct seeds >= 0")
    return seeds


def check_config(args: argparse.Namespace) -> None:
    """The check of a CLI whose flags make a Config: every field valid."""
    config_lib.validate(config_from_args(args))


def launch(parser: Callable[[], argparse.ArgumentParser], module: str,
           argv: Sequence[str] | None = None,
           check: Callable[[argparse.Namespace], object] = lambda args: None) -> int:
    """A CLI's life, returning its exit status: parse and `check` the flags with nothing
    heavy imported (jax, flax and orbax take about 1 s on 2 cores), then import `module`
    and call its `run(args)`. Expected errors become one line on stderr."""
    def go(argv: Sequence[str]) -> None:
        args = parser().parse_args(argv)
        args.argv = list(argv)  # as given: for a tool that reruns itself in a fresh process
        check(args)
        if hasattr(args, "cpu_kernels"):  # a config-taking CLI: before JAX starts
            from mnist_plus.runtime import host

            host.use_cpu_kernels(config_from_args(args).cpu_kernels)
        importlib.import_module(module).run(args)

    return run_main(go, sys.argv[1:] if argv is None else list(argv))


STEP_HELP = ("which checkpoint: 'latest' (the newest), 'best' (the best test sum accuracy "
             "among end-of-epoch checkpoints) or a step number")


def parse_step(text: str) -> str | int:
    """--step: 'latest', 'best' or a step number (argparse type; errors are one line)."""
    if text in ("latest", "best"):
        return text
    try:
        step = int(text)
    except ValueError:
        step = -1
    if step < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'latest', 'best' or a step number")
    return step


BACKGROUNDS = ("auto", "black", "white")  # predict --background
FITS = ("mnist", "resize")                # predict --fit


def predict_parser() -> argparse.ArgumentParser:
    """`python -m mnist_plus.predict`'s flags (here, so they parse without jax)."""
    parser = usage_parser("python -m mnist_plus.predict",
                          "Predict the digit of each image and its sum with --number, from the "
                          "newest (or --step) checkpoint of a trained run.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    parser.add_argument("--workdir", default="runs", help="the trained run's workdir")
    parser.add_argument("--step", type=parse_step, default="latest", help=STEP_HELP)
    parser.add_argument("--number", required=True,
                        help="the number 0..9 added to each image's digit")
    parser.add_argument("--background", choices=BACKGROUNDS, default="auto",
                        help="the images' background: black (MNIST's white digit on black), "
                             "white (a dark digit on paper; inverted), or auto (from the border)")
    parser.add_argument("--fit", choices=FITS, default="mnist",
                        help="mnist: crop to the digit, fit 20x20, centre by mass in 28x28 (as "
                             "MNIST); resize: only pad to square and resize to 28x28")
    return parser


def predict_number(text: str) -> int:
    """predict's --number, or a UsageError (checked after parsing: its message names the
    flag as the user wrote it)."""
    try:
        number = int(text)
    except ValueError:
        number = -1
    if not 0 <= number <= 9:
        raise UsageError(f"--number {text!r} is invalid: it must be a whole number 0..9")
    return number


def add_trained_run_data_flags(parser: argparse.ArgumentParser) -> None:
    """--tfds-dir, --mnist-dir and --step of a tool that evaluates a trained run on MNIST
    (report, robustness): where its data is, and which checkpoint."""
    parser.add_argument("--tfds-dir", default="",
                        help="TFDS data dir (default: the one stored with the checkpoint)")
    parser.add_argument("--mnist-dir", default="",
                        help="folder of MNIST IDX files (default: the one stored with the "
                             "checkpoint, else $MNIST_PLUS_MNIST_DIR)")
    parser.add_argument("--step", type=parse_step, default="latest", help=STEP_HELP)


def report_parser() -> argparse.ArgumentParser:
    """`python -m mnist_plus.report`'s flags (here, so they parse without jax)."""
    parser = usage_parser("python -m mnist_plus.report",
                          "Write figures and report.md for a trained run into WORKDIR/report/.")
    parser.add_argument("--workdir", default="runs", help="the run's workdir (default: runs)")
    add_trained_run_data_flags(parser)
    parser.add_argument("--robustness", action="store_true",
                        help="add the corruption benchmark (python -m mnist_plus.robustness) "
                             "to the report: about 20 s more for the default model on 2 CPU "
                             "cores")
    return parser


def _count(text: str) -> int:
    """A whole number >= 0 (argparse type; errors are one line)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def robustness_parser() -> argparse.ArgumentParser:
    """`python -m mnist_plus.robustness`'s flags (here, so they parse without jax)."""
    parser = usage_parser("python -m mnist_plus.robustness",
                          "Evaluate a trained run on MNIST's test set under the 15 MNIST-C "
                          "corruptions, stroke thickness, low resolution and contrast; write "
                          "robustness.json, .md and .png into WORKDIR/report/ (or --out).")
    parser.add_argument("--workdir", default="runs", help="the run's workdir (default: runs)")
    parser.add_argument("--out", default="",
                        help="folder for the results (default: WORKDIR/report)")
    parser.add_argument("--limit", type=_count, default=0,
                        help="the first N test images only (0: all 10,000)")
    parser.add_argument("--seed", type=_count, default=0,
                        help="seed of the corruptions' random draws")
    parser.add_argument("--cache-dir", default="",
                        help="where corrupted test sets are cached (default: "
                             "TFDS_DIR/mnist_plus_cache/robustness)")
    add_trained_run_data_flags(parser)
    return parser


def run_main(fn, argv: Sequence[str] | None = None) -> int:
    """Run `fn(argv)`; expected errors become one line on stderr and their exit code."""
    try:
        fn(argv)
    except Interrupted as e:  # not an error: the run stopped as asked and can resume
        print(e, file=sys.stderr)
        return e.exit_code
    except MnistPlusError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk or read-only file system outside the logs/checkpoints
        from mnist_plus.runtime import storage

        code = storage.storage_errno(e)
        if code is None:
            raise
        where = f" {e.filename}" if e.filename else " a file"
        print(f"error: cannot write{where} ({storage.describe(code)}): "
              f"{storage.remedy(code)} and rerun", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Outside the training loop (which saves first: see preemption.py).
        print("interrupted by SIGINT: the newest complete checkpoint is kept; rerun the same "
              "command to resume", file=sys.stderr)
        return 130
    return 0
