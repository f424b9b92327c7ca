"""experiments/robustness.py: predict's framing of canvases and the tables. Its transforms
are mnist_plus/tools/corruptions.py's, tested in tests/tools/test_corruptions.py."""

import numpy as np

from experiments import robustness
from tests.helpers import synthetic_digits


def test_fit_mnist_ignores_margins_and_fit_resize_does_not():
    images = synthetic_digits(3, seed=2)[0][..., 0]
    plain = robustness.framed(images, robustness.CANVASES[0][1], "mnist")
    for name, make in robustness.CANVASES[1:4]:  # same pixels, only placed in a larger canvas
        np.testing.assert_array_equal(robustness.framed(images, make, "mnist"), plain, name)
    np.testing.assert_array_equal(robustness.framed(images, robustness.CANVASES[0][1], "resize"),
                                  images)  # a 28x28 image goes through --fit resize unchanged
    wide = robustness.framed(images, robustness.CANVASES[3][1], "resize")  # 28x88: shrunk
    assert (wide > 0).sum() < 0.5 * (images > 0).sum()


def test_sweeps_use_the_benchmarks_transforms():
    images = synthetic_digits(2, seed=3)[0][..., 0]
    from mnist_plus.tools import corruptions

    np.testing.assert_array_equal(robustness.SHIFTS[0][2][0][2](images),
                                  corruptions.rotate_by(images, -30))


def test_markdown_has_a_row_per_condition_and_a_column_group_per_run():
    row = {"digit_accuracy": 0.99, "sum_accuracy": 0.98, "sum_agreement": 0.975,
           "exhaustive_sum_accuracy": 0.97}
    shifts = [{"transform": t, "severity": s, "label": label, **row}
              for t, _, levels in robustness.SHIFTS for s, label, _ in levels]
    framing = [{"canvas": c, "fit": f, **row} for c, _ in robustness.CANVASES
               for f in ("mnist", "resize")]
    run = {"clean": row, "shifts": shifts, "framing": framing}
    text = robustness.markdown({"images": 100, "runs": {"a": run, "b": run}})
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    # header, clean row, one per shift; header, one per (canvas, fit)
    assert len(table_rows) == 1 + 1 + len(shifts) + 1 + len(framing)
    assert "| rotation | -30° | 99.00% | 98.00% | 97.50% | 99.00% | 98.00% | 97.50% |" in text
