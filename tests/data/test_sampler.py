import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_plus.data import sampler
from tests.helpers import rounding


def _data(n=100):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    return images, labels


def test_same_seed_and_epoch_give_the_same_stream():
    a = sampler.epoch_plan(3, 5, 1000)
    b = sampler.epoch_plan(3, 5, 1000)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_numbers_and_order_change_every_epoch_and_with_the_seed():
    p0, n0 = sampler.epoch_plan(0, 0, 1000)
    p1, n1 = sampler.epoch_plan(0, 1, 1000)
    q0, m0 = sampler.epoch_plan(1, 0, 1000)
    assert not np.array_equal(n0, n1) and not np.array_equal(p0, p1)
    assert not np.array_equal(n0, m0) and not np.array_equal(p0, q0)
    assert sorted(p0.tolist()) == list(range(1000))
    assert n0.min() == 0 and n0.max() == 9


def test_stream_ignores_global_numpy_state():
    np.random.seed(1)
    a = sampler.epoch_plan(0, 0, 50)
    np.random.seed(2)
    np.random.rand(10)
    b = sampler.epoch_plan(0, 0, 50)
    np.testing.assert_array_equal(a[1], b[1])


def test_labels_are_consistent():
    images, labels = _data()
    for batch in sampler.train_batches(images, labels, seed=0, epoch=0, batch_size=32):
        number = np.argmax(batch.number, axis=1)
        assert batch.number.shape == (32, 10) and batch.number.sum() == 32
        np.testing.assert_array_equal(batch.sum, batch.digit + number)
        assert batch.sum.min() >= 0 and batch.sum.max() <= 18
        assert batch.image.dtype == np.float32 and batch.image.shape == (32, 28, 28, 1)
        # Each image is paired with its own label.
        for img, d in zip(batch.image, batch.digit):
            assert labels[np.flatnonzero((images == img).all(axis=(1, 2, 3)))[0]] == d


def test_epoch_drops_only_the_remainder():
    images, labels = _data(100)
    batches = list(sampler.train_batches(images, labels, 0, 0, 32))
    assert len(batches) == 3 == sampler.steps_per_epoch(100, 32)


def test_resuming_mid_epoch_continues_the_same_stream():
    images, labels = _data()
    full = list(sampler.train_batches(images, labels, 7, 2, 16))
    tail = list(sampler.train_batches(images, labels, 7, 2, 16, start_step=4))
    assert len(tail) == len(full) - 4
    for a, b in zip(full[4:], tail):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_eval_batches_cover_every_example_once_with_padding_masked():
    images, labels = _data(70)
    numbers = sampler.test_numbers(0, 70)
    batches = list(sampler.eval_batches(images, labels, numbers, 32))
    assert [b.image.shape[0] for b in batches] == [32, 32, 32]
    mask = np.concatenate([b.mask for b in batches])
    assert mask.sum() == 70 and mask[70:].sum() == 0
    digits = np.concatenate([b.digit for b in batches])[:70]
    np.testing.assert_array_equal(digits, labels)


def test_test_numbers_are_fixed_by_the_seed():
    np.testing.assert_array_equal(sampler.test_numbers(4, 500), sampler.test_numbers(4, 500))
    assert not np.array_equal(sampler.test_numbers(4, 500), sampler.test_numbers(5, 500))


def test_normalise_uses_mnist_statistics():
    images = np.array([0, 255], np.uint8).reshape(2, 1, 1, 1)
    out = sampler.normalise(images).ravel()
    # float32 arithmetic against float64: 4 roundings (2 constants, 2 operations) of
    # <= eps/2 each, no cancellation at 0 or 1: rtol 2 eps, with margin 4 eps.
    np.testing.assert_allclose(out, [(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081],
                               rtol=4 * np.finfo(np.float32).eps)


def test_normalise_gives_the_formulas_bits_for_every_pixel_value_and_any_shape():
    # uint8 images are looked up in a table; other dtypes take the float32 formula itself.
    values = np.arange(256, dtype=np.uint8)
    formula = sampler.normalise(values.astype(np.int32))
    table = sampler.normalise(values)
    assert table.dtype == formula.dtype == np.float32
    np.testing.assert_array_equal(table.view(np.uint32), formula.view(np.uint32))
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    out = sampler.normalise(images)
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, formula[images.astype(np.int64)])


