"""CelebA input pipeline: preprocessing, determinism, resumption, missing data.

Everything runs on `tfds.testing.mock_data` (random JPEGs of the real
218×178×3 spec), so nothing is downloaded.
"""

import inspect

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarks.harness import celeba, data

N, BATCH, SIZE = 20, 4, 32  # 5 steps per epoch
STEPS = N // BATCH


@pytest.fixture
def mock_celeba():
    with tfds.testing.mock_data(num_examples=N):
        yield


def take(iterator, n):
    return np.stack([next(iterator) for _ in range(n)])


def stream(tmp_path, **kwargs):
    kwargs = {"batch_size": BATCH, "seed": 0, "size": SIZE, **kwargs}
    return celeba.batches(data_dir=str(tmp_path), **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The first 13 batches of an uninterrupted run (2.6 epochs).

    Computed once, under its own mock: the mock's examples are the same in
    every `mock_data` context.
    """
    with tfds.testing.mock_data(num_examples=N):
        return take(stream(tmp_path_factory.mktemp("reference")), 13)


def framed(inner, outer, crop=148):
    """A CelebA-sized image: colour `inner` on the centre crop×crop, `outer` around."""
    image = np.empty((218, 178, 3), np.uint8)
    image[...] = outer
    top, left = (218 - crop) // 2, (178 - crop) // 2
    image[top : top + crop, left : left + crop] = inner
    return image


def test_preprocess_shape_dtype_range(rng):
    image = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
    for size in (64, 17):
        out = celeba.preprocess(tf.constant(image), size=size)
        assert out.shape == (size, size, 3)
        assert out.dtype == tf.float32
        out = out.numpy()
        assert out.min() >= -1.0 and out.max() <= 1.0
    extremes = (
        celeba.preprocess(framed(255, 0)).numpy(),
        celeba.preprocess(framed(0, 255)).numpy(),
    )
    np.testing.assert_allclose(extremes[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(extremes[1], -1.0, atol=1e-6)


def test_preprocess_keeps_exactly_the_centre_crop():
    inner, outer = np.array([200, 30, 90]), np.array([10, 250, 0])
    out = celeba.preprocess(framed(inner, outer)).numpy()
    np.testing.assert_allclose(
        out, np.broadcast_to(inner / 127.5 - 1, out.shape), atol=1e-5
    )
    # One pixel more of the border inside the crop window shows up in the output.
    shifted = framed(inner, outer)
    shifted[35, 15:163] = outer
    assert not np.allclose(celeba.preprocess(shifted).numpy(), out, atol=1e-3)


def test_crops_per_model():
    assert celeba.CROPS == data.CELEBA_CROPS == {"vae": 148, "dcgan": 108}
    assert celeba.CROP == 148
    assert data.celeba_crop("vae") == 148 and data.celeba_crop("dcgan") == 108
    with pytest.raises(ValueError, match="vqgan"):
        data.celeba_crop("vqgan")


def test_preprocess_dcgan_crop_keeps_exactly_its_centre():
    inner, outer = np.array([200, 30, 90]), np.array([10, 250, 0])
    image = framed(inner, outer, crop=108)
    out = celeba.preprocess(image, crop=108).numpy()
    np.testing.assert_allclose(
        out, np.broadcast_to(inner / 127.5 - 1, out.shape), atol=1e-5
    )
    # The β-VAE's wider crop takes in the border: about 1 − (108/148)² of the
    # output, 47 %, has left the inner colour.
    wide = celeba.preprocess(image).numpy()
    off = np.abs(wide - (inner / 127.5 - 1)).max(axis=-1) > 0.05
    assert 0.35 < off.mean() < 0.55


def test_preprocess_in_tf_data_map_matches_eager(rng):
    images = rng.integers(0, 256, size=(3, 218, 178, 3), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensor_slices(images).map(celeba.preprocess)
    mapped = np.stack(list(ds.as_numpy_iterator()))
    eager = np.stack([celeba.preprocess(im).numpy() for im in images])
    np.testing.assert_allclose(mapped, eager, atol=1e-6)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        celeba.preprocess(np.zeros((218, 178, 3), np.float32))
    with pytest.raises(ValueError, match="148"):
        celeba.preprocess(np.zeros((100, 178, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        celeba.preprocess(np.zeros((218, 178), np.uint8))
    with pytest.raises(ValueError, match="crop"):
        celeba.preprocess(np.zeros((218, 178, 3), np.uint8), crop=0)
    with pytest.raises(ValueError, match="200"):
        celeba.preprocess(np.zeros((218, 178, 3), np.uint8), crop=200)
    # 108 fits where 148 does not.
    assert celeba.preprocess(np.zeros((120, 120, 3), np.uint8), crop=108).shape[0]


def test_batches_shape_dtype_range(reference):
    assert reference.shape == (13, BATCH, SIZE, SIZE, 3)
    assert reference.dtype == np.float32
    assert reference.min() >= -1.0 and reference.max() <= 1.0
    images = reference.reshape(-1, SIZE * SIZE * 3)
    assert (images.std(axis=1) > 0.01).all()  # images, not constants
    assert len(np.unique(images[: STEPS * BATCH], axis=0)) == N


def test_batches_take_the_crop(mock_celeba, reference, tmp_path):
    dcgan = take(stream(tmp_path, crop=108), 2)
    assert dcgan.shape == reference[:2].shape
    assert dcgan.min() >= -1.0 and dcgan.max() <= 1.0
    # Same images in the same order, cropped tighter.
    assert not np.allclose(dcgan, reference[:2], atol=1e-2)
    np.testing.assert_array_equal(take(stream(tmp_path, crop=148), 2), reference[:2])


def test_data_batches_pass_the_crop(mock_celeba, tmp_path):
    mesh = data.data_mesh()
    for crop in (None, 108):
        batches = data.Batches(
            "celeb_a", BATCH, SIZE, 0, 0, mesh, data_dir=str(tmp_path), crop=crop
        )
        expected = take(stream(tmp_path, crop=crop or celeba.CROP), 2)
        np.testing.assert_array_equal(take(batches, 2), expected)


def test_num_examples(mock_celeba, tmp_path):
    assert celeba.num_examples("train", data_dir=str(tmp_path)) == N


def test_each_epoch_is_a_fresh_permutation(reference):
    def sorted_images(epoch):
        images = reference[epoch * STEPS : (epoch + 1) * STEPS].reshape(N, -1)
        return images[np.lexsort(images.T[::-1])]

    # The mock yields the same N distinct images every epoch: each epoch shows
    # all of them once (checked in test_batches_shape_dtype_range), in a
    # different order.
    np.testing.assert_array_equal(sorted_images(0), sorted_images(1))
    assert not np.array_equal(reference[:STEPS], reference[STEPS : 2 * STEPS])


def test_deterministic_by_seed(mock_celeba, reference, tmp_path):
    np.testing.assert_array_equal(take(stream(tmp_path), 7), reference[:7])
    other = take(stream(tmp_path, seed=1), STEPS)
    assert not np.array_equal(other, reference[:STEPS])


# Within the first epoch and across its end, exactly at an epoch boundary, and
# after whole epochs skipped arithmetically.
@pytest.mark.parametrize("start", [3, STEPS, 2 * STEPS + 2])
def test_resume_equals_uninterrupted(mock_celeba, reference, tmp_path, start):
    resumed = take(stream(tmp_path, start_step=start), len(reference) - start)
    np.testing.assert_array_equal(resumed, reference[start:])


def test_not_prepared_says_how_to_prepare(tmp_path):
    for call in (
        lambda: celeba.batches(batch_size=4, seed=0, data_dir=str(tmp_path)),
        lambda: celeba.num_examples("train", data_dir=str(tmp_path)),
    ):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert isinstance(info.value, celeba.DatasetNotPreparedError)
        message = str(info.value)
        assert f"tfds build celeb_a --data_dir {tmp_path}" in message
        assert f"{tmp_path}/downloads/manual" in message
        assert "img_align_celeba.zip" in message
        assert "--data-dir" in message
    assert not any(tmp_path.iterdir())  # nothing was downloaded or created


def test_bad_arguments(mock_celeba, tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size"):
        stream(tmp_path, batch_size=N + 1)
    for name in ("batch_size", "seed", "start_step", "size", "crop"):
        with pytest.raises(ValueError, match=name):
            stream(tmp_path, **{name: -1})


def test_optional_arguments_are_keyword_only():
    for f in (celeba.preprocess, celeba.batches, celeba.num_examples):
        for p in inspect.signature(f).parameters.values():
            if p.default is not p.empty:
                assert p.kind == p.KEYWORD_ONLY, (f.__name__, p.name)
