"""A NaN loss stops training with the step named, and the last good checkpoint stays."""

import os
import pytest

from tests.helpers import assert_same_state, final_state_leaves, read_bytes, tiny_config, \
    tiny_flags


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        cli, prepared_tiny, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    # Checkpoints at 4 and 8 (end of epoch 1); NaN images at step 10 (epoch 2). The next
    # check comes after step 11, before the checkpoint at 12 would be written.
    flags = tiny_flags(prepared_tiny, workdir, "--checkpoint-every-steps", "4", "--loop", "host")
    result = cli.crash(["--nan-at-step", "10"], flags)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: the loss became NaN or infinite at step 10 (epoch 2); the last good checkpoint "
        "(step 8) is kept; lower --learning-rate and rerun (with --fresh to restart from "
        "scratch)"]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == ["4", "8"]
    # Epoch 1 was good and stays logged; the newest checkpoint is the reference's step 8.
    assert read_bytes(os.path.join(workdir, "metrics.jsonl")) == read_bytes(
        os.path.join(reference_run, "metrics.jsonl")).splitlines(keepends=True)[0]
    config = tiny_config(prepared_tiny)
    leaves, meta = final_state_leaves(workdir, config)
    assert (meta["global_step"], meta["epoch"], meta["step_in_epoch"]) == (8, 1, 0)
    assert_same_state(leaves, final_state_leaves(reference_run, config, step=8)[0])
