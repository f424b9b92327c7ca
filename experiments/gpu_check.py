"""The two Python parts of experiments/gpu_check.sh: what the machine is, and one table of
what its steps measured.

    python -m experiments.gpu_check device OUT/device.json
    python -m experiments.gpu_check summary OUT

`summary` reads only the JSON files the steps wrote into OUT (steps.jsonl, device.json,
benchmark.json, train/summary.json, speedrun.json, pytorch.json), so a folder brought back
from the GPU machine prints the same table again anywhere; it also writes the table's
rows to OUT/summary.json and exits 1 if a step failed or timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any, Sequence

STEPS = ("device", "benchmark", "train", "speedrun", "pytorch")


def device_info() -> dict[str, Any]:
    """JAX's backend and devices, the host CPU, and nvidia-smi's view of the GPUs."""
    import jax

    from mnist_plus.runtime import host

    devices = jax.devices()
    info: dict[str, Any] = {
        "backend": jax.default_backend(), "jax_version": jax.__version__,
        "devices": [str(d) for d in devices], "device_kind": devices[0].device_kind,
        "num_devices": len(devices), "python": sys.version.split()[0],
        "cpu_isa": host.cpu_isa(), "cpu_count": host.cpu_count()}
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                 "--format=csv,noheader"]
        result = subprocess.run(query, capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = result.stdout.strip().splitlines() or result.stderr.strip()
    return info


def _read(path: str) -> Any:
    """The JSON at `path`, or None where the step wrote none (it failed or was skipped)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _steps(out: str) -> dict[str, dict[str, Any]]:
    """Each step's last record in OUT/steps.jsonl."""
    found: dict[str, dict[str, Any]] = {}
    try:
        with open(os.path.join(out, "steps.jsonl")) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    found[row["step"]] = row
    except OSError:
        pass
    return found


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _figures(step: str, out: str) -> list[tuple[str, str]]:
    """(figure, value) pairs that a step's JSON holds; none where it wrote no JSON."""
    if step == "device":
        d = _read(os.path.join(out, "device.json"))
        if not d:
            return []
        rows = [("backend", f"{d['backend']}: {d['num_devices']} x {d['device_kind']}, "
                            f"jax {d['jax_version']}, CPU {d['cpu_isa']} x {d['cpu_count']}")]
        return rows + [("nvidia-smi", line) for line in d.get("nvidia_smi") or []]
    if step == "benchmark":
        r = _read(os.path.join(out, "benchmark.json"))
        if not r:
            return []
        rows = [(f"train step, batch {s['batch_size']}",
                 f"{s['step_seconds'] * 1e3:.2f} ms, {s['images_per_second']:,.0f} images/s, "
                 f"compile {s['compile_seconds']:.1f} s") for s in r["train_step"]]
        rows += [(f"epoch, {e['loop']} loop (batch {e['batch_size']})",
                  f"{e['epoch_seconds']:.2f} s, {e['images_per_second']:,.0f} images/s"
                  + (" (extrapolated)" if e["extrapolated"] else "")) for e in r["epoch"]]
        rows.append(("evaluation", f"{r['eval']['images_per_second']:,.0f} images/s"))
        rows.append(("process start to first step",
                     f"{r['first_step']['process_start_to_first_step_seconds']:.1f} s"))
        return rows
    if step == "train":
        s = _read(os.path.join(out, "train", "summary.json"))
        if not s or not s.get("final"):
            return []
        f = s["final"]
        epochs = f"{s['epochs']} epoch" + ("s" if s["epochs"] != 1 else "")
        return [(epochs, f"{s['train_seconds']:.1f} s; test digit "
                 f"{_pct(f['test_digit_accuracy'])}, sum {_pct(f['test_sum_accuracy'])}")]
    if step == "speedrun":
        r = _read(os.path.join(out, "speedrun.json"))
        if not r:
            return []
        t = r["time_to_accuracy"]
        value = f"{t['reached_count']} of {len(t['seeds'])} seeds"
        if t["mean_seconds"] is not None:
            value += (f"; {t['mean_seconds']:.1f} ± {t['std_seconds']:.1f} s "
                      f"({t['mean_train_seconds']:.1f} s without evaluation)")
        return [(f"time to {_pct(t['target'])} digit and sum", value)]
    if step == "pytorch":
        r = _read(os.path.join(out, "pytorch.json"))
        if not r:
            return []
        c = r["compare_pytorch"]
        rows = [(f"epoch {e['epoch']}, ours / pytorch",
                 f"{e['ours_epoch_seconds']:.1f} / {e['pytorch_epoch_seconds']:.1f} s; "
                 f"{e['ours_images_per_second']:,.0f} / {e['pytorch_images_per_second']:,.0f} "
                 f"images/s") for e in c["epochs"]]
        return rows + [("pytorch / ours, steady", f"{c['epoch_ratio_steady']:.2f}x epoch time, "
                        f"torch {c['torch_version']}")]
    raise ValueError(step)


def table(out: str) -> list[dict[str, Any]]:
    """One row per figure, each step's status and seconds on its first row."""
    steps = _steps(out)
    rows = []
    for name in STEPS:
        record = steps.get(name, {"status": "not run", "seconds": None, "note": ""})
        figures = _figures(name, out) or [("", record.get("note", ""))]
        for i, (figure, value) in enumerate(figures):
            rows.append({"step": name if i == 0 else "",
                         "status": record["status"] if i == 0 else "",
                         "seconds": record["seconds"] if i == 0 else None,
                         "figure": figure, "value": value})
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    width = max([len(r["figure"]) for r in rows] + [6])
    lines = [f"{'step':<10} {'status':<8} {'time':>5}  {'figure':<{width}}  value"]
    for r in rows:
        seconds = f"{r['seconds']}s" if r["seconds"] is not None else ""
        lines.append(f"{r['step']:<10} {r['status']:<8} {seconds:>5}  "
                     f"{r['figure']:<{width}}  {r['value']}".rstrip())
    return "\n".join(lines)


def summary(out: str) -> int:
    """Print the table and write OUT/summary.json; 1 if a step failed or timed out."""
    rows = table(out)
    print(format_table(rows), flush=True)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"rows": rows}, f, indent=2)
    bad = [r["step"] for r in rows if r["status"] in ("failed", "timeout")]
    return 1 if bad else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu_check",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("device", help="write the machine's description as JSON").add_argument(
        "json", metavar="OUT.json")
    sub.add_parser("summary", help="print the table of OUT_DIR's results").add_argument(
        "out", metavar="OUT_DIR")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "summary":
        return summary(args.out)
    text = json.dumps(device_info(), indent=2)
    with open(args.json, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
