"""Makes the modules named in $MNIST_PLUS_HIDE_MODULES (comma-separated top-level names)
unimportable, as if not installed, in this Python process and in every Python process it
starts with this folder on PYTHONPATH: how the tests run the code as on a machine that
lacks optional packages (tests.helpers.hiding_env).

Every finder on sys.meta_path is wrapped so that it finds nothing of a hidden package: an
import then fails with Python's own ModuleNotFoundError, and importlib.util.find_spec
answers None, as both do for a package that is not installed (torch probes for tqdm so)."""

import importlib.abc
import os
import sys

HIDDEN = frozenset(n.strip() for n in os.environ.get("MNIST_PLUS_HIDE_MODULES", "").split(",")
                   if n.strip())


class _Without(importlib.abc.MetaPathFinder):
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def invalidate_caches(self):
        invalidate = getattr(self.finder, "invalidate_caches", None)
        if invalidate is not None:
            invalidate()


if HIDDEN:
    sys.meta_path[:] = [_Without(finder) for finder in sys.meta_path]
