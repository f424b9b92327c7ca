"""The benchmark CLI as a smoke test: tiny settings, every figure present and sane."""

import json
import math
import os
import subprocess
import sys

import pytest

from mnist_plus import cli
from mnist_plus import benchmark as benchmark_cli
from mnist_plus import configs
from mnist_plus.tools import benchmark
from mnist_plus.tools import benchmark_format
from mnist_plus.tools import benchmark_timing
from mnist_plus.runtime import host as host_lib
from mnist_plus import config as config_lib
from tests.helpers import REPO

# The tiny training's model and batches (tests/helpers' TINY) and experiments/gpu_check.sh's
# tiny setting: the programs of this run, its first-step child included, are then ones the
# session's compilation cache already holds, or will serve to the others.
TINY = ["--batch-sizes", "32", "--repeats", "2", "--warmup-steps", "1",
        "--min-repeat-seconds", "0.01", "--train-examples", "256", "--test-examples", "64",
        "--epoch-examples", "host=0,scan=64", "--matmul-size", "128", "--width", "4",
        "--batch-size", "32", "--eval-batch-size", "64", "--precise-bn", "0"]


def _bench(*flags, env=None):
    return subprocess.run([sys.executable, "-m", "mnist_plus.benchmark", *flags], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _numbers(tree, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


@pytest.mark.slow
def test_benchmark_cli_reports_every_figure(tmp_path):
    """On one device (the data-parallel figure is timed in-process below)."""
    out = tmp_path / "bench.json"
    result = _bench(*TINY, "--json", str(out))
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    assert r["backend"] and r["data"] == "synthetic" and r["train_examples"] == 256
    # Speed moves with the vector ISA: every figure says which CPU it came from.
    assert r["cpu_isa"] == host_lib.cpu_isa() and r["cpu_count"] == os.cpu_count()
    assert f"host CPU {r['cpu_isa']} with {r['cpu_count']} cores" in result.stdout

    positive = {
        "matmul": ("flops", "seconds", "flops_per_second"),
        "eval": ("seconds", "images_per_second", "compile_seconds"),
        "first_step": ("process_start_to_first_step_seconds", "import_seconds",
                       "init_seconds", "first_step_seconds"),
        "flops_per_image": ("forward", "train_step"),
    }
    for section, keys in positive.items():
        for key in keys:
            assert r[section][key] > 0, (section, key, r[section][key])
    [step] = r["train_step"]
    for key in ("compile_seconds", "step_seconds", "images_per_second", "flops_per_step",
                "flops_per_image", "flops_per_second", "utilisation"):
        assert step[key] > 0, (key, step[key])
    assert step["batch_size"] == 32 and len(step["step_seconds_repeats"]) == 2
    # Derived figures are the same float64 formula of the stored figures (JSON keeps
    # float64 exactly): isclose's 1e-9 only absorbs a reassociated operation.
    assert math.isclose(step["images_per_second"], 32 / step["step_seconds"])
    assert math.isclose(step["utilisation"],
                        step["flops_per_second"] / r["matmul"]["flops_per_second"])
    # Training a batch costs more than inferring it: backward pass and optimizer update.
    assert r["flops_per_image"]["train_step"] > 2 * r["flops_per_image"]["forward"]

    assert [e["loop"] for e in r["epoch"]] == ["host", "scan"]
    host, scan = r["epoch"]
    assert host["steps_timed"] == host["steps_per_epoch"] == 8 and not host["extrapolated"]
    assert scan["steps_timed"] == 2 and scan["extrapolated"]
    for e in r["epoch"]:
        for key in ("seconds_timed", "epoch_seconds", "images_per_second", "compile_seconds"):
            assert e[key] > 0, (e["loop"], key, e[key])
        assert math.isclose(e["epoch_seconds"],
                            e["seconds_timed"] * e["steps_per_epoch"] / e["steps_timed"])
    assert r["eval"]["images"] == 64 and "precise_bn" not in r["eval"]
    assert r["devices"] == []
    for path, value in _numbers(r):
        assert math.isfinite(value) and value >= 0, (path, value)

    text = result.stdout
    for words in ("dense matmul", "train step", "compile s", "images/s", "util",
                  "model FLOPs per image", "training epoch", "extrapolated from 2 of 8 steps",
                  "evaluation:", "process start to first train step",
                  "data parallel: not timed, JAX sees one device"):
        assert words in text, words


@pytest.mark.parametrize("flags, message", [
    (["--batch-sizes", "0"], "give one or more positive integers"),
    (["--batch-sizes", "a,b"], "not a comma-separated list of integers"),
    (["--loops", "host,gpu"], "choose from host, scan"),
    (["--epoch-examples", "warp=3"], "loops are host, scan"),
    (["--repeats", "0"], "--repeats 0 is invalid"),
    (["--json", "/nonexistent-dir/b.json"], "cannot write --json"),
    (["--train-examples", "100", "--batch-sizes", "128"],
     "batch size 128 is larger than the 100 training examples"),
])
def test_bad_flags_get_one_line(flags, message, capsys):
    assert benchmark_cli.main(flags) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


class _Compiled:
    def __init__(self, analysis):
        self.analysis = analysis

    def cost_analysis(self):
        return self.analysis


@pytest.mark.parametrize("analysis, flops", [
    ({"flops": 12.0}, 12.0), ([{"flops": 7.0}], 7.0), ([], None), (None, None),
    ({"flops": -1.0}, None), ({"bytes accessed": 3.0}, None),
])
def test_compiled_flops_reads_every_shape_of_cost_analysis(analysis, flops):
    assert benchmark_timing.compiled_flops(_Compiled(analysis)) == flops


@pytest.mark.slow
def test_time_to_accuracy_reports_every_seed(prepared_tiny, tmp_path):
    """The tiny data, a low target: every seed reaches it, and the JSON adds up."""
    tfds_dir, mnist_dir = prepared_tiny
    out = tmp_path / "tta.json"
    result = _bench("--time-to-accuracy", "0.01", "--seeds", "2", "--tfds-dir", tfds_dir,
                    "--mnist-dir", mnist_dir, "--width", "4", "--batch-size", "32",
                    "--eval-batch-size", "64", "--epochs", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    tta = json.loads(out.read_text())["time_to_accuracy"]
    assert tta["target"] == 0.01 and tta["seeds"] == [0, 1] and tta["reached"]
    # Flags given override the preset's fields (batch 128); the rest it keeps.
    assert tta["config"]["epochs"] == 1 and tta["config"]["batch_size"] == 32
    assert tta["config"]["adder"] == configs.preset_fields("speedrun")["adder"] == "shift"
    seconds = [s["seconds"] for s in tta["per_seed"]]
    assert math.isclose(tta["mean_seconds"], sum(seconds) / 2)
    for s in tta["per_seed"]:
        epochs = s["epochs"][:s["epoch"]]
        assert math.isclose(s["seconds"], sum(e["epoch_seconds"] for e in epochs))
        assert 0 < s["train_seconds"] < s["seconds"]
        hit = s["epochs"][s["epoch"] - 1]  # the accuracy at the stop is in the JSON
        assert (s["test_digit_accuracy"], s["test_sum_accuracy"]) == (
            hit["test_digit_accuracy"], hit["test_sum_accuracy"])
        assert min(s["test_digit_accuracy"], s["test_sum_accuracy"]) >= 0.01
    assert "seed 1:" in result.stdout and "CPU vector ISA" in result.stdout
    assert (f"ours: reached 2 of 2 seeds; {tta['mean_seconds']:.1f} ± {tta['std_seconds']:.1f} s"
            in result.stdout)


def test_time_to_accuracy_layers_preset_then_config_file_then_flags(tmp_path):
    """The preset is only the defaults: a --config file's fields beat it, flags beat both,
    and `--flag=value` counts as given, as `--flag value` does."""
    fast = configs.preset_fields("speedrun")
    path = tmp_path / "tta.json"
    path.write_text(json.dumps({"epochs": 3, "width": 12}))
    args = benchmark_cli.benchmark_parser().parse_args(["--time-to-accuracy", "0.99", "--config",
                                              str(path), "--width", "10", "--batch-size=48"])
    config = benchmark._speed_config(args)
    assert (config.epochs, config.width, config.batch_size) == (3, 10, 48)
    assert (config.stem, config.stem_width, config.adder) == (
        fast["stem"], fast["stem_width"], fast["adder"])
    assert not config.progress and not config.report
    # Without --time-to-accuracy the default config is measured, unless --preset names one.
    plain = benchmark_cli.benchmark_parser().parse_args([])
    assert cli.config_from_args(plain) == config_lib.Config()
    named = benchmark_cli.benchmark_parser().parse_args(["--preset", "fast"])
    assert cli.config_from_args(named) == configs.get("fast")


def test_evaluation_figure_times_the_precise_bn_pass_when_it_is_on():
    from mnist_plus.training.state import create_state

    mnist = benchmark_timing.synthetic_mnist(256, 128)
    for precise_bn, expected in ((0, None), (100, 96)):  # 3 whole batches of 32
        config = config_lib.Config(width=4, batch_size=32, eval_batch_size=64,
                                   precise_bn=precise_bn)
        result = benchmark.bench_eval(create_state(config, 8), config, mnist, repeats=1)
        assert result["images"] == 128
        if expected is None:
            assert "precise_bn" not in result
        else:
            assert result["precise_bn"]["images"] == expected
            assert result["precise_bn"]["seconds"] > 0


def test_data_parallel_figure_is_the_split_steps_own_time():
    """The data-parallel row of one device (in-process JAX sees one CPU device; the
    split over several runs in the data-parallel training tests): the sharded step runs,
    and its images per second are the batch over its median step time."""
    mnist = benchmark_timing.synthetic_mnist(256, 64)
    config = config_lib.Config(width=4, batch_size=32, eval_batch_size=64, precise_bn=0)
    [row] = benchmark.bench_devices(config, mnist, [1], repeats=2, min_repeat_seconds=0.01)
    assert (row["num_devices"], row["batch_size"], row["per_device_batch"]) == (1, 32, 32)
    assert row["step_seconds"] > 0 and row["first_call_seconds"] > 0
    assert row["device_kind"] == benchmark.jax.devices()[0].device_kind
    assert math.isclose(row["images_per_second"], 32 / row["step_seconds"])


def test_compare_pytorch_needs_the_mnist_files(monkeypatch, capsys):
    monkeypatch.delenv("MNIST_PLUS_MNIST_DIR", raising=False)
    assert benchmark_cli.main(["--compare-pytorch"]) == 2
    assert "--compare-pytorch reads the MNIST IDX files" in capsys.readouterr().err


def _results():
    """A result dict of `benchmark.measure`'s shape, with round figures."""
    epoch = dict(batch_size=16, setup_seconds=0.0, steps_per_epoch=16, images_per_second=1200,
                 compile_seconds=11.5)
    return {
        "backend": "cpu", "device_kind": "cpu", "num_devices": 1, "jax_version": "0.10.2",
        "cpu_isa": "avx2", "cpu_count": 2, "data": "synthetic", "train_examples": 256,
        "test_examples": 64, "repeats": 2, "config": {"width": 2, "batch_size": 16},
        "matmul": {"size": 128, "dtype": "float32", "flops": 4e6, "seconds": 4e-4,
                   "flops_per_second": 1e10},
        "train_step": [{"batch_size": 16, "compile_seconds": 13.8, "step_seconds": 0.0065,
                        "images_per_second": 2460, "flops_per_step": 2.2e7,
                        "flops_per_second": 3.4e9, "utilisation": 0.33}],
        "flops_per_image": {"forward": 4.5e5, "train_step": 1.39e6, "train_step_batch_size": 16},
        "epoch": [{**epoch, "loop": "host", "steps_timed": 16, "seconds_timed": 0.2,
                   "epoch_seconds": 0.2, "extrapolated": False},
                  {**epoch, "loop": "scan", "steps_timed": 4, "seconds_timed": 0.05,
                   "epoch_seconds": 0.2, "extrapolated": True}],
        "eval": {"images": 64, "batch_size": 32, "seconds": 0.01, "images_per_second": 6400,
                 "compile_seconds": 1.44, "precise_bn": {"images": 256, "seconds": 0.02}},
        "devices": [{"num_devices": 1, "batch_size": 16, "per_device_batch": 16,
                     "step_seconds": 0.0064, "images_per_second": 2500, "device_kind": "cpu"}],
        "first_step": {"loop": "host", "process_start_to_first_step_seconds": 15.8,
                       "interpreter_seconds": 0.2, "import_seconds": 2.5, "data_seconds": 0.0,
                       "init_seconds": 6.5, "first_step_seconds": 6.6, "compile_cache": "/c",
                       "compile_cache_entries_before": 50},
        "section_seconds": {"data": 0.0, "epoch": 24.3}, "benchmark_seconds": 104.1,
    }


def test_format_report_prints_every_section_from_the_json_alone():
    """The table is a function of the --json dict: a saved JSON prints the same again."""
    lines = benchmark_format.format_report(_results()).splitlines()
    assert lines[0] == ("mnist_plus benchmark: backend cpu (cpu, 1 device(s)), host CPU avx2 "
                        "with 2 cores, jax 0.10.2, synthetic data (256 train / 64 test), width 2")
    expected = [
        "dense matmul 128x128 float32: 0.4 ms, 10.0 GFLOP/s (the utilisation reference)",
        "     16      13.80      6.50       2460       0.022      3.40  33.0%",
        "model FLOPs per image: forward 0.45 MFLOP; train step 1.39 MFLOP (forward, backward "
        "and update, batch 16)",
        "  host    16/16         0.20     0.2       1200      11.50",
        "  scan     4/16         0.05     0.2*      1200      11.50",
        "  * scan: extrapolated from 4 of 16 steps (--epoch-examples)",
        "--precise-bn: BatchNorm statistics from 256 clean training images in 0.02 s, before "
        "each evaluation",
        "       1          16      6.40       2500",
        "process start to first train step: 15.80 s (interpreter 0.20, imports 2.50, data 0.00, "
        "init 6.50, first step with compile 6.60; loop host; compile cache warm (50 entries))",
        "benchmark wall time: 104.1 s (data 0.0, epoch 24.3)",
    ]
    for line in expected:
        assert line in lines, line


def test_one_device_skips_the_data_parallel_timing_and_says_how_to_force_more():
    """With one device there is nothing to split, and the train step's figure is the one
    a 1-device data-parallel step would give; in-process JAX here sees one CPU device."""
    assert len(benchmark.jax.devices()) == 1
    assert benchmark.default_device_counts(16) == []
    lines = benchmark_format.format_report({**_results(), "devices": []}).splitlines()
    assert ("data parallel: not timed, JAX sees one device (on CPU, "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N forces N)") in lines
    assert not any(line.split()[:1] == ["devices"] for line in lines)


@pytest.mark.parametrize("name", configs.NAMES)
def test_the_comparisons_child_trains_every_presets_config(name):
    """The flags a comparison passes its `python -m mnist_plus.train` child rebuild the
    preset's config exactly (booleans as --name / --no-name)."""
    from mnist_plus.tools import speedrun

    config = configs.get(name)
    args = cli.train_parser().parse_args([*speedrun._config_flags(config), "--workdir", "w"])
    assert cli.config_from_args(args) == config
