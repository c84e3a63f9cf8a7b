"""Every matrix product the library runs is at full float32 precision.

JAX's default precision lets an accelerator round the operands of a matrix
product (`dot_general`, `conv_general_dilated`) to TF32 or bfloat16: on a
recent NVIDIA GPU about 3 significant digits where the CPU keeps 7, which
no float32 tolerance of the suite allows for. Rather than run on such a
device, the tests below read the precision each product asks for in the
programs JAX traces (`jax.make_jaxpr`, identical on every host): every one
must ask for `Precision.HIGHEST`, in the forward pass and in the gradients
and steps taken through it.
"""

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import sdr
import sdr_flax

HIGHEST = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
PRODUCTS = ("dot_general", "conv_general_dilated")
DN = ("NHWC", "HWIO", "NHWC")


def products(closed_jaxpr):
    """`(primitive name, precision)` of every matrix product in the program,
    those inside sub-programs (jit, custom derivatives, loops, branches)
    included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in PRODUCTS:
                found.append((eqn.primitive.name, eqn.params.get("precision")))
            for sub in jex.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return found


def assert_all_highest(fn, *args):
    found = products(jax.make_jaxpr(fn)(*args))
    # Not vacuous: every entry point below runs matrix products.
    assert found, "no matrix product in the program"
    wrong = [(name, p) for name, p in found if p != HIGHEST]
    assert not wrong, f"{len(wrong)} of {len(found)} products below HIGHEST: {wrong}"


RNG = np.random.default_rng(0)
MAPS = np.abs(RNG.normal(size=(3, 5, 4, 4))).astype(np.float32)
KERNEL = RNG.normal(size=(3, 2, 2, 4)).astype(np.float32)  # 2 groups
X = RNG.normal(size=(3, 6, 5)).astype(np.float32)
K = RNG.normal(size=(3, 2)).astype(np.float32)

# Each layer geometry reaches another branch of the pair sums: the plain
# grid, the transposed conv's dilated grid with the aliases of zero kept
# (their constant autocorrelation) and left out (the taps' phase matrix),
# with and without the zero frequency.
LAYERS = {
    "plain": {"feature_group_count": 2},
    "transposed": {"feature_group_count": 2, "strides": 2, "transpose": True},
    "no_aliases": {
        "feature_group_count": 2,
        "strides": 2,
        "transpose": True,
        "include_aliases": False,
    },
    "dc_no_aliases": {
        "feature_group_count": 2,
        "strides": (2, 1),
        "transpose": True,
        "include_aliases": False,
        "include_dc": True,
    },
}
LAYER = pytest.mark.parametrize("kwargs", list(LAYERS.values()), ids=list(LAYERS))


@pytest.fixture(scope="module")
def spectra():
    """The maps' full and half spectra, computed when a test first asks
    (not at import, which would start the backend during collection)."""
    return (
        np.asarray(sdr.channel_spectra(MAPS)),
        np.asarray(sdr.channel_spectra(MAPS, half=True)),
    )


@LAYER
def test_conv_sdr(kwargs):
    assert_all_highest(lambda m, k: sdr.conv_sdr(m, k, **kwargs), MAPS, KERNEL)


@LAYER
def test_conv_sdr_gradient(kwargs):
    assert_all_highest(
        jax.grad(lambda k: jnp.nansum(sdr.conv_sdr(MAPS, k, **kwargs))), KERNEL
    )


@LAYER
def test_conv_pair_gaps_full_and_half(kwargs, spectra):
    full, half = spectra
    assert_all_highest(lambda s, k: sdr.conv_pair_gaps(s, k, **kwargs), full, KERNEL)
    grid = MAPS.shape[1:-1]
    assert_all_highest(
        lambda s, k: sdr.conv_pair_gaps(s, k, grid=grid, **kwargs), half, KERNEL
    )


@LAYER
def test_conv_penalty_and_its_gradient(kwargs, spectra):
    full, _ = spectra
    assert_all_highest(lambda k: sdr.conv_penalty(full, k, **kwargs), KERNEL)
    assert_all_highest(jax.grad(lambda k: sdr.conv_penalty(full, k, **kwargs)), KERNEL)


@pytest.mark.parametrize("half", [False, True])
def test_channel_spectra(half):
    assert_all_highest(lambda m: sdr.channel_spectra(m, half=half), MAPS)


@pytest.mark.parametrize(
    "fn",
    [
        sdr.cause_spectrum,
        sdr.power_contrast,
        lambda x: sdr.spectral_density_ratio(x, K),
        lambda x: sdr.spectral_independence_penalty(x, K),
        jax.grad(lambda x: sdr.spectral_density_ratio(x, K)),
    ],
    ids=["cause_spectrum", "power_contrast", "sdr", "penalty", "sdr_grad_x"],
)
def test_single_pair_functions(fn):
    assert_all_highest(fn, X)


def _generator(params, z):
    """A transposed conv then a grouped conv; the model's own convolutions
    ask for HIGHEST too, so that any product below it is the library's."""
    h = lax.conv_transpose(
        z,
        params["up"],
        (2, 2),
        "SAME",
        dimension_numbers=DN,
        precision=lax.Precision.HIGHEST,
    )
    return lax.conv_general_dilated(
        jnp.tanh(h),
        params["out"],
        (1, 1),
        "SAME",
        dimension_numbers=DN,
        feature_group_count=2,
        precision=lax.Precision.HIGHEST,
    )


PARAMS = {
    "up": RNG.normal(size=(3, 3, 4, 4)).astype(np.float32),
    "out": RNG.normal(size=(3, 2, 2, 4)).astype(np.float32),
}
Z = RNG.normal(size=(3, 3, 4, 4)).astype(np.float32)


@pytest.mark.parametrize("scale_free", [False, True], ids=["plain", "scale_free"])
@pytest.mark.parametrize("include_aliases", [True, False])
def test_transform_update(scale_free, include_aliases):
    _, taps = sdr.capture_convs(_generator, PARAMS, Z)
    spectra = sdr_flax.layer_spectra(taps)
    tx = sdr_flax.spectral_independence(
        0.5, steps=2, scale_free=scale_free, include_aliases=include_aliases
    )
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)

    def update(params):
        return tx.update(zeros, tx.init(params), params, spectra=spectra)[0]

    assert_all_highest(update, PARAMS)


def test_transform_update_with_the_spectra_taken_in_the_step():
    # The spectra of the step's own forward pass, as in training.
    tx = sdr_flax.spectral_independence(include_dc=True)

    def step(params, z):
        _, taps = sdr.capture_convs(_generator, params, z)
        zeros = jax.tree.map(jnp.zeros_like, params)
        updates, _ = tx.update(
            zeros, tx.init(params), params, spectra=sdr_flax.layer_spectra(taps)
        )
        return optax.apply_updates(params, updates)

    assert_all_highest(step, PARAMS, Z)


def test_loss_term_and_its_gradient():
    def loss(params):
        _, taps = sdr.capture_convs(_generator, params, Z)
        return sdr_flax.penalty(taps, include_dc=True)

    assert_all_highest(loss, PARAMS)
    assert_all_highest(jax.grad(loss), PARAMS)


def test_the_check_sees_a_default_precision_product():
    # The check itself: a product at the default precision is reported.
    def default(m, k):
        return sdr.conv_sdr(m, k, feature_group_count=2) @ jnp.ones((4, 2))

    found = products(jax.make_jaxpr(default)(MAPS, KERNEL))
    assert ("dot_general", None) in found
    with pytest.raises(AssertionError, match="below HIGHEST"):
        assert_all_highest(default, MAPS, KERNEL)
