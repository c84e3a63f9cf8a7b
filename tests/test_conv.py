"""The batched pair SDR of conv layers against a per-pair loop."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conv_sdr_loop, dilate

import sdr

CASES = [
    # (map shape, kernel shape, keyword arguments)
    ((5, 9, 8, 3), (3, 3, 3, 4), {}),
    ((4, 9, 8, 3), (3, 3, 3, 4), {"strides": 2}),
    ((4, 6, 5, 3), (5, 5, 3, 2), {"strides": 2, "transpose": True}),
    ((3, 4, 5, 2), (4, 3, 2, 3), {"strides": (3, 2), "transpose": True}),
    ((4, 9, 9, 2), (3, 2, 2, 3), {"kernel_dilation": (2, 3)}),
    ((4, 8, 8, 4), (3, 3, 2, 6), {"feature_group_count": 2}),
    (
        (3, 5, 5, 4),
        (3, 3, 1, 4),
        {
            "feature_group_count": 4,
            "strides": 2,
            "transpose": True,
            "kernel_dilation": 2,
        },
    ),
    ((6, 17, 3), (5, 3, 2), {}),
    ((2, 4, 5, 3, 2), (2, 3, 2, 2, 3), {"strides": 2, "transpose": True}),
]


@pytest.mark.parametrize(("mshape", "kshape", "kwargs"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_conv_sdr_matches_pair_loop(mshape, kshape, kwargs, seed):
    rng = np.random.default_rng(seed)
    # Positive-mean maps, as after a ReLU, so the zero frequency matters.
    maps = np.abs(rng.normal(size=mshape)).astype(np.float32)
    kernel = rng.normal(size=kshape).astype(np.float32)
    got = sdr.conv_sdr(maps, kernel, **kwargs)
    expected = conv_sdr_loop(
        maps,
        kernel,
        strides=kwargs.get("strides", 1),
        transpose=kwargs.get("transpose", False),
        dilation=kwargs.get("kernel_dilation", 1),
        groups=kwargs.get("feature_group_count", 1),
    )
    assert got.shape == kernel.shape[-2:]
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_conv_sdr_include_dc(rng):
    maps = rng.normal(size=(4, 6, 6, 2)).astype(np.float32) + 1.0
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    got = sdr.conv_sdr(maps, kernel, strides=2, transpose=True, include_dc=True)
    big = dilate(maps, (2, 2), (1, 2))
    big = np.pad(big, ((0, 0), (0, 1), (0, 1), (0, 0)))  # 12 × 12 grid
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(
                got[i, j],
                sdr.spectral_density_ratio(
                    big[..., i], kernel[:, :, i, j], include_dc=True
                ),
                rtol=1e-4,
            )


def test_transposed_grid_is_the_grid_of_lax_conv_transpose(rng):
    # lax.conv_transpose with stride 2 convolves the input dilated by 2 (zeros
    # inserted) on the 2H × 2W grid: with a Dirac kernel its output is the
    # dilated maps, shifted.
    maps = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)

    def layer(kernel, maps):
        return jax.lax.conv_transpose(
            maps, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    big = np.pad(dilate(maps, (2, 2), (1, 2)), ((0, 0), (0, 1), (0, 1), (0, 0)))
    dirac = np.zeros((3, 3, 2, 2), np.float32)
    dirac[1, 1] = np.eye(2)
    out = np.asarray(layer(dirac, maps))
    assert out.shape == big.shape
    shifts = [
        shift
        for shift in itertools.product(range(8), repeat=2)
        # A Dirac tap copies its input: equal up to a conv algorithm's
        # rounding (an accelerator's may mix neighbouring taps), far below 1.
        if np.allclose(np.roll(big, shift, axis=(1, 2)), out, rtol=0, atol=1e-3)
    ]
    assert len(shifts) == 1, shifts
    # The library measures such a layer on that grid: its captured geometry,
    # and the same pair matrix as a plain conv on the explicitly dilated maps.
    _, (tap,) = sdr.capture_convs(layer, kernel, maps)
    assert tap.geometry.input_dilation == (2, 2)
    on_dilated_grid = sdr.conv_sdr(big, kernel)
    np.testing.assert_allclose(tap.pair_sdr(), on_dilated_grid, rtol=1e-4)
    np.testing.assert_allclose(
        sdr.conv_sdr(maps, kernel, strides=2, transpose=True),
        on_dilated_grid,
        rtol=1e-4,
    )
    # On the undilated grid the pairs measure something else.
    undilated = sdr.conv_sdr(maps, kernel)
    assert np.max(np.abs(np.log(undilated / on_dilated_grid))) > 0.05


def test_conv_penalty_matches_pair_sum(rng):
    maps = np.abs(rng.normal(size=(4, 6, 5, 3))).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    for kwargs in ({}, {"strides": 2, "transpose": True}):
        spectra = sdr.channel_spectra(maps)
        got = sdr.conv_penalty(spectra, kernel, **kwargs)
        big = maps
        if kwargs:
            big = dilate(maps, (2, 2), (1, 2))
            big = np.pad(big, ((0, 0), (0, 1), (0, 1), (0, 0)))
        expected = sum(
            float(sdr.spectral_independence_penalty(big[..., i], kernel[:, :, i, j]))
            for i in range(3)
            for j in range(2)
        )
        np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_conv_penalty_gradient_and_zeros(rng):
    maps = np.abs(rng.normal(size=(4, 6, 6, 2))).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    spectra = sdr.channel_spectra(maps)
    g_spectra, g_kernel = jax.grad(sdr.conv_penalty, argnums=(0, 1))(spectra, kernel)
    np.testing.assert_array_equal(g_spectra, np.zeros_like(spectra))
    assert np.all(np.isfinite(g_kernel)) and np.any(g_kernel != 0)
    for s, k in [
        (0 * spectra, kernel),
        (spectra, 0 * kernel),
        (0 * spectra, 0 * kernel),
    ]:
        value, grad = jax.value_and_grad(sdr.conv_penalty, argnums=1)(s, k)
        assert value == 0.0 and np.all(np.isfinite(grad))


def test_conv_penalty_drives_layer_to_generic(rng):
    noise = rng.normal(size=(16, 3, 12, 12)).astype(np.float32)
    blurred = sdr.circular_convolve(noise, np.ones((3, 3), np.float32))
    maps = jnp.moveaxis(blurred, 1, -1)  # low-pass maps, (16, 12, 12, 3)
    kernel = jnp.asarray(
        np.ones((3, 3, 3, 4), np.float32)
        + 0.1 * rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    )
    spectra = sdr.channel_spectra(maps)
    before = sdr.conv_sdr(maps, kernel)
    assert jnp.min(before) > 1.5
    # Plain gradient descent, the step set from the problem's scale as in
    # test_ratio.test_penalty_drives_low_pass_kernel_to_generic.
    flat = spectra.reshape(3, -1)
    weight = flat[:, 1:] / jnp.mean(flat[:, 1:], axis=1, keepdims=True) - 1
    lr = 1.0 / (jnp.mean(jnp.sum(kernel**2, axis=(0, 1))) * jnp.max(weight) ** 2)
    grad = jax.grad(sdr.conv_penalty, argnums=1)
    k, _ = jax.lax.scan(
        lambda k, _: (k - lr * grad(spectra, k), None), kernel, None, length=1000
    )
    after = sdr.conv_sdr(maps, k)
    np.testing.assert_allclose(after, 1.0, atol=0.05)


def test_conv_sdr_bfloat16(rng):
    maps = rng.normal(size=(4, 8, 8, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    got = sdr.conv_sdr(
        jnp.asarray(maps, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16)
    )
    assert got.dtype == jnp.float32
    ref = sdr.conv_sdr(
        np.asarray(jnp.asarray(maps, jnp.bfloat16), np.float32),
        np.asarray(jnp.asarray(kernel, jnp.bfloat16), np.float32),
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5)
