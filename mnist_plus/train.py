"""Train, evaluate, checkpoint and report: `python -m mnist_plus.train --workdir runs/`.

Intentionally short, as Flax's `main.py`: the flags are parsed and checked before jax is
imported, then `mnist_plus.trainer.train_and_evaluate` does the job.
"""

from __future__ import annotations

import sys
from typing import Sequence

from mnist_plus import cli
from mnist_plus.runtime import distributed


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of `python -m mnist_plus.train ARGV` (and of `mnist-plus-train`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if distributed.wants_distributed(argv):  # one child process per host, supervised
        return distributed.supervise("mnist_plus.train", argv)
    return cli.launch(cli.train_parser, "mnist_plus.trainer", argv, cli.check_config)


if __name__ == "__main__":
    sys.exit(main())
