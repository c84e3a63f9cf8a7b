"""The penalty's step on kernels in other layouts than NHWC/HWIO.

The transform steps a kernel in Flax layout and maps the change back onto
the parameter in its own layout: a model written channels first with
PyTorch-style kernels (NCHW/OIHW), with grouped convs, or in any other
layout `lax.conv_general_dilated` takes, gets the update the same model
written in NHWC/HWIO gets, transposed into its own layout.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import NCHW, NHWC, draw_kernel, draw_maps, penalty_update
from jax import lax


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax's own helpers mix Python scalars with int32 counts.
    with jax.numpy_dtype_promotion("standard"):
        yield


def oihw_to_hwio(w):
    return jnp.transpose(w, (2, 3, 1, 0))


def hwio_to_oihw(w):
    return jnp.transpose(w, (3, 2, 0, 1))


def generator(dn):
    """A transposed conv then a conv, in the layout `dn`."""

    def fn(params, z):
        h = lax.conv_transpose(z, params["up"], (2, 2), "SAME", dimension_numbers=dn)
        h = jnp.tanh(h)
        return lax.conv_general_dilated(
            h, params["out"], (1, 1), "SAME", dimension_numbers=dn
        )

    return fn


def grouped(dn):
    def fn(params, x):
        return lax.conv_general_dilated(
            x, params["w"], (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2
        )

    return fn


LAYOUT_MODELS = {
    # name: (fn in each layout, {param: OIHW shape}, NHWC input shape)
    "generator": (
        generator,
        # Every kernel axis has length 3: a permutation applied the wrong way
        # round keeps the shapes and only moves the values.
        {"up": (3, 3, 3, 3), "out": (3, 3, 3, 3)},
        (3, 4, 3, 3),
    ),
    # Unequal axes: a wrong permutation gives the wrong shapes.
    "grouped": (grouped, {"w": (4, 2, 3, 2)}, (3, 6, 5, 4)),
}


@pytest.mark.parametrize("scale_free", [False, True], ids=["plain", "scale_free"])
@pytest.mark.parametrize("model", list(LAYOUT_MODELS))
def test_update_in_nchw_oihw_is_the_nhwc_hwio_update(model, scale_free):
    make, shapes, x_shape = LAYOUT_MODELS[model]
    params = {
        name: draw_kernel(seed, shape)
        for seed, (name, shape) in enumerate(shapes.items())
    }
    x = draw_maps(5, x_shape)
    hwio = {name: oihw_to_hwio(w) for name, w in params.items()}
    np.testing.assert_allclose(
        jnp.transpose(make(NCHW)(params, jnp.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1)),
        make(NHWC)(hwio, x),
        rtol=1e-5,
        atol=1e-5,
    )
    kwargs = {"learning_rate": 0.5, "include_dc": False, "scale_free": scale_free}
    update = penalty_update(
        params, jnp.transpose(x, (0, 3, 1, 2)), fn=make(NCHW), **kwargs
    )
    expected = penalty_update(hwio, x, fn=make(NHWC), **kwargs)
    for name in params:
        assert update[name].shape == params[name].shape
        want = np.asarray(hwio_to_oihw(expected[name]))
        assert np.max(np.abs(want)) > 0
        np.testing.assert_allclose(
            update[name], want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want))
        )


def to_layout(a, spec, source):
    """`a`, laid out as the spec string `source` (e.g. "HWIO"), in `spec`."""
    return jnp.transpose(a, [source.index(axis) for axis in spec])


# Maps and kernels in other layouts than NCHW/OIHW (specs as
# `lax.conv_general_dilated` takes them). The transposition from each kernel
# layout but HWIO to HWIO is not its own inverse, so a change mapped back with
# the forward transposition instead of the inverse lands on the wrong entries.
OTHER_LAYOUTS = [
    ("NHWC", "OIHW", "NHWC"),
    ("NCHW", "HWIO", "NCHW"),
    ("NHWC", "OHWI", "NHWC"),
    ("NCHW", "IHWO", "NCHW"),
]


@pytest.mark.parametrize("dn", OTHER_LAYOUTS, ids=lambda dn: "-".join(dn[:2]))
@pytest.mark.parametrize("model", list(LAYOUT_MODELS))
def test_update_in_other_layouts_is_the_nhwc_hwio_update(model, dn):
    make, shapes, x_shape = LAYOUT_MODELS[model]
    hwio = {
        name: oihw_to_hwio(draw_kernel(seed, shape))
        for seed, (name, shape) in enumerate(shapes.items())
    }
    x = draw_maps(5, x_shape)
    params = {name: to_layout(w, dn[1], "HWIO") for name, w in hwio.items()}
    maps = to_layout(x, dn[0], "NHWC")
    kwargs = {"learning_rate": 0.5, "include_dc": True, "scale_free": True}
    update = penalty_update(params, maps, fn=make(dn), **kwargs)
    expected = penalty_update(hwio, x, fn=make(NHWC), **kwargs)
    for name in params:
        assert update[name].shape == params[name].shape
        want = np.asarray(to_layout(expected[name], dn[1], "HWIO"))
        assert np.max(np.abs(want)) > 0
        np.testing.assert_allclose(
            update[name], want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want))
        )
