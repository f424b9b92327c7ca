"""The image-quality augmentation families (`quality.apply_quality`) and the model's
input stretch (`Config.input_stretch`)."""

import jax.numpy as jnp
import numpy as np
import pytest

from mnist_plus import config as config_lib
from mnist_plus.data import quality, sampler
from mnist_plus.errors import UsageError
from mnist_plus.model import stretch_range

FAMILIES = quality.QUALITY_FAMILIES
BLACK = float(sampler.normalise(np.zeros((1,), np.uint8))[0])
WHITE = float(sampler.normalise(np.full((1,), 255, np.uint8))[0])


def _digits(n=64):
    """Blocky 'digits': a bar and a ring of full ink on black, placed by the seed."""
    rng = np.random.default_rng(7)
    images = np.zeros((n, 28, 28, 1), np.uint8)
    for i in range(n):
        r, c = rng.integers(6, 12, 2)
        images[i, r:r + 12, c:c + 3] = 255
        images[i, r:r + 3, c:c + 10] = 255
        images[i, r + 9:r + 12, c:c + 10] = 200
    return images, np.arange(n) % 10


def _unit(images):
    return images[..., 0] * sampler.MNIST_STD + sampler.MNIST_MEAN


def _all_on(p=1.0):
    return sampler.Augment(**{name: p for name in FAMILIES})


def _apply(name, images, seed=0, epoch=0, step=0):
    return quality.apply_quality(sampler.normalise(images),
                                 sampler.Augment(**{name: 1.0}), seed, epoch, step)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_gives_the_same_images_for_seed_epoch_and_step(name):
    images, _ = _digits()
    a = _apply(name, images, 3, 2, 5)
    np.testing.assert_array_equal(a, _apply(name, images, 3, 2, 5))
    if name != "outline":  # the outline has no random strength
        assert not np.array_equal(a, _apply(name, images, 3, 3, 5))
        assert not np.array_equal(a, _apply(name, images, 4, 2, 5))


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_keeps_values_in_the_clean_range_and_float32(name):
    images, _ = _digits()
    out = _apply(name, images)
    assert out.dtype == np.float32 and out.shape == images.shape
    assert out.min() >= BLACK - 1e-5 and out.max() <= WHITE + 1e-5
    assert not np.array_equal(out, sampler.normalise(images))


def test_all_families_off_leave_the_batches_bit_for_bit_as_before():
    images, labels = _digits()
    base = sampler.Augment(shift=1, rotate=10.0, scale=0.1, shear=0.1)
    off = base._replace(**{name: 0.0 for name in FAMILIES})
    assert not off.quality
    for a, b in zip(sampler.train_batches(images, labels, 0, 1, 16, augment=base),
                    sampler.train_batches(images, labels, 0, 1, 16, augment=off), strict=True):
        for field in sampler.Batch._fields:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert sampler.augment_for(config_lib.Config()) == sampler.Augment(1, 10.0, 0.1, 0.1)


