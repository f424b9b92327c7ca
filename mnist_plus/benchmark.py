"""Compile, step, epoch, evaluation and start-up times on this backend, time to accuracy
and the PyTorch comparison: `python -m mnist_plus.benchmark`."""

from __future__ import annotations

import sys
from typing import Sequence

from mnist_plus import cli


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of `python -m mnist_plus.benchmark ARGV` (and of
    `mnist-plus-benchmark`)."""
    return cli.launch(cli.benchmark_parser, "mnist_plus.tools.benchmark", argv,
                      cli.check_benchmark)


if __name__ == "__main__":
    sys.exit(main())
