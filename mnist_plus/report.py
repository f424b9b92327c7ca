"""Figures and report.md of a trained run: `python -m mnist_plus.report --workdir runs/`."""

from __future__ import annotations

import sys
from typing import Sequence

from mnist_plus import cli


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of `python -m mnist_plus.report ARGV` (and of `mnist-plus-report`)."""
    return cli.launch(cli.report_parser, "mnist_plus.tools.report", argv)


if __name__ == "__main__":
    sys.exit(main())
