"""Feature measurements on faces: positions and shapes, and their metrics.

One batch of `N` evaluation-like faces at the tiny config's 32 px and at 64 px.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdr_flax
from benchmarks.harness import faces, landmarks

N = 32


@pytest.fixture(scope="module", params=[32, 64])
def batch(request):
    size = request.param
    images, factors = faces.batch(0, 0, N, size=size)
    return size, images, factors


def _blur(images):
    """A 3×3 binomial blur (edges repeated), like a blurry network output."""
    k = jnp.asarray([0.25, 0.5, 0.25])
    pad = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = sum(k[i] * pad[:, i : i + images.shape[1]] for i in range(3))
    return sum(k[i] * rows[:, :, i : i + images.shape[2]] for i in range(3))


def test_renders_are_measured_where_the_layout_puts_them(batch):
    size, images, factors = batch
    measured = landmarks.measure(images, factors)
    layout = faces.layout(factors)
    for name in faces.FEATURES:
        m, t = measured[name], layout[name]
        for key in landmarks.MEASURES:
            assert m[key].shape == (N,) and bool(jnp.all(jnp.isfinite(m[key])))
        # Centres: sub-pixel in x; in y an eye is measured with its brow (above it).
        np.testing.assert_allclose(m["x"], t["x"] * size, atol=0.02 * size)
        dy = np.asarray(m["y"] - t["y"] * size)
        if name == "mouth":
            bend = np.abs(np.asarray(factors.smile)) * size  # corners' rise
            assert np.all(np.abs(dy) < 0.3 + 0.5 * bend)
        else:
            assert np.all(dy < 0.25) and np.all(dy > -0.05 * size)
        # Widths: contrast-weighted spreads, 0.5-1.7× the full axes (an eye's
        # from its iris's alone to its brow's, by the faces' colours).
        ratio = np.asarray(m["width"] / (2 * t["half_width"] * size))
        assert ratio.min() > 0.5 and ratio.max() < 1.7, name
    mouth_width = np.asarray(measured["mouth"]["width"])
    np.testing.assert_allclose(
        mouth_width / (2 * np.asarray(layout["mouth"]["half_width"]) * size),
        np.median(mouth_width / (2 * np.asarray(layout["mouth"]["half_width"]) * size)),
        rtol=0.15,
    )


def test_windows_hold_the_features_and_no_hair(batch):
    size, _, factors = batch
    win = landmarks.windows(factors, size)
    hair = faces.hair_mask(factors, size=size)
    wide = faces.extrapolate(factors, eye_distance=1.5)
    for name in faces.FEATURES:
        assert float(jnp.max(jnp.where(win[name], hair, 0.0))) < 0.05, name
        # Every feature's centre, unedited and with the eyes 1.5× apart, inside.
        for f in (factors, wide):
            t = faces.layout(f)[name]
            i = jnp.floor(t["y"] * size).astype(int)
            j = jnp.floor(t["x"] * size).astype(int)
            assert bool(jnp.all(win[name][jnp.arange(N), i, j])), name
    for part in ("eye_reference", "mouth_reference"):  # 2 rows, every column
        assert int(win[part].sum((1, 2)).min()) >= size


def test_position_and_shape_tell_moved_eyes_from_stretched_eyes(batch):
    """The truth keeps each eye's shape; widened eyes and an image stretch don't."""
    size, images, factors = batch
    wide = faces.extrapolate(factors, eye_distance=1.5)
    truth = faces.render(wide, size=size)
    widened = dataclasses.replace(
        wide, eye_width=1.5 * wide.eye_width
    )  # same centres, each eye (and brow) 1.5× wider
    candidates = {
        "keep": _blur(truth),  # the truth's shapes, as blurry as a network's
        "widened": _blur(faces.render(widened, size=size)),
        "stretch": sdr_flax.stretch_maps(images, 1.5),
        "none": images,
    }
    score = jax.jit(landmarks.feature_metrics)
    m = {k: score(v, truth, factors)["eyes"] for k, v in candidates.items()}
    px = size / 32  # errors scale with the image
    # Position: moved and widened eyes sit where the truth's are.
    assert m["keep"]["position"] < 0.3 * px
    assert m["widened"]["position"] < 0.3 * px
    assert abs(m["keep"]["position"] - m["widened"]["position"]) < 0.15 * px
    assert m["stretch"]["position"] < 0.5 * px  # about the image's centre
    # The unedited eyes are ~2 px (at 32 px) from the truth's.
    assert m["none"]["position"] > 1.5 * px
    assert m["none"]["position"] > 5 * m["keep"]["position"]
    # Shape: the kept eyes are near the truth's width (blur changes a width by
    # up to ~20 %); the widened and the stretched ones ~1.5×.
    assert 0.8 < m["keep"]["width_ratio"] < 1.25
    assert m["widened"]["width_ratio"] > 1.25 * m["keep"]["width_ratio"]
    assert m["stretch"]["width_ratio"] > 1.3
    for wider in ("widened", "stretch"):
        assert m[wider]["width"] > m["keep"]["width"] + 0.8 * px, wider
    assert m["none"]["width_ratio"] < 1.1  # unmoved, but its shape is right


def test_the_mouth_is_a_control(batch):
    """Moving the eyes leaves the mouth; stretching the image widens it."""
    size, images, factors = batch
    truth = faces.render(faces.extrapolate(factors, eye_distance=1.5), size=size)
    none = landmarks.feature_metrics(images, truth, factors)["mouth"]
    stretch = landmarks.feature_metrics(
        sdr_flax.stretch_maps(images, 1.5), truth, factors
    )["mouth"]
    assert float(none["position"]) < 1e-4 and float(none["width"]) < 1e-4
    assert stretch["width_ratio"] > 1.35


def test_reference_ratio_and_jit_agree(batch):
    size, _, factors = batch
    truth = faces.render(faces.extrapolate(factors, eye_distance=1.5), size=size)
    stretched = sdr_flax.stretch_maps(truth, 1.5)
    eager = landmarks.feature_metrics(stretched, truth, factors, reference=truth)
    jitted = jax.jit(landmarks.feature_metrics)(
        stretched, truth, factors, reference=truth
    )
    for name, metrics in eager.items():
        assert set(metrics) == {
            "position",
            "width",
            "height",
            "width_ratio",
            "reference_width_ratio",
        }
        for key, value in metrics.items():
            np.testing.assert_allclose(jitted[name][key], value, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            metrics["reference_width_ratio"], metrics["width_ratio"], rtol=1e-6
        )


def test_a_window_without_weight_gives_nan():
    images, factors = faces.batch(0, 0, 2, size=32)
    skin = 2.0 * factors.skin[:, None, None, :] - 1.0
    flat = jnp.broadcast_to(skin, images.shape)  # skin everywhere: no features
    measured = landmarks.measure(flat, factors)
    assert bool(jnp.all(jnp.isnan(measured["mouth"]["width"])))


def test_whole_image_truths_reward_doing_nothing():
    """The limits the module docstring states, on the tiny config's faces."""
    mse = landmarks.whole_image_mse(32, n=16)
    assert mse["eye_distance"]["none"] < 0.3 * mse["eye_distance"]["output"]
    assert mse["face_width"]["output"] < 0.1 * mse["face_width"]["none"]