def test_translate_moves_pixels_and_fills_with_background():
    image = np.zeros((1, 28, 28, 1), np.uint8)
    image[0, 10, 12] = 255
    norm = sampler.normalise(image)
    moved = sampler.translate(norm, np.array([[2, -3]], np.int32))
    assert moved[0, 12, 9, 0] == norm[0, 10, 12, 0]
    assert np.count_nonzero(moved != norm[0, 0, 0, 0]) == 1
    np.testing.assert_array_equal(sampler.translate(norm, np.zeros((1, 2), np.int32)), norm)


def test_translate_is_bit_identical_in_numpy_and_jax():
    images, _ = _data(16)
    shifts = sampler.epoch_shifts(0, 0, 16, 3)
    assert np.abs(shifts).max() <= 3 and np.abs(shifts).max() > 0
    np.testing.assert_array_equal(
        sampler.translate(images, shifts),
        np.asarray(sampler.translate(jnp.asarray(images), jnp.asarray(shifts), xp=jnp)))


AFFINE = sampler.Augment(shift=1, rotate=10.0, scale=0.1, shear=0.1)
ELASTIC = sampler.Augment(shift=1, elastic=1.4)


@pytest.mark.parametrize("augment", [sampler.Augment(shift=2), AFFINE, ELASTIC])
def test_augmentation_keeps_order_and_numbers(augment):
    images, labels = _data()
    plain = list(sampler.train_batches(images, labels, 0, 1, 32))
    shifted = list(sampler.train_batches(images, labels, 0, 1, 32, augment=augment))
    for a, b in zip(plain, shifted):
        np.testing.assert_array_equal(a.digit, b.digit)
        np.testing.assert_array_equal(a.number, b.number)
        assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("augment", [sampler.NO_AUGMENT, AFFINE])
