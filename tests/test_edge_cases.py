"""Edge cases of the numerical core and of the Optax transform: the argument
errors of the spectra name the argument and say what came in; a single
signal convolves without a batch axis; the penalty steps from the
parameters after the main update; a layer whose spectra are not finite is
skipped and counted; an update without spectra passes through and counts;
misuse of `update` is refused with what to do. The same for the ratios and
the penalty's arguments, and the conv SDR's undefined pairs: a channel
without power, never a pair whose kernel is merely weak."""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sdr
import sdr_flax

F32 = np.float32


def _ints(*shape):
    return np.ones(shape, np.int32)


def _floats(*shape):
    return np.ones(shape, F32)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: sdr.cause_spectrum(_ints(2, 4)), "x"),
        (lambda: sdr.kernel_spectrum(_ints(3), (8,)), "kernel"),
        (lambda: sdr.circular_convolve(_ints(2, 8), _floats(3)), "x"),
        (lambda: sdr.circular_convolve(_floats(2, 8), _ints(3)), "kernel"),
        (lambda: sdr.nonzero_mean(_ints(4)), "p"),
        (lambda: sdr.spectral_density_ratio(_ints(2, 8), _floats(3)), "x"),
        (lambda: sdr.spectral_density_ratio(_floats(2, 8), _ints(3)), "kernel"),
        (lambda: sdr.spectral_independence_penalty(_ints(2, 8), _floats(3)), "x"),
        (lambda: sdr.trace_ratio(_ints(3), _floats(3)), "a"),
        (lambda: sdr.trace_ratio(_floats(3), _ints(3)), "b"),
        (lambda: sdr.channel_spectra(_ints(2, 4, 3)), "maps"),
        (lambda: sdr.conv_sdr(_floats(2, 4, 4, 3), _ints(3, 3, 3, 2)), "kernel"),
        (lambda: sdr.conv_pair_gaps(_ints(3, 4, 4), _floats(3, 3, 3, 2)), "spectra"),
    ],
    ids=[
        "cause_spectrum-x",
        "kernel_spectrum-kernel",
        "convolve-x",
        "convolve-kernel",
        "nonzero_mean-p",
        "sdr-x",
        "sdr-kernel",
        "penalty-x",
        "trace_ratio-a",
        "trace_ratio-b",
        "channel_spectra-maps",
        "conv_sdr-kernel",
        "pair_gaps-spectra",
    ],
)
def test_spectra_type_errors_name_the_offending_argument(call, name):
    with pytest.raises(TypeError, match=f"`{name}` must be a real floating-point"):
        call()


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: sdr.cause_spectrum(_floats(4)), "at least one spatial axis"),
        (lambda: sdr.kernel_spectrum(_floats(3), (8, 8)), "rank of the grid"),
        (lambda: sdr.kernel_spectrum(_floats(5, 5), (4, 4)), "larger than the grid"),
        (
            lambda: sdr.circular_convolve(_floats(3), _floats(2, 2)),
            "at least the rank of `kernel`",
        ),
        (
            lambda: sdr.circular_convolve(_floats(2, 4, 4), _floats(5, 5)),
            "larger than the grid",
        ),
        (lambda: sdr.nonzero_mean(_floats(1, 1)), "spatial grid of `p` must have"),
        (
            lambda: sdr.spectral_density_ratio(_floats(4), _floats(3)),
            re.escape("(n, *spatial) with at least one spatial axis; got shape (4,)"),
        ),
        (
            lambda: sdr.spectral_independence_penalty(_floats(2, 8, 8), _floats(3)),
            re.escape("(x has shape (2, 8, 8), so rank 2); got kernel shape (3,)"),
        ),
        (
            lambda: sdr.trace_ratio(_floats(3), _floats(4)),
            re.escape("same non-empty shape; got (3,) and (4,)"),
        ),
        (lambda: sdr.trace_ratio(_floats(0), _floats(0)), "same non-empty shape"),
        (
            lambda: sdr.channel_spectra(_floats(2, 3)),
            "^"
            + re.escape(
                "`maps` must have shape (n, *spatial, c) with at least one spatial "
                "axis; got shape (2, 3)."
            ),
        ),
        (
            lambda: sdr.channel_spectra(_floats(2, 1, 1, 3)),
            "^" + re.escape("The spatial grid of `maps` must have at least two points"),
        ),
        (
            lambda: sdr.conv_pair_gaps(_floats(3), _floats(3, 3, 3, 2)),
            "^"
            + re.escape(
                "`spectra` must have shape (c, *spatial) as from `channel_spectra`; "
                "got shape (3,)."
            ),
        ),
        (
            lambda: sdr.conv_pair_gaps(
                _floats(3, 6, 6), _floats(3, 3, 3, 2), grid=(6,)
            ),
            "^"
            + re.escape(
                "`grid` must have one entry per spatial axis of `spectra` "
                "(shape (3, 6, 6): 2); got grid=(6,)."
            ),
        ),
        (
            lambda: sdr.conv_pair_gaps(_floats(3, 1, 1), _floats(1, 1, 3, 2)),
            "^" + re.escape("The spatial grid of `spectra` must have at least two"),
        ),
        (
            lambda: sdr.conv_pair_gaps(
                _floats(3, 1, 1), _floats(1, 1, 3, 2), grid=(1, 1)
            ),
            "^" + re.escape("The spatial grid of `grid` must have at least two"),
        ),
        (
            lambda: sdr.conv_pair_gaps(
                _floats(3, 6, 5), _floats(3, 3, 3, 2), grid=(6, 6)
            ),
            "^"
            + re.escape(
                "`spectra` of shape (3, 6, 5) are neither the full spectra "
                "(c, *grid) = (3, 6, 6) nor the half ones "
                "(c, *grid[:-1], grid[-1] // 2 + 1) = (3, 6, 4) of grid=(6, 6)."
            ),
        ),
        (
            lambda: sdr.conv_pair_gaps(_floats(2, 4, 4), _floats(3, 3, 2, 2), grid=4),
            "^"
            + re.escape(
                "`grid` must be the spatial shape of the maps, a sequence of "
                "positive ints; got 4."
            ),
        ),
    ],
    ids=[
        "cause_spectrum-rank",
        "kernel_spectrum-rank",
        "kernel_spectrum-too-large",
        "convolve-rank",
        "convolve-too-large",
        "nonzero_mean-grid",
        "sdr-rank",
        "penalty-kernel-rank",
        "trace_ratio-shapes",
        "trace_ratio-empty",
        "channel_spectra-rank",
        "channel_spectra-grid",
        "pair_gaps-spectra-rank",
        "pair_gaps-grid-length",
        "pair_gaps-spectra-grid",
        "pair_gaps-grid-points",
        "pair_gaps-neither-full-nor-half",
        "pair_gaps-int-grid",
    ],
)
def test_spectra_value_errors_say_what_is_wrong(call, words):
    with pytest.raises(ValueError, match=words):
        call()