def test_families_change_only_images_and_a_fraction_of_them():
    images, labels = _digits(256)
    on = sampler.Augment(shift=1, **{name: 0.3 for name in FAMILIES})
    plain = list(sampler.train_batches(images, labels, 0, 1, 128, augment=sampler.Augment(*on[:5])))
    touched = list(sampler.train_batches(images, labels, 0, 1, 128, augment=on))
    changed = 0
    for a, b in zip(plain, touched, strict=True):
        for field in ("digit", "number", "sum", "mask"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        changed += int((a.image != b.image).any(axis=(1, 2, 3)).sum())
    # 1 - 0.7**7 = 92% of images get at least one family; some stay clean.
    assert 0.8 * 256 < changed < 256


def test_a_process_building_some_rows_gets_those_rows_of_the_whole_batch():
    images, labels = _digits(64)
    on = _all_on(0.5)
    whole = list(sampler.train_batches(images, labels, 2, 1, 32, augment=on))
    part = list(sampler.train_batches(images, labels, 2, 1, 32, augment=on, rows=slice(8, 24)))
    for a, b in zip(whole, part, strict=True):
        np.testing.assert_allclose(b.image, a.image[8:24], rtol=0, atol=1e-6)


def test_resuming_mid_epoch_gives_the_same_batches():
    images, labels = _digits(96)
    on = _all_on(0.5)
    full = list(sampler.train_batches(images, labels, 1, 4, 32, augment=on))
    resumed = list(sampler.train_batches(images, labels, 1, 4, 32, start_step=1, augment=on))
    for a, b in zip(full[1:], resumed, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_stroke_thins_or_thickens_the_ink():
    images, _ = _digits()
    before = _unit(sampler.normalise(images)).sum(axis=(1, 2))
    after = _unit(_apply("stroke", images)).sum(axis=(1, 2))
    thinner, thicker = after < before - 1, after > before + 1
    assert (thinner | thicker).all() and thinner.any() and thicker.any()


def test_outline_leaves_a_thin_ring_around_the_ink_and_not_its_inside():
    from scipy import ndimage

    images, _ = _digits()
    ink = _unit(sampler.normalise(images)) > 0
    ring = _unit(_apply("outline", images)) > 1e-3
    near = ndimage.binary_dilation(ink, np.ones((1, 7, 7), bool))
    inside = ndimage.binary_erosion(ink, np.ones((1, 3, 3), bool))
    assert ring.any(axis=(1, 2)).all() and (ring <= near).all()
    assert (ring & inside).sum() < 0.2 * inside.sum()


def _max_gradient(u):
    return np.abs(np.diff(u, axis=2)).max(axis=(1, 2))


def test_blur_and_lowres_lower_the_sharpest_edge_and_keep_the_ink_mass():
    images, _ = _digits()
    clean = _unit(sampler.normalise(images))
    for name in ("blur", "lowres"):
        out = _unit(_apply(name, images))
        assert (_max_gradient(out) < _max_gradient(clean)).all()
        np.testing.assert_allclose(out.sum(axis=(1, 2)), clean.sum(axis=(1, 2)), rtol=0.1)


def test_background_raises_the_background_and_lowers_the_contrast():
    images, _ = _digits()
    clean = _unit(sampler.normalise(images))
    out = _unit(_apply("background", images))
    paper = clean == 0
    assert (np.where(paper, out, 0).sum(axis=(1, 2)) > 0).all()
    assert (out.max(axis=(1, 2)) - out.min(axis=(1, 2)) <= 1.0).all()
    assert out[paper].mean() > 0.05


def test_noise_changes_every_image_and_lifts_the_background_on_average():
    images, _ = _digits()
    clean = _unit(sampler.normalise(images))
    out = _unit(_apply("noise", images))
    assert (out != clean).any(axis=(1, 2)).all()
    paper = clean == 0
    assert out[paper].mean() > clean[paper].mean() + 0.01


def test_occlude_draws_a_line_or_paints_a_rectangle():
    images, _ = _digits()
    before = _unit(sampler.normalise(images)).sum(axis=(1, 2))
    after = _unit(_apply("occlude", images)).sum(axis=(1, 2))
    assert (after != before).mean() > 0.7 and (after > before).any() and (after < before).any()


def test_quality_families_are_validated_as_probabilities():
    with pytest.raises(UsageError, match="--augment-blur 1.5 is invalid"):
        config_lib.validate(config_lib.Config(augment_blur=1.5))
    with pytest.raises(UsageError, match="--augment-noise -0.1 is invalid"):
        config_lib.validate(config_lib.Config(augment_noise=-0.1))
    config_lib.validate(config_lib.Config(**{f"augment_{n}": 0.5 for n in FAMILIES}))


def test_stretch_undoes_brightness_and_contrast_and_keeps_clean_images():
    images, _ = _digits(8)
    clean = sampler.normalise(images)
    lifted = sampler.normalise((images * 0.4 + 100).astype(np.uint8))
    stretched = np.asarray(stretch_range(jnp.asarray(clean)))
    np.testing.assert_allclose(stretched, clean, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stretch_range(jnp.asarray(lifted))), clean,
                               atol=0.02)
    blank = np.asarray(stretch_range(jnp.full((1, 28, 28, 1), 1.0)))
    assert np.isfinite(blank).all()


def test_the_scan_loop_refuses_the_host_side_families_in_one_line():
    from mnist_plus.training import loops

    images, labels = _digits(8)
    with pytest.raises(UsageError, match="run on the host: use --loop host"):
        loops.make_loop("scan", images, labels, 0, 4, sampler.Augment(blur=0.1))
