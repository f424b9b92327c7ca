"""Makes the modules named in $MNIST_PLUS_HIDE_MODULES (comma-separated top-level names)
unimportable, as if not installed, in this Python process and in every Python process it
starts with this folder on PYTHONPATH: how the tests run the code as on a machine that
lacks optional packages (tests.helpers.hiding_env)."""

import importlib.abc
import os
import sys

HIDDEN = frozenset(n.strip() for n in os.environ.get("MNIST_PLUS_HIDE_MODULES", "").split(",")
                   if n.strip())


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if HIDDEN:
    sys.meta_path.insert(0, _Hide())
