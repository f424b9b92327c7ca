"""The command-line flags of train (generated from `Config`), predict and report, with
one-line usage errors. Nothing here imports jax: each CLI checks its flags with these
parsers before its heavy imports."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Sequence

from mnist_plus import config as config_lib
from mnist_plus.config import Config
from mnist_plus.errors import Interrupted, MnistPlusError, UsageError


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
    """Applies `--config FILE` as the defaults of the Config flags, then parses again, so
    that flags given on the command line override the file."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        first = argparse.Namespace(**vars(namespace)) if namespace is not None else None
        found, _ = super().parse_known_args(args, first)
        if found.config:
            self.set_defaults(**config_lib.load_file(found.config))
        return super().parse_known_args(args, namespace)


def usage_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser whose errors are one-line UsageErrors (exit status 2)."""
    return _Parser(prog=prog, description=description,
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per Config field (`--batch-size` for `batch_size`), and
    `--config FILE` to set them from a file (flags given on the command line win)."""
    parser = _ConfigFileParser(prog=prog, description=description,
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="", metavar="FILE",
                        help="a .json file (an object of config fields) or a .py file whose "
                             "get_config() returns them; flags on the command line override it")
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
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def train_parser() -> argparse.ArgumentParser:
    """`python -m mnist_plus.train`'s flags: the config's, the workdir's and jax.distributed's."""
    from mnist_plus import distributed

    parser = config_parser("python -m mnist_plus.train",
                           "Train the MNIST digit + number model; rerun to resume.")
    parser.add_argument("--workdir", default="runs",
                        help="where checkpoints, metrics.jsonl and the summary go")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move the workdir's earlier run aside instead of resuming")
    distributed.add_flags(parser)
    return parser


def exit_on_bad_flags(parser: argparse.ArgumentParser, argv: Sequence[str],
                      check: Callable[[argparse.Namespace], object] | None = None) -> None:
    """Parse and check a CLI's flags before it imports jax, flax and orbax (about 1 s
    on 2 cores): `--help` and a mistyped flag answer at once. `check` (default: validate
    the Config the flags give) raises the CLI's own one-line errors. What passes is parsed
    again by the CLI's main, with the same parser and check, so no check differs."""
    if check is None:
        check = lambda args: config_lib.validate(config_from_args(args))  # noqa: E731
    code = run_main(lambda a: check(parser.parse_args(a)), argv)
    if code:
        sys.exit(code)


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


def report_parser() -> argparse.ArgumentParser:
    """`python -m mnist_plus.report`'s flags (here, so they parse without jax)."""
    parser = usage_parser("python -m mnist_plus.report",
                          "Write figures and report.md for a trained run into WORKDIR/report/.")
    parser.add_argument("--workdir", default="runs", help="the run's workdir (default: runs)")
    parser.add_argument("--tfds-dir", default="",
                        help="TFDS data dir (default: the one stored with the checkpoint)")
    parser.add_argument("--mnist-dir", default="",
                        help="folder of MNIST IDX files (default: the one stored with the "
                             "checkpoint, else $MNIST_PLUS_MNIST_DIR)")
    parser.add_argument("--step", type=parse_step, default="latest", help=STEP_HELP)
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
        from mnist_plus import storage

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
