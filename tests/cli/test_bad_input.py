"""Bad input through the CLI: one line on stderr, exit status 2, no traceback, and the
finished run already in the workdir is left byte for byte as it was.

Data errors use a fresh --tfds-dir (so the files must be read) and --fresh (so a
failing invocation must not even move the earlier run aside).
"""

import gzip
import os
import shutil

import pytest

from tests.helpers import snapshot, synthetic_digits, tiny_flags, write_tiny_mnist


@pytest.fixture
def finished_workdir(reference_run, tmp_path) -> str:
    workdir = str(tmp_path / "finished")
    shutil.copytree(reference_run, workdir)
    return workdir


def assert_usage_error(result, message: str) -> None:
    """Exit 2, exactly one line on stderr holding `message`, and no traceback anywhere."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]


def _gz(folder, part) -> str:
    stems = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    return os.path.join(folder, stems[part] + ".gz")


def _idx_bytes(magic: int, dims, payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def _missing_file(d):
    os.unlink(_gz(d, "test_labels"))
    return f"MNIST file t10k-labels-idx1-ubyte(.gz) not found in {d}"


def _truncated_gzip(d):
    path = _gz(d, "train_images")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:len(raw) // 2])
    return f"MNIST file {path} is not a valid gzip file (Compressed file ended before"


def _corrupt_gzip(d):
    path = _gz(d, "train_images")
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0x5A
    with open(path, "wb") as f:
        f.write(bytes(raw))
    return f"MNIST file {path} is not a valid gzip file"


def _wrong_magic(d):
    shutil.copy(_gz(d, "train_labels"), _gz(d, "train_images"))
    return (f"MNIST file {_gz(d, 'train_images')} has magic number 2049, expected 2051 for "
            f"an image file; is it the right file?")


def _payload_shorter_than_header(d):
    images, _ = synthetic_digits(256, 1)
    with open(_gz(d, "train_images"), "wb") as f:
        f.write(gzip.compress(_idx_bytes(2051, (256, 28, 28), images[:100].tobytes())))
    return (f"MNIST file {_gz(d, 'train_images')} has 78416 bytes but its header [256, 28, 28] "
            f"needs 200720; the file is truncated or corrupt")


def _header_overflowing_int64(d):
    # 2**31 * 2**31 * 4 = 2**64: wraps to 0 in int64, which once matched an empty payload.
    with open(_gz(d, "train_images"), "wb") as f:
        f.write(gzip.compress(_idx_bytes(2051, (2**31, 2**31, 4), b"")))
    return "the file is truncated or corrupt"


def _counts_disagree(d):
    _, labels = synthetic_digits(100, 1)
    with open(_gz(d, "train_labels"), "wb") as f:
        f.write(gzip.compress(_idx_bytes(2049, (100,), labels.tobytes())))
    return f"MNIST train split in {d} has 256 images but 100 labels; the files do not belong"


def _not_28x28(d):
    with open(_gz(d, "test_images"), "wb") as f:
        f.write(gzip.compress(_idx_bytes(2051, (64, 32, 32), bytes(64 * 32 * 32))))
    return f"MNIST file {_gz(d, 'test_images')} holds 32x32 images, expected 28x28"


def _label_out_of_range(d):
    _, labels = synthetic_digits(64, 2)
    labels = labels.copy()
    labels[3] = 12
    with open(_gz(d, "test_labels"), "wb") as f:
        f.write(gzip.compress(_idx_bytes(2049, (64,), labels.tobytes())))
    return f"MNIST file {_gz(d, 'test_labels')} has label 12 at index 3; labels must be 0..9"


def _folder_missing(d):
    shutil.rmtree(d)
    return f"MNIST folder {d} does not exist: point --mnist-dir or MNIST_PLUS_MNIST_DIR at"


def _folder_is_a_file(d):
    shutil.rmtree(d)
    with open(d, "w") as f:
        f.write("not a folder")
    return f"MNIST folder {d} is not a folder"


@pytest.mark.parametrize("damage", [
    _missing_file, _truncated_gzip, _corrupt_gzip, _wrong_magic, _payload_shorter_than_header,
    _header_overflowing_int64, _counts_disagree, _not_28x28, _label_out_of_range,
    _folder_missing, _folder_is_a_file,
], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.slow
def test_bad_mnist_files(damage, cli, prepared_tiny, finished_workdir, tmp_path):
    mnist_dir = write_tiny_mnist(str(tmp_path / "idx"))
    message = damage(mnist_dir)
    before = snapshot(finished_workdir)
    tfds_dir = str(tmp_path / "tfds")
    result = cli.train(*tiny_flags((tfds_dir, mnist_dir), finished_workdir, "--fresh"))
    assert_usage_error(result, message)
    assert snapshot(finished_workdir) == before
    # Nothing was prepared from the broken files.
    assert not os.path.exists(os.path.join(tfds_dir, "mnist"))


@pytest.mark.slow
def test_offline_without_any_data(cli, finished_workdir, tmp_path):
    before = snapshot(finished_workdir)
    result = cli.train("--workdir", finished_workdir, "--tfds-dir", str(tmp_path / "empty"),
                       "--fresh", env={"MNIST_PLUS_MNIST_DIR": ""})
    assert_usage_error(result, "pass --mnist-dir DIR (or set MNIST_PLUS_MNIST_DIR)")
    assert snapshot(finished_workdir) == before


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs 0 is invalid: it must be a positive integer"),
    (["--epochs", "-3"], "--epochs -3 is invalid: it must be a positive integer"),
    (["--batch-size", "0"], "--batch-size 0 is invalid: it must be a positive integer"),
    (["--batch-size", "-32"], "--batch-size -32 is invalid: it must be a positive integer"),
    (["--learning-rate", "0"], "--learning-rate 0.0 is invalid: it must be a positive finite"),
    (["--learning-rate", "-0.1"], "--learning-rate -0.1 is invalid: it must be a positive"),
    (["--learning-rate", "nan"], "--learning-rate nan is invalid: it must be a positive"),
    (["--learning-rate", "inf"], "--learning-rate inf is invalid: it must be a positive"),
    (["--learning-rate", "fast"], "argument --learning-rate: 'fast' is not a number"),
    (["--epochs", "2.5"], "argument --epochs: '2.5' is not an integer"),
    (["--seed", "-1"], "--seed -1 is invalid: it must be an integer from 0 to 2**63 - 1"),
    (["--checkpoint-every-steps", "-1"], "--checkpoint-every-steps -1 is invalid"),
    (["--warmup-fraction", "1"], "--warmup-fraction 1.0 is invalid: it must be in [0, 1)"),
    (["--loop", "warp"], "argument --loop: invalid choice: 'warp'"),
    (["--augment-rotate", "120"], "--augment-rotate 120.0 is invalid: it must be a number "
                                  "from 0 (off) to 90"),
    (["--extra-convs", "5"], "--extra-convs 5 is invalid: it must be an integer in 0..4"),
    (["--label-smoothing", "1"], "--label-smoothing 1.0 is invalid: it must be in [0, 1)"),
    (["--augment-scale", "-0.1"], "--augment-scale -0.1 is invalid: it must be a number from "
                                  "0 (off) to 0.5"),
    (["--augment-elastic", "5"], "--augment-elastic 5.0 is invalid: it must be a number from "
                                 "0 (off) to 4"),
    (["--precise-bn", "16"], "--precise-bn 16 is invalid: it must be 0 (off) or a number of "
                             "images of at least one batch (32)"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
@pytest.mark.slow
def test_invalid_flags_leave_the_workdir_untouched(flags, message, cli, prepared_tiny,
                                                   finished_workdir):
    before = snapshot(finished_workdir)
    result = cli.train(*tiny_flags(prepared_tiny, finished_workdir, "--fresh"), *flags)
    assert_usage_error(result, message)
    assert snapshot(finished_workdir) == before


@pytest.mark.slow
def test_batch_larger_than_the_dataset(cli, prepared_tiny, finished_workdir):
    before = snapshot(finished_workdir)
    result = cli.train(*tiny_flags(prepared_tiny, finished_workdir, "--fresh"),
                       "--batch-size", "1000")
    assert_usage_error(result, "--batch-size 1000 is invalid: it is larger than the 256 "
                               "training examples")
    assert snapshot(finished_workdir) == before


def test_workdir_that_is_a_file(cli, prepared_tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli.train(*tiny_flags(prepared_tiny, blocker / "runs"))
    assert_usage_error(result, f"cannot write to workdir {blocker / 'runs'} (Not a directory")
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_checkpoints_folder_that_is_a_file(cli, prepared_tiny, finished_workdir):
    # Found before training, not an epoch later when orbax first writes.
    shutil.rmtree(os.path.join(finished_workdir, "checkpoints"))
    with open(os.path.join(finished_workdir, "checkpoints"), "w") as f:
        f.write("in the way")
    before = snapshot(finished_workdir)
    result = cli.train(*tiny_flags(prepared_tiny, finished_workdir))
    assert_usage_error(result, f"cannot write to workdir {finished_workdir} (Not a directory: "
                               f"{os.path.join(finished_workdir, 'checkpoints', '.write_test')}")
    assert snapshot(finished_workdir) == before


@pytest.mark.slow
def test_incompatible_checkpoint_names_the_difference(cli, prepared_tiny, finished_workdir):
    before = snapshot(finished_workdir)
    result = cli.train(*tiny_flags(prepared_tiny, finished_workdir), "--width", "8",
                       "--learning-rate", "0.02")
    assert_usage_error(
        result, f"the checkpoint in {finished_workdir}/checkpoints was written with another "
                f"config (learning_rate: 0.01 -> 0.02; width: 4 -> 8): rerun with the same "
                f"flags, use another --workdir, or pass --fresh to start over")
    assert snapshot(finished_workdir) == before


@pytest.mark.slow
def test_unusable_tfds_dir(cli, prepared_tiny, finished_workdir, tmp_path):
    blocker = tmp_path / "tfds"
    blocker.write_text("not a folder")
    before = snapshot(finished_workdir)
    result = cli.train(*tiny_flags((str(blocker), prepared_tiny[1]), finished_workdir, "--fresh"))
    assert_usage_error(result, f"cannot write to the TFDS data dir {blocker} (Not a directory)")
    assert snapshot(finished_workdir) == before
    assert blocker.read_text() == "not a folder"

