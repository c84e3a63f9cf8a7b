"""Half (rfftn) spectra: the same penalty and gaps as the full ones."""

import jax
import numpy as np
import pytest

import sdr

CASES = [
    # (map shape, kernel shape, keyword arguments): even and odd last axes.
    ((4, 9, 8, 3), (3, 3, 3, 4), {}),
    ((4, 8, 7, 3), (3, 3, 3, 2), {}),
    ((4, 6, 5, 3), (5, 5, 3, 2), {"strides": 2, "transpose": True}),
    ((3, 4, 5, 2), (4, 3, 2, 3), {"strides": (3, 2), "transpose": True}),
    ((4, 9, 9, 2), (3, 2, 2, 3), {"kernel_dilation": (2, 3)}),
    (
        (3, 5, 6, 4),
        (3, 3, 1, 4),
        {"feature_group_count": 4, "strides": 2, "transpose": True},
    ),
    ((4, 8, 8, 4), (3, 3, 2, 6), {"feature_group_count": 2, "kernel_dilation": 2}),
    ((6, 17, 3), (5, 3, 2), {}),
    ((6, 6, 3), (5, 3, 2), {"strides": 3, "transpose": True}),
    ((2, 4, 3, 5, 2), (2, 3, 2, 2, 3), {"strides": 2, "transpose": True}),
    # A last axis of 1 or 2 points: the half is the full spectrum.
    ((4, 7, 2, 3), (3, 2, 3, 2), {}),
    ((4, 7, 1, 3), (3, 1, 3, 2), {"strides": (1, 2), "transpose": True}),
]


@pytest.mark.parametrize(("mshape", "kshape", "kwargs"), CASES)
def test_half_spectra_give_the_full_spectra_results(mshape, kshape, kwargs):
    rng = np.random.default_rng(0)
    maps = np.abs(rng.normal(size=mshape)).astype(np.float32)
    maps[..., 0] = 0.7  # a constant channel: all its power at frequency 0
    kernel = rng.normal(size=kshape).astype(np.float32)
    grid = mshape[1:-1]
    full = sdr.channel_spectra(maps)
    half = sdr.channel_spectra(maps, half=True)
    assert half.shape == (mshape[-1], *grid[:-1], grid[-1] // 2 + 1)
    np.testing.assert_allclose(half, full[..., : grid[-1] // 2 + 1], rtol=1e-6)
    for include_dc in (False, True):
        expected = np.asarray(
            sdr.conv_pair_gaps(full, kernel, **kwargs, include_dc=include_dc)
        )
        got = sdr.conv_pair_gaps(
            half, kernel, **kwargs, grid=grid, include_dc=include_dc
        )
        scale = np.max(np.abs(expected))
        np.testing.assert_allclose(got, expected, atol=1e-5 * scale, rtol=1e-4)
    # Full spectra are taken with `grid` too (for a last axis of 1 or 2
    # points, full and half are the same array and take the half route).
    np.testing.assert_allclose(
        sdr.conv_pair_gaps(full, kernel, **kwargs, grid=list(grid), include_dc=True),
        expected,
        rtol=1e-5,
        atol=1e-6 * scale,
    )
    np.testing.assert_allclose(
        sdr.conv_penalty(half, kernel, **kwargs, grid=grid),
        sdr.conv_penalty(full, kernel, **kwargs),
        rtol=1e-4,
    )


def test_zero_frequency_handling():
    # A constant channel has no power off frequency 0 on its own grid (its
    # gaps are 0), but on a dilated grid the mean's aliases are non-zero
    # frequencies: half and full spectra agree on both.
    rng = np.random.default_rng(1)
    maps = np.abs(rng.normal(size=(4, 6, 6, 2))).astype(np.float32)
    maps[..., 1] = 0.5
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    full = sdr.channel_spectra(maps)
    half = sdr.channel_spectra(maps, half=True)
    plain = np.asarray(sdr.conv_pair_gaps(half, kernel, grid=(6, 6)))
    np.testing.assert_array_equal(plain[1], 0.0)
    assert np.all(plain[0] != 0)
    dilated = {"strides": 2, "transpose": True}
    got = np.asarray(sdr.conv_pair_gaps(half, kernel, **dilated, grid=(6, 6)))
    assert np.all(got[1] != 0)
    np.testing.assert_allclose(
        got, sdr.conv_pair_gaps(full, kernel, **dilated), rtol=1e-4, atol=1e-6
    )
    # A dead channel counts 0, and the gradient stays finite.
    zero = 0 * half
    value, grad = jax.value_and_grad(sdr.conv_penalty, argnums=1)(
        zero, kernel, grid=(6, 6)
    )
    assert value == 0.0 and np.all(np.isfinite(grad))


def test_half_spectra_gradient_jit_and_vmap():
    rng = np.random.default_rng(2)
    maps = np.abs(rng.normal(size=(2, 3, 6, 7, 2))).astype(np.float32)
    kernels = rng.normal(size=(2, 3, 3, 2, 2)).astype(np.float32)
    conv = {"strides": 2, "transpose": True, "grid": (6, 7)}
    half = jax.vmap(lambda m: sdr.channel_spectra(m, half=True))(maps)
    full = jax.vmap(sdr.channel_spectra)(maps)
    grad_half = jax.jit(
        jax.vmap(jax.grad(lambda s, k: sdr.conv_penalty(s, k, **conv), argnums=1))
    )(half, kernels)
    grad_full = jax.vmap(
        jax.grad(lambda s, k: sdr.conv_penalty(s, k, strides=2, transpose=True), 1)
    )(full, kernels)
    np.testing.assert_allclose(grad_half, grad_full, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "grid", "words"),
    [
        ((2, 6, 4), (6, 9), ["neither", "(2, 6, 9)", "(2, 6, 5)", "(2, 6, 4)"]),
        ((2, 6, 4), (6, 6, 1), ["one entry per spatial axis", "(6, 6, 1)"]),
        ((2, 6, 4), 6, ["`grid`", "sequence"]),
        ((2, 6, 4), (6, 0), ["`grid`"]),
        ((2, 1, 1), (1, 1), ["at least two points"]),
    ],
)
def test_bad_grid(shape, grid, words):
    kernel = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError) as info:
        sdr.conv_pair_gaps(np.ones(shape, np.float32), kernel, grid=grid)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
