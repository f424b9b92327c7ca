"""The layout and augmentation that reach the accuracy issue's 99.60% digit / 99.55% sum
over five seeds at 10 epochs, for about 2.3x the time per epoch:
`python -m mnist_plus.train --config experiments/configs/accurate.py --workdir runs/`.

Width 32 instead of 16, an 8-channel first block (the only one at 26x26), a 'same' 3x3
block after each of the 7x7 and 5x5 blocks (55,925 parameters against 16,429), and a
random affine map per training image (rotation within 10 degrees, zoom 0.9-1.1, shear
0.1). Measured on 2026-11-29 (2-core AVX-512; README, "Over five seeds"): seeds 0-4 end at
99.61 ± 0.04% digit / 99.59 ± 0.06% sum against the default's 99.48 ± 0.02 / 99.44 ± 0.05;
an idle host-loop epoch takes 18.5 s against the default's 8.2 s in the same
rounds (median of 3). The capacity lets it fit its training images
(99.75-99.79%, `experiments/fit.py`), and the augmentation then narrows the gap to the test set;
neither alone gets there (width 32 without it: 99.56 / 99.55 on seeds 0 and 1). Not the
default: the issue asks for no slower an epoch.
It names every model and recipe field that the default has changed since (the conv stem,
no late width, plain cross-entropy, running BatchNorm averages), so it stays the measured
model.
"""


def get_config():
    return {"stem": "conv", "stem_width": 8, "width": 32, "extra_convs": 2, "late_width": 0,
            "augment_rotate": 10.0, "augment_scale": 0.1, "augment_shear": 0.1,
            "label_smoothing": 0.0, "precise_bn": 0}
