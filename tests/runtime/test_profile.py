"""`--profile-steps A:B`: a jax.profiler trace of those steps that changes no number."""

import glob
import os

import pytest

from mnist_plus import config as config_lib
from mnist_plus import train
from mnist_plus.trainer import train_and_evaluate
from tests.helpers import read_bytes, tiny_config


@pytest.mark.slow
def test_profiling_writes_a_trace_and_changes_no_number(prepared_tiny, reference_run, tmp_path):
    # Steps 6..10 span the end of epoch 1 (8 steps per epoch): the loop is cut at 5, 8, 10.
    lines = []
    train_and_evaluate(tiny_config(prepared_tiny, profile_steps="6:10"), str(tmp_path),
                       log=lines.append)
    assert read_bytes(tmp_path / "metrics.jsonl") == read_bytes(
        os.path.join(reference_run, "metrics.jsonl"))
    runs = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*"))
    assert len(runs) == 1  # one trace session
    names = os.listdir(runs[0])
    assert any(n.endswith(".xplane.pb") for n in names)  # TensorBoard's profile plugin
    assert "perfetto_trace.json.gz" in names  # ui.perfetto.dev
    assert any(line.startswith(f"profile: trace of steps 6..10 written to "
                               f"{tmp_path / 'profile'} (") for line in lines)


@pytest.mark.parametrize("value", ["10:5", "a:b", "5", "0:3", "3:", ":4", "1.5:3"])
def test_bad_profile_steps_are_one_line_usage_errors(value, capsys, tmp_path):
    assert train.main([f"--profile-steps={value}",
                                      "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --profile-steps {value!r} is invalid: write A:B, the first and last "
                   f"global step to trace, with 1 <= A <= B (e.g. 10:20)\n")
    assert not (tmp_path / "w").exists()


def test_profile_steps_past_the_end_of_the_run_are_refused():
    config = config_lib.Config(epochs=2, batch_size=32, profile_steps="10:17")
    with pytest.raises(config_lib.UsageError, match=r"the run has only 16 steps; choose A:B "
                                                     r"within 1\.\.16"):
        config_lib.validate(config, train_size=256)
    config_lib.validate(config_lib.Config(epochs=2, batch_size=32, profile_steps="16:16"),
                        train_size=256)
