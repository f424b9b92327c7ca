"""Same seed, config and backend: the same bytes, run after run. Another seed: other numbers.

`reference_run` trains in the pytest process; the rerun here is a separate process
(reading executables from the persistent compilation cache), so nothing is shared
between the two runs but the inputs.
"""

import os

import numpy as np
import pytest

from mnist_plus.trainer import train_and_evaluate
from tests.helpers import (assert_same_as_reference, final_state_leaves, read_bytes,
                            tiny_config, tiny_flags)


@pytest.mark.slow
def test_same_seed_and_config_give_identical_metrics_and_parameters(
        cli, prepared_tiny, reference_run, tmp_path):
    workdir = tmp_path / "again"
    result = cli.train(*tiny_flags(prepared_tiny, workdir))
    assert result.returncode == 0, result.stderr
    assert_same_as_reference(str(workdir), reference_run, prepared_tiny)


@pytest.mark.slow
def test_another_seed_gives_other_metrics_and_parameters(prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "seed1")
    train_and_evaluate(tiny_config(prepared_tiny, seed=1), workdir, log=lambda s: None)
    ours = read_bytes(os.path.join(workdir, "metrics.jsonl")).splitlines()
    theirs = read_bytes(os.path.join(reference_run, "metrics.jsonl")).splitlines()
    assert len(ours) == len(theirs) == 3
    assert all(a != b for a, b in zip(ours, theirs))  # every epoch differs
    leaves, _ = final_state_leaves(workdir, tiny_config(prepared_tiny, seed=1))
    reference, _ = final_state_leaves(reference_run, tiny_config(prepared_tiny))
    params_differ = [not np.array_equal(a, b) for a, b in zip(leaves, reference)
                     if np.issubdtype(a.dtype, np.floating)]
    assert all(params_differ)
