"""The time-to-accuracy recipe: `python -m mnist_plus.benchmark --time-to-accuracy 0.99
--preset fast` (it is that command's default).

`lean` with 8 stem channels and no extra blocks (the cheapest step measured), batch 64 and
a 2-epoch one-cycle schedule (completed, not cut off).
Result: seeds 0-4 reach 99.0% digit and sum after epoch 2 (digit 99.15-99.25%, sum
99.03-99.26%), in 12-15 s of training on 2 AVX-512 cores (docs/performance.md).
"""

from mnist_plus.configs import lean


def get_config():
    return {**lean.get_config(), "epochs": 2, "batch_size": 64, "stem_width": 8,
            "extra_convs": 0}
