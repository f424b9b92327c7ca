"""The experiments: one script each, run from the repository root as
`python -m experiments.NAME` so that they import this checkout's mnist_plus without
touching sys.path (see experiments/README.md). mnist_plus never imports from here."""
