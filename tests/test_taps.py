"""Capturing convolutions from jaxprs: layouts, nesting, computed kernels."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from models import colored, conv, normal

import sdr


def _nchw_generator(params, x):
    """A raw-lax generator in NCHW / OIHW layout with a nested jit and remat."""
    dn = ("NCHW", "OIHW", "NCHW")

    @jax.jit
    def up(x, w):
        return jax.nn.relu(
            lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=dn)
        )

    h = up(x, params["up"])
    out = jax.checkpoint(
        lambda h, w: lax.conv_general_dilated(
            h, w, (1, 1), "SAME", dimension_numbers=dn
        )
    )(h, params["out"])
    return jnp.tanh(out), h


def _params(rng):
    return {
        "up": jnp.asarray(rng.normal(size=(6, 3, 5, 5)), jnp.float32),
        "out": jnp.asarray(rng.normal(size=(2, 6, 3, 3)), jnp.float32),
    }


def test_raw_lax_nchw_layout_and_nesting(rng):
    params = _params(rng)
    x = jnp.asarray(rng.normal(size=(4, 3, 5, 5)), jnp.float32)
    (out, _hidden), taps = sdr.capture_convs(_nchw_generator, params, x)
    expected_out, expected_hidden = _nchw_generator(params, x)
    np.testing.assert_allclose(out, expected_out, rtol=1e-6)
    assert [t.name for t in taps] == ["up", "out"]
    assert [t.param_path for t in taps] == ["up", "out"]
    up, last = taps
    # Channels-last maps and (kh, kw, c_in, c_out) kernels.
    np.testing.assert_array_equal(up.maps, jnp.transpose(x, (0, 2, 3, 1)))
    np.testing.assert_array_equal(up.kernel, jnp.transpose(params["up"], (2, 3, 1, 0)))
    assert up.geometry.input_dilation == (2, 2)
    np.testing.assert_allclose(
        last.maps, jnp.transpose(expected_hidden, (0, 2, 3, 1)), rtol=1e-6
    )
    assert last.geometry.input_dilation == (1, 1)
    np.testing.assert_allclose(
        up.pair_sdr(),
        sdr.conv_sdr(up.maps, up.kernel, strides=2, transpose=True),
        rtol=1e-6,
    )


def test_custom_vjp_and_computed_kernel(rng):
    @jax.custom_vjp
    def block(x, w):
        return lax.conv_general_dilated(
            x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    block.defvjp(
        lambda x, w: (block(x, w), (x, w)),
        lambda res, g: (jnp.zeros_like(res[0]), jnp.zeros_like(res[1])),
    )

    def modulated(params, style, x):
        w = params["w"] * style[None, None, :, None]  # computed, not a leaf
        y = lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return block(y, params["v"])

    params = {
        "w": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
        "v": jnp.asarray(rng.normal(size=(3, 3, 4, 4)), jnp.float32),
    }
    style = jnp.asarray(rng.uniform(0.5, 2.0, size=2), jnp.float32)
    x = jnp.asarray(rng.normal(size=(3, 8, 8, 2)), jnp.float32)
    out, taps = sdr.capture_convs(modulated, params, style, x)
    np.testing.assert_allclose(out, modulated(params, style, x), rtol=1e-6)
    assert len(taps) == 2
    assert taps[0].param_path is None and taps[0].name == "conv0"
    np.testing.assert_allclose(
        taps[0].kernel, params["w"] * style[None, None, :, None], rtol=1e-6
    )
    assert taps[1].param_path == "v" and taps[1].window_strides == (2, 2)


def test_per_sample_kernels_through_feature_groups(rng):
    # StyleGAN-style: the batch folded into channels, one kernel per sample.
    n, c_in, c_out = 3, 2, 4
    base = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)), jnp.float32)
    styles = jnp.asarray(rng.uniform(0.5, 2.0, size=(n, c_in)), jnp.float32)

    def per_sample(base, styles, x):
        w = base[None] * styles[:, None, None, :, None]  # (n, kh, kw, c_in, c_out)
        w = jnp.transpose(w, (1, 2, 3, 0, 4)).reshape(3, 3, c_in, n * c_out)
        x = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, 8, 8, n * c_in)
        return lax.conv_general_dilated(
            x,
            w,
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=n,
        )

    x = jnp.asarray(rng.normal(size=(n, 8, 8, c_in)), jnp.float32)
    _, (tap,) = sdr.capture_convs(per_sample, base, styles, x)
    assert tap.geometry.feature_group_count == n
    r = tap.pair_sdr()
    assert r.shape == (c_in, n * c_out)
    for s in range(n):  # group s: sample s's maps with its own kernel
        np.testing.assert_allclose(
            r[:, s * c_out : (s + 1) * c_out],
            sdr.conv_sdr(x[s : s + 1], base * styles[s][None, None, :, None]),
            rtol=1e-5,
        )


def test_repeated_kernel_names_are_unique(rng):
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.float32)

    def twice(params, x):
        def conv(x):
            return lax.conv_general_dilated(
                x,
                params["w"],
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )

        return conv(jax.nn.relu(conv(x)))

    _, taps = sdr.capture_convs(twice, {"w": w}, jnp.ones((1, 6, 6, 2), jnp.float32))
    assert [t.name for t in taps] == ["w", "w#2"]


def test_capture_under_jit(rng):
    params = _params(rng)
    x = jnp.asarray(rng.normal(size=(2, 3, 5, 5)), jnp.float32)

    @jax.jit
    def medians(params, x):
        _, taps = sdr.capture_convs(_nchw_generator, params, x)
        return {t.name: jnp.median(t.pair_sdr()) for t in taps}

    eager = {
        t.name: jnp.median(t.pair_sdr())
        for t in sdr.capture_convs(_nchw_generator, params, x)[1]
    }
    jitted = medians(params, x)
    for name in eager:
        np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-5)


def test_edit_convs_runs_the_function_with_edited_input_maps(rng):
    params = _params(rng)
    x = jnp.asarray(rng.normal(size=(4, 3, 5, 5)), jnp.float32)
    _, hidden = _nchw_generator(params, x)
    edited = sdr.edit_convs(_nchw_generator, {"out": lambda maps: 2.0 * maps})
    (out, _), taps = sdr.capture_convs(edited, params, x)
    expected = jnp.tanh(
        lax.conv_general_dilated(
            2.0 * hidden,
            params["out"],
            (1, 1),
            "SAME",
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # The maps reach the edit channels last, whatever the conv's layout.
    np.testing.assert_allclose(
        taps[1].maps, 2.0 * jnp.transpose(hidden, (0, 2, 3, 1)), rtol=1e-5
    )
    with pytest.raises(ValueError, match=r"No conv layer named \['nope'\]"):
        sdr.edit_convs(_nchw_generator, {"nope": lambda m: m})(params, x)


def test_path_names_of_flax_and_nnx_parameters():
    variables = {"params": {"decoder": {"deconv1": {"kernel": np.zeros(2)}}}}
    ((path, _),) = jax.tree_util.tree_flatten_with_path(variables)[0]
    assert sdr.key_names(path) == ["params", "decoder", "deconv1", "kernel"]
    assert sdr.path_name(path) == "decoder/deconv1/kernel"
    assert sdr.path_name(path, skip=1) == "decoder/deconv1/kernel"
    assert sdr.path_name(path, skip=2) == "deconv1/kernel"
    attribute = (jax.tree_util.GetAttrKey("conv"), jax.tree_util.GetAttrKey("value"))
    assert sdr.path_name(attribute) == "conv"
    assert sdr.path_name(()) is None
    # Keyword arguments' leaves: the `kwargs` of the arguments is dropped.
    keyword = (jax.tree_util.DictKey("kwargs"), jax.tree_util.DictKey("w"))
    assert sdr.path_name(keyword) == "w"
    # Other key kinds are named by their own str().
    flat = jax.tree_util.FlattenedIndexKey(3)
    assert sdr.key_names((flat,)) == [str(flat)] and str(flat) != "None"


def test_parameters_passed_by_keyword_are_named_as_positional_ones(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
    params = {"up": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 3, 2)), jnp.float32)}}
    fn = lambda x, *, params: _conv_nd(x, params["up"]["kernel"])  # noqa: E731
    _, (tap,) = sdr.capture_convs(fn, x, params=params)
    assert (tap.name, tap.param_path) == ("up", "up/kernel")


# --- edits that close over arrays, inside the bodies of higher-order primitives
# An edit's constant (here a mask) becomes a constant of the rewritten body,
# which must be passed to the primitive beside its own operands.

_MASK = np.linspace(0.0, 2.0, 8 * 8 * 4, dtype=np.float32).reshape(1, 8, 8, 4)


def _same(maps):
    return maps


def _in_jit(p, x, edit=_same):
    return jax.jit(lambda h, w: conv(edit(h), w))(x, p["w"])


def _in_checkpoint(p, x, edit=_same):
    return jax.checkpoint(lambda h, w: conv(edit(h), w))(x, p["w"])


def _in_scan(p, x, edit=_same):
    body = lambda h, w: (jax.nn.relu(conv(edit(h), w)), None)  # noqa: E731
    return lax.scan(body, x, p["ws"])[0]


def _in_switch(p, x, edit=_same):
    # Branch 1 (taken) runs the edited conv; branch 0 another one.
    branches = [lambda h: 2.0 * conv(h, p["ws"][0]), lambda h: conv(edit(h), p["w"])]
    return lax.switch(jnp.sum(x > -10.0) // x.size, branches, x)


def _in_while(p, x, edit=_same):
    def body(carry):
        i, h = carry
        return i + 1, jax.nn.relu(conv(edit(h), p["w"]))

    return lax.while_loop(lambda c: c[0] < 2, body, (jnp.int32(0), x))[1]


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        (_in_jit, "w"),
        (_in_checkpoint, "w"),
        (_in_scan, "ws"),
        (_in_switch, "w"),
        (_in_while, "w"),
    ],
    ids=["jit", "checkpoint", "scan", "switch", "while"],
)
def test_edits_closing_over_an_array_inside_a_body(fn, name):
    params = {"w": normal(1, (3, 3, 4, 4), 0.4), "ws": normal(2, (2, 3, 3, 4, 4), 0.4)}
    x = colored(0, (2, 8, 8, 4))
    mask = jnp.asarray(_MASK)  # a device array, as a user's would be
    expected = fn(params, x, lambda maps: maps * mask)
    assert float(jnp.max(jnp.abs(expected - fn(params, x)))) > 1.0  # the edit shows
    edited = sdr.edit_convs(fn, {name: lambda maps: maps * mask})
    if fn is _in_while:
        with pytest.warns(UserWarning, match=r"^sdr\.edit_convs: .*while_loop"):
            out = edited(params, x)
    else:
        out = edited(params, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the while_loop's warning, seen above
        out = jax.jit(edited)(params, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # So are the derivatives, with respect to the kernels and the maps
    # (forward mode through a while_loop, which has no reverse mode).
    loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))  # noqa: E731
    by_hand = loss(lambda p, x: fn(p, x, lambda maps: maps * mask))
    if fn is _in_while:
        derivative = lambda f: jax.jvp(f, (params, x), (params, x))[1]  # noqa: E731
    else:
        derivative = lambda f: jax.grad(f, argnums=(0, 1))(params, x)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = derivative(loss(edited))
    chex.assert_trees_all_close(got, derivative(by_hand), rtol=1e-4, atol=1e-4)
    # The user's arrays are intact afterwards (nothing was donated).
    np.testing.assert_array_equal(params["w"], normal(1, (3, 3, 4, 4), 0.4))
    np.testing.assert_array_equal(mask, _MASK)


def _conv_nd(maps, kernel):
    rank = maps.ndim - 2
    spatial = "DHW"[-rank:] if rank <= 3 else None
    dn = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    return lax.conv_general_dilated(
        maps, kernel, (1,) * rank, "SAME", dimension_numbers=dn
    )


@pytest.mark.parametrize(
    ("maps", "kernel", "reason"),
    [
        ((1, 1, 1, 2), (1, 1, 2, 2), "its input maps are 1×1: one point"),
        (
            (1, 2, 2, 2),
            (3, 3, 2, 2),
            "its kernel (3×3) is larger than the grid it acts on (2×2)",
        ),
        ((1, 1, 2, 2), (1, 1, 2, 2), None),  # two points
        ((1, 3, 3, 2), (3, 3, 2, 2), None),  # the kernel just fits
        ((1, 5, 2), (3, 2, 2), None),  # one spatial axis
        ((1, 2, 2), (3, 2, 2), "its kernel (3) is larger than the grid it acts on (2)"),
    ],
)
def test_unmeasurable_says_why_a_conv_has_no_sdr(maps, kernel, reason):
    x = jnp.ones(maps, jnp.float32)
    w = jnp.ones(kernel, jnp.float32)
    _, (tap,) = sdr.capture_convs(_conv_nd, x, w)
    assert tap.unmeasurable == reason


def test_pair_sdr_passes_include_dc_on(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32) + 1.0
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 2)), jnp.float32)
    _, (tap,) = sdr.capture_convs(_conv_nd, x, w)
    for include_dc in (False, True):
        np.testing.assert_allclose(
            tap.pair_sdr(include_dc=include_dc),
            sdr.conv_sdr(x, w, include_dc=include_dc),
            rtol=1e-6,
        )
    assert not np.allclose(tap.pair_sdr(include_dc=True), tap.pair_sdr())


def test_primitives_without_convs_are_evaluated_without_a_warning():
    # sdr cannot look inside custom_linear_solve; with no conv inside it has
    # nothing to say.
    def solve(x, w):
        h = lax.custom_linear_solve(lambda v: 2.0 * v, x, lambda mv, b: b / 2.0)
        return _conv_nd(h, w)

    x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, (tap,) = sdr.capture_convs(solve, x, w)
    np.testing.assert_allclose(out, solve(x, w), rtol=1e-6)
    np.testing.assert_allclose(tap.maps, x / 2.0, rtol=1e-6)


def test_an_edit_that_changes_the_maps_dtype_is_cast_back(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 2)), jnp.float32)
    edited = sdr.edit_convs(_conv_nd, {"conv0": lambda m: m.astype(jnp.float16)})
    out = edited(x, w)
    assert out.dtype == jnp.float32
    expected = _conv_nd(x.astype(jnp.float16).astype(jnp.float32), w)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    with jax.enable_x64(True):  # widened maps do not widen the conv
        wider = sdr.edit_convs(_conv_nd, {"conv0": lambda m: m.astype(jnp.float64)})
        assert wider(x, w).dtype == jnp.float32
