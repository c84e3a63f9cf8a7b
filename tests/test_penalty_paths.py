"""The penalty's paths against a per-pair FFT reference in NumPy float64.

1. `include_dc=True` and `False` for every penalty and gap entry point
   (`sdr.conv_pair_gaps`, `sdr.conv_penalty` on full and half spectra,
   `sdr_flax.penalty`, and one plain gradient step of
   `sdr_flax.spectral_independence`), on an undilated conv and a stride-2
   transposed conv (with `include_aliases=True` and `False`), against the
   definition

   G[i, j] = <|k̂_ij|² (S_i / <S_i> - 1)>,  penalty = Σ G²,

   with <·> the mean over the frequencies of the grid the kernel acts on (the
   zero one excluded unless `include_dc`; on the transposed conv's dilated
   grid, the three non-zero aliases of zero, (H, 0), (0, W) and (H, W) for
   H×W maps, excluded unless `include_aliases`), S_i the channel's mean power
   spectrum on that grid (the maps dilated by the stride, zeros inserted, for
   a transposed conv) and k̂ the FFT of the kernel zero-padded to the grid.
2. Kernels in other layouts: in test_penalty_layouts.py.
3. The scale-free (Gauss–Newton) step is capped at half each pair's norm.
"""

import itertools
from typing import NamedTuple

import jax
import numpy as np
import pytest
from helpers import (
    NHWC,
    dilate,
    draw_kernel,
    draw_maps,
    nonzero_mean,
    penalty_update,
    zero_aliases,
)
from helpers import sdr as sdr_ref
from jax import lax

import sdr
import sdr_flax

MAX_RELATIVE_STEP = 0.5  # sdr_flax._transform._MAX_RELATIVE_STEP


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax's own helpers mix Python scalars with int32 counts.
    with jax.numpy_dtype_promotion("standard"):
        yield


# --------------------------------------------------------------------------
# The reference, float64, one pair at a time
# --------------------------------------------------------------------------


def on_grid(maps, stride):
    """`maps` (n, H, W, c) placed at the multiples of `stride` on the grid
    stride·(H, W): a transposed conv's kernel acts on this."""
    maps = np.asarray(maps, np.float64)
    if stride == 1:
        return maps
    big = dilate(maps, (stride, stride), (1, 2))
    return np.pad(big, [(0, 0), (0, stride - 1), (0, stride - 1), (0, 0)])


