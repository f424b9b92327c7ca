"""Train-step time of the default model under candidate XLA:CPU flags, measured side by side.

    python -m experiments.xla_flags --batch-sizes 128,512 --rounds 3 --json experiments/results/xla_flags.json

Why: XLA reads XLA_FLAGS once, at start-up, and an unknown flag aborts the process, so
each setting runs in a fresh subprocess. The settings are interleaved (every round runs
each once, in a rotated order; later rounds load their compiled programs from a
per-setting compilation cache) so that load from other processes on a shared machine
lands on all of them alike; each figure is the median over rounds of the median step
time within a run (`mnist_plus.benchmark.bench_train_step`: jitted, donated state, one
device-resident batch of synthetic MNIST-shaped data). Each run also trains 3 steps
from the seed on a fixed batch and reports whether the parameters come out bit-identical
to the baseline's: a flag that wins by changing the numbers (fast math, another
convolution library) says so. Nothing here changes a default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from mnist_plus.runtime import host
from mnist_plus.errors import UsageError

# The repository root: each worker runs `python -m experiments.xla_flags` from there.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> XLA_FLAGS value. Defaults of jaxlib 0.10.2 (from its flag help): xnnpack on,
# thunk runtime on (the flag is deprecated), prefer_vector_width 256 (so only 512 is a
# candidate), Eigen multithreaded.
CANDIDATES: dict[str, str] = {
    "baseline": "",
    "xnnpack on": "--xla_cpu_use_xnnpack=true",
    "xnnpack off": "--xla_cpu_use_xnnpack=false",
    "xnn fusion all": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "xnn graph fusion greedy":
        "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn custom call": "--xla_cpu_experimental_onednn_custom_call=true",
    "onednn fusion all":
        "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce",
    "ynn fusion all": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
    "ynn dots": "--xla_cpu_experimental_ynn_fusion_type=dot",  # --cpu-kernels ynn
    "vector width 512": "--xla_cpu_prefer_vector_width=512",
    "thunk runtime off": "--xla_cpu_use_thunk_runtime=false",
    "eigen single-thread": "--xla_cpu_multi_thread_eigen=false",
    "fast math (changes numerics)": "--xla_cpu_enable_fast_math=true",
}
MARKER = "XLA_FLAGS_RESULT "


# --------------------------------------------------------------------------- worker

def worker(batch_sizes: Sequence[int], repeats: int, min_repeat_seconds: float) -> dict:
    """In the subprocess: step ms per batch size, and a digest of 3 trained steps."""
    import jax
    import numpy as np

    from mnist_plus.tools import benchmark
    from mnist_plus.runtime import compile_cache
    from mnist_plus.data import sampler
    from mnist_plus import config as config_lib
    from mnist_plus.training.state import create_state
    from mnist_plus.training.step import train_step, zero_train_metrics

    compile_cache.enable()
    config = config_lib.Config()
    mnist = benchmark.synthetic_mnist(max(*batch_sizes, 128), 10)  # 128: the numerics batch
    out: dict[str, Any] = {"step_ms": {}}
    for b in batch_sizes:
        state = create_state(config, 100)  # consumed (donated) by the benchmark
        row = benchmark.bench_train_step(state, mnist, b, warmup=2, repeats=repeats,
                                         min_repeat_seconds=min_repeat_seconds,
                                         matmul_flops_per_second=1.0)
        out["step_ms"][str(b)] = 1e3 * row["step_seconds"]
    # Numerics: 3 steps from the seed on one fixed batch of 128.
    images = sampler.normalise(mnist.train_images[:128])
    batch = jax.device_put(sampler.make_batch(images, mnist.train_labels[:128],
                                              np.arange(128) % sampler.NUM_NUMBERS))
    state, metrics = create_state(config, 100), zero_train_metrics()
    step = jax.jit(train_step)
    for _ in range(3):
        state, metrics = step(state, batch, metrics)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state.params))]
    out["params_sha1"] = hashlib.sha1(b"".join(x.tobytes() for x in leaves)).hexdigest()
    out["params_abs_sum"] = float(sum(np.abs(x.astype(np.float64)).sum() for x in leaves))
    out["loss_sum"] = float(jax.device_get(metrics["loss"]))
    return out


# --------------------------------------------------------------------------- parent

def run_one(flags: str, args: argparse.Namespace, cache_root: str) -> dict:
    """One fresh process with XLA_FLAGS=flags; its result, or why it failed.

    Each setting gets its own compilation cache folder, so that its later rounds load
    its programs instead of compiling them again (only the step time is measured).
    """
    cache = os.path.join(cache_root, hashlib.sha1(flags.encode()).hexdigest()[:12])
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
           "MNIST_PLUS_COMPILE_CACHE": cache}
    cmd = [sys.executable, "-m", "experiments.xla_flags", "--worker",
           "--batch-sizes", ",".join(map(str, args.batch_sizes)),
           "--repeats", str(args.repeats), "--min-repeat-seconds", str(args.min_repeat_seconds)]
    try:
        p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    for line in p.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    err = p.stderr.strip().splitlines()
    unknown = [line for line in err if "nknown flag" in line or "unknown command line flag" in line]
    if unknown:
        return {"error": "not available", "detail": unknown[-1][-200:]}
    return {"error": f"failed (exit {p.returncode})", "detail": (err or ["no output"])[-1][-200:]}


def summarise(runs: dict[str, list[dict]], batch_sizes: Sequence[int]) -> list[dict]:
    base = [r for r in runs["baseline"] if "error" not in r]
    if not base:  # nothing to compare against: say why, in one line
        first = runs["baseline"][0] if runs["baseline"] else {}
        raise UsageError(f"the baseline (no flags) failed in every round: "
                         f"{first.get('error', '?')}: {first.get('detail', '')}")
    base_ms = {b: statistics.median(r["step_ms"][str(b)] for r in base) for b in batch_sizes}
    base_sha = base[0]["params_sha1"] if base else None
    rows = []
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        row: dict[str, Any] = {"name": name, "flags": CANDIDATES[name], "runs": len(ok)}
        if not ok:
            row["status"] = rs[0]["error"]
            row["detail"] = rs[0].get("detail", "")
            rows.append(row)
            continue
        row["status"] = "ok"
        for b in batch_sizes:
            ms = [r["step_ms"][str(b)] for r in ok]
            row[f"ms_{b}"] = statistics.median(ms)
            row[f"ms_{b}_range"] = (min(ms), max(ms))
            row[f"ratio_{b}"] = row[f"ms_{b}"] / base_ms[b]
        row["same_bits"] = ok[0]["params_sha1"] == base_sha
        row["params_abs_sum"] = ok[0]["params_abs_sum"]
        row["loss_sum"] = ok[0]["loss_sum"]
        rows.append(row)
    return rows


def format_table(rows: list[dict], batch_sizes: Sequence[int], base_abs_sum: float) -> str:
    head = ("| setting | XLA_FLAGS | " + " | ".join(
        f"batch {b}: ms/step (range) | ratio" for b in batch_sizes)
        + " | params after 3 steps vs baseline |")
    lines = [head, "|" + "---|" * (3 + 2 * len(batch_sizes))]
    for r in rows:
        flags = f"`{r['flags']}`" if r["flags"] else "(none)"
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {flags} | " + " | ".join(
                [r["status"]] + [""] * (2 * len(batch_sizes) - 1)) + " | |")
            continue
        cells = []
        for b in batch_sizes:
            lo, hi = r[f"ms_{b}_range"]
            cells += [f"{r[f'ms_{b}']:.1f} ({lo:.1f}-{hi:.1f})", f"{r[f'ratio_{b}']:.2f}"]
        if r["same_bits"]:
            same = "bit-identical"
        else:
            rel = abs(r["params_abs_sum"] - base_abs_sum) / base_abs_sum
            same = f"differ (sum of abs params: rel. diff {rel:.1e})"
        lines.append(f"| {r['name']} | {flags} | " + " | ".join(cells) + f" | {same} |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give one or more positive integers")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mnist_plus.cli import usage_parser

    p = usage_parser("python -m experiments.xla_flags",
                     "Train-step time under candidate XLA:CPU flags, interleaved runs.")
    p.add_argument("--batch-sizes", type=_ints, default=[128, 512], help="batch sizes to time")
    p.add_argument("--rounds", type=int, default=3, help="runs of every setting, interleaved")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats within a run")
    p.add_argument("--min-repeat-seconds", type=float, default=0.3,
                   help="each timed repeat runs at least this long")
    p.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per subprocess")
    p.add_argument("--json", default="", help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        p.error("--rounds and --repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    from mnist_plus.cli import run_main

    sys.exit(run_main(_main, argv))


def _main(argv: Sequence[str] | None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(MARKER + json.dumps(worker(args.batch_sizes, args.repeats,
                                         args.min_repeat_seconds)), flush=True)
        return
    from mnist_plus.errors import UsageError

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise UsageError(f"unknown setting(s) {unknown}; choose from {list(CANDIDATES)}")
    if "baseline" not in names:
        names.insert(0, "baseline")
    import jax
    import jaxlib

    header = (f"XLA:CPU flags, default model, jax {jax.__version__} / jaxlib "
              f"{jaxlib.__version__}, {host.cpu_count()} CPUs, ISA {host.cpu_isa()}, "
              f"load average at start {os.getloadavg()[0]:.1f}")
    print(header, flush=True)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    failed: set[str] = set()
    t0 = time.time()
    cache_root = tempfile.mkdtemp(prefix="xla_flags_cache_")
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no fixed position
        for name in order:
            if name in failed:
                continue
            result = run_one(CANDIDATES[name], args, cache_root)
            runs[name].append(result)
            if "error" in result:
                failed.add(name)
            shown = result.get("error") or ", ".join(
                f"b{b} {ms:.1f} ms" for b, ms in result["step_ms"].items())
            print(f"round {r + 1} {name}: {shown}", flush=True)
    shutil.rmtree(cache_root, ignore_errors=True)
    rows = summarise(runs, args.batch_sizes)
    base_abs = next(r["params_abs_sum"] for r in rows if r["name"] == "baseline")
    print(f"\n{header}; load average at end {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} interleaved rounds in {time.time() - t0:.0f} s\n")
    print(format_table(rows, args.batch_sizes, base_abs), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "batch_sizes": args.batch_sizes, "rows": rows,
                       "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
