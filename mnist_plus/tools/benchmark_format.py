"""The benchmark's results as plain text: `format_report` of what `benchmark.measure`
returns (the same dict the --json file holds), so a saved JSON can be printed again."""

from __future__ import annotations

from typing import Any

from mnist_plus.runtime import compile_cache


def format_report(r: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = [f"mnist_plus benchmark: backend {r['backend']} ({r['device_kind']}, "
             f"{r['num_devices']} device(s)), host CPU {r['cpu_isa']} with {r['cpu_count']} "
             f"cores, jax {r['jax_version']}, {r['data']} data "
             f"({r['train_examples']} train / {r['test_examples']} test), "
             f"width {r['config']['width']}"]
    mm = r["matmul"]
    lines.append(f"dense matmul {mm['size']}x{mm['size']} {mm['dtype']}: "
                 f"{mm['seconds'] * 1e3:.1f} ms, {mm['flops_per_second'] / 1e9:.1f} GFLOP/s "
                 f"(the utilisation reference)")
    lines += ["", "train step (one device-resident batch, state donated; median of "
              f"{r['repeats']} repeats)",
              f"{'batch':>7} {'compile s':>10} {'step ms':>9} {'images/s':>10} "
              f"{'GFLOP/step':>11} {'GFLOP/s':>9} {'util':>6}"]
    for s in r["train_step"]:
        lines.append(f"{s['batch_size']:>7} {s['compile_seconds']:>10.2f} "
                     f"{s['step_seconds'] * 1e3:>9.2f} {s['images_per_second']:>10.0f} "
                     f"{s.get('flops_per_step', float('nan')) / 1e9:>11.3f} "
                     f"{s.get('flops_per_second', float('nan')) / 1e9:>9.2f} "
                     f"{100 * s.get('utilisation', float('nan')):>5.1f}%")
    f = r["flops_per_image"]
    lines.append(f"model FLOPs per image: forward {f['forward'] / 1e6:.2f} MFLOP; train step "
                 f"{f['train_step'] / 1e6:.2f} MFLOP (forward, backward and update, "
                 f"batch {f['train_step_batch_size']})")
    lines += ["", f"training epoch (batch {r['config']['batch_size']}, data feeding included)",
              f"{'loop':>6} {'steps timed':>12} {'timed s':>8} {'epoch s':>8} "
              f"{'images/s':>9} {'compile s':>10}"]
    notes = []
    for e in r["epoch"]:
        mark = "*" if e["extrapolated"] else " "
        lines.append(f"{e['loop']:>6} {e['steps_timed']:>5}/{e['steps_per_epoch']:<6} "
                     f"{e['seconds_timed']:>8.2f} {e['epoch_seconds']:>7.1f}{mark} "
                     f"{e['images_per_second']:>9.0f} {e['compile_seconds']:>10.2f}")
        if e["extrapolated"]:
            notes.append(f"  * {e['loop']}: extrapolated from {e['steps_timed']} of "
                         f"{e['steps_per_epoch']} steps (--epoch-examples)")
    lines += notes
    ev = r["eval"]
    lines += ["", f"evaluation: {ev['images']} test images in {ev['seconds']:.2f} s "
              f"({ev['images_per_second']:.0f} images/s, batch {ev['batch_size']}, with the "
              f"all-ten-numbers sum pass); compile {ev['compile_seconds']:.2f} s"]
    if "precise_bn" in ev:
        lines += [f"--precise-bn: BatchNorm statistics from {ev['precise_bn']['images']} clean "
                  f"training images in {ev['precise_bn']['seconds']:.2f} s, before each "
                  f"evaluation"]
    if not r["devices"]:
        lines += ["", "data parallel: not timed, JAX sees one device (on CPU, "
                      "XLA_FLAGS=--xla_force_host_platform_device_count=N forces N)"]
    else:
        lines += ["", f"data parallel: batch {r['config']['batch_size']} split over N devices "
                      f"({r['devices'][0]['device_kind']}; forced CPU devices share the same "
                      f"cores)",
                      f"{'devices':>8} {'per device':>11} {'step ms':>9} {'images/s':>10}"]
        for d in r["devices"]:
            lines.append(f"{d['num_devices']:>8} {d['per_device_batch']:>11} "
                         f"{d['step_seconds'] * 1e3:>9.2f} {d['images_per_second']:>10.0f}")
    fs = r["first_step"]
    lines.append(f"process start to first train step: "
                 f"{fs['process_start_to_first_step_seconds']:.2f} s (interpreter "
                 f"{fs['interpreter_seconds']:.2f}, imports {fs['import_seconds']:.2f}, "
                 f"data {fs['data_seconds']:.2f}, init {fs['init_seconds']:.2f}, first step with "
                 f"compile {fs['first_step_seconds']:.2f}; loop {fs['loop']}; "
                 f"{compile_cache.describe(fs)})")
    lines.append(f"benchmark wall time: {r['benchmark_seconds']:.1f} s ("
                 + ", ".join(f"{k} {v:.1f}" for k, v in r["section_seconds"].items()) + ")")
    return "\n".join(lines)
