"""Side-by-side speed: time to accuracy over seeds, and the PyTorch write-up as baseline.

`python -m mnist_plus.benchmark --time-to-accuracy 0.99 --seeds 3 [--compare-pytorch]`
and `python -m mnist_plus.benchmark --compare-pytorch` land here. Every training is a
fresh subprocess, one after another on the same machine in the same session, so the two
frameworks pay the same start-up costs and see the same load; the CPU's vector ISA is
printed beside every figure (`runtime.host`), since XLA:CPU and PyTorch both compile or
dispatch for it.

Ours is `python -m mnist_plus.train`: its `timing.jsonl` gives each epoch's wall time
with and without evaluation (the first epoch includes compiling the step), and
`metrics.jsonl` the test accuracies after each epoch. PyTorch's is the script that
`--pytorch-reference` names (experiments/pytorch_reference.py: the write-up in PyTorch;
torch is an optional extra), given as a path so the package holds no PyTorch code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Callable, Sequence

import mnist_plus
from mnist_plus import config as config_lib
from mnist_plus.errors import MnistPlusError, UsageError
from mnist_plus.runtime.host import cpu_isa
from mnist_plus.training import metrics as metrics_lib

# The write-up's targets: 99% digit and 98% sum test accuracy.
WRITEUP_TARGETS = (0.99, 0.98)


def child_env() -> dict[str, str]:
    """The environment for a `python -m mnist_plus...` child: the folder that holds this
    mnist_plus first on PYTHONPATH, so the child runs the same code as this process (a
    source checkout or an install alike), from whatever working directory."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(mnist_plus.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# Fields that do not define the numbers but that the comparison's runs must share.
_PASSED_ON = ("tfds_dir", "mnist_dir", "cpu_kernels", "loop")


def _config_flags(config: config_lib.Config) -> list[str]:
    """Flags that reproduce the run-defining fields of `config`, its data location and
    how it runs (kernels, loop)."""
    flags = []
    for f in dataclasses.fields(config):
        if f.metadata["resume"] and f.name not in _PASSED_ON:
            continue
        value = getattr(config, f.name)
        if f.name in ("tfds_dir", "mnist_dir") and not value:
            continue
        flag = f.name.replace("_", "-")
        if isinstance(value, bool):  # --name / --no-name
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags += [f"--{flag}", str(value)]
    return flags


