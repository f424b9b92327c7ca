"""How fast is it, on this backend: `python -m mnist_plus.benchmark [--json PATH]`.

Measures, on whatever backend JAX sees, and prints as a table (and writes as JSON):
- the train step's compile time (first call minus steady state), its steady-state time
  and images/s for several batch sizes (warm-up, `block_until_ready`, median of repeats);
- a training epoch's wall time for each loop (`host`, `scan`), data feeding included;
  an epoch shortened with `--epoch-examples` is extrapolated, and the output says so;
- evaluation throughput on the test set;
- FLOPs per image from XLA's cost analysis of the compiled programs, and the achieved
  FLOP/s as a fraction of a large dense matmul's FLOP/s measured in the same run (a
  utilisation figure that compares across machines, unlike raw seconds);
- process start to the first train step (imports, data, compile), in a fresh process.

Synthetic data of MNIST's shape by default (timings do not depend on pixel values), real
MNIST with `--real-mnist`. Each compile-time figure is taken after `jax.clear_caches()`,
so no measurement reuses another's compiled program.

Here the measurements and `run`; the timer and synthetic data in `benchmark_timing`, the
text table in `benchmark_format`, the flags in `mnist_plus/benchmark.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from mnist_plus.runtime import compile_cache, host
from mnist_plus import config as config_lib
from mnist_plus.training import batch_stats
from mnist_plus.data import mnist as data
from mnist_plus.training import evaluation
from mnist_plus.training import loops
from mnist_plus.data import sampler
from mnist_plus.training import mesh as mesh_lib
from mnist_plus.tools import speedrun
from mnist_plus.tools.benchmark_format import format_report
# median_seconds is not used here: experiments/ scripts import it from this module.
from mnist_plus.tools.benchmark_timing import (compiled_flops, median_seconds,  # noqa: F401
                                               steady_step_seconds, synthetic_batch,
                                               synthetic_mnist, timed)
from mnist_plus import cli
from mnist_plus.benchmark import CPU_SCAN_EPOCH_EXAMPLES
from mnist_plus.cli import config_from_args
from mnist_plus.errors import MnistPlusError, UsageError
from mnist_plus.training.state import TrainState, create_state
from mnist_plus.training.step import make_train_step, zero_train_metrics

_IMPORTED = time.time()  # the first-step probe counts imports from cli.IMPORTED_AT to here

LAUNCH_ENV = "MNIST_PLUS_BENCH_LAUNCH_TIME"  # the parent's time.time() just before launch
FIRST_STEP_MARKER = "FIRST_STEP_JSON "


# ----------------------------------------------------------------------------- data

def load_data(args: argparse.Namespace, config: config_lib.Config) -> data.Mnist:
    """Synthetic or real MNIST, cut to --train-examples / --test-examples."""
    if not args.real_mnist:
        return synthetic_mnist(args.train_examples or 60_000, args.test_examples or 10_000)
    mnist = data.load_mnist(config.tfds_dir or None, config.mnist_dir or None)
    n, m = args.train_examples or None, args.test_examples or None
    return data.Mnist(mnist.train_images[:n], mnist.train_labels[:n],
                      mnist.test_images[:m], mnist.test_labels[:m])


# ------------------------------------------------------------------------ measurements

def bench_matmul(size: int, repeats: int) -> dict[str, Any]:
    """FLOP/s of a large float32 matmul: the reference a utilisation is measured against."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    flops = compiled_flops(compiled) or 2.0 * size ** 3
    timed(lambda: compiled(a, b))
    seconds = statistics.median(timed(lambda: compiled(a, b))[0] for _ in range(repeats))
    return {"size": size, "dtype": "float32", "flops": flops, "seconds": seconds,
            "flops_per_second": flops / seconds}


def bench_train_step(state: TrainState, mnist: data.Mnist, batch_size: int, warmup: int,
                     repeats: int, min_repeat_seconds: float,
                     matmul_flops_per_second: float, label_smoothing: float = 0.0
                     ) -> dict[str, Any]:
    """Compile time, steady step time and FLOPs of the jitted step at one batch size.

    The step is jitted with the state (consumed) and metrics donated, as the host loop
    does, and fed one device-resident batch: the step alone, without data feeding.
    """
    batch = jax.device_put(synthetic_batch(batch_size, mnist.train_images, mnist.train_labels))
    metrics = jax.block_until_ready(zero_train_metrics())
    jax.clear_caches()

    def first_call():
        compiled = jax.jit(make_train_step(label_smoothing), donate_argnums=(0, 2)).lower(
            state, batch, metrics).compile()
        return compiled, compiled(state, batch, metrics)

    first_seconds, (step, (state, metrics)) = timed(first_call)
    for _ in range(warmup):
        state, metrics = step(state, batch, metrics)
    times, steps_per_repeat = steady_step_seconds(step, state, batch, metrics, repeats,
                                                   min_repeat_seconds)
    seconds = statistics.median(times)
    flops = compiled_flops(step)
    row = {"batch_size": batch_size, "first_call_seconds": first_seconds,
           "compile_seconds": first_seconds - seconds, "step_seconds": seconds,
           "step_seconds_repeats": times, "steps_per_repeat": steps_per_repeat,
           "images_per_second": batch_size / seconds}
    if flops:
        row.update(flops_per_step=flops, flops_per_image=flops / batch_size,
                   flops_per_second=flops / seconds,
                   utilisation=flops / seconds / matmul_flops_per_second)
    return row


