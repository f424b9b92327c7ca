"""Final test accuracy of config variants over several seeds: mean ± std, min and max.

    python -m experiments.accuracy --seeds 0,1,2,3,4 --out experiments/results/accuracy \\
        --variant 'shift={"augment_rotate": 0, "augment_scale": 0, "augment_shear": 0}' \\
        --variant 'default={}'

Each (variant, seed) is one ordinary `python -m mnist_plus.train --workdir
OUT/runs/VARIANT/sSEED --seed SEED` with the variant's fields (a JSON object of Config
fields, over the defaults) passed as a config file, so every number is what a user's own
run with those flags gives. `--parallel N` runs N of them at once (their epoch times are
then not comparable with a lone run's: `--parallel 1` for those). A finished run is
resumed, i.e. read, not retrained. Writes OUT/results.jsonl (one line per run: final
metrics, mean epoch seconds; runs of earlier invocations are kept) and OUT/table.md (all of
them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from mnist_plus.runtime import atomic

# The repository root: each run's `python -m mnist_plus.train` starts there, so it trains
# this checkout's mnist_plus, as this script imports it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("test_digit_accuracy", "test_sum_accuracy", "test_exhaustive_sum_accuracy",
        "test_sum_agreement")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar='NAME={"field": value}',
                        help="a named set of Config fields over the defaults (repeatable)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", default="runs/accuracy", help="folder for runs and tables")
    args = parser.parse_args(argv)
    variants = {}
    for text in args.variant or ['default={}']:
        name, sep, fields = text.partition("=")
        try:
            values = json.loads(fields) if sep else None
        except ValueError:
            values = None
        if not name or not isinstance(values, dict):
            parser.error(f'--variant {text!r}: write NAME={{"field": value, ...}}')
        variants[name] = values
    args.variants = variants
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give integers like 0,1,2")
    return args


def run_one(out: str, name: str, fields: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train (or resume, i.e. read) one run; its final metrics and mean epoch time."""
    workdir = os.path.join(out, "runs", name, f"s{seed}")
    os.makedirs(workdir, exist_ok=True)
    config = os.path.join(out, "runs", name, "config.json")
    # Whole-file replacement: runs of one variant start in parallel, and a run must never
    # read the file while another is rewriting it.
    atomic.replace_file(config, lambda f: f.write(json.dumps(fields).encode()))
    cmd = [sys.executable, "-m", "mnist_plus.train", "--config", config, "--seed", str(seed),
           "--workdir", workdir, "--no-progress", "--no-report", "--log-every-steps", "0"]
    start = time.perf_counter()
    with open(os.path.join(workdir, "train.log"), "a", encoding="utf-8") as log:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        last = [json.loads(line) for line in f if line.strip()][-1]
    with open(os.path.join(workdir, "timing.jsonl"), encoding="utf-8") as f:
        seconds = [json.loads(line)["seconds"] for line in f if line.strip()]
    return {"variant": name, "fields": fields, "seed": seed, "epoch": last["epoch"],
            **{k: last[k] for k in KEYS}, "epoch_seconds_mean": statistics.fmean(seconds),
            "wall_seconds": time.perf_counter() - start}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | seeds | " + " | ".join(f"{k} mean ± std (min-max)" for k in KEYS)
             + " | s/epoch |", "|---|---|" + "---|" * len(KEYS) + "---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        cells = []
        for k in KEYS:
            v = [100 * r[k] for r in mine]
            std = statistics.stdev(v) if len(v) > 1 else float("nan")
            cells.append(f"{statistics.fmean(v):.2f} ± {std:.2f} ({min(v):.2f}-{max(v):.2f})")
        secs = statistics.fmean(r["epoch_seconds_mean"] for r in mine)
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in mine)} | "
                     + " | ".join(cells) + f" | {secs:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    jobs = [(n, f, s) for n, f in args.variants.items() for s in args.seed_list]
    with ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
        rows = list(pool.map(lambda job: run_one(args.out, *job), jobs))
    path = os.path.join(args.out, "results.jsonl")
    kept = {}
    if os.path.exists(path):  # earlier invocations' runs stay, this one's replace theirs
        with open(path, encoding="utf-8") as f:
            kept = {(r["variant"], r["seed"]): r for r in map(json.loads, f) if r}
    kept.update({(r["variant"], r["seed"]): r for r in rows})
    atomic.replace_file(path, lambda f: f.write(
        "".join(json.dumps(r) + "\n" for r in kept.values()).encode()))
    text = table(list(kept.values()))
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
