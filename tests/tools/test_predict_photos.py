"""`predict` on digits as people make them, built here from MNIST test digits (nothing is
downloaded): photographed on paper, drawn with a thick brush, a thin pen on a large
canvas; and its refusals of images that do not look like one digit."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mnist_plus.data import idx
from mnist_plus.errors import UsageError
from mnist_plus.tools import predict
from tests.helpers import REPO

KINDS = ("photo", "brush", "pen")


def _upscale(digit: np.ndarray, factor: int) -> np.ndarray:
    """A 28x28 uint8 digit enlarged smoothly (bicubic), float 0..255."""
    big = Image.fromarray(digit).resize((28 * factor,) * 2, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, np.float64), 0, 255)


def photo(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark ink on paper, off-centre on a 300x400 page lit unevenly (a gradient from
    dim to bright, 150 levels at the ink's side to 235), with a grainy paper texture
    and sensor noise."""
    h, w = 300, 400
    lit = np.linspace(150, 235, w)[None, :] * np.linspace(0.9, 1.0, h)[:, None]
    grain = ndimage.gaussian_filter(rng.normal(0, 12, (h, w)), 2.0)
    page = lit + grain + rng.normal(0, 4, (h, w))
    ink = _upscale(digit, 4) / 255.0                  # 112x112, off-centre
    top, left = rng.integers(20, h - 132), rng.integers(20, w - 132)
    region = page[top: top + 112, left: left + 112]
    page[top: top + 112, left: left + 112] = region * (1 - 0.8 * ink)
    return np.clip(np.round(page), 0, 255).astype(np.uint8)


