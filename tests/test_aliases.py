"""`include_aliases`: the aliases of the zero frequency on a dilated grid.

Against `helpers.conv_sdr_loop`, which dilates the maps explicitly, takes
full FFTs in float64 and masks the aliases of zero (the non-zero multiples of
the maps' grid on the dilated grid). The gaps, penalties and transform steps
are tested in test_penalty_paths.py.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conv_sdr_loop, zero_aliases
from jax import lax

import sdr
import sdr_flax


def draw(seed, maps_shape, kernel_shape):
    """Maps with a mean per channel (so the aliases of zero weigh) and a kernel."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=maps_shape) + rng.uniform(0.5, 1.5, maps_shape[-1])
    kernel = rng.normal(size=kernel_shape)
    return maps.astype(np.float32), kernel.astype(np.float32)


# name: (maps shape, kernel shape, conv_sdr keywords)
DILATED = {
    "stride2": ((3, 5, 4, 3), (3, 4, 3, 2), {"strides": 2}),
    "stride2x3": ((2, 4, 3, 2), (3, 4, 2, 3), {"strides": (2, 3)}),
    # Dilated along one axis: a single alias besides zero.
    "stride2x1": ((3, 5, 4, 3), (3, 3, 3, 2), {"strides": (2, 1)}),
    "1d_stride3": ((3, 7, 2), (5, 2, 3), {"strides": 3}),
    "3d_stride2": ((2, 3, 3, 2, 2), (3, 2, 2, 2, 2), {"strides": 2}),
    "kernel_dilation": (
        (2, 6, 5, 2),
        (2, 2, 2, 3),
        {"strides": 2, "kernel_dilation": 3},
    ),
    "grouped": ((2, 5, 4, 4), (3, 3, 2, 4), {"strides": 2, "feature_group_count": 2}),
}


@pytest.mark.parametrize("include_dc", [False, True], ids=["no_dc", "dc"])
@pytest.mark.parametrize(
    "include_aliases", [True, False], ids=["aliases", "no_aliases"]
)
@pytest.mark.parametrize("name", list(DILATED))
def test_conv_sdr_matches_the_masked_reference(name, include_aliases, include_dc):
    maps_shape, kernel_shape, layer = DILATED[name]
    maps, kernel = draw(0, maps_shape, kernel_shape)
    got = sdr.conv_sdr(
        maps,
        kernel,
        transpose=True,
        include_dc=include_dc,
        include_aliases=include_aliases,
        **layer,
    )
    expected = conv_sdr_loop(
        maps,
        kernel,
        strides=layer["strides"],
        transpose=True,
        dilation=layer.get("kernel_dilation", 1),
        groups=layer.get("feature_group_count", 1),
        include_dc=include_dc,
        include_aliases=include_aliases,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("name", ["stride2", "1d_stride3"])
def test_excluding_the_aliases_changes_the_sdr(name):
    """The data make the keyword matter far beyond the tolerance."""
    maps_shape, kernel_shape, layer = DILATED[name]
    maps, kernel = draw(1, maps_shape, kernel_shape)
    kept, left_out = (
        np.asarray(
            sdr.conv_sdr(maps, kernel, transpose=True, include_aliases=a, **layer)
        )
        for a in (True, False)
    )
    assert np.max(np.abs(np.log(kept / left_out))) > 0.05


def test_mask_of_the_reference():
    mask = zero_aliases((8, 6), (2, 3))
    assert mask.sum() == 6
    assert mask[0, 0] and mask[4, 0] and mask[0, 2] and mask[4, 4]
    assert not mask[2, 0]


@pytest.mark.parametrize("include_dc", [False, True], ids=["no_dc", "dc"])
@pytest.mark.parametrize(
    "layer",
    [{}, {"strides": 2}, {"strides": 2, "transpose": False}, {"kernel_dilation": 2}],
    ids=["plain", "strided", "strided_explicit", "kernel_dilation"],
)
def test_no_effect_on_an_undilated_grid(layer, include_dc):
    """A plain or strided conv (input dilation 1) has no aliases of zero."""
    maps, kernel = draw(2, (3, 6, 5, 3), (3, 2, 3, 2))
    spectra = sdr.channel_spectra(maps, half=True)
    grid = maps.shape[1:-1]
    for fn, args in (
        (sdr.conv_sdr, (maps, kernel)),
        (sdr.conv_pair_gaps, (spectra, kernel)),
        (sdr.conv_penalty, (spectra, kernel)),
    ):
        extra = {} if fn is sdr.conv_sdr else {"grid": grid}
        kept, left_out = (
            fn(*args, **layer, **extra, include_dc=include_dc, include_aliases=a)
            for a in (True, False)
        )
        np.testing.assert_array_equal(kept, left_out)


def test_constant_channel_has_power_only_on_the_aliases():
    """A constant map, dilated, has its power on zero and its aliases: it
    has an SDR with the aliases kept, none (NaN) without them."""
    maps, kernel = draw(3, (2, 4, 4, 2), (3, 3, 2, 2))
    maps[..., 0] = 1.5
    kept = np.asarray(sdr.conv_sdr(maps, kernel, strides=2, transpose=True))
    left_out = np.asarray(
        sdr.conv_sdr(maps, kernel, strides=2, transpose=True, include_aliases=False)
    )
    assert np.all(np.isfinite(kept))
    assert np.all(np.isnan(left_out[0])) and np.all(np.isfinite(left_out[1]))
    gaps = sdr.conv_pair_gaps(
        sdr.channel_spectra(maps),
        kernel,
        strides=2,
        transpose=True,
        include_aliases=False,
    )
    np.testing.assert_array_equal(gaps[0], 0.0)


NHWC = ("NHWC", "HWIO", "NHWC")


def model(params, x):
    h = lax.conv_transpose(x, params["up"], (2, 2), "SAME", dimension_numbers=NHWC)
    return lax.conv_general_dilated(
        jnp.tanh(h), params["out"], (1, 1), "SAME", dimension_numbers=NHWC
    )


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize(
    "include_aliases", [True, False], ids=["aliases", "no_aliases"]
)
def test_taps_and_layer_sdr_pass_the_keyword_on(include_aliases, jit):
    maps, up = draw(4, (2, 4, 4, 2), (3, 3, 2, 3))
    _, out = draw(5, (1, 1, 1, 1), (3, 3, 3, 2))
    params = {"up": up, "out": out}
    _, taps = sdr.capture_convs(model, params, maps)
    assert [t.geometry.input_dilation for t in taps] == [(2, 2), (1, 1)]
    got = sdr_flax.layer_sdr(
        model, params, maps, include_aliases=include_aliases, jit=jit
    )
    for tap, (name, r) in zip(taps, got.items(), strict=True):
        assert tap.name == name
        expected = sdr.conv_sdr(
            tap.maps, tap.kernel, geometry=tap.geometry, include_aliases=include_aliases
        )
        np.testing.assert_allclose(r, expected, rtol=1e-6)
        np.testing.assert_allclose(
            tap.pair_sdr(include_aliases=include_aliases), expected, rtol=1e-6
        )
    default = sdr_flax.layer_sdr(model, params, maps, jit=jit)
    changed = [
        not np.allclose(default[n], got[n], rtol=1e-3) for n in got
    ]  # the transposed conv only, and only without the aliases
    assert changed == [not include_aliases, False]
