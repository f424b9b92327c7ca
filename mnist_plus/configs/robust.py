"""The default trained for corrupted images: `python -m mnist_plus.train --preset robust
--workdir runs/`.

The default's model and schedule with its input stretched to full range (`input_stretch`)
and, after the warps, 2-pixel shifts and the image-quality families on a random fraction of
images each: stroke 0.3, outline 0.25, blur 0.15, lowres 0.15, background 0.1, noise 0.15,
occlude 0.1 (docs/robustness.md says what each does and how it differs from the benchmark's
corruptions).
Result, seed 0 at epoch 10: RESULT
"""


def get_config():
    return {"augment_shift": 2, "input_stretch": True, "augment_stroke": 0.3,
            "augment_outline": 0.25, "augment_blur": 0.15, "augment_lowres": 0.15,
            "augment_background": 0.1, "augment_noise": 0.15, "augment_occlude": 0.1}
