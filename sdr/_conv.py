r"""Pair SDR matrices and penalties of convolution layers, in one batched call.

The route needs no FFT of any kernel. With $r_i$ the circular autocorrelation
of input channel $i$ (the inverse DFT of its spectrum $S_i$) and $R_i$ its
Toeplitz matrix at the kernel's tap lags (Wiener–Khinchin and Parseval),

$$\sum_\nu S_i(\nu)\,|\hat{k}_{ij}(\nu)|^2 = N\,k_{ij}^\top R_i\,k_{ij},$$

so the numerators of all pairs are one batched matmul over input channels;
$\sum_\nu |\hat{k}|^2 = N\sum k^2$ and $|\hat{k}(0)|^2 = (\sum k)^2$. The
zero-frequency part of each map is split off before the matmul (it is handled
in closed form), which keeps the float32 sums free of cancellation. A real
map's spectrum is even, so its half along the last axis (`rfftn`) suffices:
the autocorrelation is its real inverse transform (`irfftn`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from sdr import _checks
from sdr._geometry import ConvGeometry, KernelGrid, LayerKeywords, kernel_grid, resolve
from sdr._spectra import channel_spectra, half_shape

if TYPE_CHECKING:
    from typing import Unpack

    from jaxtyping import Array, ArrayLike, Float


# Full float32 products on every backend: JAX's default precision lets a GPU
# or TPU round the operands of a matrix product to TF32 or bfloat16.
_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def _pair_sums(
    spectra, kernel, geometry: KernelGrid, include_dc: bool, include_aliases: bool
):
    """Sums over the averaged frequencies of S·|k̂|², S and |k̂|², and their count.

    Returns arrays of shape `(c_in, c_out // groups)` (or broadcastable to it)
    and the number of averaged frequencies.
    """
    c = spectra.shape[0]
    g = geometry.groups
    index, mask = geometry.tables
    n_map = math.prod(geometry.map_grid)
    n_grid = math.prod(geometry.grid)
    n_alias = n_grid // n_map  # aliases of the zero frequency on a dilated grid
    exclude = 0 if include_dc else 1
    drop_aliases = n_alias > 1 and not include_aliases

    flat = spectra.reshape(c, -1)
    s0 = flat[:, :1]
    # Autocorrelation of the maps with their mean (zero-frequency bin) removed;
    # the mean's share is added back in closed form, which keeps the float32
    # sums free of cancellation on an undilated grid.
    centred = flat.at[:, 0].set(0.0).reshape(spectra.shape)
    axes = tuple(range(1, spectra.ndim))
    if geometry.half:  # an even spectrum's half: a real inverse transform
        r = jnp.fft.irfftn(centred, s=geometry.map_grid, axes=axes)
    else:
        r = jnp.fft.ifftn(centred, axes=axes).real
    r = r.reshape(c, -1)
    lagged = r[:, index]
    if n_alias > 1 and not drop_aliases:
        # On a dilated grid the mean also lands on non-zero frequencies (the
        # aliases of zero): keep its constant autocorrelation in the matrix.
        lagged = lagged + s0[:, :, None] / n_map
    toeplitz = lagged * mask[None]  # (c, P, P); mask: lags on the map's lattice

    # Channel-leading 3-D layout (c_in, P, c_out // groups): input channel i of
    # group g meets the output channels of that group only.
    p = index.shape[0]
    k = kernel.reshape(p, c // g, g, -1).transpose(2, 1, 0, 3).reshape(c, p, -1)
    quad = jnp.sum(k * _matmul(toeplitz, k), axis=1)  # (c, cog)
    ksum = jnp.sum(k, axis=1)
    ksq = jnp.sum(k * k, axis=1)

    dc = s0 * ksum**2  # S(0) |k̂(0)|²
    if drop_aliases:
        # The centred maps have no power on the zero frequency nor its aliases,
        # so `quad` sums over the other frequencies; the kernel's energy on the
        # n_alias aliases (zero included) is n_alias Σ_c (Σ_{taps of phase c} k)²
        # (Parseval on the phases of the taps modulo the dilation).
        phases = jnp.sum(k * _matmul(mask, k), axis=1)
        sk = n_grid * quad + dc * (1 - exclude)
        ss = n_grid * r[:, :1] + s0 * (1 - exclude)
        kk = n_grid * ksq - n_alias * phases + (1 - exclude) * ksum**2
        return sk, ss, kk, n_grid - n_alias + 1 - exclude
    sk = n_grid * quad + dc * (int(n_alias == 1) - exclude)
    ss = n_grid * r[:, :1] + s0 * (n_alias - exclude)
    kk = n_grid * ksq - exclude * ksum**2
    return sk, ss, kk, n_grid - exclude


# A channel has no power on the averaged frequencies when its power there is
# at most _NO_POWER ε² of its total power (ε the machine epsilon): the FFT's
# rounding leaves ~ε² of a constant map's power off the zero frequency. A
# pair's kernel has no energy there when at most _NO_ENERGY ε of its energy is
# (the zero frequency is subtracted, so the rounding is ~ε).
_NO_POWER = 1024.0
_NO_ENERGY = 16.0


def _powered(spectra, ss, geometry: KernelGrid):
    """Whether each input channel has power on the averaged frequencies, `(c, 1)`.

    `ss` is the channel's power summed over the averaged frequencies (from
    `_pair_sums`); it is compared with the channel's total power on the grid.
    """
    n_alias = math.prod(geometry.grid) // math.prod(geometry.map_grid)
    if geometry.half:
        # Each bin of the half but the zero and Nyquist frequencies of the last
        # axis stands for itself and its mirror image.
        w = geometry.map_grid[-1]
        weight = np.full(w // 2 + 1, 2.0)
        weight[0] = 1.0
        if w % 2 == 0:
            weight[-1] = 1.0
        spectra = spectra * jnp.asarray(weight, spectra.dtype).reshape(
            (1,) * (spectra.ndim - 1) + (-1,)
        )
    total = n_alias * jnp.sum(
        spectra.reshape(spectra.shape[0], -1), axis=1, keepdims=True
    )
    return ss > _NO_POWER * jnp.finfo(ss.dtype).eps ** 2 * total


def _to_kernel_layout(x, groups: int):
    """`(c_in, cog)` → `(c_in // groups, c_out)`, output channel j = group·cog + o."""
    c, cog = x.shape
    return (
        x.reshape(groups, c // groups, cog).transpose(1, 0, 2).reshape(-1, groups * cog)
    )


def _prepare(
    maps_or_spectra,
    kernel,
    *,
    spectra_given: bool,
    layer: ConvGeometry,
    grid: tuple[int, ...] | None = None,
):
    kernel = _checks.as_float("kernel", kernel)
    if spectra_given:
        spectra = jax.lax.stop_gradient(_checks.as_float("spectra", maps_or_spectra))
        if spectra.ndim < 2:
            raise ValueError(
                "`spectra` must have shape (c, *spatial) as from `channel_spectra`; "
                f"got shape {spectra.shape}."
            )
        spatial = spectra.shape[1:]
        if grid is None:
            _checks.check_grid("spectra", spatial)
            half = False
        else:
            if len(grid) != len(spatial):
                raise ValueError(
                    f"`grid` must have one entry per spatial axis of `spectra` "
                    f"(shape {spectra.shape}: {len(spatial)}); got grid={grid}."
                )
            _checks.check_grid("grid", grid)
            half = spatial == half_shape(grid)
            if not half and spatial != grid:
                raise ValueError(
                    f"`spectra` of shape {spectra.shape} are neither the full spectra "
                    f"(c, *grid) = {(spectra.shape[0], *grid)} nor the half ones "
                    f"(c, *grid[:-1], grid[-1] // 2 + 1) = "
                    f"{(spectra.shape[0], *half_shape(grid))} of grid={grid}."
                )
            spatial = grid
    else:
        spectra = channel_spectra(maps_or_spectra, half=True)
        spatial = maps_or_spectra.shape[1:-1]
        half = True
    geometry = kernel_grid(spatial, spectra.shape[0], kernel.shape, layer, half=half)
    return spectra, kernel, geometry


def _grid(grid) -> tuple[int, ...] | None:
    """`grid=` as a tuple of positive ints (a static argument), or None."""
    if grid is None:
        return None
    values = _checks.positive_ints("grid", grid)
    if isinstance(values, int):
        raise ValueError(
            "`grid` must be the spatial shape of the maps, a sequence of positive "
            f"ints; got {grid!r}."
        )
    return values


@functools.partial(jax.jit, static_argnames=("layer", "include_dc", "include_aliases"))
def _conv_sdr(
    maps, kernel, *, layer: ConvGeometry, include_dc: bool, include_aliases: bool
):
    spectra, kernel, geometry = _prepare(maps, kernel, spectra_given=False, layer=layer)
    sk, ss, kk, count = _pair_sums(
        spectra, kernel, geometry, include_dc, include_aliases
    )
    # A pair has an SDR only when its channel has power and its kernel has
    # energy on the averaged frequencies; else NaN (never inf or rounding noise).
    powered = _powered(spectra, ss, geometry)
    kk_all = math.prod(geometry.grid) * jnp.sum(
        kernel * kernel, axis=tuple(range(kernel.ndim - 2))
    )  # the kernel's energy over all frequencies, in kernel layout
    layout = functools.partial(_to_kernel_layout, groups=geometry.groups)
    kk = layout(jnp.broadcast_to(kk, sk.shape))
    defined = layout(jnp.broadcast_to(powered, sk.shape)) & (
        kk > _NO_ENERGY * jnp.finfo(kk.dtype).eps * kk_all
    )
    ratio = layout(sk / jnp.where(powered, ss, 1.0))
    return jnp.where(defined, ratio / jnp.where(defined, kk, 1.0) * count, jnp.nan)


def conv_sdr(
    maps: Float[ArrayLike, "n *spatial c_in"],
    kernel: Float[ArrayLike, "*k c_in_per_group c_out"],
    *,
    geometry: ConvGeometry | None = None,
    include_dc: bool = False,
    include_aliases: bool = True,
    **layer: Unpack[LayerKeywords],
) -> Float[Array, "c_in_per_group c_out"]:
    r"""Pair SDR matrix of a convolution layer.

    $$R[i, j] = \rho(V_i, k_{ij}),$$

    the Spectral Density Ratio (eq. 8) of the kernel from input channel $i$ to
    output channel $j$ on the input maps $V_i$, for all pairs in one batched
    computation.

    The grid is the one the kernel acts on (`ConvGeometry`): the input grid
    `spatial` for a plain or strided (downsampling) conv, so `strides`
    matters only with `transpose=True`; for a transposed conv, a conv on the
    input dilated by `strides` (`lhs_dilation` of `lax.conv_general_dilated`),
    the dilated grid `strides * spatial`, each map placed at the multiples of
    the stride. `kernel_dilation` dilates the kernel before it is zero-padded.
    Correlation or convolution, flipped kernels or not: $|\hat{k}|^2$ is the
    same. The function is jitted, with the geometry normalised before it
    reaches `jax.jit` (any sequence works for the per-axis values).

    Args:
      maps: input maps, channels last, shape `(n, *spatial, c_in)`; any
        spatial rank ≥ 1 (2-D: `(n, H, W, c_in)`).
      kernel: the layer's kernel in Flax layout, shape
        `(*kernel_spatial, c_in // feature_group_count, c_out)`.
      geometry: the layer's geometry as one value (`ConvGeometry`, e.g.
        `sdr.ConvTap.geometry`), instead of the keywords in `**layer`.
      include_dc: average over all frequencies, the zero one included.
      include_aliases: on a dilated grid, keep in the averages the
        $\prod s - 1$ aliases of the zero frequency (where the maps' means
        land too); False leaves them out as `include_dc=False` leaves out
        zero. No effect on an undilated grid.
      **layer: the layer's geometry as the keywords of
        `ConvGeometry.of_layer`, instead of `geometry`: `strides` (an int or
        one per spatial axis), `transpose`, `kernel_dilation` (an int or one
        per spatial axis) and `feature_group_count` (only the pairs within a
        group are measured); 1 or False when not given.

    Returns:
      `R` of shape `(c_in // feature_group_count, c_out)`, laid out like the
      kernel's last two axes: `R[i, j]` pairs output channel `j` with input
      channel `(j // (c_out // groups)) * (c_in // groups) + i`. For ungrouped
      convs, `(c_in, c_out)`.

      A pair has no SDR, and is NaN (never inf), when its input channel has
      no power on the averaged frequencies: an all-zero (dead) channel, or,
      without `include_dc` on an undilated grid, a constant one (all its
      power is at frequency 0; also on a dilated grid with
      `include_aliases=False`). Numerically: at most $2^{10}\varepsilon^2$
      of the channel's total power ($\varepsilon$ the machine epsilon), the
      FFT's rounding of a constant map. Likewise a pair whose kernel has no
      energy there (e.g. an all-zero kernel). `conv_pair_gaps` and
      `conv_penalty` count such pairs as 0; `sdr_flax.layer_stats` counts
      them as undefined.

    Raises:
      TypeError: if an input is not a floating-point array, `geometry` is
        not a `ConvGeometry`, or a keyword is unknown.
      ValueError: on ranks, channels, groups, strides or dilations that do
        not fit, a (dilated) kernel larger than the grid, or a geometry given
        both as `geometry=` and as keywords.

    References:
      Eq. (8) and Sec. 4 of Besserve et al., 2021, adapted to multi-channel
      layers (see the theory page).
    """
    layer = resolve(np.ndim(maps) - 2, geometry, layer)
    flags = {"include_dc": bool(include_dc), "include_aliases": bool(include_aliases)}
    return _conv_sdr(maps, kernel, layer=layer, **flags)


@functools.partial(
    jax.jit, static_argnames=("layer", "grid", "include_dc", "include_aliases")
)
def _conv_pair_gaps(spectra, kernel, *, layer, grid, include_dc, include_aliases):
    spectra, kernel, geometry = _prepare(
        spectra, kernel, spectra_given=True, layer=layer, grid=grid
    )
    return _gaps(spectra, kernel, geometry, include_dc, include_aliases)


def _gaps(
    spectra, kernel, geometry: KernelGrid, include_dc: bool, include_aliases: bool
):
    """The per-pair gaps <|k̂|² S>/<S> - <|k̂|²> whose squares eq. (13) sums.

    A gap equals <|k̂|²> (ρ - 1); zero for a channel with no power.
    """
    sk, ss, kk, count = _pair_sums(
        spectra, kernel, geometry, include_dc, include_aliases
    )
    positive = _powered(spectra, ss, geometry)
    gap = jnp.where(positive, sk / jnp.where(positive, ss, 1.0) - kk / count, 0.0)
    return _to_kernel_layout(jnp.broadcast_to(gap, sk.shape), geometry.groups)


def conv_pair_gaps(
    spectra: Float[ArrayLike, "c_in *spectral"],
    kernel: Float[ArrayLike, "*k c_in_per_group c_out"],
    *,
    geometry: ConvGeometry | None = None,
    grid: Sequence[int] | None = None,
    include_dc: bool = False,
    include_aliases: bool = True,
    **layer: Unpack[LayerKeywords],
) -> Float[Array, "c_in_per_group c_out"]:
    r"""The signed per-pair terms of `conv_penalty`, laid out like `conv_sdr`.

    $$G[i, j] = \Big\langle |\hat{k}_{ij}|^2
        \Big(\frac{S_i}{\langle S_i\rangle} - 1\Big)\Big\rangle
      = \langle |\hat{k}_{ij}|^2\rangle\,(\rho_{ij} - 1),$$

    so `conv_penalty` is `sum(G**2)`. Quadratic in the kernel; per-pair
    step rules (e.g. a Gauss–Newton step on each pair) need the terms apart.
    The spectra are held constant (stop-gradient). They are the full ones of
    `channel_spectra`, or, with `grid` given, the half ones of
    `channel_spectra(maps, half=True)` (cheaper: no expansion to the full
    grid, and a real inverse FFT); both give the same terms.

    Args:
      spectra: the input channels' spectra from `channel_spectra`, shape
        `(c_in, *spatial)`, or their halves `(c_in, *spatial[:-1],
        W // 2 + 1)` with `grid` (a batch's, or a moving average).
      kernel: the layer's kernel, as in `conv_sdr`.
      geometry: as in `conv_sdr`.
      grid: the spatial shape of the input maps, `spatial`; needed for half
        spectra (a half does not tell whether `W` is even or odd). With it,
        full spectra are accepted too.
      include_dc: average over all frequencies, the zero one included.
      include_aliases: keep the aliases of the zero frequency of a dilated
        grid in the averages, as in `conv_sdr`.
      **layer: as in `conv_sdr`.

    Returns:
      `G` of shape `(c_in // feature_group_count, c_out)`; 0 for the pairs of
      a channel with no power on the averaged frequencies (NaN in
      `conv_sdr`).

    Raises:
      TypeError: as `conv_sdr`.
      ValueError: as `conv_sdr`, or if `spectra` fit neither `grid` nor its
        half.
    """
    return _conv_pair_gaps(
        spectra,
        kernel,
        layer=resolve(np.ndim(spectra) - 1, geometry, layer),
        grid=_grid(grid),
        include_dc=bool(include_dc),
        include_aliases=bool(include_aliases),
    )


class PairGapOptions(LayerKeywords, total=False):
    """The keywords of `conv_pair_gaps`, which `conv_penalty` passes on."""

    geometry: ConvGeometry | None
    grid: Sequence[int] | None
    include_dc: bool
    include_aliases: bool


def conv_penalty(
    spectra: Float[ArrayLike, "c_in *spectral"],
    kernel: Float[ArrayLike, "*k c_in_per_group c_out"],
    **options: Unpack[PairGapOptions],
) -> Float[Array, ""]:
    r"""Spectral independence penalty of a conv layer, summed over its pairs.

    $$\sum_{i,j} L(k_{ij}; S_i), \quad
      L(k; S) = \Big\langle |\hat{k}|^2
        \Big(\frac{S}{\langle S\rangle} - 1\Big)\Big\rangle^2,$$

    the sum of the squares of `conv_pair_gaps`, with the spectra held
    constant (stop-gradient): the gradient reaches the kernel only (step
    sizes and the kernel's energy: see `spectral_independence_penalty`).
    Finite, with a finite gradient, for all-zero kernels or maps: a channel
    with no power on the averaged frequencies (whose pairs `conv_sdr` gives
    as NaN) contributes 0. Full or half spectra (with `grid`) give the same
    penalty.

    Args:
      spectra: the input channels' spectra, full or half, as in
        `conv_pair_gaps`.
      kernel: the layer's kernel, as in `conv_sdr`.
      **options: the keywords of `conv_pair_gaps`, all optional: the layer's
        geometry (`geometry`, or `strides`, `transpose`, `kernel_dilation`
        and `feature_group_count` as in `conv_sdr`), `grid` (the maps'
        spatial shape, needed for half spectra), `include_dc` (average
        over all frequencies, the zero one included) and `include_aliases`
        (keep the aliases of the zero frequency of a dilated grid, as in
        `conv_sdr`).

    Returns:
      The scalar penalty.

    Raises:
      TypeError: as `conv_sdr`.
      ValueError: as `conv_pair_gaps`.

    References:
      Eq. (13) of Besserve et al., 2021.
    """
    return jnp.sum(conv_pair_gaps(spectra, kernel, **options) ** 2)
