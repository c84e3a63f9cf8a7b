"""Interventions on hidden layers: `sdr_flax.intervene` and `stretch_maps`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from models import Decoder, LinenGenerator

import sdr_flax


def test_stretch_maps_magnifies_the_centre():
    ramp = jnp.broadcast_to(jnp.arange(8, dtype=jnp.float32), (2, 3, 8))[..., None]
    out = sdr_flax.stretch_maps(ramp, 1.5)
    assert out.shape == ramp.shape and out.dtype == ramp.dtype
    # Pixel centre x + 1/2 samples the input at 4 + (x + 1/2 - 4) / 1.5.
    expected = 4 + (np.arange(8) + 0.5 - 4) / 1.5 - 0.5
    np.testing.assert_allclose(out[0, 0, :, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(sdr_flax.stretch_maps(ramp, 1.0), ramp)
    vertical = sdr_flax.stretch_maps(ramp, 2.0, axis=1)  # constant along axis 1
    np.testing.assert_allclose(vertical, ramp)
    with pytest.raises(ValueError, match="factor"):
        sdr_flax.stretch_maps(ramp, 0.0)


def test_stretch_maps_default_is_unchanged_bit_for_bit(rng):
    # The default (centre None, linear) is the array centre n/2, computed as
    # before the keywords existed: the same float32 sample positions.
    maps = jnp.asarray(rng.normal(size=(2, 5, 9, 3)), jnp.float32)
    for factor in (1.5, 0.7):
        n = maps.shape[2]
        pos = n / 2 + (jnp.arange(n, dtype=jnp.float32) + 0.5 - n / 2) / factor - 0.5
        pos = jnp.clip(pos, 0.0, float(n - 1))
        lo = jnp.floor(pos).astype(jnp.int32)
        hi = jnp.minimum(lo + 1, n - 1)
        w = (pos - lo.astype(jnp.float32))[None, None, :, None]
        before = jnp.take(maps, lo, axis=2) * (1 - w) + jnp.take(maps, hi, axis=2) * w
        out = sdr_flax.stretch_maps(maps, factor)
        assert np.array_equal(out, before)
        explicit = sdr_flax.stretch_maps(
            maps, factor, centre=n / 2, interpolation="linear"
        )
        assert np.array_equal(explicit, out)


def test_stretch_maps_nearest_and_linear_on_a_ramp_and_an_impulse():
    ramp = jnp.arange(8, dtype=jnp.float32)[None, :, None]
    # About the array centre 4, output pixel x samples 4 + (x + 1/2 - 4)/2.
    point = 4 + (np.arange(8) + 0.5 - 4) / 2.0
    linear = sdr_flax.stretch_maps(ramp, 2.0)[0, :, 0]
    nearest = sdr_flax.stretch_maps(ramp, 2.0, interpolation="nearest")[0, :, 0]
    np.testing.assert_allclose(linear, point - 0.5, rtol=1e-6)  # exact on a ramp
    np.testing.assert_array_equal(nearest, np.floor(point))  # the pixel it falls in
    # An impulse at pixel 5: nearest copies it to whole output pixels, linear
    # spreads it over the output pixels whose samples fall within one pixel.
    impulse = jnp.zeros((1, 8, 1)).at[0, 5, 0].set(1.0)
    near = np.asarray(sdr_flax.stretch_maps(impulse, 2.0, interpolation="nearest"))
    lin = np.asarray(sdr_flax.stretch_maps(impulse, 2.0))
    np.testing.assert_array_equal(near[0, :, 0], [0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(lin[0, :, 0], [0, 0, 0, 0, 0, 0.25, 0.75, 0.75])
    assert set(np.unique(near)) <= {0.0, 1.0}


def test_stretch_maps_keeps_the_given_centre_in_place():
    # Patterns symmetric about a centre c off the array centre (n/2 = 6): on a
    # pixel centre (3.5: pixel i's centre is i + 1/2) or a pixel border (5.0).
    # A stretch about c keeps them symmetric about c, with either
    # interpolation (factors for which no sample falls on a pixel border,
    # where nearest takes the pixel to the right).
    n = 12
    x = np.arange(n) + 0.5
    for c in (3.5, 5.0):
        hat = jnp.asarray(np.maximum(0.0, 3.0 - np.abs(x - c)), jnp.float32)
        for interpolation in ("linear", "nearest"):
            for factor in (1.6, 0.7):
                out = sdr_flax.stretch_maps(
                    hat[None, :, None],
                    factor,
                    axis=1,
                    centre=c,
                    interpolation=interpolation,
                )[0, :, 0]
                mirror = np.round(2 * c - x - 0.5).astype(int)  # pixel at 2c - x
                ok = (mirror >= 0) & (mirror < n) & (np.abs(x - c) <= 2.5)
                np.testing.assert_allclose(out[ok], out[mirror[ok]], atol=1e-6)
    # With its peak on a pixel centre the hat is linear between samples, so
    # the linear stretch is exactly the stretched hat max(0, 3 - |x - c|/f).
    c = 3.5
    hat = jnp.asarray(np.maximum(0.0, 3.0 - np.abs(x - c)), jnp.float32)
    out = sdr_flax.stretch_maps(hat[None, :, None], 1.5, axis=1, centre=c)[0, :, 0]
    inside = np.abs(x - c) / 1.5 <= c - 0.5  # samples within the pixel centres
    expected = np.maximum(0.0, 3.0 - np.abs(x - c) / 1.5)
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-6)
    # About the array centre (8 on 16 pixels) instead, the centroid of a hat
    # centred on 5.5 moves to 8 + f·(5.5 - 8): the stretch moves points away
    # from its centre (up to the cut peak: its samples miss the stretched
    # hat's peak, which falls between them).
    x, c = np.arange(16) + 0.5, 5.5
    hat = jnp.asarray(np.maximum(0.0, 3.0 - np.abs(x - c)), jnp.float32)[None, :, None]
    centred = sdr_flax.stretch_maps(hat, 1.5, axis=1)[0, :, 0]
    kept = sdr_flax.stretch_maps(hat, 1.5, axis=1, centre=c)[0, :, 0]

    def centroid(profile):
        return float((x * profile).sum() / profile.sum())

    assert abs(centroid(kept) - c) < 1e-5
    assert centroid(centred) == pytest.approx(8 + 1.5 * (c - 8), abs=0.01)


def test_stretch_maps_refuses_bad_arguments():
    maps = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="interpolation"):
        sdr_flax.stretch_maps(maps, interpolation="cubic")
    with pytest.raises(ValueError, match="finite"):
        sdr_flax.stretch_maps(maps, centre=float("nan"))
    with pytest.raises(TypeError, match="centre"):
        sdr_flax.stretch_maps(maps, centre=(1.0, 2.0))
    with pytest.raises(TypeError, match="centre"):
        sdr_flax.stretch_maps(maps, centre="middle")
    # A traced centre works under jit (not checked there).
    out = jax.jit(lambda m, c: sdr_flax.stretch_maps(m, centre=c))(maps, 1.5)
    assert out.shape == maps.shape


def _raw(params, x):
    dn = ("NCHW", "OIHW", "NCHW")  # channels first, to check the layout round trip
    h = jax.nn.relu(
        lax.conv_transpose(x, params["up"], (2, 2), "SAME", dimension_numbers=dn)
    )
    return lax.conv_general_dilated(
        h, params["out"], (1, 1), "SAME", dimension_numbers=dn
    )


def test_intervene_edits_the_named_layer_input_in_its_own_layout(rng):
    params = {
        "up": jnp.asarray(rng.normal(size=(4, 3, 3, 3)), jnp.float32),
        "out": jnp.asarray(rng.normal(size=(2, 4, 3, 3)), jnp.float32),
    }
    x = jnp.asarray(rng.normal(size=(2, 3, 6, 6)), jnp.float32)
    dn = ("NCHW", "OIHW", "NCHW")
    h = jax.nn.relu(
        lax.conv_transpose(x, params["up"], (2, 2), "SAME", dimension_numbers=dn)
    )
    stretched = jnp.moveaxis(sdr_flax.stretch_maps(jnp.moveaxis(h, 1, -1)), -1, 1)
    expected = lax.conv_general_dilated(
        stretched, params["out"], (1, 1), "SAME", dimension_numbers=dn
    )
    fn = jax.jit(sdr_flax.intervene(_raw, {"out": sdr_flax.stretch_maps}))
    np.testing.assert_allclose(fn(params, x), expected, rtol=1e-5, atol=1e-5)
    unedited = sdr_flax.intervene(_raw, {"out": lambda m: m})(params, x)
    np.testing.assert_allclose(unedited, _raw(params, x), rtol=1e-6)


def test_intervene_on_linen_and_nnx_models():
    model = LinenGenerator()
    z = jax.random.normal(jax.random.key(0), (4, 10))
    variables = model.init(jax.random.key(1), z)
    zero = sdr_flax.intervene(model.apply, {"deconv2": jnp.zeros_like})
    bias = variables["params"]["deconv2"]["bias"]
    np.testing.assert_allclose(
        zero(variables, z), jnp.broadcast_to(jnp.tanh(bias), (4, 16, 16, 3)), atol=1e-6
    )

    decoder = Decoder(nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(2), (3, 6))
    names = list(sdr_flax.layer_sdr(decoder, z))
    out = sdr_flax.intervene(decoder, {names[0]: lambda m: 2.0 * m})(z)
    assert out.shape == decoder(z).shape
    assert not np.allclose(out, decoder(z))


def test_intervene_errors_name_the_layers(rng):
    params = {
        "up": jnp.asarray(rng.normal(size=(4, 3, 3, 3)), jnp.float32),
        "out": jnp.asarray(rng.normal(size=(2, 4, 3, 3)), jnp.float32),
    }
    x = jnp.asarray(rng.normal(size=(2, 3, 6, 6)), jnp.float32)
    with pytest.raises(
        ValueError, match=r"No conv layer named \['nope'\].*'up', 'out'"
    ):
        sdr_flax.intervene(_raw, {"nope": lambda m: m})(params, x)
    with pytest.raises(ValueError, match="changed the maps' shape"):
        sdr_flax.intervene(_raw, {"up": lambda m: m[:, :2]})(params, x)


class _Gen(nn.Module):
    @nn.compact
    def __call__(self, z):
        h = nn.Dense(4 * 4 * 2, name="project")(z).reshape(-1, 4, 4, 2)
        return nn.ConvTranspose(1, (3, 3), strides=(2, 2), name="deconv")(h)


def test_intervene_is_differentiable():
    model = _Gen()
    z = jnp.ones((2, 3))
    variables = model.init(jax.random.key(0), z)
    fn = sdr_flax.intervene(model.apply, {"deconv": sdr_flax.stretch_maps})
    grads = jax.grad(lambda v: jnp.sum(fn(v, z) ** 2))(variables)
    assert np.all(np.isfinite(grads["params"]["project"]["kernel"]))
    assert np.any(grads["params"]["project"]["kernel"] != 0)
