"""The FluoHair experiment's change ratio where the rest of the face is unchanged."""

import math

import jax.numpy as jnp

from benchmarks.experiments.fluohair import ratio_of, region_ratio


def _images(n: int = 2, size: int = 4):
    return jnp.zeros((n, size, size, 3))


def _halves(n: int = 2, size: int = 4):
    inside = jnp.zeros((n, size, size)).at[:, : size // 2].set(1.0)
    return inside, 1.0 - inside


def test_region_ratio_is_the_ratio_of_the_mean_changes():
    original = _images()
    inside, rest = _halves()
    edited = original + 0.4 * inside[..., None] + 0.1 * rest[..., None]
    assert math.isclose(region_ratio(original, edited, inside, rest), 4.0, rel_tol=1e-6)


def test_an_edit_confined_to_the_region_has_an_infinite_ratio():
    original = _images()
    inside, rest = _halves()
    edited = original + 0.5 * inside[..., None]
    assert region_ratio(original, edited, inside, rest) == math.inf


def test_an_edit_that_changes_nothing_has_no_ratio():
    original = _images()
    inside, rest = _halves()
    assert math.isnan(region_ratio(original, original, inside, rest))


def test_ratio_of():
    assert ratio_of(1.0, 4.0) == 0.25
    assert ratio_of(1.0, 0.0) == math.inf
    assert math.isnan(ratio_of(0.0, 0.0))
