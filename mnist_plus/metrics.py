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

from mnist_plus import atomic

# The keys of every metrics.jsonl line, in order.
KEYS = ("epoch", "step", "train_loss", "train_digit_loss", "train_sum_loss",
        "train_digit_accuracy", "train_sum_accuracy", "test_loss", "test_digit_loss",
        "test_sum_loss", "test_digit_accuracy", "test_sum_accuracy",
        "test_exhaustive_sum_accuracy")


def to_host(sums: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(dict(sums)).items()}


def summarise(prefix: str, sums: Mapping[str, float]) -> dict[str, float]:
    """Means and accuracies from summed counts, keys prefixed with `prefix`_."""
    n = max(sums["count"], 1.0)
    out = {
        f"{prefix}_loss": sums["loss"] / n,
        f"{prefix}_digit_loss": sums["digit_loss"] / n,
        f"{prefix}_sum_loss": sums["sum_loss"] / n,
        f"{prefix}_digit_accuracy": sums["digit_correct"] / n,
        f"{prefix}_sum_accuracy": sums["sum_correct"] / n,
    }
    if "exhaustive_sum_correct" in sums:
        out[f"{prefix}_exhaustive_sum_accuracy"] = sums["exhaustive_sum_correct"] / (10 * n)
    return out


def _write_lines_atomically(path: str, lines: list[str]) -> None:
    atomic.replace_file(path, lambda f: f.write("".join(lines).encode()))


class JsonlLog:
    """An append-only JSON-lines file that can be cut back to the resumed epoch."""

    def __init__(self, path: str):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after `epoch` (written after the checkpoint we resume)."""
        rows = self.read()
        kept = [r for r in rows if r["epoch"] <= epoch]
        if len(kept) != len(rows):
            _write_lines_atomically(self.path, [json.dumps(r) + "\n" for r in kept])

    def append(self, row: Mapping[str, Any]) -> None:
        rows = self.read() + [dict(row)]
        _write_lines_atomically(self.path, [json.dumps(r) + "\n" for r in rows])


def format_epoch(row: Mapping[str, Any], seconds: float) -> str:
    return (f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f}  "
            f"test loss {row['test_loss']:.4f}  digit acc {100 * row['test_digit_accuracy']:.2f}%  "
            f"sum acc {100 * row['test_sum_accuracy']:.2f}%  "
            f"(all numbers {100 * row['test_exhaustive_sum_accuracy']:.2f}%)  {seconds:.1f}s")
