"""mnist_plus: an MNIST image plus a random number, predicting the digit and the sum."""

__version__ = "0.1.0"
