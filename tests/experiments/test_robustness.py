"""The image shifts of experiments/robustness.py do what they say (NumPy/PIL only)."""

import numpy as np
import pytest

from experiments import robustness
from tests.helpers import synthetic_digits


def _square(side, value=255):
    """A bright square of `side` pixels centred on the image centre (13.5, 13.5)."""
    image = np.zeros((1, 28, 28), np.uint8)
    lo = 14 - side // 2
    image[0, lo: lo + side, lo: lo + side] = value
    return image


def _centre_of_mass(image):
    ys, xs = np.indices(image.shape)
    total = image.sum()
    return (ys * image).sum() / total, (xs * image).sum() / total


def test_zero_rotation_and_unit_scale_change_nothing():
    images = synthetic_digits(4, seed=0)[0][..., 0]
    np.testing.assert_array_equal(robustness.rotate(images, 0), images)
    # Exact only if the warp samples input pixel centres at output pixel centres.
    np.testing.assert_array_equal(robustness.scale(images, 1.0), images)


def test_rotation_is_counter_clockwise():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 2:6, 20:24] = 255  # top right
    turned = robustness.rotate(image, 90)
    np.testing.assert_array_equal(turned, np.rot90(image, k=1, axes=(1, 2)))  # to top left


@pytest.mark.parametrize("factor", [0.6, 1.3])
def test_scale_keeps_the_centre_and_scales_the_extent(factor):
    out = robustness.scale(_square(10), factor)[0].astype(float)
    cy, cx = _centre_of_mass(out)
    # The square is symmetric about the centre and so is the warp: only bilinear rounding
    # to uint8 (< 0.5 per pixel) can move the centre, by far less than 0.1 pixel.
    assert abs(cy - 13.5) < 0.1 and abs(cx - 13.5) < 0.1
    # Mass scales with the area (factor^2), up to the one-pixel bilinear edge.
    ratio = out.sum() / (255 * 100)
    assert factor ** 2 * 0.8 < ratio < factor ** 2 * 1.2


def test_dilate_and_erode_are_3x3_max_and_min_filters():
    dot = np.zeros((1, 28, 28), np.uint8)
    dot[0, 10, 10] = 200
    once = robustness.thickness(dot, 1)[0]
    assert (once > 0).sum() == 9 and once[9:12, 9:12].min() == 200
    assert (robustness.thickness(dot, 2)[0] > 0).sum() == 25
    assert robustness.thickness(_square(3), -1)[0].sum() == 255  # 3x3 erodes to one pixel
    images = synthetic_digits(4, seed=1)[0][..., 0]
    assert (robustness.thickness(images, -1) <= images).all()
    assert (robustness.thickness(images, 1) >= images).all()


def test_blur_spreads_a_dot_symmetrically_and_keeps_its_mass():
    kernel = robustness.gaussian_kernel(1.5)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    dot = np.zeros((1, 28, 28), np.uint8)
    dot[0, 14, 14] = 255
    out = robustness.blur(dot, 1.0)[0].astype(int)
    np.testing.assert_array_equal(out, out.T)
    np.testing.assert_array_equal(out[14, 14 - 3:14], out[14, 15:18][::-1])
    assert out[14, 14] == round(255 * kernel_centre(1.0) ** 2)
    # The kernel fits inside the image, so only uint8 rounding (< 0.5 on each of the
    # 7x7 pixels it touches) changes the total.
    assert abs(out.sum() - 255) <= 0.5 * 49


def kernel_centre(sigma):
    k = robustness.gaussian_kernel(sigma)
    return k[len(k) // 2]


def test_low_res_keeps_flat_images_and_removes_fine_detail():
    flat = np.full((1, 28, 28), 100, np.uint8)
    np.testing.assert_array_equal(robustness.low_res(flat, 8), flat)
    stripes = np.zeros((1, 28, 28), np.uint8)
    stripes[0, :, ::2] = 255  # one-pixel stripes: gone at 8x8 (3.5 pixels per cell)
    assert robustness.low_res(stripes, 8)[0, 4:24, 4:24].std() < 30
    assert stripes.std() > 120


def test_fit_mnist_ignores_margins_and_fit_resize_does_not():
    images = synthetic_digits(3, seed=2)[0][..., 0]
    plain = robustness.framed(images, robustness.CANVASES[0][1], "mnist")
    for name, make in robustness.CANVASES[1:4]:  # same pixels, only placed in a larger canvas
        np.testing.assert_array_equal(robustness.framed(images, make, "mnist"), plain, name)
    np.testing.assert_array_equal(robustness.framed(images, robustness.CANVASES[0][1], "resize"),
                                  images)  # a 28x28 image goes through --fit resize unchanged
    wide = robustness.framed(images, robustness.CANVASES[3][1], "resize")  # 28x88: shrunk
    assert (wide > 0).sum() < 0.5 * (images > 0).sum()


def test_markdown_has_a_row_per_condition_and_a_column_group_per_run():
    row = {"digit_accuracy": 0.99, "sum_accuracy": 0.98, "sum_agreement": 0.975,
           "exhaustive_sum_accuracy": 0.97}
    shifts = [{"transform": t, "severity": s, "label": label, **row}
              for t, _, levels in robustness.SHIFTS for s, label, _ in levels]
    framing = [{"canvas": c, "fit": f, **row} for c, _ in robustness.CANVASES
               for f in ("mnist", "resize")]
    run = {"clean": row, "shifts": shifts, "framing": framing}
    text = robustness.markdown({"images": 100, "runs": {"a": run, "b": run}})
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    # header, clean row, one per shift; header, one per (canvas, fit)
    assert len(table_rows) == 1 + 1 + len(shifts) + 1 + len(framing)
    assert "| rotation | -30° | 99.00% | 98.00% | 97.50% | 99.00% | 98.00% | 97.50% |" in text
