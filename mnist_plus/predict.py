"""A trained run's digit and sum for image files: `python -m mnist_plus.predict --number 3
IMAGE...`."""

from __future__ import annotations

import sys
from typing import Sequence

from mnist_plus import cli


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of `python -m mnist_plus.predict ARGV` (and of `mnist-plus-predict`)."""
    return cli.launch(cli.predict_parser, "mnist_plus.tools.predict", argv,
                      lambda args: cli.predict_number(args.number))


if __name__ == "__main__":
    sys.exit(main())
