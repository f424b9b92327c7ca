"""TensorBoard scalars in `workdir/tensorboard/`, written with tensorboardX (no TensorFlow).

Per epoch: every number of the metrics.jsonl row, as `train/<name>` and
`test/<name>`. Every N steps of an epoch: the train loss and accuracies of the
last N steps, as `train_steps/<name>`. The x axis is always the global step, so
both kinds of curves line up.

The per-N-steps values come from the loop's on-device running sums, read where the
training loop pauses at a multiple of N steps *within* an epoch (trainer.py): one host
sync per N steps, none per step. With N a multiple of the scanned loop's chunk (100)
the scanned loop compiles no extra shapes.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping

from mnist_plus.training import metrics as metrics_lib

FOLDER = "tensorboard"


def epoch_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """{'train/loss': ..., 'test/sum_accuracy': ...} from a metrics.jsonl row."""
    out = {}
    for key in metrics_lib.KEYS:
        split, _, name = key.partition("_")
        if split in ("train", "test"):
            out[f"{split}/{name}"] = float(row[key])
    return out


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports torch whenever it is installed, only to accept torch tensors;
    that took 3.1-3.5 s (2 loaded cores) of every start, before the first step. We log
    Python floats, so `import torch` is made to fail while tensorboardX is imported
    (unless torch is already loaded), and tensorboardX falls back to NumPy.
    """
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` -> ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def open_tensorboard(workdir: str, purge_step: int | None,
                     log: Callable[[str], None]) -> "TensorBoard | None":
    """A TensorBoard for `workdir`, or None, said in one line, where tensorboardX is not
    installed: the logs are a view of metrics.jsonl, never a reason to stop training."""
    try:
        return TensorBoard(workdir, purge_step=purge_step)
    except ImportError as e:
        log(f"TensorBoard: off, {e.name or 'tensorboardX'} cannot be imported "
            f"(pip install tensorboardX); metrics.jsonl has every epoch's numbers")
        return None


class TensorBoard:
    """A SummaryWriter for one training session: per-epoch rows and per-N-steps windows.

    `purge_step` is the global step training resumes from: TensorBoard then hides
    what an interrupted earlier session had logged from that step on, so a resumed
    run shows one curve, not two overlapping ones.
    """

    def __init__(self, workdir: str, purge_step: int | None = None):
        SummaryWriter = summary_writer_class()  # imported here: start-up does not pay for it
        self.directory = os.path.join(workdir, FOLDER)
        self._writer = SummaryWriter(self.directory, purge_step=purge_step, flush_secs=30)
        self._window_start: dict[str, float] = {}  # host copy of the sums where it began

    def start_window(self, sums: Mapping[str, Any]) -> None:
        """A window of train steps starts at these running sums (an epoch's start)."""
        self._window_start = metrics_lib.to_host(sums)

    def end_window(self, sums: Mapping[str, Any], step: int) -> None:
        """Log the steps since the window started (N of them, fewer just after a mid-epoch
        resume) at global step `step`; the next window starts here. Reads `sums` now:
        the next step may donate (invalidate) them."""
        now = metrics_lib.to_host(sums)
        self.steps({k: now[k] - self._window_start[k] for k in metrics_lib.COUNT_KEYS}, step)
        self._window_start = now

    def epoch(self, row: Mapping[str, Any]) -> None:
        """Log one metrics.jsonl row at its global step."""
        step = int(row["step"])
        for tag, value in epoch_scalars(row).items():
            self._writer.add_scalar(tag, value, step)
        self._writer.add_scalar("epoch", float(row["epoch"]), step)
        self._writer.flush()

    def steps(self, window: Mapping[str, float], step: int) -> None:
        """Log the means of a window of summed train counts (see metrics.summarise)."""
        for key, value in metrics_lib.summarise("train_steps", window).items():
            self._writer.add_scalar(key.replace("train_steps_", "train_steps/", 1), value, step)

    def hparams(self, config: Mapping[str, Any], row: Mapping[str, Any]) -> None:
        """The run's config as hyperparameters with its final metrics (`hparams/test_...`,
        named apart from the scalars), for TensorBoard's HPARAMS tab; in `hparams/`."""
        metrics = {f"hparams/{k}": float(v) for k, v in row.items() if k.startswith("test_")}
        self._writer.add_hparams(dict(config), metrics, name="hparams",
                                 global_step=int(row["step"]))

    def close(self) -> None:
        self._writer.close()

