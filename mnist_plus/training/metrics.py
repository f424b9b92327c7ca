"""Per-epoch metrics: from device sums to numbers, and the `metrics.jsonl` log.

`metrics.jsonl` holds only what the seed and config determine (no wall-clock
times), so an interrupted-and-resumed run writes a byte-identical file; times
go to `timing.jsonl`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from mnist_plus.runtime import atomic
from mnist_plus.runtime import storage
from mnist_plus.errors import StorageError

# What a train or eval step sums on the device (float32 scalars), in order. Every other
# list of metric names is derived from these.
COUNT_KEYS = ("count", "loss", "digit_loss", "sum_loss", "digit_correct", "sum_correct")
EVAL_COUNT_KEYS = COUNT_KEYS + ("exhaustive_sum_correct", "sum_agree", "exhaustive_sum_agree")
# The means and accuracies `summarise` makes of them: (name, count key, per-pair divisor).
_SUMMARY = (("loss", "loss", 1), ("digit_loss", "digit_loss", 1), ("sum_loss", "sum_loss", 1),
            ("digit_accuracy", "digit_correct", 1), ("sum_accuracy", "sum_correct", 1),
            ("exhaustive_sum_accuracy", "exhaustive_sum_correct", 10),
            # How often argmax(sum) == argmax(digit) + number: the heads agree.
            ("sum_agreement", "sum_agree", 1),
            ("exhaustive_sum_agreement", "exhaustive_sum_agree", 10))


def summary_keys(prefix: str, counts: tuple[str, ...] = EVAL_COUNT_KEYS) -> tuple[str, ...]:
    """The keys `summarise(prefix, sums)` returns for sums holding `counts`."""
    return tuple(f"{prefix}_{name}" for name, key, _ in _SUMMARY if key in counts)


# The keys of every metrics.jsonl line, in order.
KEYS = (("epoch", "step") + summary_keys("train", COUNT_KEYS) + summary_keys("test"))


def to_host(sums: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(dict(sums)).items()}


def summarise(prefix: str, sums: Mapping[str, float]) -> dict[str, float]:
    """Means and accuracies from summed counts, keys prefixed with `prefix`_."""
    n = max(sums["count"], 1.0)
    return {f"{prefix}_{name}": sums[key] / (per * n)
            for name, key, per in _SUMMARY if key in sums}


def epoch_row(epoch: int, step: int, train_sums: Mapping[str, float],
              test_sums: Mapping[str, float]) -> dict[str, Any]:
    """One metrics.jsonl line: `KEYS` in order, from an epoch's host sums."""
    row = {"epoch": epoch, "step": step, **summarise("train", train_sums),
           **summarise("test", test_sums)}
    return {k: row[k] for k in KEYS}


def _write_lines_atomically(path: str, lines: list[str], kept: str) -> None:
    """A full disk or read-only file system becomes one line saying that `kept` is intact
    (the old file stays whole: see atomic.replace_file)."""
    try:
        atomic.replace_file(path, lambda f: f.write("".join(lines).encode()))
    except OSError as e:
        code = storage.storage_errno(e)
        if code is None:
            raise
        raise StorageError(
            f"cannot write {path} ({storage.describe(code)}): {kept} and the checkpoints are "
            f"intact; {storage.remedy(code)} and rerun to resume") from None


class JsonlLog:
    """An append-only JSON-lines file that can be cut back to the resumed epoch.

    Not `enabled` in every process of a multi-process run but the first: it reads the
    file but never writes it (the metrics are the same in every process)."""

    def __init__(self, path: str, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def read(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after `epoch` (written after the checkpoint we resume)."""
        rows = self.read()
        kept = [r for r in rows if r["epoch"] <= epoch]
        if len(kept) != len(rows) and self.enabled:
            _write_lines_atomically(self.path, [json.dumps(r) + "\n" for r in kept],
                                    kept="the file")

    def append(self, *new: Mapping[str, Any]) -> None:
        """Add these lines (one epoch's: one per seed of a many-seed run)."""
        if not self.enabled:
            return
        rows = self.read() + [dict(row) for row in new]
        _write_lines_atomically(self.path, [json.dumps(r) + "\n" for r in rows],
                                kept="its earlier lines")


def format_epoch(row: Mapping[str, Any], seconds: float) -> str:
    return (f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f}  "
            f"test loss {row['test_loss']:.4f}  digit acc {100 * row['test_digit_accuracy']:.2f}%  "
            f"sum acc {100 * row['test_sum_accuracy']:.2f}%  "
            f"(all numbers {100 * row['test_exhaustive_sum_accuracy']:.2f}%)  {seconds:.1f}s")
