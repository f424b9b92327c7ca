"""The PyTorch write-up, re-implemented, so that it can be timed beside mnist_plus.

    python -m experiments.pytorch_reference --mnist-dir DIR --epochs 2 --json OUT.json

Implements the write-up (its MnistPlusNum network in PyTorch) as written: its `MnistPlusNum`
Dataset (normalised image, its label, a random number 0-9 one-hot [1, 10] drawn with
`torch.randint` in `__getitem__`, and the sum), a torch DataLoader at batch 128, conv
and pool blocks down to 1x1x10, concatenated with the one-hot into 20, fully connected
layers to 19 classes, and the sum of two `F.cross_entropy` losses (digit, sum).

What the write-up leaves open, and what is chosen here (each one a flag):
- it reads MNIST through torchvision (with download); this reads the same IDX files
  as mnist_plus (`mnist_plus.data.idx`, NumPy only) and normalises them exactly as
  `ToTensor()` + `Normalize((0.1307,), (0.3081,))` do: x / 255, then (x - mean) / std,
  in float32. Done once for the whole split rather than per item (same values);
- it names neither the optimizer nor its settings: SGD with lr 0.01 and momentum 0.9
  (`--lr`, `--momentum`), the usual PyTorch MNIST setting;
- it gives no layer sizes: 3x3 conv + ReLU blocks of 16 channels, 28 -> 26 -> 24,
  max-pool -> 12, -> 10 -> 8, max-pool -> 4, -> 2, then a 2x2 conv to 10 channels
  (1x1x10, the digit logits, no ReLU); FC 20 -> 64 -> 64 -> 19 with ReLU. 16,829
  parameters, close to mnist_plus's conv-stem model's 16,429 (`lean` has 21,213, the default
  since 2026-11-30 30,653).
  No BatchNorm (not mentioned);
- it trains where torch finds a GPU, as the write-up did (`--device auto`): on a machine
  without one, the CPU;
- its test numbers are redrawn on every pass; here they are drawn once from `--seed`,
  so every epoch (and every run with that seed) is evaluated on the same pairs.

After every epoch it evaluates on the whole test split, prints one line and rewrites
the JSON (so a run cut short still leaves its finished epochs). `run(argv)` does the
same from Python and returns the JSON's dict; `mnist_plus.benchmark --compare-pytorch`
runs this module as a subprocess and reads the JSON.

torch is an optional extra (`pip install -e '.[pytorch]'`). Nothing else in mnist_plus
imports this module, and it imports without torch (`run` then says how to install it),
so the package never needs torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from mnist_plus.errors import UsageError
from mnist_plus.runtime import atomic, host

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    TORCH_IMPORT_ERROR: ImportError | None = None
except ImportError as e:  # run() says how to install it; the module still imports
    torch = F = DataLoader = None  # type: ignore[assignment]
    TORCH_IMPORT_ERROR = e

    class Dataset:  # type: ignore[no-redef]
        """Stand-in base so that the classes below can be defined without torch."""

    class nn:  # type: ignore[no-redef]
        Module = object

MEAN, STD = 0.1307, 0.3081  # the write-up's Normalize((0.1307,), (0.3081,))
JSON_FORMAT = 1  # bump when a key of the JSON changes meaning


def load_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 images [N, 1, 28, 28] and int64 labels of an IDX split."""
    from mnist_plus.data import idx  # NumPy only: no JAX or TFDS is imported

    images, labels = idx.read_split(folder, split)
    # ToTensor: uint8 HWC -> float32 CHW / 255; then Normalize: (x - mean) / std.
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return x, labels.astype(np.int64)