def brush(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black strokes three times MNIST's width (a 5x5 dilation at 28x28), 6x larger on a
    white 240x240 canvas."""
    thick = ndimage.grey_dilation(digit, size=(5, 5))
    canvas = np.zeros((240, 240))
    canvas[36: 36 + 168, 36: 36 + 168] = _upscale(thick, 6)
    return np.clip(np.round(255 - canvas), 0, 255).astype(np.uint8)


def pen(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin pen line, about 4 pixels wide, for a digit 224 pixels tall on a white
    600x500 canvas (MNIST's strokes are about a seventh of the digit's height)."""
    big = _upscale(digit, 8) > 128                      # 224x224, strokes ~20 px wide
    depth = ndimage.distance_transform_edt(big)
    # Centre lines: pixels within a pixel of the deepest around them.
    ridge = (depth >= 3) & (depth >= ndimage.maximum_filter(depth, size=5) - 1.0)
    thin = ndimage.binary_dilation(ridge, iterations=1)
    canvas = np.full((600, 500), 255.0)
    top, left = rng.integers(0, 600 - 224), rng.integers(0, 500 - 224)
    canvas[top: top + 224, left: left + 224] -= 230 * thin
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


MAKERS = {"photo": photo, "brush": brush, "pen": pen}


def write_people_images(digits: np.ndarray, folder: str, rng: np.random.Generator
                        ) -> list[tuple[str, int, str]]:
    """Each digit as a photo (JPEG), a brush drawing and a pen drawing (PNG): (path,
    index, kind) per file."""
    files = []
    for i, digit in enumerate(digits.reshape(-1, 28, 28)):
        for kind in KINDS:
            path = os.path.join(folder, f"{i}_{kind}." + ("jpg" if kind == "photo" else "png"))
            image = Image.fromarray(MAKERS[kind](digit, rng))
            image.save(path, **({"quality": 85} if kind == "photo" else {}))
            files.append((path, i, kind))
    return files


@pytest.fixture(scope="module")
def test_digits(real_mnist_dir):
    images, labels = idx.read_split(real_mnist_dir, "test")
    return images.reshape(-1, 28, 28), labels.astype(np.int64)


def _read(files, fit="mnist"):
    """(framed images, indices) of the files predict accepts, and how many it refused."""
    framed, kept, refused = [], [], 0
    for path, i, _ in files:
        try:
            framed.append(predict.preprocess(path, fit=fit))
            kept.append(i)
        except UsageError:
            refused += 1
    return np.stack(framed), np.array(kept), refused


@pytest.mark.slow
def test_photos_brush_and_pen_digits_are_read(real_mnist_run, test_digits, tmp_path):
    """30 test digits each way, with the one-epoch default model. Measured on 200 digits
    each: photos 200 right, pen 187 (1 refused: a 5 whose bar floats apart), brush 165
    (thinned to MNIST's widest strokes; at three times MNIST's width the model misreads
    some). The bounds are about three binomial standard deviations at n = 30 below those
    rates (photo 1.0, pen 0.935, brush 0.825): refused files count as wrong."""
    from mnist_plus.tools import trained

    _, workdir = real_mnist_run
    images, labels = test_digits
    files = write_people_images(images[:30], str(tmp_path), np.random.default_rng(0))
    model = trained.load(workdir)
    floors = {"photo": 0.9, "pen": 0.8, "brush": 0.6}
    for kind, floor in floors.items():
        framed, kept, refused = _read([f for f in files if f[2] == kind])
        p = trained.predict(model, framed, np.full(len(kept), 3, np.int32))
        right = np.sum(p.digit == labels[kept]) / 30
        assert right >= floor, (kind, right, refused)


def test_mnist_test_digits_are_never_refused(test_digits):
    """MNIST has 4s and 5s with broken strokes (47 of the 10,000 test digits have a second
    piece of ink at least BLOB of the largest; bridging gaps of 0.1 of the digit's size
    left 4 refused, 0.15 none, 0.2 is used); none of the first 2,000 is refused with
    either fit (all 10,000 checked once: none)."""
    images, _ = test_digits
    for image in images[:2000].astype(np.float32):
        flat = predict.flatten_background(image)
        np.testing.assert_array_equal(flat, image)  # a black background is left alone
        digit = predict.find_digit(flat, "mnist.png")
        assert predict.fit_mnist(flat, digit).shape == predict.fit_resize(image).shape


def _blank(rng):
    return np.full((120, 90), 230, np.uint8)


def _paper_noise(rng):
    page = 200 + ndimage.gaussian_filter(rng.normal(0, 12, (200, 300)), 2.0)
    return np.clip(page + rng.normal(0, 4, page.shape), 0, 255).astype(np.uint8)


def _two_digits(rng):
    """Two dark ring-shaped '0's on paper, a digit's width apart."""
    ys, xs = np.indices((100, 200))
    page = np.full((100, 200), 235.0)
    for cx in (50, 150):
        r = np.hypot((ys - 50) / 1.4, xs - cx)
        page[(r > 18) & (r < 26)] = 30
    return page.astype(np.uint8)


def _dusty_digit(rng):
    """One ring on paper with a few one-pixel specks of dust far from it."""
    page = _two_digits(rng)
    page[:, 100:] = 235
    page[10, 180] = page[90, 170] = page[5, 120] = 30
    return page


def test_dust_is_not_a_blob_and_is_left_out_of_the_crop(tmp_path):
    dusty, clean = tmp_path / "dusty.png", tmp_path / "clean.png"
    Image.fromarray(_dusty_digit(None)).save(dusty)
    page = _two_digits(None)
    page[:, 100:] = 235
    Image.fromarray(page).save(clean)
    np.testing.assert_array_equal(predict.preprocess(str(dusty)),
                                  predict.preprocess(str(clean)))


def test_bold_strokes_are_thinned_and_mnist_widths_kept():
    bold = np.zeros((28, 28), np.uint8)
    bold[4:24, 9:19] = 255                    # a bar 10 pixels wide
    assert predict.stroke_width(bold) > predict.THICK
    assert predict.stroke_width(predict.thin_strokes(bold)) <= predict.THICK
    thin = np.zeros((28, 28), np.uint8)
    thin[4:24, 12:16] = 255                   # 4 pixels: as MNIST's
    np.testing.assert_array_equal(predict.thin_strokes(thin), thin)


@pytest.mark.slow
def test_images_without_one_digit_are_refused_in_one_line(tmp_path):
    """No model is needed: predict reads every file before loading one."""
    rng = np.random.default_rng(0)
    paths = []
    for name, make in (("blank.png", _blank), ("noise.jpg", _paper_noise),
                       ("two.png", _two_digits)):
        paths.append(str(tmp_path / name))
        Image.fromarray(make(rng)).save(paths[-1])
    result = subprocess.run([sys.executable, "-m", "mnist_plus.predict", "--workdir",
                             str(tmp_path / "no_run"), "--number", "3", *paths], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    for fragment in ("3 of 3 files cannot be used", f"{paths[0]}: no ink found",
                     f"{paths[1]}: no ink found", f"{paths[2]}: several blobs of ink found (2",
                     "crop the image to one digit"):
        assert fragment in result.stderr, (fragment, result.stderr)



def test_a_page_read_with_the_wrong_background_is_refused(tmp_path):
    """Dark paper read as the digit's background: the ring is not seen as ink."""
    path = tmp_path / "ring.png"
    Image.fromarray(_dusty_digit(None)).save(path)
    with pytest.raises(UsageError, match="--background is the wrong way round"):
        predict.preprocess(str(path), background="black")
