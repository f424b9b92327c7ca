"""Corruption benchmark of a trained run: `python -m mnist_plus.robustness --workdir runs/`."""

from __future__ import annotations

import sys
from typing import Sequence

from mnist_plus import cli


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of `python -m mnist_plus.robustness ARGV` (and of
    `mnist-plus-robustness`)."""
    return cli.launch(cli.robustness_parser, "mnist_plus.tools.robustness", argv)


if __name__ == "__main__":
    sys.exit(main())
