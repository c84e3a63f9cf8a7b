"""Channel modules: `sdr_flax.channel_influence` and `channel_modules`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from models import Decoder, LinenGenerator

from sdr_flax import Modules, channel_influence, channel_modules

DN = ("NHWC", "HWIO", "NHWC")
# Where each hidden channel may be non-zero: channel 0 the left half (columns
# < 4), channel 1 the bottom half (rows >= 4), channel 2 everywhere.
REACH = np.ones((1, 8, 8, 3), np.float32)
REACH[:, :, 4:, 0] = 0.0
REACH[:, :4, :, 1] = 0.0


def _generator(params, z):
    """Dense → three 8×8 hidden channels (masked) → 3×3 conv to 2 outputs."""
    h = jnp.tanh(z @ params["dense"]).reshape(-1, 8, 8, 3) * REACH
    out = lax.conv_general_dilated(
        h, params["out"], (1, 1), "SAME", dimension_numbers=DN
    )
    return jnp.tanh(out)


def _setup(rng, n=5):
    params = {
        "dense": rng.normal(size=(4, 8 * 8 * 3)).astype(np.float32),
        "out": rng.normal(size=(3, 3, 3, 2)).astype(np.float32),
    }
    return params, rng.normal(size=(n, 4)).astype(np.float32)


def _reference(params, z, counterfactual):
    """A Python loop over channels, straight from the definition."""
    h = np.tanh(z @ params["dense"]).reshape(-1, 8, 8, 3) * REACH
    base = np.tanh(
        lax.conv_general_dilated(h, params["out"], (1, 1), "SAME", dimension_numbers=DN)
    )
    maps = []
    for c in range(3):
        edited = h.copy()
        if counterfactual == "swap":
            edited[..., c] = np.roll(h, 1, axis=0)[..., c]
        elif counterfactual == "mean":
            edited[..., c] = h[..., c].mean(axis=(1, 2), keepdims=True)
        else:
            edited[..., c] = 0.0
        out = np.tanh(
            lax.conv_general_dilated(
                edited, params["out"], (1, 1), "SAME", dimension_numbers=DN
            )
        )
        maps.append(np.abs(np.asarray(out) - np.asarray(base)).mean(axis=(0, -1)))
    return np.stack(maps)


@pytest.mark.parametrize("counterfactual", ["swap", "mean", "zero"])
def test_influence_matches_a_loop_and_is_zero_out_of_reach(rng, counterfactual):
    params, z = _setup(rng)
    influence = channel_influence(
        _generator, "out", params, z, counterfactual=counterfactual
    )
    assert influence.shape == (3, 8, 8) and influence.dtype == jnp.float32
    np.testing.assert_allclose(
        influence, _reference(params, z, counterfactual), rtol=1e-5, atol=1e-6
    )
    chunked = channel_influence(
        _generator, "out", params, z, counterfactual=counterfactual, channels_per_step=2
    )
    np.testing.assert_allclose(chunked, influence, rtol=1e-6, atol=1e-7)
    influence = np.asarray(influence)
    assert np.all(influence >= 0) and np.all(influence[2] > 0)
    if counterfactual != "mean":  # the spatial mean spreads a channel everywhere
        # A 3×3 kernel reaches one pixel past each channel's half, no further.
        # Out of reach the edited and the original output pixel sum the same
        # products: exactly 0 on the CPU; a conv algorithm that mixes
        # neighbouring windows (e.g. Winograd, on accelerators) may round them
        # differently, by a few ε of the largest |output| before the tanh,
        # at most Σ|k| per output channel (|h| ≤ 1); tanh and the means do not
        # enlarge an absolute error. In reach the influence is over 100 times
        # that bound (measured: at least 0.022).
        eps = np.finfo(np.float32).eps
        bound = 64 * eps * np.max(np.sum(np.abs(params["out"]), axis=(0, 1, 2)))
        assert np.all(influence[0][:, 5:] <= bound), influence[0][:, 5:].max()
        assert np.all(influence[1][:3] <= bound), influence[1][:3].max()
        assert np.all(influence[0][:, :4] > 100 * bound)
        assert np.all(influence[1][4:] > 100 * bound)


def _filled(abstract, rng):
    """Random arrays for an abstract pytree: no initialiser to compile."""
    return jax.tree.map(
        lambda a: (0.3 * rng.normal(size=a.shape)).astype(a.dtype), abstract
    )


def test_influence_on_linen_and_nnx_models(rng):
    model = LinenGenerator()
    z = rng.normal(size=(4, 10)).astype(np.float32)
    variables = _filled(jax.eval_shape(model.init, jax.random.key(1), z), rng)
    stats = variables["batch_stats"]
    variables["batch_stats"] = jax.tree.map(np.abs, stats)  # variances > 0
    influence = channel_influence(model.apply, "deconv2", variables, z, train=False)
    assert influence.shape == (8, 16, 16)
    assert np.all(np.isfinite(influence)) and float(influence.min()) >= 0
    assert float(influence.max()) > 0

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(nnx.Rngs(0))))
    decoder = nnx.merge(graphdef, _filled(abstract, rng))
    z = rng.normal(size=(3, 6)).astype(np.float32)
    influence = channel_influence(decoder, "image", z, counterfactual="zero")
    assert influence.shape == (4, 16, 16)
    assert float(influence.min()) >= 0 and float(influence.max()) > 0


def test_influence_compiles_once_per_shape(rng):
    traces = []

    def generator(params, z):
        traces.append(z.shape)  # when traced; a compiled program skips it
        return _generator(params, z)

    params, z = _setup(rng)
    channel_influence(generator, "out", params, z)
    assert traces
    traced = len(traces)
    params, z = _setup(np.random.default_rng(1))
    influence = channel_influence(generator, "out", params, z)
    assert len(traces) == traced  # new values, same shapes: the cached program
    np.testing.assert_allclose(
        influence, _reference(params, z, "swap"), rtol=1e-5, atol=1e-6
    )
    channel_influence(generator, "out", params, z[:3])
    assert len(traces) > traced  # a new batch size is traced again


class Unhashable:
    __hash__ = None


def test_influence_with_an_unhashable_argument(rng):
    params, z = _setup(rng)
    influence = channel_influence(
        lambda params, z, flag: _generator(params, z), "out", params, z, Unhashable()
    )
    np.testing.assert_allclose(
        influence, _reference(params, z, "swap"), rtol=1e-5, atol=1e-6
    )


DECODER_TRACES = []


class CountingDecoder(Decoder):
    """`Decoder` that counts the traces of its call in `DECODER_TRACES`."""

    def __call__(self, z):
        DECODER_TRACES.append(z.shape)
        return super().__call__(z)


def test_influence_of_an_nnx_module_compiles_once_per_shape(rng):
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: CountingDecoder(nnx.Rngs(0))))
    z = rng.normal(size=(3, 6)).astype(np.float32)
    channel_influence(nnx.merge(graphdef, _filled(abstract, rng)), "fine", z)
    traced = len(DECODER_TRACES)
    assert traced
    channel_influence(nnx.merge(graphdef, _filled(abstract, rng)), "fine", z)
    assert len(DECODER_TRACES) == traced


def test_influence_errors(rng):
    params, z = _setup(rng)
    with pytest.raises(ValueError, match=r"No conv layer named 'image'.*\['out'\]"):
        channel_influence(_generator, "image", params, z)
    with pytest.raises(ValueError, match="counterfactual"):
        channel_influence(_generator, "out", params, z, counterfactual="noise")
    with pytest.raises(ValueError, match="another sample"):
        channel_influence(_generator, "out", params, z[:1])
    with pytest.raises(ValueError, match="channels_per_step"):
        channel_influence(_generator, "out", params, z, channels_per_step=0)
    with pytest.raises(ValueError, match="one array"):
        channel_influence(lambda p, z: (_generator(p, z),), "out", params, z)


def _planted(rng, per_module=(4, 3, 5), size=16, noise=0.02):
    """Influence maps of channels that each paint one of 3 disjoint blobs."""
    y, x = np.mgrid[:size, :size] + 0.5
    centres = [(4, 4), (4, 12), (12, 8)]
    blobs = np.stack(
        [np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 1.5**2)) for cy, cx in centres]
    )
    blobs[blobs < 1e-3] = 0.0  # disjoint supports
    truth = np.repeat(np.arange(3), per_module)
    truth = rng.permutation(truth)
    gain = rng.uniform(0.5, 2.0, size=truth.size)
    maps = gain[:, None, None] * blobs[truth]
    maps += noise * rng.uniform(size=maps.shape)
    return maps.astype(np.float32), truth, blobs


def test_nmf_recovers_planted_modules(rng):
    influence, truth, blobs = _planted(rng)
    modules = channel_modules(influence, n_modules=3)
    assert isinstance(modules, Modules) and modules.n_modules == 3
    assert modules.assignment.shape == (12,)
    assert modules.regions.shape == (3, 16, 16) and modules.weights.shape == (12, 3)
    assert np.all(modules.regions >= 0) and np.all(modules.weights >= 0)
    np.testing.assert_allclose(modules.regions.sum(axis=(1, 2)), 1.0, rtol=1e-6)
    # Equal up to relabelling: a bijection from found to planted labels.
    mapping = {}
    for found, planted in zip(modules.assignment, truth, strict=True):
        assert mapping.setdefault(int(found), int(planted)) == planted
    assert sorted(mapping.values()) == [0, 1, 2]
    for found, planted in mapping.items():
        np.testing.assert_array_equal(
            modules.channels(found), np.flatnonzero(truth == planted)
        )
        # Each region peaks in its planted blob.
        peak = np.unravel_index(np.argmax(modules.regions[found]), (16, 16))
        assert blobs[planted][peak] > 0.5


def test_nmf_is_deterministic_by_seed(rng):
    # scikit-learn's NMF runs in NumPy on the host: the same seed and input
    # give the same floating-point operations, so equality is exact.
    influence, _, _ = _planted(rng, noise=0.2)
    a = channel_modules(influence, n_modules=3, seed=3)
    b = channel_modules(influence, n_modules=3, seed=3)
    for x, y in zip(
        (a.assignment, a.regions, a.weights),
        (b.assignment, b.regions, b.weights),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)


def test_modules_errors(rng):
    influence, _, _ = _planted(rng)
    with pytest.raises(ValueError, match="non-negative"):
        channel_modules(-influence)
    with pytest.raises(ValueError, match="at least one spatial"):
        channel_modules(influence[:, 0, 0])
    with pytest.raises(ValueError, match="n_modules"):
        channel_modules(influence, n_modules=13)
    with pytest.raises(TypeError):
        channel_modules(influence, 3)  # hyper-parameters are keyword-only