def test_uint8_images_give_bit_for_bit_the_batches_of_their_normalised_floats(augment):
    # Training starts hand the loop the images as loaded: each batch is normalised as its
    # rows are picked, and must be what normalising the whole set first gave.
    raw = np.random.default_rng(1).integers(0, 256, (96, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(96) % 10
    whole = sampler.train_batches(sampler.normalise(raw), labels, 3, 2, 32, start_step=1,
                                  augment=augment, rows=slice(8, 24))
    per_batch = sampler.train_batches(raw, labels, 3, 2, 32, start_step=1, augment=augment,
                                      rows=slice(8, 24))
    for n, (a, b) in enumerate(zip(whole, per_batch, strict=True), 1):
        assert b.image.dtype == np.float32 and b.image.shape == (16, 28, 28, 1)
        for name in sampler.Batch._fields:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert n == 2


def test_warp_with_identity_maps_is_translate_bit_for_bit():
    images, _ = _data(16)
    shifts = sampler.epoch_shifts(0, 0, 16, 3)
    identity = np.broadcast_to(np.eye(2, dtype=np.float32), (16, 2, 2))
    np.testing.assert_array_equal(sampler.warp(images, identity, shifts),
                                  sampler.translate(images, shifts))


def test_warp_by_a_quarter_turn_rotates_the_pixels():
    # An exact integer map: every source coordinate is a pixel centre, so the
    # bilinear weights are 0 and 1 and the result is a permutation of pixels.
    images, _ = _data(4)
    quarter = np.broadcast_to(np.array([[0, -1], [1, 0]], np.float32), (4, 2, 2))
    turned = sampler.warp(images, quarter, np.zeros((4, 2), np.int32))
    np.testing.assert_array_equal(turned, np.rot90(images, k=-1, axes=(1, 2)))


def test_warp_fills_outside_the_image_with_the_background():
    images, _ = _data(2)
    far = np.broadcast_to(np.eye(2, dtype=np.float32), (2, 2, 2))
    moved = sampler.warp(images, far, np.full((2, 2), 40, np.int32))  # off the canvas
    np.testing.assert_array_equal(moved, np.full_like(images, sampler.normalise(
        np.zeros((1, 1, 1, 1), np.uint8)).item()))


def test_warp_maps_stay_within_the_configured_ranges():
    maps = sampler.epoch_warps(0, 0, 5000, AFFINE)
    assert maps.shape == (5000, 2, 2) and maps.dtype == np.float32
    # det = 1 / zoom**2 (rotation and shear have det 1), zoom in [0.9, 1.1].
    det = np.linalg.det(maps.astype(np.float64))
    assert det.min() >= 1 / 1.1**2 - 1e-5 and det.max() <= 1 / 0.9**2 + 1e-5
    assert det.max() - det.min() > 0.3  # and it does vary
    # The first column is the rotation's (cos, sin) / zoom: its angle is the rotation.
    angle = np.degrees(np.arctan2(maps[:, 1, 0], maps[:, 0, 0]))
    assert np.abs(angle).max() <= 10 + 1e-3 and np.abs(angle).max() > 9
    assert sampler.epoch_warps(0, 0, 10, sampler.Augment(shift=2)) is None
    np.testing.assert_array_equal(maps, sampler.epoch_warps(0, 0, 5000, AFFINE))


@pytest.mark.parametrize("augment", [AFFINE, ELASTIC, AFFINE._replace(elastic=1.4)])
def test_warp_in_numpy_and_jax_agree_within_the_rounding_bound(augment):
    # NumPy's and XLA's float orders may differ (e.g. by fused multiply-adds); how far
    # that can move a pixel follows from the code (`rounding.warp_bound`).
    images, _ = _data(64)
    maps = sampler.epoch_warps(1, 2, 64, augment)
    shifts = sampler.epoch_shifts(1, 2, 64, 1)
    on_host = sampler.warp(images, maps, shifts)
    on_device = np.asarray(jax.jit(lambda i, m, s: sampler.warp(i, m, s, xp=jnp))(
        images, maps, shifts))
    bound = rounding.warp_bound(images, maps)
    assert bound < 1e-2  # a bound that says something about pixels of std 1
    np.testing.assert_allclose(on_device, on_host, rtol=0, atol=bound)
    assert not np.allclose(on_host, images, atol=1e-2)


def test_elastic_displacement_is_the_configured_pixel_distance_and_leaves_the_affine_part():
    maps = sampler.epoch_warps(0, 0, 5000, ELASTIC._replace(rotate=10.0))
    grid = sampler.ELASTIC_GRID
    assert maps.shape == (5000, 2, 2 + grid * grid) and maps.dtype == np.float32
    field = maps[:, :, 2:].astype(np.float64) @ rounding.elastic_basis(28, grid).T
    rms = np.sqrt(np.mean(field ** 2))
    assert abs(rms - 1.4) < 0.03 * 1.4      # expected exactly 1.4; ~0.3% sampling spread
    # Smooth: neighbouring pixels move nearly alike, pixels far apart independently.
    field = field.reshape(5000, 2, 28, 28)
    assert np.corrcoef(field[:, 0, 10, 10], field[:, 0, 10, 11])[0, 1] > 0.9
    assert abs(np.corrcoef(field[:, 0, 2, 2], field[:, 0, 25, 25])[0, 1]) < 0.1
    np.testing.assert_array_equal(
        maps[:, :, :2], sampler.epoch_warps(0, 0, 5000, sampler.Augment(shift=1, rotate=10.0)))


def test_warp_with_a_zero_elastic_field_is_the_affine_warp():
    images, _ = _data(16)
    maps = sampler.epoch_warps(0, 0, 16, AFFINE._replace(elastic=1.0))
    flat = maps.copy()
    flat[:, :, 2:] = 0
    shifts = sampler.epoch_shifts(0, 0, 16, 1)
    np.testing.assert_array_equal(sampler.warp(images, flat, shifts),
                                  sampler.warp(images, maps[:, :, :2], shifts))
    assert not np.allclose(sampler.warp(images, maps, shifts),
                           sampler.warp(images, flat, shifts), atol=1e-2)


def test_held_out_pairs_never_appear_in_training():
    images, labels = _data(2000)
    for kind, count in (("sum9", 10), ("random20", 20)):
        held = sampler.held_out_pairs(kind, seed=3)
        assert held.sum() == count and not held.all(axis=1).any()
        seen = np.zeros((10, 10), int)
        for batch in sampler.train_batches(images, labels, 3, 0, 100, held_out=held):
            np.add.at(seen, (batch.digit, np.argmax(batch.number, 1)), 1)
        assert seen[held].sum() == 0
        assert (seen[~held] > 0).all()  # every other pair still shows up
        np.testing.assert_array_equal(sampler.held_out_pairs(kind, 3), held)


def test_holdout_none_leaves_the_stream_unchanged():
    labels = np.arange(500) % 10
    a = sampler.epoch_plan(0, 0, 500)
    b = sampler.epoch_plan(0, 0, 500, labels, sampler.held_out_pairs("none", 0))
    np.testing.assert_array_equal(a[1], b[1])
