"""The default without label smoothing and recomputed BatchNorm statistics:
`python -m mnist_plus.train --preset late_wide --workdir runs/`.

Patch stem, two extra blocks, 32-channel 5x5 blocks (30,653 parameters) and affine warps.
Result, seeds 0-4 at epoch 10: 99.56 ± 0.03% digit / 99.55 ± 0.01% sum, against the
default's 99.60 / 99.59 at the same epoch time: what the two recipe changes add.
"""


def get_config():
    return {"stem": "patch", "extra_convs": 2, "late_width": 32, "augment_rotate": 10.0,
            "augment_scale": 0.1, "augment_shear": 0.1, "label_smoothing": 0.0, "precise_bn": 0}
