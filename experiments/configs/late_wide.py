"""Today's default without its label smoothing and recomputed BatchNorm statistics, as
measured before those joined it: `python -m mnist_plus.train --config
experiments/configs/late_wide.py --workdir runs/`.

The default's patch stem and two 'same' blocks, with the 7->5 block and its 'same' block
32 channels wide (`--late-width 32`; 30,653 parameters against 21,213), and a random affine
map per training image (rotation within 10 degrees, zoom 0.9-1.1, shear 0.1). On XLA:CPU a
conv's cost follows its pixels more than its channels, so width is cheapest at 5x5.
Measured on 2026-11-30 (2-core AVX-512; README, "Over five seeds"): seeds 0-4 end at
99.56 ± 0.03% digit / 99.55 ± 0.01% sum against the default's 99.53 ± 0.03 / 99.48 ± 0.07;
an idle host-loop epoch took 8.4 s (+ 0.28 s evaluation) against the conv-stem model's 8.7 s
(+ 0.69 s) and the default's 7.3 s (+ 0.25 s) in the same rounds (0.93x the conv stem's;
0.96x in a second set of rounds). It meets the issue's 99.55% sum, not its 99.60% digit;
with `--label-smoothing 0.1 --precise-bn 10000` on top it does (99.60 / 99.59), and that
is the default since 2026-11-30. "The default" above is `lean`, the default when this was
measured. It names every recipe field the default has changed since, so that it stays
the measured config.
"""


def get_config():
    return {"stem": "patch", "extra_convs": 2, "late_width": 32, "augment_rotate": 10.0,
            "augment_scale": 0.1, "augment_shear": 0.1, "label_smoothing": 0.0, "precise_bn": 0}
