"""runtime.host names the CPU every speed figure came from, from /proc/cpuinfo alone."""

import os
import subprocess
import sys

import pytest

from mnist_plus.runtime import host
from tests.helpers import REPO

_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Some Xeon @ 2.00GHz
flags\t\t: fpu sse2 {flags}
vmx flags\t: ept

processor\t: 1
flags\t\t: fpu
"""


@pytest.mark.parametrize("flags, isa", [
    ("avx2 avx512f amx_tile", "amx"), ("avx2 avx512f", "avx512"), ("avx avx2", "avx2"),
    ("avx", "other")])
def test_cpu_isa_is_the_widest_vector_extension_of_the_first_core(tmp_path, flags, isa):
    path = tmp_path / "cpuinfo"
    path.write_text(_CPUINFO.format(flags=flags))
    assert host.cpu_isa(str(path)) == isa
    assert host.cpu_flags(str(path)) == {"fpu", "sse2", *flags.split()}
    assert host.cpu_model(str(path)) == "Some Xeon @ 2.00GHz"


def test_a_cpu_without_x86_flags_is_other_and_no_cpuinfo_is_unknown(tmp_path):
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert host.cpu_isa(str(arm)) == "other" and host.cpu_flags(str(arm)) == set()
    missing = str(tmp_path / "missing")
    assert host.cpu_isa(missing) == "unknown" and host.cpu_flags(missing) is None


def test_this_hosts_figures_need_neither_jax_nor_torch():
    # The PyTorch baseline reads them too: it must not pay for importing JAX.
    code = ("import sys; from mnist_plus.runtime import host; "
            "print(host.cpu_isa(), host.cpu_count(), 'jax' in sys.modules, "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [host.cpu_isa(), str(os.cpu_count()), "False", "False"]


def _kernels_in_fresh_process(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**env, "PYTHONPATH": REPO})


def test_ynn_kernels_set_xla_flags_before_jax_starts_and_xla_leaves_them_alone():
    result = _kernels_in_fresh_process(
        "import os; from mnist_plus.runtime import host\n"
        "host.use_cpu_kernels('xla'); print(repr(os.environ.get('XLA_FLAGS')))\n"
        "host.use_cpu_kernels('ynn'); host.use_cpu_kernels('ynn')\n"
        "import jax; jax.numpy.zeros(1).block_until_ready()\n"
        "print(os.environ['XLA_FLAGS'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None", host.YNN_DOTS]
    assert result.stderr == ""


def test_ynn_kernels_asked_for_after_jax_started_say_so_in_one_line_and_change_nothing():
    result = _kernels_in_fresh_process(
        "import os, jax; jax.numpy.zeros(1).block_until_ready()\n"
        "from mnist_plus.runtime import host; host.use_cpu_kernels('ynn')\n"
        "print(os.environ.get('XLA_FLAGS'))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "start a fresh process" in lines[0]
