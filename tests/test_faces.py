"""The procedural faces: shapes, determinism, ranges, and the extrapolation's truth.

Compiling a render takes about a second, so the tests share a few shapes: a batch
of `N` faces at `SIZE` pixels, and `N` faces at `FINE` pixels for geometry.
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.harness import faces

N, SIZE, FINE = 8, 64, 256


@pytest.fixture(scope="module")
def data():
    images, factors = faces.batch(0, 0, N, size=SIZE)
    return np.asarray(images), factors


def _rows(factors, size):
    """Per face: the eye row's pixel index and the row centres' distance to it."""
    ey = np.asarray(factors.center_y - faces.EYE_ROW * factors.face_height)
    y = (np.arange(size) + 0.5) / size
    return np.floor(ey * size).astype(int), np.abs(y[None, :] - ey[:, None])


def test_shapes_dtypes_and_ranges(data):
    images, factors = data
    assert images.shape == (N, SIZE, SIZE, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.min() < -0.5 and images.max() > 0.5  # uses the range
    for field in dataclasses.fields(factors):
        value = getattr(factors, field.name)
        assert value.dtype == jnp.float32, field.name
        assert value.shape in ((N,), (N, 3)), field.name
    for mask in (
        faces.hair_mask(factors, size=SIZE),
        faces.face_mask(factors, size=SIZE),
    ):
        assert mask.shape == (N, SIZE, SIZE) and mask.dtype == jnp.float32
        assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0 + 1e-6


def test_jit_and_a_small_size(data):
    factors = data[1]
    small = faces.render(factors, size=32)
    assert small.shape == (N, 32, 32, 3)
    jitted = jax.jit(faces.render, static_argnames="size")
    np.testing.assert_allclose(jitted(factors, size=32), small, atol=1e-6)


def test_batch_is_determined_by_seed_and_step(data):
    images, factors = data
    again, factors_again = faces.batch(0, 0, N, size=SIZE)
    np.testing.assert_array_equal(again, images)
    jax.tree.map(np.testing.assert_array_equal, factors_again, factors)
    for other in (
        faces.batch(0, 1, N, size=SIZE)[0],
        faces.batch(1, 0, N, size=SIZE)[0],
    ):
        assert float(jnp.abs(other - images).mean()) > 0.05
    # The key is fold_in(key(seed), step), as documented.
    key = jax.random.fold_in(jax.random.key(0), 0)
    jax.tree.map(np.testing.assert_array_equal, faces.sample_factors(key, N), factors)
    # seed and step are traced: one program for every (seed, step), no retracing.
    first = faces.batch.lower(0, 1, N, size=SIZE).as_text()
    assert faces.batch.lower(123, 4567, N, size=SIZE).as_text() == first


def test_faces_are_rendered_independently(data):
    images, factors = data
    reverse = jax.tree.map(lambda v: v[::-1], factors)
    np.testing.assert_allclose(
        faces.render(reverse, size=SIZE), images[::-1], atol=1e-6
    )


def test_sample_factors_stay_in_and_fill_their_ranges():
    factors = faces.sample_factors(jax.random.key(0), 4096)
    assert set(faces.FACTOR_RANGES) == {f.name for f in dataclasses.fields(factors)}
    for name, (lo, hi) in faces.FACTOR_RANGES.items():
        value = np.asarray(getattr(factors, name))
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        assert np.all(value >= lo) and np.all(value <= hi), name
        if value.ndim == 1:  # uniform: close to both ends, mean in the middle
            span = hi - lo
            assert value.min() < lo + 0.01 * span and value.max() > hi - 0.01 * span
            np.testing.assert_allclose(value.mean(), (lo + hi) / 2, atol=0.02 * span)
    assert faces.FACTOR_RANGES["eye_distance"] == faces.EYE_DISTANCE_RANGE
    # Different faces get different draws for every factor.
    for field in dataclasses.fields(factors):
        assert np.unique(np.asarray(getattr(factors, field.name))).size > 4000


def test_extrapolated_eye_distance_is_outside_the_training_range(data):
    _, factors = data
    lo, hi = faces.EYE_DISTANCE_RANGE
    assert 1.5 * lo > hi + 0.04
    wide = faces.extrapolate(factors, eye_distance=1.5)
    assert float(wide.eye_distance.min()) > hi
    np.testing.assert_allclose(wide.eye_distance, 1.5 * factors.eye_distance)
    for field in dataclasses.fields(factors):
        if field.name != "eye_distance":
            np.testing.assert_array_equal(
                getattr(wide, field.name), getattr(factors, field.name)
            )
    broad = faces.extrapolate(factors, face_width=1.2)
    np.testing.assert_allclose(broad.face_width, 1.2 * factors.face_width)
    with pytest.raises(ValueError, match="eye_distance"):
        faces.extrapolate(factors, eye_distance=0.0)


def test_eye_extrapolation_changes_only_the_eye_rows(data):
    images, factors = data
    wide = faces.extrapolate(factors, eye_distance=1.5)
    after = np.asarray(faces.render(wide, size=SIZE))
    _, distance = _rows(factors, SIZE)
    # Eyes, irises and brows lie within eye_height + 0.06 of the eye row.
    outside = distance > np.asarray(factors.eye_height)[:, None] + 0.06 + 1 / SIZE
    change = np.abs(after - images).max(axis=(2, 3))  # per face and row
    assert outside.sum(axis=1).min() > SIZE // 2  # most rows are checked
    assert change[outside].max() <= 1e-6
    assert np.all(change.max(axis=1) > 0.3)  # and the eyes did move


def _fine_faces(factors):
    """The faces with black irises, light skin and blond hair (brows)."""
    light_skin, blond = (
        jnp.asarray(faces.SKIN_PALETTE[-1]),
        jnp.asarray(faces.HAIR_PALETTE[-1]),
    )
    return dataclasses.replace(
        factors,
        iris=jnp.full((N, 3), 0.05),
        skin=jnp.broadcast_to(light_skin, (N, 3)),
        hair=jnp.broadcast_to(blond, (N, 3)),
    )


def test_eye_extrapolation_moves_the_irises_apart(data):
    factors = _fine_faces(data[1])
    cx, d = np.asarray(factors.center_x), np.asarray(factors.eye_distance)
    a, eh = np.asarray(factors.face_width), np.asarray(factors.eye_height)
    x = (np.arange(FINE) + 0.5) / FINE
    _, distance = _rows(factors, FINE)
    band = distance < eh[:, None] + 0.01  # the eyes' rows, below the brows

    def iris_centres(f):
        image = np.asarray(faces.render(f, size=FINE))
        dark = (image.max(axis=-1) < -0.5) & band[:, :, None]  # iris and pupil
        dark &= np.abs(x - cx[:, None, None]) < a[:, None, None]  # in the face
        assert dark.sum(axis=(1, 2)).min() > 100
        left = (dark & (x < cx[:, None, None])).sum(axis=1)  # (N, FINE)
        right = (dark & (x > cx[:, None, None])).sum(axis=1)
        return (left @ x) / left.sum(1), (right @ x) / right.sum(1)

    left, right = iris_centres(factors)
    np.testing.assert_allclose(left, cx - d / 2, atol=0.5 / FINE)
    np.testing.assert_allclose(right, cx + d / 2, atol=0.5 / FINE)
    wide_left, wide_right = iris_centres(faces.extrapolate(factors, eye_distance=1.5))
    shift = 0.25 * d  # each eye moves out by half of the extra 0.5·d
    np.testing.assert_allclose(left - wide_left, shift, atol=0.5 / FINE)
    np.testing.assert_allclose(wide_right - right, shift, atol=0.5 / FINE)


@pytest.mark.parametrize("worst", [False, True])
def test_extrapolated_eyes_stay_inside_the_face(data, worst):
    factors = data[1]
    if worst:  # the widest eyes, furthest apart, in the narrowest face
        ranges = faces.FACTOR_RANGES
        factors = dataclasses.replace(
            factors,
            face_width=jnp.full((N,), ranges["face_width"][0]),
            eye_distance=jnp.full((N,), ranges["eye_distance"][1]),
            eye_width=jnp.full((N,), ranges["eye_width"][1]),
            eye_height=jnp.full((N,), ranges["eye_height"][1]),
        )
    wide = faces.extrapolate(factors, eye_distance=1.5)
    image = np.asarray(faces.render(wide, size=FINE))
    skin = 2.0 * np.asarray(wide.skin) - 1.0
    row, _ = _rows(wide, FINE)
    half = np.asarray(wide.eye_distance / 2 + wide.eye_width)
    for side in (-1, 1):  # the pixel 1.5-2.5 px beyond each eye's outer corner
        corner = np.asarray(wide.center_x) + side * half
        col = np.floor(corner * FINE).astype(int) + 2 * side
        pixel = image[np.arange(N), row, col]
        np.testing.assert_allclose(pixel, skin, atol=1e-6)


def test_hair_mask_marks_the_hair(data):
    images, factors = data
    hair = np.asarray(faces.hair_mask(factors, size=SIZE))
    face = np.asarray(faces.face_mask(factors, size=SIZE))
    full = hair > 0.999
    assert full.sum(axis=(1, 2)).min() > 0.02 * SIZE * SIZE
    idx = np.nonzero(full)
    colour = 2.0 * np.asarray(factors.hair) - 1.0
    np.testing.assert_allclose(images[idx], colour[idx[0]], atol=2e-3)
    assert np.all(hair + face <= 1.0 + 1e-5)  # disjoint layers of one image
    # Far from the head, the top corners and the bottom row, there is no hair.
    assert np.all(hair[:, 0, [0, -1]] == 0.0) and np.all(hair[:, -1, :] == 0.0)
    background = 2.0 * np.asarray(factors.background) - 1.0
    np.testing.assert_allclose(images[:, 0, 0], background, atol=1e-6)


def test_faces_are_not_degenerate(data):
    images, factors = data
    face = np.asarray(faces.face_mask(factors, size=SIZE))
    for image in images:
        _, counts = np.unique(
            np.round(image.reshape(-1, 3), 2), axis=0, return_counts=True
        )
        # background, hair, neck, skin, sclera, iris, pupil, brows, mouth
        assert (counts >= 3).sum() >= 8
    area = face.mean(axis=(1, 2))
    assert np.all(area > 0.2) and np.all(area < 0.7)
    # The eye centres are inside the visible face, and dark (iris or pupil).
    row, _ = _rows(factors, SIZE)
    for side in (-1.0, 1.0):
        ex = np.asarray(factors.center_x + side * factors.eye_distance / 2)
        col = np.floor(ex * SIZE).astype(int)
        assert np.all(face[np.arange(N), row, col] > 0.99)
        assert np.all(images[np.arange(N), row, col].max(axis=-1) < 0.0)


def test_bad_arguments_raise(data):
    factors = data[1]
    with pytest.raises(ValueError, match="size"):
        faces.render(factors, size=4)
    with pytest.raises(ValueError, match="batch axis"):
        faces.render(jax.tree.map(lambda v: v[0], factors))


def test_optional_arguments_are_keyword_only():
    for fn in (faces.render, faces.hair_mask, faces.face_mask, faces.batch):
        for p in inspect.signature(fn).parameters.values():
            if p.default is not inspect.Parameter.empty:
                assert p.kind is inspect.Parameter.KEYWORD_ONLY, (fn.__name__, p.name)


def test_layout_places_the_features_the_render_paints(data):
    factors = data[1]
    layout = faces.layout(factors)
    assert set(layout) == set(faces.FEATURES)
    left, right = layout["left_eye"], layout["right_eye"]
    np.testing.assert_allclose(right["x"] - left["x"], factors.eye_distance, 1e-6)
    wide = faces.layout(faces.extrapolate(factors, eye_distance=1.5))
    for name in faces.FEATURES:  # the intervention keeps every shape
        for key in ("y", "half_width", "half_height"):
            np.testing.assert_array_equal(wide[name][key], layout[name][key])
    # The face's edge at the eye row: face 2 px inside, none 2 px outside.
    half = np.asarray(faces.face_half_width(factors, left["y"]))
    mask = np.asarray(faces.face_mask(factors, size=FINE))
    i = np.floor(np.asarray(left["y"]) * FINE).astype(int)
    for offset, expected in ((-2.0, 1.0), (2.0, 0.0)):
        x = np.asarray(factors.center_x) + half + offset / FINE
        j = np.floor(x * FINE).astype(int)
        np.testing.assert_allclose(mask[np.arange(N), i, j], expected, atol=1e-6)
    # The fringe covers the face above its line, not below it (mid-face).
    hair = np.asarray(faces.hair_mask(factors, size=FINE))
    line = np.asarray(faces.fringe_line(factors, factors.center_x))
    j = np.floor(np.asarray(factors.center_x) * FINE).astype(int)
    for offset, expected in ((-2.0, 1.0), (2.0, 0.0)):
        i = np.floor((line + offset / FINE) * FINE).astype(int)
        np.testing.assert_allclose(hair[np.arange(N), i, j], expected, atol=1e-6)