def run_ours(config: config_lib.Config, workdir: str, timeout: float = 3600) -> dict[str, Any]:
    """Train `config` in a fresh process; per epoch: seconds (with and without evaluation),
    images/s of training, test accuracies; and the process's start-up figures."""
    args = [sys.executable, "-m", "mnist_plus.train", "--workdir", workdir, "--fresh",
            "--no-report", "--no-progress", *_config_flags(config)]
    result = subprocess.run(args, env=child_env(), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise MnistPlusError(f"training for the comparison failed (exit "
                             f"{result.returncode}): "
                             f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    rows = metrics_lib.JsonlLog(os.path.join(workdir, "metrics.jsonl")).read()
    times = metrics_lib.JsonlLog(os.path.join(workdir, "timing.jsonl")).read()
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    images = (rows[0]["step"] * config.batch_size) if rows else 0
    epochs = []
    for row, t in zip(rows, times):
        train_seconds = t["seconds"] - t.get("eval_seconds", 0.0)
        epochs.append({"epoch": row["epoch"], "epoch_seconds": t["seconds"],
                       "eval_seconds": t.get("eval_seconds"), "train_seconds": train_seconds,
                       "images_per_second": images / train_seconds,
                       "test_digit_accuracy": row["test_digit_accuracy"],
                       "test_sum_accuracy": row["test_sum_accuracy"]})
    return {"framework": "mnist_plus (jax)", "config": config_lib.to_dict(config),
            "epochs": epochs,
            "data_load_seconds": summary.get("data_load_seconds"),
            "process_start_to_first_step_seconds":
                summary.get("process_start_to_first_step_seconds")}


def run_pytorch(reference: str, mnist_dir: str, epochs: int, seed: int, threads: int | None,
                workdir: str, targets: tuple[float, float] = WRITEUP_TARGETS,
                stop_at_target: bool = False, timeout: float = 7200) -> dict[str, Any]:
    """The write-up in PyTorch (the script `reference`, experiments/pytorch_reference.py in
    the repository), in a fresh process; its JSON."""
    out = os.path.join(workdir, f"pytorch_seed{seed}.json")
    args = [sys.executable, reference, "--mnist-dir", mnist_dir, "--epochs",
            str(epochs), "--seed", str(seed), "--target-digit", str(targets[0]),
            "--target-sum", str(targets[1]), "--quiet", "--json", out]
    if threads:
        args += ["--threads", str(threads)]
    if stop_at_target:
        args.append("--stop-at-target")
    result = subprocess.run(args, env=child_env(), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        if result.returncode == 2:
            raise UsageError(f"--compare-pytorch: {last.removeprefix('error: ')}")
        raise MnistPlusError(f"the PyTorch baseline failed (exit {result.returncode}): {last}")
    with open(out) as f:
        return json.load(f)


def first_reaching(epochs: Sequence[dict[str, Any]], digit: float, total: float
                   ) -> dict[str, Any] | None:
    """The first epoch whose test digit and sum accuracies both reach the targets, with
    the wall time to the end of its evaluation (and without evaluation time)."""
    seconds = train_seconds = 0.0
    for e in epochs:
        seconds += e["epoch_seconds"]
        train_seconds += e["train_seconds"]
        if e["test_digit_accuracy"] >= digit and e["test_sum_accuracy"] >= total:
            return {"epoch": e["epoch"], "seconds": seconds, "train_seconds": train_seconds,
                    "test_digit_accuracy": e["test_digit_accuracy"],
                    "test_sum_accuracy": e["test_sum_accuracy"]}
    return None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def time_to_accuracy(config: config_lib.Config, target: float, seeds: Sequence[int],
                     mnist_dir: str, compare_pytorch: bool, pytorch_epochs: int,
                     pytorch_threads: int | None, log: Callable[[str], None],
                     reference: str = "") -> dict[str, Any]:
    """Train `config` once per seed; when do test digit and sum accuracy both reach
    `target`? With `compare_pytorch`, also the baseline's time to the write-up's 99%/98%."""
    with tempfile.TemporaryDirectory(prefix="mnist_plus_tta_") as root:
        per_seed = []
        for seed in seeds:
            ours = run_ours(dataclasses.replace(config, seed=seed), os.path.join(root, f"s{seed}"))
            hit = first_reaching(ours["epochs"], target, target)
            per_seed.append({"seed": seed, "reached": hit is not None,
                             **(hit or {}),
                             "epochs": ours["epochs"]})
            log(f"seed {seed}: " + (f"{target:.2%} digit and sum after epoch {hit['epoch']}, "
                                     f"{hit['seconds']:.1f} s ({hit['train_seconds']:.1f} s "
                                     f"without evaluation)" if hit else "target not reached"))
        reached = [s for s in per_seed if s["reached"]]
        mean, std = _mean_std([s["seconds"] for s in reached])
        mean_train, std_train = _mean_std([s["train_seconds"] for s in reached])
        out: dict[str, Any] = {"time_to_accuracy": {
            "target": target, "seeds": list(seeds), "mean_seconds": mean, "std_seconds": std,
            "mean_train_seconds": mean_train, "std_train_seconds": std_train,
            "reached": len(reached) == len(per_seed), "reached_count": len(reached),
            "per_seed": per_seed, "config": config_lib.to_dict(config), "cpu_isa": cpu_isa()}}
        log(f"ours: reached {len(reached)} of {len(per_seed)} seeds" + (
            f"; {mean:.1f} ± {std:.1f} s mean ± std ({mean_train:.1f} ± {std_train:.1f} s "
            f"without evaluation)" if reached else "") + f"  [CPU {cpu_isa()}]")
        if compare_pytorch:
            runs = []
            for seed in seeds:
                r = run_pytorch(reference, mnist_dir, pytorch_epochs, seed, pytorch_threads,
                                root,
                                stop_at_target=True)
                runs.append({"seed": seed, "reached": r["target_reached_epoch"] is not None,
                             "epoch": r["target_reached_epoch"],
                             "seconds": r["time_to_target_seconds"],
                             "train_seconds": r["time_to_target_train_seconds"],
                             "threads": r["threads"]})
                log(f"pytorch seed {seed}: " + (
                    f"99% digit / 98% sum after epoch {r['target_reached_epoch']}, "
                    f"{r['time_to_target_seconds']:.1f} s" if r["target_reached_epoch"]
                    else f"targets not reached in {pytorch_epochs} epochs"))
            hits = [r for r in runs if r["reached"]]
            p_mean, p_std = _mean_std([r["seconds"] for r in hits])
            out["pytorch_time_to_accuracy"] = {
                "targets": list(WRITEUP_TARGETS), "seeds": list(seeds), "mean_seconds": p_mean,
                "std_seconds": p_std, "reached": len(hits) == len(runs), "per_seed": runs}
            if mean and p_mean:
                out["pytorch_time_to_accuracy"]["ratio_to_ours"] = p_mean / mean
            log(f"pytorch: reached {len(hits)} of {len(runs)} seeds" + (
                f"; {p_mean:.1f} ± {p_std:.1f} s mean ± std" if hits else "") + (
                f"; ours is {p_mean / mean:.2f}x sooner" if mean and p_mean else "")
                + f"  [CPU {cpu_isa()}]")
    return out


def compare_epochs(config: config_lib.Config, epochs: int, mnist_dir: str,
                   pytorch_threads: int | None, log: Callable[[str], None],
                   reference: str = "") -> dict[str, Any]:
    """`epochs` epochs of ours and of the baseline, one after the other: seconds per epoch
    (evaluation included) and training images/s, and their ratios."""
    with tempfile.TemporaryDirectory(prefix="mnist_plus_cmp_") as root:
        ours = run_ours(dataclasses.replace(config, epochs=epochs), os.path.join(root, "ours"))
        theirs = run_pytorch(reference, mnist_dir, epochs, config.seed, pytorch_threads, root)
    rows = []
    for a, b in zip(ours["epochs"], theirs["epochs"]):
        rows.append({"epoch": a["epoch"], "ours_epoch_seconds": a["epoch_seconds"],
                     "pytorch_epoch_seconds": b["epoch_seconds"],
                     "epoch_ratio": b["epoch_seconds"] / a["epoch_seconds"],
                     "ours_images_per_second": a["images_per_second"],
                     "pytorch_images_per_second": b["images_per_second"],
                     "image_ratio": a["images_per_second"] / b["images_per_second"]})
        log(f"epoch {a['epoch']}: ours {a['epoch_seconds']:.1f} s, pytorch "
            f"{b['epoch_seconds']:.1f} s per epoch with evaluation: {rows[-1]['epoch_ratio']:.2f}x; "
            f"training {a['images_per_second']:,.0f} vs {b['images_per_second']:,.0f} images/s: "
            f"{rows[-1]['image_ratio']:.2f}x  [CPU {cpu_isa()}]")
    steady = rows[1:] or rows  # the first epoch of each pays for compiling / warming up
    return {"compare_pytorch": {
        "cpu_isa": cpu_isa(), "epochs": rows,
        "epoch_ratio_steady": statistics.fmean(r["epoch_ratio"] for r in steady),
        "image_ratio_steady": statistics.fmean(r["image_ratio"] for r in steady),
        "pytorch_threads": theirs["threads"], "torch_version": theirs["torch_version"],
        "ours_config": ours["config"],
        "ours_accuracy": {k: ours["epochs"][-1][k] for k in ("test_digit_accuracy",
                                                            "test_sum_accuracy")},
        "pytorch_accuracy": theirs["final"]}}