@pytest.mark.parametrize("half", [False, True])
def test_channel_spectra_keep_float32_maps_in_float32_under_x64(rng, half):
    maps = np.abs(rng.normal(size=(2, 4, 6, 3))).astype(F32)
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        assert sdr.channel_spectra(maps, half=half).dtype == jnp.float32
        wide = sdr.channel_spectra(maps.astype(np.float64), half=half)
        assert wide.dtype == jnp.float64
        wide = np.asarray(wide)
    # float32 rounding of sums of 24 products, relative to the largest power.
    np.testing.assert_allclose(
        sdr.channel_spectra(maps, half=half), wide, atol=1e-5 * float(np.max(wide))
    )


@pytest.mark.parametrize("value", [0.7, 1.3, 3.1])
def test_a_constant_channel_has_no_sdr_and_no_gap(rng, value):
    # Its power off the zero frequency is FFT rounding (~1e-15 of the total
    # on this grid), which must not count as power.
    maps = np.abs(rng.normal(size=(3, 5, 7, 3))).astype(F32)
    maps[..., 1] = value
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(F32)
    ratios = np.asarray(sdr.conv_sdr(maps, kernel))
    assert np.isnan(ratios[1]).all() and np.isfinite(ratios[[0, 2]]).all(), ratios
    for half in (False, True):
        spectra = sdr.channel_spectra(maps, half=half)
        gaps = np.asarray(sdr.conv_pair_gaps(spectra, kernel, grid=(5, 7)))
        np.testing.assert_array_equal(gaps[1], 0.0)
        assert np.all(gaps[[0, 2]] != 0.0), gaps


def test_a_channel_keeps_its_sdr_when_far_weaker_than_the_others(rng):
    # The SDR is scale-free in each channel: one channel scaled by 1e-6
    # (power 1e-12 of the others) keeps its values.
    maps = np.abs(rng.normal(size=(3, 5, 7, 3))).astype(F32)
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(F32)
    weak = maps.copy()
    weak[..., 2] *= 1e-6
    before = np.asarray(sdr.conv_sdr(maps, kernel))
    np.testing.assert_allclose(sdr.conv_sdr(weak, kernel), before, rtol=1e-4)


def test_a_small_fluctuation_on_a_large_mean_has_its_sdr(rng):
    # Fluctuations of 3e-3 around a mean of 1 (1e-5 of the channel's power
    # off the zero frequency) are power, not rounding: the SDR is that of
    # the fluctuations alone (float32 keeps them to ~2e-5).
    noise = rng.normal(size=(3, 5, 7, 1)).astype(F32)
    kernel = rng.normal(size=(3, 3, 1, 2)).astype(F32)
    alone = np.asarray(sdr.conv_sdr(3e-3 * noise, kernel))
    on_mean = np.asarray(sdr.conv_sdr(1.0 + 3e-3 * noise, kernel))
    np.testing.assert_allclose(on_mean, alone, rtol=1e-3)