def forward_flops_per_image(state: TrainState, batch_size: int) -> float | None:
    """The model's inference FLOPs per image (both heads), from XLA's cost analysis."""
    batch = synthetic_batch(batch_size)

    def forward(state, batch):
        return state.apply_fn(state.variables, batch.image, batch.number, train=False)

    flops = compiled_flops(jax.jit(forward).lower(state, batch).compile())
    return flops / batch_size if flops else None


def bench_epoch(state: TrainState, config: config_lib.Config, mnist: data.Mnist,
                loop_name: str, examples: int) -> dict[str, Any]:
    """Wall time of training `examples` examples of an epoch with one loop, data included
    (the config's augmentation too).

    A warm-up run first compiles what the timed run executes: a few steps for the host
    loop (one program per step), the same range of steps for other loops (the scan loop
    compiles one program per chunk length). The timed run is another epoch's stream;
    `state` is consumed.
    """
    steps_per_epoch = sampler.steps_per_epoch(len(mnist.train_labels), config.batch_size)
    steps = max(1, min(steps_per_epoch, examples // config.batch_size))
    warm = min(steps, 3) if loop_name == "host" else steps
    warm_metrics, metrics = zero_train_metrics(), zero_train_metrics()
    t0 = time.perf_counter()
    loop = loops.make_loop(loop_name, mnist.train_images, mnist.train_labels,
                           config.seed, config.batch_size, sampler.augment_for(config),
                           step=make_train_step(config.label_smoothing))
    setup_seconds = time.perf_counter() - t0
    jax.block_until_ready((state, warm_metrics, metrics))
    jax.clear_caches()
    warm_seconds, (state, _) = timed(lambda: loop.run(state, warm_metrics, 0, 0, warm))
    seconds, _ = timed(lambda: loop.run(state, metrics, 1, 0, steps))
    per_step = seconds / steps
    return {"loop": loop_name, "batch_size": config.batch_size, "setup_seconds": setup_seconds,
            "steps_timed": steps, "steps_per_epoch": steps_per_epoch, "seconds_timed": seconds,
            "epoch_seconds": per_step * steps_per_epoch, "extrapolated": steps < steps_per_epoch,
            "images_per_second": config.batch_size / per_step,
            "compile_seconds": warm_seconds - warm * per_step}


def default_device_counts(batch_size: int) -> list[int]:
    """1, 2, 4, ... up to the devices JAX sees, each dividing the batch; none where JAX
    sees one device (nothing to split: the train step's figure is that one)."""
    n, counts = len(jax.devices()), []
    if n == 1:
        return counts
    d = 1
    while d <= n:
        if batch_size % d == 0:
            counts.append(d)
        d *= 2
    if n not in counts and batch_size % n == 0:
        counts.append(n)
    return counts


def bench_devices(config: config_lib.Config, mnist: data.Mnist, counts: Sequence[int],
                  repeats: int, min_repeat_seconds: float) -> list[dict[str, Any]]:
    """Steady-state step time of the data-parallel step (the global batch split over the
    first N devices, state replicated) for each N: how training scales with devices.
    On forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count) the devices
    share the same cores, so this checks the sharded step runs, not speed."""
    rows = []
    for n in counts:
        mesh = mesh_lib.make_mesh(n)
        mesh_lib.check_divisible(mesh, "batch-size", config.batch_size)
        state = create_state(config, 1, mesh)
        host = synthetic_batch(config.batch_size, mnist.train_images, mnist.train_labels)
        batch = mesh_lib.put_split(host, mesh, config.batch_size)
        metrics = mesh_lib.put_replicated(zero_train_metrics(), mesh)
        step = loops.jit_step(make_train_step(config.label_smoothing), mesh)
        compile_seconds, (state, metrics) = timed(lambda: step(state, batch, metrics))
        times, _ = steady_step_seconds(step, state, batch, metrics, repeats,
                                        min_repeat_seconds)
        seconds = statistics.median(times)
        rows.append({"num_devices": n, "batch_size": config.batch_size,
                     "per_device_batch": config.batch_size // n, "step_seconds": seconds,
                     "images_per_second": config.batch_size / seconds,
                     "first_call_seconds": compile_seconds,
                     "device_kind": mesh.devices.flat[0].device_kind})
    return rows


def bench_eval(state: TrainState, config: config_lib.Config, mnist: data.Mnist,
               repeats: int) -> dict[str, Any]:
    """Throughput of training's evaluator on the test set (with its all-numbers pass)."""
    evaluator = evaluation.evaluator_for(config, mnist.test_images, mnist.test_labels)
    jax.clear_caches()
    first, _ = timed(lambda: evaluator.metrics(state))
    seconds = statistics.median(timed(lambda: evaluator.metrics(state))[0]
                                for _ in range(repeats))
    n = len(mnist.test_labels)
    result = {"images": n, "batch_size": config.eval_batch_size, "seconds": seconds,
              "images_per_second": n / seconds, "compile_seconds": first - seconds}
    if config.precise_bn:  # run before each evaluation: part of its cost
        recompute = batch_stats.PreciseBatchStats(mnist.train_images, config.precise_bn,
                                                  config.batch_size)
        run = lambda: recompute(state).batch_stats  # noqa: E731
        timed(run)
        result["precise_bn"] = {"images": recompute.num_examples, "seconds": statistics.median(
            timed(run)[0] for _ in range(repeats))}
    return result


def first_step_probe(args: argparse.Namespace, config: config_lib.Config) -> dict[str, Any]:
    """In a fresh process: data, state, the training loop's first step; times since launch."""
    launch = float(os.environ.get(LAUNCH_ENV, cli.IMPORTED_AT))
    t0 = time.time()
    mnist = load_data(args, config)
    t_data = time.time()
    state = create_state(config, sampler.steps_per_epoch(len(mnist.train_labels),
                                                                config.batch_size))
    loop = loops.make_loop(config.loop, mnist.train_images,
                           mnist.train_labels, config.seed, config.batch_size,
                           step=make_train_step(config.label_smoothing))
    t_init = time.time()
    jax.block_until_ready(loop.run(state, zero_train_metrics(), 0, 0, 1))
    t_step = time.time()
    return {"loop": loops.choose_loop(config.loop),
            "process_start_to_first_step_seconds": t_step - launch,
            "interpreter_seconds": cli.IMPORTED_AT - launch,
            "import_seconds": _IMPORTED - cli.IMPORTED_AT,
            "data_seconds": t_data - t0, "init_seconds": t_init - t_data,
            "first_step_seconds": t_step - t_init}


def bench_first_step(argv: Sequence[str], timeout: float = 600) -> dict[str, Any]:
    """Run the probe in a new Python process, so imports and compiles start cold."""
    env = speedrun.child_env()
    env[LAUNCH_ENV] = repr(time.time())
    result = subprocess.run([sys.executable, "-m", "mnist_plus.benchmark", *argv,
                             "--first-step-only"], env=env, capture_output=True, text=True,
                            timeout=timeout)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(FIRST_STEP_MARKER):
            return json.loads(line[len(FIRST_STEP_MARKER):])
    raise MnistPlusError(f"the first-step probe failed (exit {result.returncode}): "
                         f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")


def measure(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Every measurement, one after another so that each has the machine to itself."""
    t_start = time.perf_counter()
    sections: dict[str, float] = {}

    def section(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        sections[name] = time.perf_counter() - t
        return out

    config = config_lib.validate(dataclasses.replace(config_from_args(args), progress=False))
    mnist = section("data", lambda: load_data(args, config))
    n_train = len(mnist.train_labels)
    for b in args.batch_sizes + [config.batch_size]:
        if b > n_train:
            raise UsageError(f"batch size {b} is larger than the {n_train} training examples")
    first_step = section("first_step", lambda: bench_first_step(argv))
    # Every state is made now, before any jax.clear_caches() below: each is donated by
    # what times it, so each gets its own buffers. One initialisation (one compile) per
    # schedule length; the other states of that length are copies of it.
    made: dict[int, Any] = {}

    def fresh_state(batch_size: int):
        spe = sampler.steps_per_epoch(n_train, batch_size)
        if spe not in made:
            made[spe] = create_state(config, spe)
            return made[spe]
        return jax.device_put(made[spe], may_alias=False)

    states = section("init", lambda: jax.block_until_ready({
        "step": [fresh_state(b) for b in args.batch_sizes],
        "epoch": [fresh_state(config.batch_size) for _ in args.loops],
        "eval": fresh_state(config.batch_size)}))
    backend = jax.default_backend()
    matmul = section("matmul", lambda: bench_matmul(
        args.matmul_size or (2048 if backend == "cpu" else 8192), args.repeats))
    steps = section("train_step", lambda: [
        bench_train_step(state, mnist, b, args.warmup_steps, args.repeats,
                         args.min_repeat_seconds, matmul["flops_per_second"],
                         config.label_smoothing)
        for state, b in zip(states["step"], args.batch_sizes)])
    epoch_examples = args.epoch_examples
    if epoch_examples == "auto":
        epoch_examples = {"scan": CPU_SCAN_EPOCH_EXAMPLES} if backend == "cpu" else {}
    epochs = section("epoch", lambda: [
        bench_epoch(state, config, mnist, name, epoch_examples.get(name) or n_train)
        for state, name in zip(states["epoch"], args.loops)])
    evaluation = section("eval", lambda: bench_eval(states["eval"], config, mnist, args.repeats))
    device_counts = args.device_counts or default_device_counts(config.batch_size)
    devices = section("devices", lambda: bench_devices(config, mnist, device_counts,
                                                       args.repeats, args.min_repeat_seconds))
    forward = section("forward_flops",
                      lambda: forward_flops_per_image(states["eval"], args.batch_sizes[0]))
    device = jax.devices()[0]
    return {
        "backend": backend, "device_kind": device.device_kind,
        "num_devices": len(jax.devices()), "jax_version": jax.__version__,
        "cpu_isa": host.cpu_isa(), "cpu_count": host.cpu_count(),
        "data": "mnist" if args.real_mnist else "synthetic", "train_examples": n_train,
        "test_examples": len(mnist.test_labels), "repeats": args.repeats,
        "config": config_lib.to_dict(config), "matmul": matmul, "train_step": steps,
        "flops_per_image": {"forward": forward,
                            "train_step": steps[0].get("flops_per_image"),
                            "train_step_batch_size": steps[0]["batch_size"]},
        "epoch": epochs, "eval": evaluation, "first_step": first_step, "devices": devices,
        "section_seconds": sections,
        "benchmark_seconds": time.perf_counter() - t_start,
    }


def _speed_config(args: argparse.Namespace) -> config_lib.Config:
    """The config a time-to-accuracy run trains: the preset under the file and the flags
    (`parse_args` layers them), without the progress bar and report."""
    return config_lib.validate(dataclasses.replace(config_from_args(args), progress=False,
                                                   report=False))


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    mnist_dir = args.mnist_dir or os.environ.get("MNIST_PLUS_MNIST_DIR", "")
    if args.compare_pytorch and not mnist_dir:
        raise UsageError("--compare-pytorch reads the MNIST IDX files: pass --mnist-dir DIR or "
                         "set MNIST_PLUS_MNIST_DIR")
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"CPU vector ISA: {host.cpu_isa()}; backend {jax.default_backend()}")
    if args.time_to_accuracy:
        seeds = (list(range(args.seeds[0])) if len(args.seeds) == 1 else args.seeds)
        return speedrun.time_to_accuracy(_speed_config(args), args.time_to_accuracy,
                                         seeds, mnist_dir, args.compare_pytorch,
                                         args.pytorch_epochs, args.pytorch_threads or None, log,
                                         os.path.abspath(args.pytorch_reference))
    config = config_lib.validate(dataclasses.replace(config_from_args(args), progress=False,
                                                     report=False))
    return speedrun.compare_epochs(config, args.compare_epochs, mnist_dir,
                                   args.pytorch_threads or None, log,
                                   os.path.abspath(args.pytorch_reference))


def run(args: argparse.Namespace) -> None:
    """`python -m mnist_plus.benchmark` once its flags have parsed."""
    argv = args.argv
    config = config_lib.validate(config_from_args(args))
    if args.time_to_accuracy or args.compare_pytorch:
        results = run_speed(args)
        _write_json(args, results)
        return
    if args.first_step_only:
        # As a user's start: with the compilation cache, warm once a probe has filled it.
        cache = {"compile_cache": compile_cache.enable()}
        cache["compile_cache_entries_before"] = compile_cache.entry_count(cache["compile_cache"])
        print(FIRST_STEP_MARKER + json.dumps({**first_step_probe(args, config), **cache}),
              flush=True)
        return
    results = measure(args, argv)
    print(format_report(results), flush=True)
    _write_json(args, results)


def _write_json(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        except OSError as e:
            raise UsageError(f"cannot write --json {args.json} ({e.strerror})") from None

