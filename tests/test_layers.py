"""`sdr_flax.layer_sdr` on Linen, NNX and raw-lax generators."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_png_image
from models import Decoder, LinenGenerator

import sdr
import sdr_flax


def test_linen_generator_matches_maps_captured_by_hand():
    model = LinenGenerator()
    z = jax.random.normal(jax.random.key(0), (8, 10))
    variables = model.init(jax.random.key(1), z)
    sdrs = sdr_flax.layer_sdr(model.apply, variables, z)
    assert list(sdrs) == ["deconv1", "deconv2"]

    _, state = model.apply(variables, z, mutable=["intermediates"])
    sown = state["intermediates"]
    for name in sdrs:
        (maps,) = sown[f"{name}_in"]
        kernel = variables["params"][name]["kernel"]
        np.testing.assert_allclose(
            sdrs[name], sdr.conv_sdr(maps, kernel, strides=2, transpose=True), rtol=1e-5
        )
    assert sdrs["deconv1"].shape == (16, 8) and sdrs["deconv2"].shape == (8, 3)


def test_linen_keyword_arguments_and_training_mode():
    model = LinenGenerator()
    z = jax.random.normal(jax.random.key(0), (4, 10))
    variables = model.init(jax.random.key(1), z)
    (out, updates), taps = sdr_flax.capture_layers(
        model.apply, variables, z, train=True, mutable=["batch_stats"]
    )
    expected, _ = model.apply(variables, z, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert "batch_stats" in updates
    assert [t.param_path for t in taps] == ["deconv1/kernel", "deconv2/kernel"]


def test_nnx_decoder_matches_maps_captured_by_hand():
    decoder = Decoder(nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(2), (8, 6))
    sdrs = sdr_flax.layer_sdr(decoder, z)
    assert list(sdrs) == ["coarse", "fine", "image"]
    maps = decoder.hidden(z)
    for (name, r), m, stride in zip(sdrs.items(), maps, (2, 2, 1), strict=True):
        kernel = getattr(decoder, name).kernel[...]
        np.testing.assert_allclose(
            r, sdr.conv_sdr(m, kernel, strides=stride, transpose=True), rtol=1e-5
        )


def test_raw_lax_nchw_generator():
    dn = ("NCHW", "OIHW", "NCHW")

    def generator(params, z):
        h = jax.nn.relu(
            jax.lax.conv_transpose(
                z, params["up"], (2, 2), "SAME", dimension_numbers=dn
            )
        )
        return jax.lax.conv_general_dilated(
            h, params["out"], (1, 1), "SAME", dimension_numbers=dn
        ), h

    rng = np.random.default_rng(0)
    params = {
        "up": jnp.asarray(rng.normal(size=(4, 2, 3, 3)), jnp.float32),
        "out": jnp.asarray(rng.normal(size=(3, 4, 3, 3)), jnp.float32),
    }
    z = jnp.asarray(rng.normal(size=(5, 2, 6, 6)), jnp.float32)
    sdrs = sdr_flax.layer_sdr(generator, params, z)
    _, hidden = generator(params, z)
    np.testing.assert_allclose(
        sdrs["out"],
        sdr.conv_sdr(
            jnp.transpose(hidden, (0, 2, 3, 1)),
            jnp.transpose(params["out"], (2, 3, 1, 0)),
        ),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        sdrs["up"],
        sdr.conv_sdr(
            jnp.transpose(z, (0, 2, 3, 1)),
            jnp.transpose(params["up"], (2, 3, 1, 0)),
            strides=2,
            transpose=True,
        ),
        rtol=1e-5,
    )


def test_summary_table():
    r = jnp.asarray([[1.0, 1.1, 2.0, 0.5]])
    (s,) = sdr_flax.summarize({"layer": r})
    assert s.pairs == 4
    np.testing.assert_allclose(s.median, 1.05)
    np.testing.assert_allclose(s.generic_share, 0.5)
    table = sdr_flax.format_table([s])
    assert "layer" in table and "50.0%" in table and "1.050" in table


def _pyplot_figures():
    pyplot = sys.modules.get("matplotlib.pyplot")
    return None if pyplot is None else pyplot.get_fignums()


def test_plot_layer_sdr(tmp_path, monkeypatch):
    import matplotlib

    def switch(*args, **kwargs):
        raise AssertionError("plot_layer_sdr switched matplotlib's backend")

    monkeypatch.setattr(matplotlib, "use", switch)
    figures = _pyplot_figures()
    rng = np.random.default_rng(0)
    sdrs = {
        "decoder/deconv1": jnp.asarray(np.exp(0.1 * rng.normal(size=(16, 8)))),
        "decoder/deconv2": jnp.asarray(np.exp(0.5 * rng.normal(size=(8, 3)))),
    }
    path = sdr_flax.plot_layer_sdr(sdrs, tmp_path / "figs" / "sdr.png", title="test")
    assert path == tmp_path / "figs" / "sdr.png"
    assert_png_image(path, min_side=100)
    with pytest.raises(ValueError, match="empty"):
        sdr_flax.plot_layer_sdr({}, tmp_path / "none.png")
    assert _pyplot_figures() == figures  # pyplot's figures are left alone