def test_full_and_half_spectra_agree_on_a_channel_at_the_no_power_threshold(rng):
    # A channel counts as having power when more than 1024 ε² ≈ 1.5e-11 of
    # its power lies off the zero frequency. One at ~2e-11 lies within a
    # factor 2 of that threshold: full and half spectra must still agree
    # that it has power, and on its gaps.
    noise = rng.normal(size=(4, 6, 6))
    noise = (noise - noise.mean()) / noise.std()
    near_constant = 1.0 + np.sqrt(2.1e-11) * noise
    maps = np.stack([near_constant, np.abs(rng.normal(size=(4, 6, 6)))], -1)
    maps = maps.astype(F32)
    full = sdr.channel_spectra(maps)
    power = np.asarray(full, np.float64)[0].ravel()
    off_zero = power[1:].sum() / power.sum()
    threshold = 1024 * float(np.finfo(F32).eps) ** 2
    assert 1.1 * threshold < off_zero < 1.8 * threshold, off_zero
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(F32)
    from_full = np.asarray(sdr.conv_pair_gaps(full, kernel, grid=(6, 6)))
    half = sdr.channel_spectra(maps, half=True)
    from_half = np.asarray(sdr.conv_pair_gaps(half, kernel, grid=(6, 6)))
    assert np.all(from_full != 0.0), from_full
    np.testing.assert_allclose(from_half, from_full, rtol=1e-3)


