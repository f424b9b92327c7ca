"""experiments/errors.py: per-run errors, the errors runs share, and their ensemble."""

import json
import os

import numpy as np
import pytest

from experiments import errors
from mnist_plus.data import mnist as data
from mnist_plus.tools import trained


def _probs(answers, confidence=0.9):
    p = np.full((len(answers), 10), (1 - confidence) / 9)
    p[np.arange(len(answers)), answers] = confidence
    return p


def test_shared_union_and_ensemble_count_the_right_images():
    labels = np.array([0, 1, 2, 3])
    # Run a misses images 0 and 1, at 0.6; run b misses 1 (at 0.9) and 2, only barely
    # (0.3 on its answer, 0.25 on the label); both get image 3.
    a = _probs([5, 7, 2, 3], confidence=0.6)
    b = _probs([0, 7, 4, 3], confidence=0.9)
    b[2] = 0.05
    b[2, 4], b[2, 2] = 0.3, 0.25
    row = errors.summarise("v", [a, b], labels)
    assert row["errors"] == [2, 2] and row["errors_mean"] == 2.0
    assert row["shared"] == 1 and row["union"] == 3
    # Averaged: image 0 -> 0 (b's 0.9 outweighs a's 0.6), image 2 -> 2 (a's 0.6 and b's
    # 0.25 outweigh b's 0.3): the ensemble misses only the image both runs miss.
    assert row["ensemble_errors"] == 1 and row["ensemble_accuracy"] == 0.75


def test_wrong_answer_never_names_the_label():
    """An image most runs get right still shows what the runs that miss it say."""
    runs = [_probs([9])[0]] * 3 + [_probs([4])[0]]
    assert errors.wrong_answer(runs, 9) == 4


def test_a_folder_without_runs_is_a_one_line_error(tmp_path):
    (tmp_path / "s0").mkdir()  # no checkpoints inside
    with pytest.raises(SystemExit, match="holds no trained run"):
        errors.workdirs(str(tmp_path))


@pytest.mark.slow
def test_one_run_matches_predict_and_its_seed_folders_are_found(real_mnist_run, real_mnist_dir,
                                                                tmp_path):
    """A variant folder of seeds s1 and s10 is read in seed order (not text order), and
    one run's errors are exactly the test images `trained.predict` gets wrong."""
    tfds_dir, workdir = real_mnist_run
    folder = tmp_path / "variant"
    folder.mkdir()
    for seed in (10, 1):
        os.symlink(workdir, folder / f"s{seed}")
    assert errors.workdirs(str(folder)) == [str(folder / "s1"), str(folder / "s10")]
    out = tmp_path / "errors.json"
    errors.main([str(folder), "--tfds-dir", tfds_dir, "--mnist-dir", real_mnist_dir,
                 "--json", str(out), "--figure", str(tmp_path / "floor.png")])
    result = json.loads(out.read_text())
    mnist = data.load_mnist(tfds_dir, real_mnist_dir)
    digit = trained.predict(trained.load(workdir), mnist.test_images,
                            np.zeros(len(mnist.test_labels), np.int32)).digit
    wrong = np.asarray(digit) != np.asarray(mnist.test_labels)
    assert 0 < wrong.sum() < 500  # one epoch: 95-99.5%, so right and wrong images both exist
    (row,) = result["variants"]
    assert row["errors"] == [int(wrong.sum())] * 2
    assert row["shared"] == row["union"] == row["ensemble_errors"] == int(wrong.sum())
    assert result["floor"]["missed_by_all"] == int(wrong.sum())
    most = {m["index"] for m in result["floor"]["most"]}
    assert most == set(np.flatnonzero(wrong).tolist())
    assert all(m["answer"] != m["label"] for m in result["floor"]["most"])
    assert (tmp_path / "floor.png").stat().st_size > 0


def test_views_move_pixels_and_fill_with_background():
    images = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)
    views = dict(zip(errors.VIEWS[9], errors.view_images(images, 9)))
    assert all(v.dtype == np.uint8 and v.shape == images.shape for v in views.values())
    down_right = views[(1, 1)][0, :, :, 0]
    assert (down_right[1:, 1:] == images[0, :3, :3, 0]).all()
    assert (down_right[0] == 0).all() and (down_right[:, 0] == 0).all()
    up_left = views[(-1, -1)][0, :, :, 0]
    assert (up_left[:3, :3] == images[0, 1:, 1:, 0]).all()
    assert (views[(0, 0)] == images).all()
    assert all(len(set(v)) == n and (0, 0) in v for n, v in errors.VIEWS.items())