def reference(
    maps, kernel, *, stride=1, groups=1, include_dc=False, include_aliases=True
):
    """`(G, dG)`: the pair gaps `(c_in // groups, c_out)` and, in kernel
    layout, the gradient of each G[i, j] with respect to its own pair k_ij.
    Full FFTs of the explicitly dilated maps; the averaged frequencies are a
    mask on the dilated grid."""
    big = on_grid(maps, stride)
    grid = big.shape[1:-1]
    n_grid = np.prod(grid)
    spectra = np.mean(np.abs(np.fft.fft2(big, axes=(1, 2))) ** 2, axis=0)
    kernel = np.asarray(kernel, np.float64)
    cg, c_out = kernel.shape[-2:]
    cog = c_out // groups
    khat = np.fft.fft2(kernel, s=grid, axes=(0, 1))
    averaged = np.ones(grid)  # the frequencies <·> averages over
    if not include_aliases:
        averaged[zero_aliases(grid, (stride, stride))] = 0.0
    averaged[0, 0] = float(include_dc)

    def mean(p):
        return np.sum(averaged * p) / np.sum(averaged)

    gaps = np.zeros((cg, c_out))
    grads = np.zeros_like(kernel)
    for i in range(cg):
        for j in range(c_out):
            s = spectra[..., (j // cog) * cg + i]
            k2 = np.abs(khat[..., i, j]) ** 2
            relative = s / mean(s) - 1.0
            gaps[i, j] = mean(k2 * relative)
            # Σ_ν w(ν)|k̂(ν)|² = kᵀAk has gradient 2·N·Re ifft(w k̂) on the taps.
            w = averaged * relative / averaged.sum()
            full = 2.0 * n_grid * np.fft.ifft2(w * khat[..., i, j]).real
            grads[..., i, j] = full[: kernel.shape[0], : kernel.shape[1]]
    return gaps, grads


def penalty_gradient(gaps, grads):
    """∇_k Σ G²: each pair's G depends on its own slice of the kernel only."""
    return 2.0 * gaps * grads


def gauss_newton_step(kernel, gaps, grads, rate):
    """The capped scale-free step on each pair: the kernel's change."""
    kernel = np.asarray(kernel, np.float64)
    grad_sq = np.sum(grads**2, axis=(0, 1))
    step = rate * gaps / grad_sq * grads
    norm = np.sqrt(np.sum(step**2, axis=(0, 1)))
    cap = MAX_RELATIVE_STEP * np.sqrt(np.sum(kernel**2, axis=(0, 1)))
    return -np.minimum(1.0, cap / norm) * step


def assert_close(actual, expected, rtol=1e-4):
    """Equal up to `rtol` of the largest |expected| (float32 against float64)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected)
    scale = float(np.max(np.abs(expected)))
    assert scale > 0, "the expected value is zero"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


# --------------------------------------------------------------------------
# Data and layers
# --------------------------------------------------------------------------


# name: (maps shape (n, H, W, c_in), kernel shape (kh, kw, c_in, c_out), stride)
LAYERS = {
    "conv": ((3, 6, 5, 3), (3, 2, 3, 2), 1),
    "transpose2": ((3, 4, 3, 3), (3, 2, 3, 2), 2),
}


def layer_fn(name):
    """The layer as raw `lax` code in NHWC/HWIO, `fn(params, x)`."""
    stride = LAYERS[name][2]
    if stride == 1:
        return lambda p, x: lax.conv_general_dilated(
            x, p["w"], (1, 1), "SAME", dimension_numbers=NHWC
        )
    return lambda p, x: lax.conv_transpose(
        x, p["w"], (stride, stride), "SAME", dimension_numbers=NHWC
    )


def layer_data(name, seed):
    maps_shape, kernel_shape, stride = LAYERS[name]
    return draw_maps(seed, maps_shape), draw_kernel(seed, kernel_shape), stride


SEEDS = [0, 1]
DC = pytest.mark.parametrize("include_dc", [False, True], ids=["no_dc", "dc"])
LAYER = pytest.mark.parametrize("layer", list(LAYERS))
SEED = pytest.mark.parametrize("seed", SEEDS)


class Case(NamedTuple):
    """One layer's data and its float64 reference gaps and gradients."""

    layer: str
    maps: np.ndarray
    kernel: np.ndarray
    stride: int
    include_dc: bool
    gaps: np.ndarray
    grads: np.ndarray
    include_aliases: bool = True


# Every layer × seed × zero-frequency convention, and the transposed conv with
# the aliases of zero excluded too (on the undilated conv there are none).
CASES = [(*p, True) for p in itertools.product(LAYERS, SEEDS, (False, True))] + [
    ("transpose2", seed, dc, False) for seed in SEEDS for dc in (False, True)
]


@pytest.fixture(
    params=CASES,
    ids=lambda p: (
        f"{p[0]}-{p[1]}-{'dc' if p[2] else 'no_dc'}" + ("" if p[3] else "-no_aliases")
    ),
)
def case(request) -> Case:
    """Every layer × seed × convention of the zero frequency and its aliases."""
    layer, seed, include_dc, include_aliases = request.param
    maps, kernel, stride = layer_data(layer, seed)
    gaps, grads = reference(
        maps,
        kernel,
        stride=stride,
        include_dc=include_dc,
        include_aliases=include_aliases,
    )
    return Case(layer, maps, kernel, stride, include_dc, gaps, grads, include_aliases)


# --------------------------------------------------------------------------
# The reference itself
# --------------------------------------------------------------------------


@DC
def test_reference_gap_is_energy_times_sdr_minus_one(include_dc):
    maps, kernel, stride = layer_data("transpose2", 0)
    gaps, _ = reference(maps, kernel, stride=stride, include_dc=include_dc)
    big = on_grid(maps, stride)[..., 0]
    padded = np.zeros(big.shape[1:])
    padded[:3, :2] = kernel[..., 0, 1]
    energy = nonzero_mean(np.abs(np.fft.fft2(padded)) ** 2, include_dc)
    rho = sdr_ref(big, kernel[..., 0, 1], include_dc=include_dc)
    np.testing.assert_allclose(gaps[0, 1], energy * (rho - 1.0), rtol=1e-10)


@DC
def test_reference_gradient_matches_finite_differences(include_dc):
    maps, kernel, stride = layer_data("transpose2", 1)
    kernel = kernel.astype(np.float64)
    _, grads = reference(maps, kernel, stride=stride, include_dc=include_dc)
    eps = 1e-6
    for index in [(0, 0, 0, 0), (2, 1, 1, 0), (1, 0, 2, 1)]:
        up, down = kernel.copy(), kernel.copy()
        up[index] += eps
        down[index] -= eps
        g_up, _ = reference(maps, up, stride=stride, include_dc=include_dc)
        g_down, _ = reference(maps, down, stride=stride, include_dc=include_dc)
        i, j = index[-2:]
        numeric = (g_up[i, j] - g_down[i, j]) / (2 * eps)
        np.testing.assert_allclose(grads[index], numeric, rtol=1e-6, atol=1e-9)


@SEED
@LAYER
def test_include_dc_changes_the_reference(layer, seed):
    """The data make the flag matter far beyond the tolerances: a path that
    ignores it, or miscounts the zero frequency, cannot pass."""
    maps, kernel, stride = layer_data(layer, seed)
    g_dc, d_dc = reference(maps, kernel, stride=stride, include_dc=True)
    g_no, d_no = reference(maps, kernel, stride=stride, include_dc=False)
    assert np.max(np.abs(g_dc - g_no)) > 0.02 * np.max(np.abs(g_dc))
    p_dc, p_no = np.sum(g_dc**2), np.sum(g_no**2)
    assert abs(p_dc - p_no) > 1e-2 * p_dc
    step_dc, step_no = penalty_gradient(g_dc, d_dc), penalty_gradient(g_no, d_no)
    assert np.max(np.abs(step_dc - step_no)) > 0.1 * np.max(np.abs(step_dc))


@SEED
@DC
def test_include_aliases_changes_the_reference(include_dc, seed):
    """Leaving the aliases of zero out moves the gaps, the penalty and its
    gradient far beyond the tolerances on the transposed conv."""
    maps, kernel, stride = layer_data("transpose2", seed)
    kwargs = {"stride": stride, "include_dc": include_dc}
    g_in, d_in = reference(maps, kernel, **kwargs)
    g_out, d_out = reference(maps, kernel, **kwargs, include_aliases=False)
    assert np.max(np.abs(g_in - g_out)) > 0.02 * np.max(np.abs(g_in))
    p_in, p_out = np.sum(g_in**2), np.sum(g_out**2)
    assert abs(p_in - p_out) > 1e-2 * p_in
    step_in, step_out = penalty_gradient(g_in, d_in), penalty_gradient(g_out, d_out)
    assert np.max(np.abs(step_in - step_out)) > 0.1 * np.max(np.abs(step_in))


# --------------------------------------------------------------------------
# 1. Every entry point, both include_dc values (and include_aliases)
# --------------------------------------------------------------------------


def test_conv_pair_gaps_full_spectra(case):
    gaps = sdr.conv_pair_gaps(
        sdr.channel_spectra(case.maps),
        case.kernel,
        strides=case.stride,
        transpose=case.stride > 1,
        include_dc=case.include_dc,
        include_aliases=case.include_aliases,
    )
    assert_close(gaps, case.gaps)


def test_conv_pair_gaps_half_spectra(case):
    layer = sdr.ConvGeometry.of_layer(strides=case.stride, transpose=case.stride > 1)
    gaps = sdr.conv_pair_gaps(
        sdr.channel_spectra(case.maps, half=True),
        case.kernel,
        geometry=layer,
        grid=case.maps.shape[1:-1],
        include_dc=case.include_dc,
        include_aliases=case.include_aliases,
    )
    assert_close(gaps, case.gaps)


@pytest.mark.parametrize("half", [False, True], ids=["full", "half"])
def test_conv_penalty(case, half):
    value = sdr.conv_penalty(
        sdr.channel_spectra(case.maps, half=half),
        case.kernel,
        strides=case.stride,
        transpose=case.stride > 1,
        grid=case.maps.shape[1:-1] if half else None,
        include_dc=case.include_dc,
        include_aliases=case.include_aliases,
    )
    np.testing.assert_allclose(float(value), np.sum(case.gaps**2), rtol=1e-4)


def test_conv_pair_gaps_grouped():
    maps = draw_maps(3, (3, 6, 5, 4))
    kernel = draw_kernel(3, (3, 2, 2, 4))
    for include_dc in (False, True):
        expected, _ = reference(maps, kernel, groups=2, include_dc=include_dc)
        gaps = sdr.conv_pair_gaps(
            sdr.channel_spectra(maps, half=True),
            kernel,
            feature_group_count=2,
            grid=maps.shape[1:-1],
            include_dc=include_dc,
        )
        assert_close(gaps, expected)


def test_sdr_flax_penalty_of_captured_taps(case):
    maps, kernel, include_dc = case.maps, case.kernel, case.include_dc
    _, (tap,) = sdr.capture_convs(layer_fn(case.layer), {"w": kernel}, maps)
    np.testing.assert_array_equal(tap.kernel, kernel)
    np.testing.assert_array_equal(tap.maps, maps)
    value = sdr_flax.penalty(
        [tap], include_dc=include_dc, include_aliases=case.include_aliases
    )
    np.testing.assert_allclose(float(value), np.sum(case.gaps**2), rtol=1e-4)


@pytest.mark.parametrize("scale_free", [False, True], ids=["plain", "scale_free"])
def test_step_of_the_transform(case, scale_free):
    """The plain gradient step (rate 0.3) and the capped Gauss–Newton step
    (rate 0.5), each against its float64 reference."""
    rate = 0.5 if scale_free else 0.3
    if scale_free:
        expected = gauss_newton_step(case.kernel, case.gaps, case.grads, rate)
    else:
        expected = -rate * penalty_gradient(case.gaps, case.grads)
    update = penalty_update(
        {"w": case.kernel},
        case.maps,
        fn=layer_fn(case.layer),
        learning_rate=rate,
        include_dc=case.include_dc,
        scale_free=scale_free,
        include_aliases=case.include_aliases,
    )["w"]
    assert_close(update, expected)


@pytest.mark.parametrize("scale_free", [False, True], ids=["plain", "scale_free"])
@LAYER
def test_transform_include_dc_changes_the_update(layer, scale_free):
    maps, kernel, _ = layer_data(layer, 0)
    update = {
        dc: np.asarray(
            penalty_update(
                {"w": kernel},
                maps,
                fn=layer_fn(layer),
                learning_rate=0.3 if not scale_free else 0.5,
                include_dc=dc,
                scale_free=scale_free,
            )["w"]
        )
        for dc in (False, True)
    }
    difference = np.max(np.abs(update[True] - update[False]))
    assert difference > 0.05 * np.max(np.abs(update[True])), difference


# --------------------------------------------------------------------------
# 3. The scale-free step is capped at half each pair's norm
# --------------------------------------------------------------------------


def pair_norms(a):
    return np.sqrt(np.sum(np.asarray(a, np.float64) ** 2, axis=(0, 1)))


@DC
@LAYER
@pytest.mark.parametrize("rate", [3.0, 50.0])
def test_scale_free_step_is_capped_at_half_each_pairs_norm(layer, include_dc, rate):
    maps, kernel, stride = layer_data(layer, 0)
    gaps, grads = reference(maps, kernel, stride=stride, include_dc=include_dc)
    # The uncapped Gauss–Newton step: rate·|g|/|∇g| per pair (rate ≤ 1 keeps
    # it within half the norm, as g = kᵀAk: |g|/|∇g| ≤ |k|/2).
    uncapped = rate * np.abs(gaps) / pair_norms(grads)
    relative = uncapped / pair_norms(kernel)
    assert np.any(relative > 1.2 * MAX_RELATIVE_STEP), relative
    update = penalty_update(
        {"w": kernel},
        maps,
        fn=layer_fn(layer),
        learning_rate=rate,
        include_dc=include_dc,
        scale_free=True,
    )["w"]
    step = pair_norms(update) / pair_norms(kernel)
    assert np.all(step <= MAX_RELATIVE_STEP * (1 + 1e-6)), step
    capped = relative > MAX_RELATIVE_STEP
    if rate < 10:  # some pairs under the cap too
        assert np.any(relative < 0.9 * MAX_RELATIVE_STEP), relative
    np.testing.assert_allclose(step[capped], MAX_RELATIVE_STEP, rtol=1e-4)
    # The pairs under the cap take their full step.
    np.testing.assert_allclose(step[~capped], relative[~capped], rtol=1e-4)
    assert_close(update, gauss_newton_step(kernel, gaps, grads, rate))
