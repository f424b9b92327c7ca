"""TensorBoard logging costs no PyTorch import at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

_SCRIPT = """
import os, sys
from mnist_plus.runtime import tensorboard
tb = tensorboard.TensorBoard(sys.argv[1])
tb.close()
print("torch" in sys.modules, sorted(os.listdir(os.path.join(sys.argv[1], "tensorboard"))))
"""


def test_summary_writer_does_not_import_torch(tmp_path):
    # tensorboardX imports torch whenever it is installed (3+ s); with torch absent this
    # still checks that the writer works with `import torch` made to fail.
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr
    torch_loaded, files = out.stdout.split(" ", 1)
    assert torch_loaded == "False"
    assert "events.out.tfevents" in files


def test_torch_stays_importable_after_the_writer_is_imported(tmp_path):
    script = ("import importlib.util, sys\nfrom mnist_plus.runtime import tensorboard\n"
              "tensorboard.summary_writer_class()\n"
              "print('torch' in sys.modules, importlib.util.find_spec('torch') is not None)")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr
    # The None placeholder is removed again: torch (if installed) is still found.
    assert out.stdout.split()[0] == "False"
    import importlib.util
    assert out.stdout.split()[1] == str(importlib.util.find_spec("torch") is not None)


def test_without_tensorboardx_training_gets_none_and_one_line(tmp_path, monkeypatch):
    from mnist_plus.runtime import tensorboard

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as where it is not installed
    lines: list[str] = []
    assert tensorboard.open_tensorboard(str(tmp_path), 0, lines.append) is None
    assert len(lines) == 1 and "tensorboardX" in lines[0] and "\n" not in lines[0]
    assert not os.path.exists(tmp_path / tensorboard.FOLDER)
    monkeypatch.delitem(sys.modules, "tensorboardX")
    writer = tensorboard.open_tensorboard(str(tmp_path), 0, lines.append)
    writer.close()
    assert len(lines) == 1 and os.path.isdir(tmp_path / tensorboard.FOLDER)
