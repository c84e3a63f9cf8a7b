"""The stretch centre of each generative level (`benchmarks.harness.centres`).

The centres are derived from the conv parameters in the generator's jaxpr;
these tests check them against impulses sent through the real generator,
whose conv kernels are replaced by symmetric non-negative ones concentrated
at their centre tap (so that no response falls off the maps' edges, and an
impulse stays one pixel wide), batch norm made a positive scaling and the
output's tanh undone.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import sdr_flax
from benchmarks import nets
from benchmarks.harness import centres, evaluate


def _probe_variables(shapes):
    """Variables of these shapes: centre-tap conv kernels, unit scales, batch
    norm on mean 0 and variance 1, every other leaf zero."""

    def leaf(path, a):
        name = jax.tree_util.keystr(path[-1:], simple=True)
        if name == "kernel" and a.ndim == 4:
            k = np.zeros(a.shape, np.float32)
            assert a.shape[0] % 2 and a.shape[1] % 2  # odd: one centre tap
            k[a.shape[0] // 2, a.shape[1] // 2] = 1.0 / a.shape[2]
            return jnp.asarray(k)
        if name in ("scale", "var"):
            return jnp.ones(a.shape, a.dtype)
        return jnp.zeros(a.shape, a.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _setup(name):
    arch = nets.get(name)
    cfg = arch.config("tiny")
    model = arch.build(cfg)
    init = jax.eval_shape(lambda k: arch.init_variables(model, k), jax.random.key(0))
    variables = _probe_variables(init)
    codes = jnp.zeros((1, cfg.latent_dim))
    return arch, model, variables, codes, cfg.image_size


def _responses(arch, model, variables, layer, weights):
    """The image's horizontal profile, one per row of `weights`, when
    `layer`'s input maps are that row along the width (the same in every
    map row and channel)."""
    codes = jnp.zeros((len(weights), model.config.latent_dim))

    def impulse(maps):
        w = jnp.asarray(weights, maps.dtype)[:, None, :, None]
        return jnp.broadcast_to(w, maps.shape)

    def generate(v, z):
        return arch.generate(model, v, z)

    image = jax.jit(sdr_flax.intervene(generate, {layer: impulse}))(variables, codes)
    # Undo the output's tanh; sum over rows and channels.
    pre = np.arctanh(np.asarray(image, np.float64))
    return pre.sum(axis=(1, 3))


def _centroid(profile):
    x = np.arange(profile.size) + 0.5  # pixel centres
    assert profile.min() >= -1e-12 * profile.max()
    return float((x * profile).sum() / profile.sum())


@pytest.mark.parametrize("name", ["vae", "dcgan"])
def test_derived_centres_land_on_the_image_centre(name):
    arch, model, variables, codes, size = _setup(name)
    derived = centres.level_centres(arch, model, variables, codes)
    convs = centres.generator_convs(
        lambda v, z: arch.generate(model, v, z), variables, codes
    )
    widths = {c.name: c.in_size[-1] for c in convs}
    for level, layer in arch.levels.items():
        n = widths[layer]
        centre = derived[level][-1]
        # Every pixel's impulse, then a fractional impulse at the derived
        # centre (its two neighbouring pixels weighted linearly).
        i = int(np.floor(centre - 0.5))
        w = centre - 0.5 - i
        weights = np.concatenate([np.eye(n), np.zeros((1, n))])
        weights[n, i], weights[n, min(i + 1, n - 1)] = 0.5 * (1 - w), 0.5 * w
        *profiles, fractional = _responses(arch, model, variables, layer, weights)
        # Each impulse lands, one pixel wide, where the composed geometry says.
        assert all(np.count_nonzero(p) == 1 for p in profiles), level
        landed = [_centroid(p) for p in profiles]
        chain = convs[[c.name for c in convs].index(layer) :]
        predicted = [centres.image_position(chain, i + 0.5, 1) for i in range(n)]
        np.testing.assert_allclose(landed, predicted, atol=1e-9, err_msg=level)
        # The measured (affine) geometry puts the derived centre at size / 2,
        # and so does the fractional impulse's response.
        slope, intercept = np.polyfit(np.arange(n) + 0.5, landed, 1)
        assert abs(slope * centre + intercept - size / 2) < 1e-6, level
        # (float32 weights, up to 8 image pixels apart: measured at most 5e-7.)
        assert abs(_centroid(fractional) - size / 2) < 2e-6, level


def test_tiny_vae_centres_are_off_the_array_centre():
    arch, model, variables, codes, _ = _setup("vae")
    derived = centres.level_centres(arch, model, variables, codes)
    sizes = {"coarse": 4, "intermediate": 8, "fine": 16, "image": 32}
    offsets = {lv: derived[lv][-1] - n / 2 for lv, n in sizes.items()}
    # Each stride-2 layer below a level moves its centre left of n/2, by
    # less than half a map pixel; the stride-1 last layer does not.
    for level in ("coarse", "intermediate", "fine"):
        assert -0.5 < offsets[level] < -0.1, (level, offsets)
    assert offsets["coarse"] < offsets["intermediate"] < offsets["fine"]
    assert offsets["image"] == pytest.approx(0.0, abs=1e-12)
    assert derived["fine"][0] == derived["fine"][1]  # square geometry


@pytest.mark.parametrize(
    "stride, kernel, padding",
    [(1, 5, "SAME"), (2, 5, "SAME"), (2, 4, "SAME"), (3, 3, "VALID"), (2, 2, "SAME")],
)
def test_conv_transpose_position_matches_the_centroid(stride, kernel, padding):
    # An all-positive symmetric (constant) kernel on maps large enough that
    # nothing falls off the edges: an impulse's response centroid is where
    # `ConvGeometry.position` puts the impulse.
    def fn(x, k):
        return lax.conv_transpose(
            x, k, (stride, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    x = jnp.zeros((1, 40, 1, 1))
    k = jnp.ones((kernel, 1, 1, 1))
    (conv,) = centres.generator_convs(fn, x, k)
    for u in (10, 17, 25):
        out = fn(x.at[0, u, 0, 0].set(1.0), k)[0, :, 0, 0]
        assert _centroid(np.asarray(out, np.float64)) == pytest.approx(
            conv.position(u + 0.5, 0), abs=1e-9
        )


def test_not_a_chain_is_refused():
    def fn(x, k):
        dn = ("NHWC", "HWIO", "NHWC")
        h = lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)
        return jax.image.resize(h, (1, 16, 16, 1), "nearest")  # not a conv

    x, k = jnp.zeros((1, 8, 8, 1)), jnp.ones((3, 3, 1, 1))
    with pytest.raises(ValueError, match="chain"):
        centres.generator_convs(fn, x, k)
    with pytest.raises(ValueError, match="not one of"):
        centres.chain_centres([], "decoder/deconv1")


def _two_layer_generator(model, variables, z):
    """Codes `(n, 4, 4, 2)` → 8×8 → 16×16 images: two SAME stride-2 deconvs."""
    del model
    dn = ("NHWC", "HWIO", "NHWC")
    h = lax.conv_transpose(z, variables["k1"], (2, 2), "SAME", dimension_numbers=dn)
    h = lax.conv_transpose(
        jax.nn.relu(h), variables["k2"], (2, 2), "SAME", dimension_numbers=dn
    )
    return jnp.tanh(h)


def test_evaluation_stretches_about_the_derived_centres():
    # The evaluation's stretch metrics on a small generator with random
    # weights: the default is the derived centre, `array_centre` the old
    # n/2, the output reading of a level the next level's stretch (0 at the
    # last).
    arch = dataclasses.replace(
        nets.get("dcgan"),
        generate=_two_layer_generator,
        levels={"coarse": "k1", "fine": "k2"},
    )
    k1, k2, kz = jax.random.split(jax.random.key(0), 3)
    variables = {
        "k1": jax.random.normal(k1, (5, 5, 2, 3)),
        "k2": jax.random.normal(k2, (5, 5, 3, 1)) / 4,
    }
    codes = jax.random.normal(kz, (2, 4, 4, 2))

    def generate(v, z):
        return _two_layer_generator(None, v, z)

    @jax.jit
    def run(v, z):
        metrics, _, output = evaluate._stretch_metrics(arch, None, v, z, generate(v, z))
        by_hand = {
            c: sdr_flax.intervene(
                generate, {"k2": lambda m, c=c: sdr_flax.stretch_maps(m, centre=c)}
            )(v, z)
            for c in (None, 3.75)
        }
        return metrics, {
            str(c): jnp.mean((e - output) ** 2) for c, e in by_hand.items()
        }

    metrics, by_hand = run(variables, codes)
    # 2c + 1/2 = 8 on the 8-pixel maps entering k2; 4(c + 1/4) + 1/2 = 8 on k1's.
    assert metrics["stretch_centre"] == {"coarse": 1.625, "fine": 3.75}
    assert metrics["stretch_centre_offset"] == {"coarse": -0.375, "fine": -0.25}
    np.testing.assert_allclose(metrics["stretch_mse"]["fine"], by_hand["3.75"])
    sensitivity = metrics["stretch_mse_sensitivity"]["fine"]
    np.testing.assert_allclose(sensitivity["array_centre"], by_hand["None"])
    assert set(sensitivity) == set(evaluate.SENSITIVITY)
    assert all(float(v) > 0 for v in sensitivity.values())
    reading = metrics["stretch_mse_output_maps"]
    assert reading["coarse"] == metrics["stretch_mse"]["fine"]
    assert reading["fine"] == 0.0
