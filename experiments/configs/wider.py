"""The most accurate layout measured at 10 epochs, for a third more time per epoch:
`python -m mnist_plus.train --config experiments/configs/wider.py --workdir runs/`.

Width 20 instead of 16, an 8-channel first block (the only one at 26x26), and a 'same'
3x3 block after each of the 7x7 and 5x5 blocks (26,717 parameters against 16,429).
Measured on 2026-11-29 (2-core AVX-512; README, "Over five seeds"): seeds 0-4 end at
99.56 ± 0.05% digit / 99.52 ± 0.05% sum against the default's 99.48 ± 0.02 / 99.44 ± 0.05,
and an idle host-loop epoch takes 11.8 s against the default's 8.9 s in the same rounds.
It fits its training images better (99.71-99.76% against 99.64-99.67%,
`experiments/fit.py`), which is what the default lacks. Not the default: the accuracy issue
asks for no slower an epoch, and this one is 1.33x.
It names every model and recipe field that the default has changed since (the conv stem,
no late width, shifts only, plain cross-entropy, running BatchNorm averages), so it stays
the measured model.
"""


def get_config():
    return {"stem": "conv", "stem_width": 8, "width": 20, "extra_convs": 2, "late_width": 0,
            "augment_rotate": 0.0, "augment_scale": 0.0, "augment_shear": 0.0,
            "label_smoothing": 0.0, "precise_bn": 0}