class MnistPlusNum(Dataset):
    """The write-up's Dataset: (image, digit, one-hot number [1, 10], digit + number).

    Training draws a fresh number per item with `torch.randint`, as the write-up does (the
    process's torch generator, seeded from --seed; DataLoader workers get seeds derived
    from it). With `numbers` given (the test split) they are fixed instead.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, train: bool = True,
                 numbers: np.ndarray | None = None):
        self.train = train
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        self.numbers = None if numbers is None else torch.from_numpy(numbers)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int):
        img_data = self.images[idx]
        img_label = self.labels[idx]
        if self.numbers is None:
            rand_num = torch.randint(low=0, high=10, size=(1,))
        else:
            rand_num = self.numbers[idx].reshape(1)
        num_data = torch.zeros(1, 10)
        num_data[0, rand_num] = 1
        num_label = rand_num[0] + img_label
        return img_data, img_label, num_data, num_label

    def __repr__(self) -> str:
        return 'Loaded MNIST "{}" dataset with random number added to it. Data size - {}'.format(
            "train" if self.train else "test", len(self))


class Net(nn.Module):
    """Conv and pool blocks to 1x1x10 (digit logits), concat the one-hot, FC to 19."""

    def __init__(self, channels: int = 16, hidden: int = 64):
        super().__init__()
        c = channels

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU())

        self.convs = nn.Sequential(
            block(1, c), block(c, c),          # 28 -> 26 -> 24
            nn.MaxPool2d(2),                   # 12
            block(c, c), block(c, c),          # 10 -> 8
            nn.MaxPool2d(2),                   # 4
            block(c, c),                       # 2
            nn.Conv2d(c, 10, 2),               # 1x1x10
        )
        self.fc = nn.Sequential(
            nn.Linear(20, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 19),
        )

    def forward(self, img, num):
        digit = self.convs(img).view(-1, 10)               # 1x1x10 -> 1x10
        both = torch.cat([digit, num.view(-1, 10)], dim=1)  # 1x20
        return digit, self.fc(both)


def host_info() -> dict[str, Any]:
    """The CPU's vector ISA, flags and model (`runtime.host`, as the benchmark reports
    them), and the ISA torch dispatches its CPU kernels to."""
    flags = host.cpu_flags() or set()
    capability = None
    if torch is not None:
        try:
            capability = torch.backends.cpu.get_cpu_capability()
        except AttributeError:
            pass
    return {"cpu_isa": host.cpu_isa(),
            "cpu_flags": {name: name in flags
                          for name in ("avx2", "avx512f", "avx512_bf16", "amx_tile")},
            "torch_cpu_capability": capability, "cpu_model": host.cpu_model()}


def evaluate(model: Net, loader, device: str = "cpu") -> dict[str, float]:
    """Mean losses and accuracies of both heads over a whole split."""
    model.eval()
    n = digit_ok = sum_ok = 0
    loss = digit_loss_sum = sum_loss_sum = 0.0
    with torch.inference_mode():
        for batch in loader:
            img, img_label, num, num_label = (t.to(device) for t in batch)
            digit, total = model(img, num)
            dl = F.cross_entropy(digit, img_label, reduction="sum").item()
            sl = F.cross_entropy(total, num_label, reduction="sum").item()
            digit_loss_sum += dl
            sum_loss_sum += sl
            digit_ok += int((digit.argmax(1) == img_label).sum())
            sum_ok += int((total.argmax(1) == num_label).sum())
            n += len(img_label)
    loss = (digit_loss_sum + sum_loss_sum) / n
    return {"test_loss": loss, "test_digit_loss": digit_loss_sum / n,
            "test_sum_loss": sum_loss_sum / n,
            "test_digit_accuracy": digit_ok / n, "test_sum_accuracy": sum_ok / n}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.pytorch_reference",
        description=__doc__.splitlines()[0])
    p.add_argument("--mnist-dir", default=os.environ.get("MNIST_PLUS_MNIST_DIR", ""),
                   help="folder of the four MNIST IDX files (default: $MNIST_PLUS_MNIST_DIR)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the weights, shuffling, train numbers and the test numbers")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own default)")
    p.add_argument("--num-workers", type=int, default=0,
                   help="DataLoader worker processes (default 0: in the main process)")
    p.add_argument("--max-steps-per-epoch", type=int, default=0,
                   help="stop each epoch after this many steps (0: whole epoch); for smoke runs")
    p.add_argument("--target-digit", type=float, default=0.99,
                   help="test digit accuracy that counts as reaching the target")
    p.add_argument("--target-sum", type=float, default=0.98,
                   help="test sum accuracy that counts as reaching the target")
    p.add_argument("--stop-at-target", action="store_true",
                   help="stop after the first epoch that reaches both targets")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the model trains: 'auto' is cuda where torch sees a GPU, "
                        "else cpu (the DataLoader always runs on the CPU, as the write-up's)")
    p.add_argument("--json", default="", metavar="OUT", help="write the results here")
    p.add_argument("--quiet", action="store_true", help="print no per-epoch lines")
    return p.parse_args(argv)


def _check(args: argparse.Namespace) -> None:
    """Every flag and the MNIST folder checked before any work: one line that says what
    to change, not a traceback from deep inside torch."""
    if TORCH_IMPORT_ERROR is not None:
        raise UsageError(f"PyTorch is not installed ({TORCH_IMPORT_ERROR}); install it with "
                         f"pip install -e '.[pytorch]'")
    if not args.mnist_dir:
        raise UsageError("no MNIST folder: pass --mnist-dir DIR or set MNIST_PLUS_MNIST_DIR "
                         "to a folder with the four MNIST IDX files")
    if not os.path.isdir(args.mnist_dir):
        raise UsageError(f"--mnist-dir {args.mnist_dir} is not a folder; point it at the "
                         f"folder with the four MNIST IDX files")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got "
                             f"{getattr(args, name)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU; use --device cpu")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.num_workers < 0 or args.max_steps_per_epoch < 0:
        raise UsageError("--num-workers and --max-steps-per-epoch must be 0 or more")
    for name in ("target_digit", "target_sum"):
        value = getattr(args, name)
        if not 0.0 < value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} is an accuracy in (0, 1], got "
                             f"{value}")
    if not args.lr > 0 or args.momentum < 0:
        raise UsageError(f"--lr must be positive and --momentum not negative, got "
                         f"{args.lr}, {args.momentum}")
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"cannot write --json {args.json}: {folder} is not a writable "
                             f"folder")


def _write_json(path: str, result: dict[str, Any]) -> None:
    """Whole-file replacement: a reader (the benchmark) never sees half a JSON."""
    data = (json.dumps(result, indent=2) + "\n").encode()
    atomic.replace_file(path, lambda f: f.write(data))


def run(argv: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate as the flags in `argv` say; returns (and writes) the results.

    `log` gets the per-epoch lines (default: print them, unless --quiet). Raises
    mnist_plus.errors.UsageError (exit status 2 from the CLI) for bad flags or data.
    """
    args = parse_args(argv)
    _check(args)
    if log is None:
        log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_x, train_y = load_split(args.mnist_dir, "train")
    test_x, test_y = load_split(args.mnist_dir, "test")
    if args.batch_size > len(train_y):
        raise UsageError(
            f"--batch-size {args.batch_size} is larger than the {len(train_y)} training "
            f"images; choose at most {len(train_y)}")
    test_numbers = torch.randint(0, 10, (len(test_y),),
                                 generator=torch.Generator().manual_seed(args.seed + 1))
    train_set = MnistPlusNum(train_x, train_y, train=True)
    test_set = MnistPlusNum(test_x, test_y, train=False, numbers=test_numbers.numpy())
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                              num_workers=args.num_workers,
                              generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(test_set, batch_size=args.eval_batch_size, shuffle=False,
                             num_workers=args.num_workers)
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    load_seconds = time.perf_counter() - start

    result: dict[str, Any] = {
        "format": JSON_FORMAT,
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": device,
        **host_info(),
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "quiet")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": len(train_y),
        "test_examples": len(test_y),
        "startup_seconds": load_seconds,
        "epochs": [],
        "target_reached_epoch": None,
        "time_to_target_seconds": None,
        "time_to_target_train_seconds": None,
    }
    log(f"torch {torch.__version__} on {device}, {result['threads']} threads, CPU ISA "
        f"{result['cpu_isa']} (torch dispatch: {result['torch_cpu_capability']}), "
        f"{result['parameters']:,} parameters; {train_set!r}; {test_set!r}")

    elapsed = elapsed_train = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        steps = images = 0
        loss_sum = data_seconds = 0.0
        t0 = time.perf_counter()
        batches = iter(train_loader)
        while True:
            t_data = time.perf_counter()
            batch = next(batches, None)
            data_seconds += time.perf_counter() - t_data
            if batch is None:
                break
            img, img_label, num, num_label = (t.to(device) for t in batch)
            optimizer.zero_grad()
            digit, total = model(img, num)
            loss = F.cross_entropy(digit, img_label) + F.cross_entropy(total, num_label)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(img_label)
            steps += 1
            images += len(img_label)
            if args.max_steps_per_epoch and steps >= args.max_steps_per_epoch:
                break
        train_seconds = time.perf_counter() - t0
        if not np.isfinite(loss_sum):
            raise RuntimeError(f"the training loss became {loss_sum} in epoch {epoch}; "
                               f"lower --lr")
        t1 = time.perf_counter()
        metrics = evaluate(model, test_loader, device)
        eval_seconds = time.perf_counter() - t1
        elapsed += train_seconds + eval_seconds
        elapsed_train += train_seconds
        row = {"epoch": epoch, "steps": steps, "train_images": images,
               "train_seconds": train_seconds, "data_seconds": data_seconds,
               "eval_seconds": eval_seconds,
               "epoch_seconds": train_seconds + eval_seconds,
               "images_per_second": images / train_seconds,
               "train_loss": loss_sum / images, **metrics,
               "elapsed_seconds": elapsed, "elapsed_train_seconds": elapsed_train}
        result["epochs"].append(row)
        if (result["target_reached_epoch"] is None
                and metrics["test_digit_accuracy"] >= args.target_digit
                and metrics["test_sum_accuracy"] >= args.target_sum):
            result["target_reached_epoch"] = epoch
            result["time_to_target_seconds"] = elapsed
            result["time_to_target_train_seconds"] = elapsed_train
        log(f"epoch {epoch}: train {train_seconds:.2f} s ({row['images_per_second']:,.0f} "
            f"images/s, {data_seconds:.2f} s of it in the DataLoader, loss "
            f"{row['train_loss']:.4f}), eval {eval_seconds:.2f} s, "
            f"test digit {metrics['test_digit_accuracy']:.2%}, "
            f"sum {metrics['test_sum_accuracy']:.2%}")
        result["total_train_seconds"] = elapsed_train
        result["total_seconds"] = elapsed
        result["final"] = {k: metrics[k] for k in ("test_digit_accuracy", "test_sum_accuracy")}
        if args.json:
            _write_json(args.json, result)
        if args.stop_at_target and result["target_reached_epoch"] is not None:
            break

    reached = result["target_reached_epoch"]
    log(f"targets (digit {args.target_digit:.2%}, sum {args.target_sum:.2%}): "
        + (f"reached at epoch {reached}, {result['time_to_target_seconds']:.1f} s "
           f"({result['time_to_target_train_seconds']:.1f} s of it training)"
           if reached else "not reached"))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: a usage error is one line on stderr and exit status 2."""
    try:
        run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