def test_the_conv_statistics_keep_float32_under_x64(rng):
    # Under x64 with strict dtype promotion (as in this suite) any float64
    # constant meeting float32 data would raise.
    maps = np.abs(rng.normal(size=(3, 5, 6, 2))).astype(F32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(F32)
    with jax.enable_x64(True):
        assert sdr.conv_sdr(maps, kernel).dtype == jnp.float32
        for half in (False, True):
            spectra = sdr.channel_spectra(maps, half=half)
            gaps = sdr.conv_pair_gaps(spectra, kernel, grid=(5, 6))
            assert gaps.dtype == jnp.float32
            assert sdr.conv_penalty(spectra, kernel, grid=(5, 6)).dtype == jnp.float32


def test_trace_ratio_of_one_entry_is_one():
    # <a²b²> = <a²><b²> when there is a single entry.
    np.testing.assert_allclose(sdr.trace_ratio(F32([2.0]), F32([3.0])), 1.0, rtol=1e-6)


def test_a_channel_without_power_has_no_sdr_even_where_its_kernels_have_energy(rng):
    maps = np.abs(rng.normal(size=(4, 6, 6, 3))).astype(F32)
    maps[..., 1] = 0.0
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(F32)
    ratios = np.asarray(sdr.conv_sdr(maps, kernel))
    assert np.isnan(ratios[1]).all(), ratios
    assert np.isfinite(np.delete(ratios, 1, axis=0)).all(), ratios


def test_a_pair_keeps_its_sdr_when_its_kernel_is_far_weaker_than_the_others(rng):
    # The SDR of a pair does not depend on its kernel's scale, nor on the
    # other pairs' kernels: one pair scaled by 1e-4 (energy 1e-8 of the
    # others) is still defined, with the same value.
    maps = np.abs(rng.normal(size=(4, 6, 6, 2))).astype(F32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(F32)
    weak = kernel.copy()
    weak[..., 0, 1] *= 1e-4
    before = np.asarray(sdr.conv_sdr(maps, kernel))
    after = np.asarray(sdr.conv_sdr(maps, weak))
    assert np.isfinite(after).all(), after
    np.testing.assert_allclose(after, before, rtol=1e-5)


def test_circular_convolve_takes_one_signal_without_a_batch_axis(rng):
    # x of the kernel's rank is one signal (no batch axis), not an error.
    x = rng.normal(size=(9,)).astype(F32)
    k = rng.normal(size=(3,)).astype(F32)
    expected = [sum(k[a] * x[(m - a) % 9] for a in range(3)) for m in range(9)]
    np.testing.assert_allclose(sdr.circular_convolve(x, k), expected, atol=1e-5)


@pytest.fixture(scope="module")
def conv_layer():
    """A one-conv Linen model's parameters and the spectra of its input."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 6, 6, 2)), jnp.float32)
    model = nn.Conv(3, (3, 3), name="conv")
    params = model.init(jax.random.key(0), x)["params"]
    _, taps = sdr_flax.capture_layers(model.apply, {"params": params}, x)
    return params, sdr_flax.layer_spectra(taps)


def test_penalty_steps_start_from_the_parameters_after_the_main_update(conv_layer):
    # The combined update of a nonzero main update u equals u plus the
    # penalty's change computed at params + u (not at params or params - u).
    params, spectra = conv_layer
    tx = sdr_flax.spectral_independence(0.5)
    update = jax.jit(tx.update)  # one compilation serves both calls
    u = jax.tree.map(
        lambda p: 0.3 * jnp.cos(jnp.arange(p.size)).reshape(p.shape), params
    )
    combined, _ = update(u, tx.init(params), params, spectra=spectra)
    moved = optax.apply_updates(params, u)
    zeros = jax.tree.map(jnp.zeros_like, params)
    alone, _ = update(zeros, tx.init(moved), moved, spectra=spectra)
    assert float(jnp.max(jnp.abs(alone["kernel"]))) > 1e-3  # the penalty acts
    np.testing.assert_allclose(
        combined["kernel"], u["kernel"] + alone["kernel"], rtol=1e-5, atol=1e-6
    )


def test_the_transform_keeps_float32_updates_under_x64(conv_layer):
    # Under x64 with strict dtype promotion (as in this suite), a float64
    # intermediate meeting the float32 parameters or spectra would raise.
    params, spectra = conv_layer
    tx = sdr_flax.spectral_independence(0.5)
    u = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    expected, _ = tx.update(u, tx.init(params), params, spectra=spectra)
    with jax.enable_x64(True):
        got, _ = tx.update(u, tx.init(params), params, spectra=spectra)
        assert {x.dtype for x in jax.tree.leaves(got)} == {jnp.dtype(jnp.float32)}
    for name in got:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7)


def test_a_layer_with_non_finite_spectra_is_skipped_and_counted(conv_layer):
    # Such a layer's kernel gets the main update only, the state counts the
    # skip, and a later finite update regularises again without counting.
    params, spectra = conv_layer
    bad = {
        name: dataclasses.replace(s, spectra=s.spectra.at[0].set(jnp.nan))
        for name, s in spectra.items()
    }
    tx = sdr_flax.spectral_independence(0.5)
    u = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    state = tx.init(params)
    skipped_update, state = tx.update(u, state, params, spectra=bad)
    assert (int(state.count), int(state.skipped)) == (1, 1)
    np.testing.assert_array_equal(skipped_update["kernel"], u["kernel"])
    regularised, state = tx.update(u, state, params, spectra=spectra)
    assert (int(state.count), int(state.skipped)) == (2, 1)
    assert float(jnp.max(jnp.abs(regularised["kernel"] - u["kernel"]))) > 1e-3


def test_update_misuse_messages_say_what_came_and_what_to_do(conv_layer):
    params, _ = conv_layer
    tx = sdr_flax.spectral_independence()
    zeros = jax.tree.map(jnp.zeros_like, params)
    message = (
        r"^`spectra` must be the dict that sdr_flax\.layer_spectra\(taps\) returns "
        r"\(layer name -> LayerSpectra\); got list\. Pass the taps through "
        r"sdr_flax\.layer_spectra first\.$"
    )
    with pytest.raises(TypeError, match=message):
        tx.update(zeros, tx.init(params), params, spectra=[])
    message = (
        r"^spectral_independence needs the parameters: call "
        r"update\(updates, state, params, spectra=\.\.\.\)\.$"
    )
    with pytest.raises(ValueError, match=message):
        tx.update(zeros, tx.init(params), spectra={})


def test_update_without_spectra_passes_through_and_counts(conv_layer):
    params, _ = conv_layer
    tx = sdr_flax.spectral_independence()
    u = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    out, state = tx.update(u, tx.init(params), params)
    np.testing.assert_array_equal(out["kernel"], u["kernel"])
    assert (int(state.count), int(state.skipped)) == (1, 0)


def test_unknown_layer_names_are_said_to_be_missing_from_spectra(conv_layer):
    params, spectra = conv_layer
    tx = sdr_flax.spectral_independence(layers=["nope"])
    zeros = jax.tree.map(jnp.zeros_like, params)
    with pytest.raises(ValueError, match=r"\['nope'\] match no layer of `spectra`;"):
        tx.update(zeros, tx.init(params), params, spectra=spectra)


def test_a_missing_parameter_is_reported_with_the_first_five_paths(conv_layer):
    _, spectra = conv_layer
    params = {f"p{i}": jnp.zeros(1) for i in range(6)}  # no "kernel" among them
    tx = sdr_flax.spectral_independence()
    message = (
        r"^spectral_independence: no parameter at \['kernel'\]; the parameters' "
        r"paths are e\.g\. \['p0', 'p1', 'p2', 'p3', 'p4'\]\. Pass the parameters "
        r"the model was called with\.$"
    )
    with pytest.raises(ValueError, match=message):
        tx.update(params, tx.init(params), params, spectra=spectra)
