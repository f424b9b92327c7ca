"""Command-line flags generated from `Config`, with one-line usage errors."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Sequence

from mnist_plus.config import Config
from mnist_plus.errors import MnistPlusError, UsageError


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


def usage_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser whose errors are one-line UsageErrors (exit status 2)."""
    return _Parser(prog=prog, description=description,
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per Config field (`--batch-size` for `batch_size`)."""
    parser = usage_parser(prog, description)
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


def run_main(fn, argv: Sequence[str] | None = None) -> int:
    """Run `fn(argv)`; expected errors become one line on stderr and their exit code."""
    try:
        fn(argv)
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
        print("interrupted: the newest complete checkpoint is kept; rerun to resume",
              file=sys.stderr)
        return 130
    return 0
