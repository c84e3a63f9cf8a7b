"""Kernel edits: `sdr_flax.flip_input_channels` and `permute_outputs`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from sdr import capture_convs
from sdr_flax import flip_input_channels, permute_outputs


def _variables(rng):
    return {
        "params": {
            "decoder": {
                "deconv3": {"kernel": rng.normal(size=(5, 5, 4, 6)).astype(np.float32)},
                "deconv4": {
                    "kernel": rng.normal(size=(5, 5, 6, 3)).astype(np.float32),
                    "bias": rng.normal(size=(3,)).astype(np.float32),
                },
            }
        },
        "batch_stats": {"decoder": {"bn3": {"mean": np.zeros(6, np.float32)}}},
    }


def _changed_inputs(before, after, in_axis):
    """The input channels with any changed coefficient (bitwise)."""
    diff = np.asarray(before) != np.asarray(after)
    axes = tuple(a for a in range(diff.ndim) if a != in_axis % diff.ndim)
    return np.flatnonzero(diff.any(axis=axes)).tolist()


def test_flip_changes_exactly_the_selected_channels_flax_layout(rng):
    variables = _variables(rng)
    channels = [1, 4]
    for tree, path in (
        (variables, "decoder/deconv4/kernel"),
        (variables, "params/decoder/deconv4/kernel"),
        (variables["params"], "decoder/deconv4/kernel"),
    ):
        edited = flip_input_channels(tree, path, channels)
        assert jax.tree.structure(edited) == jax.tree.structure(tree)
        params = edited.get("params", edited)
        before = tree.get("params", tree)["decoder"]["deconv4"]["kernel"]
        after = np.asarray(params["decoder"]["deconv4"]["kernel"])
        assert _changed_inputs(before, after, -2) == channels
        np.testing.assert_array_equal(after[:, :, channels], -before[:, :, channels])
        keep = [c for c in range(6) if c not in channels]
        np.testing.assert_array_equal(after[:, :, keep], before[:, :, keep])
        # Every other leaf is the very same object; the input is not modified.
        for p, q in zip(jax.tree.leaves(tree), jax.tree.leaves(edited), strict=True):
            if p is not before:
                assert p is q
    assert np.all(variables["params"]["decoder"]["deconv4"]["kernel"] == before)


def test_flip_and_permute_in_oihw_layout(rng):
    kernel = rng.normal(size=(3, 6, 5, 5)).astype(np.float32)  # (out, in, kh, kw)
    params = {"image": kernel}
    flipped = flip_input_channels(params, "image", [0, 5], in_axis=1)
    assert _changed_inputs(kernel, flipped["image"], 1) == [0, 5]
    np.testing.assert_array_equal(flipped["image"][:, [0, 5]], -kernel[:, [0, 5]])
    moved = permute_outputs(params, "image", [2], (1, 2, 0), in_axis=1, out_axis=0)
    assert _changed_inputs(kernel, moved["image"], 1) == [2]
    # Output j now gets what output π(j) got, from input 2 only.
    np.testing.assert_array_equal(moved["image"][:, 2], kernel[[1, 2, 0], 2])


def test_permute_outputs_flax_layout_and_output_effect(rng):
    """Permuting all inputs' outputs permutes the conv's output channels."""
    kernel = rng.normal(size=(3, 3, 4, 3)).astype(np.float32)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)

    def conv(params, x):
        dn = ("NHWC", "HWIO", "NHWC")
        return lax.conv_general_dilated(
            x, params["k"], (1, 1), "SAME", dimension_numbers=dn
        )

    params = {"k": kernel}
    perm = (2, 0, 1)
    every = permute_outputs(params, "k", range(4), perm)
    np.testing.assert_allclose(
        conv(every, x), conv(params, x)[..., list(perm)], rtol=1e-6
    )
    some = permute_outputs(params, "k", [3], perm)
    assert _changed_inputs(kernel, some["k"], -2) == [3]
    np.testing.assert_array_equal(some["k"][:, :, 3], kernel[:, :, 3][..., [2, 0, 1]])
    # The layout read from a tap: its kernel_axes map the raw kernel to Flax.
    _, (tap,) = capture_convs(conv, params, x)
    axes = {"in_axis": tap.kernel_axes[-2], "out_axis": tap.kernel_axes[-1]}
    via_tap = permute_outputs(params, tap.param_path, [3], perm, **axes)
    np.testing.assert_array_equal(via_tap["k"], some["k"])


def test_edits_on_nnx_state_and_under_jit(rng):
    # Random parameters without compiling NNX's initialisers (fast).
    abstract = nnx.eval_shape(lambda: nnx.ConvTranspose(6, 3, (3, 3), rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    state = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype), state)
    model = nnx.merge(graphdef, state)
    edited = flip_input_channels(state, "kernel", [2])
    assert isinstance(edited, nnx.State)
    before, after = state["kernel"][...], edited["kernel"][...]
    assert _changed_inputs(before, after, -2) == [2]
    x = jnp.ones((1, 4, 4, 6))
    assert not np.allclose(nnx.merge(graphdef, edited)(x), model(x))
    np.testing.assert_array_equal(model.kernel[...], before)  # not mutated
    jitted = jax.jit(
        lambda s: permute_outputs(
            flip_input_channels(s, "kernel", [2]), "kernel", [2], (1, 0, 2)
        )
    )(state)
    expected = jnp.asarray(before).at[:, :, 2].set(-before[:, :, 2][..., [1, 0, 2]])
    np.testing.assert_array_equal(jitted["kernel"][...], expected)


def test_errors(rng):
    variables = _variables(rng)
    path = "decoder/deconv4/kernel"
    with pytest.raises(ValueError, match="No parameter at path") as info:
        flip_input_channels(variables, "decoder/deconv9/kernel", [0])
    assert "'decoder/deconv4/kernel'" in str(info.value)
    with pytest.raises(ValueError, match=r"out of range.*6 input channels"):
        flip_input_channels(variables, path, [6])
    with pytest.raises(ValueError, match="out of range"):
        permute_outputs(variables, path, [-1], (0, 1, 2))
    for bad in ((0, 1), (0, 1, 1), (0, 1, 3), (0.0, 1.0, 2.0), (0, 1, 2, 3)):
        with pytest.raises(ValueError, match="permutation of the 3 output"):
            permute_outputs(variables, path, [0], bad)
    with pytest.raises(ValueError, match="same axis"):
        permute_outputs(variables, path, [0], (0, 1, 2), out_axis=-2)
    with pytest.raises(ValueError, match="in_axis"):
        flip_input_channels(variables, path, [0], in_axis=4)
    with pytest.raises(TypeError, match="path"):
        flip_input_channels(variables, ("decoder", "deconv4"), [0])
