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
