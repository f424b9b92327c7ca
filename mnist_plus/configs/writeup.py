"""The write-up's model and training: `python -m mnist_plus.train --preset writeup`.

Its network as experiments/pytorch_reference.py builds it (3x3 conv + ReLU blocks of 16
channels, no BatchNorm, a 2x2 conv to 1x1x10, FC 20 -> 64 -> 64 -> 19: 16,829 parameters,
PyTorch's initialisers), the sum of the two plain cross-entropies, SGD with momentum 0.9 at
a constant 0.01, batch 128, 10 epochs, no augmentation. One difference is left: an epoch
here drops the last partial batch (468 steps of 128; PyTorch's DataLoader also runs the
96 left over). XLA:CPU runs it with YNNPACK's dots (`--cpu-kernels ynn`), which makes the
filter gradients of its 3x3 convolutions over 26x26 and 24x24 maps about 3x faster.
`python -m mnist_plus.benchmark --compare-pytorch --preset writeup` times it beside PyTorch
(docs/performance.md).
"""


def get_config():
    return {"arch": "writeup", "width": 16, "adder_hidden": 64, "optimizer": "sgd",
            "momentum": 0.9, "schedule": "constant", "learning_rate": 0.01,
            "weight_decay": 0.0, "label_smoothing": 0.0, "batch_size": 128, "epochs": 10,
            "augment_shift": 0, "augment_rotate": 0.0, "augment_scale": 0.0,
            "augment_shear": 0.0, "augment_elastic": 0.0, "precise_bn": 0, "cpu_kernels": "ynn"}
