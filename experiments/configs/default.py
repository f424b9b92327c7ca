"""The default configuration, as a config file: `python -m mnist_plus.train --config
experiments/configs/default.py --workdir runs/`. Copy it and change what you need; flags
given on the command line override it (`--epochs 3`).

`get_config()` may return a dict (as here), an ml_collections ConfigDict, or any object
whose attributes are Config fields (see `mnist_plus/config.py` and `--help`). Fields left
out keep their defaults.
"""


def get_config():
    return {
        # What the run computes (must match to resume a checkpoint).
        "epochs": 10,
        "batch_size": 128,
        "learning_rate": 0.01,
        "warmup_fraction": 0.2,
        "weight_decay": 1e-4,
        "seed": 0,
        "width": 16,
        "adder_hidden": 64,
        "adder_input": "logits",
        "label_smoothing": 0.1,
        "stem": "patch",
        "stem_width": 0,
        "extra_convs": 2,
        "late_width": 32,
        "digit_head": "pool",
        "augment_shift": 1,
        "augment_rotate": 10.0,
        "augment_scale": 0.1,
        "augment_shear": 0.1,
        "augment_elastic": 0.0,
        "precise_bn": 10000,
        "holdout": "none",
        # How it runs (may change on resume).
        "eval_batch_size": 1000,
        "loop": "auto",
        "checkpoint_every_steps": 0,
        "keep_checkpoints": 3,
        "keep_best": True,
        "log_every_steps": 100,
    }
