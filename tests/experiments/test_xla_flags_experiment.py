"""experiments/xla_flags.py: its worker runs today's step (it once called a function that
had moved), and a baseline that never ran is one line, not a traceback."""

import pytest

from experiments import xla_flags
from mnist_plus.errors import UsageError


@pytest.mark.slow
def test_worker_times_the_step_and_digests_three_trained_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_PLUS_COMPILE_CACHE", "off")
    out = xla_flags.worker([8], repeats=1, min_repeat_seconds=0.0)
    assert out["step_ms"]["8"] > 0
    assert len(out["params_sha1"]) == 40 and out["params_abs_sum"] > 0
    assert out["loss_sum"] > 0


def test_a_baseline_that_failed_every_round_is_one_line():
    runs = {name: [{"error": "failed (exit 1)", "detail": "AttributeError: no foo"}]
            for name in xla_flags.CANDIDATES}
    with pytest.raises(UsageError, match="baseline .* failed in every round: failed "
                                         r"\(exit 1\): AttributeError: no foo"):
        xla_flags.summarise(runs, [128])
