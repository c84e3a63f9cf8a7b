r"""Pair SDR matrices and penalties of convolution layers, in one batched call.

The route needs no FFT of any kernel. With $r_i$ the circular autocorrelation
of input channel $i$ (the inverse DFT of its spectrum $S_i$) and $R_i$ its
Toeplitz matrix at the kernel's tap lags (Wiener–Khinchin and Parseval),

$$\sum_\nu S_i(\nu)\,|\hat{k}_{ij}(\nu)|^2 = N\,k_{ij}^\top R_i\,k_{ij},$$

so the numerators of all pairs are one batched matmul over input channels;
$\sum_\nu |\hat{k}|^2 = N\sum k^2$ and $|\hat{k}(0)|^2 = (\sum k)^2$. The
zero-frequency part of each map is split off before the matmul (it is handled
in closed form), which keeps the float32 sums free of cancellation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from sdr import _checks
from sdr._spectra import channel_spectra

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Static description of how a conv kernel meets its cause's grid."""

    map_grid: tuple[int, ...]  # spatial shape of the (undilated) maps
    kernel_spatial: tuple[int, ...]
    lhs_dilation: tuple[int, ...]  # >1 for transposed convs
    kernel_dilation: tuple[int, ...]
    groups: int

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(
            h * s for h, s in zip(self.map_grid, self.lhs_dilation, strict=True)
        )

    @functools.cached_property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Gather indices `(P, P)` of the tap lags into the map grid, and the mask
        of lags that fall on the map's lattice (all of them when undilated)."""
        taps = np.stack(
            np.meshgrid(*[np.arange(k) for k in self.kernel_spatial], indexing="ij"),
            axis=-1,
        ).reshape(-1, len(self.kernel_spatial))
        pos = taps * np.asarray(self.kernel_dilation)
        s = np.asarray(self.lhs_dilation)
        lag = pos[:, None, :] - pos[None, :, :]
        mask = np.all(lag % s == 0, axis=-1)
        index = np.ravel_multi_index(
            tuple(np.moveaxis((lag // s) % np.asarray(self.map_grid), -1, 0)),
            self.map_grid,
        )
        return index, mask.astype(np.float32)


def _geometry(
    spatial: Sequence[int],
    channels: int,
    kernel_shape: Sequence[int],
    *,
    strides,
    transpose: bool,
    kernel_dilation,
    feature_group_count: int,
) -> _Geometry:
    rank = len(spatial)
    if len(kernel_shape) != rank + 2:
        raise ValueError(
            f"`kernel` must have shape (*kernel_spatial, c_in // groups, c_out) "
            f"with spatial rank {rank} like the maps; got kernel shape "
            f"{tuple(kernel_shape)} for {rank}-D maps."
        )
    strides = _checks.per_axis("strides", strides, rank)
    kernel_dilation = _checks.per_axis("kernel_dilation", kernel_dilation, rank)
    if not isinstance(feature_group_count, int) or feature_group_count < 1:
        raise ValueError(
            "`feature_group_count` must be a positive int; got "
            f"{feature_group_count!r}."
        )
    c_in_group, c_out = kernel_shape[-2], kernel_shape[-1]
    if c_in_group * feature_group_count != channels:
        raise ValueError(
            f"Channel mismatch: `maps` has {channels} channels but `kernel` of "
            f"shape {tuple(kernel_shape)} expects {c_in_group} per group × "
            f"{feature_group_count} group(s) = {c_in_group * feature_group_count}."
        )
    if c_out % feature_group_count:
        raise ValueError(
            f"`kernel` has {c_out} output channels, not divisible by "
            f"feature_group_count={feature_group_count}."
        )
    geometry = _Geometry(
        map_grid=tuple(spatial),
        kernel_spatial=tuple(kernel_shape[:-2]),
        lhs_dilation=strides if transpose else (1,) * rank,
        kernel_dilation=kernel_dilation,
        groups=feature_group_count,
    )
    extent = tuple(
        (k - 1) * d + 1
        for k, d in zip(geometry.kernel_spatial, kernel_dilation, strict=True)
    )
    _checks.check_kernel_fits(extent, geometry.grid, kernel_shape)
    return geometry


def _pair_sums(spectra, kernel, geometry: _Geometry, include_dc: bool):
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

    flat = spectra.reshape(c, -1)
    s0 = flat[:, :1]
    # Autocorrelation of the maps with their mean (zero-frequency bin) removed;
    # the mean's share is added back in closed form, which keeps the float32
    # sums free of cancellation on an undilated grid.
    centred = flat.at[:, 0].set(0.0).reshape(spectra.shape)
    axes = tuple(range(1, spectra.ndim))
    r = jnp.fft.ifftn(centred, axes=axes).real.reshape(c, -1)
    lagged = r[:, index]
    if n_alias > 1:
        # On a dilated grid the mean also lands on non-zero frequencies (the
        # aliases of zero): keep its constant autocorrelation in the matrix.
        lagged = lagged + s0[:, :, None] / n_map
    toeplitz = lagged * mask[None]  # (c, P, P); mask: lags on the map's lattice

    # Channel-leading 3-D layout (c_in, P, c_out // groups): input channel i of
    # group g meets the output channels of that group only.
    p = index.shape[0]
    k = kernel.reshape(p, c // g, g, -1).transpose(2, 1, 0, 3).reshape(c, p, -1)
    quad = jnp.sum(k * jnp.matmul(toeplitz, k), axis=1)  # (c, cog)
    ksum = jnp.sum(k, axis=1)
    ksq = jnp.sum(k * k, axis=1)

    dc = s0 * ksum**2  # S(0) |k̂(0)|²
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


def _powered(spectra, ss, geometry: _Geometry):
    """Whether each input channel has power on the averaged frequencies, `(c, 1)`.

    `ss` is the channel's power summed over the averaged frequencies (from
    `_pair_sums`); it is compared with the channel's total power on the grid.
    """
    n_alias = math.prod(geometry.grid) // math.prod(geometry.map_grid)
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


def _prepare(maps_or_spectra, kernel, *, spectra_given: bool, **geometry_kwargs):
    kernel = _checks.as_float("kernel", kernel)
    if spectra_given:
        spectra = jax.lax.stop_gradient(_checks.as_float("spectra", maps_or_spectra))
        if spectra.ndim < 2:
            raise ValueError(
                "`spectra` must have shape (c, *spatial) as from `channel_spectra`; "
                f"got shape {spectra.shape}."
            )
        _checks.check_grid("spectra", spectra.shape[1:])
        spatial = spectra.shape[1:]
    else:
        spectra = channel_spectra(maps_or_spectra)
        spatial = spectra.shape[1:]
    geometry = _geometry(spatial, spectra.shape[0], kernel.shape, **geometry_kwargs)
    return spectra, kernel, geometry


_STATIC = (
    "strides",
    "transpose",
    "kernel_dilation",
    "feature_group_count",
    "include_dc",
)


@functools.partial(jax.jit, static_argnames=_STATIC)
def conv_sdr(
    maps: Float[ArrayLike, "n *spatial c_in"],
    kernel: Float[ArrayLike, "*k c_in_per_group c_out"],
    *,
    strides: int | Sequence[int] = 1,
    transpose: bool = False,
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    include_dc: bool = False,
) -> Float[Array, "c_in_per_group c_out"]:
    r"""Pair SDR matrix of a convolution layer.

    $$R[i, j] = \rho(V_i, k_{ij}),$$

    the Spectral Density Ratio (eq. 8) of the kernel from input channel $i$ to
    output channel $j$ on the input maps $V_i$, for all pairs in one batched
    computation.

    The grid is the one the kernel acts on. A strided (downsampling) conv is
    measured on the input grid `spatial`. With `transpose=True` the layer is a
    transposed conv (a conv on the input dilated by `strides`, zeros inserted,
    i.e. `lhs_dilation` of `lax.conv_general_dilated`): it is measured on the
    dilated grid `strides * spatial`, each map placed at the multiples of the
    stride. `kernel_dilation` dilates the kernel before it is zero-padded.
    Correlation or convolution, flipped kernels or not: $|\hat{k}|^2$ is the
    same.

    Args:
      maps: input maps, channels last, shape `(n, *spatial, c_in)`; any
        spatial rank ≥ 1 (2-D: `(n, H, W, c_in)`).
      kernel: the layer's kernel in Flax layout, shape
        `(*kernel_spatial, c_in // feature_group_count, c_out)`.
      strides: the layer's stride, an int or one per spatial axis.
      transpose: whether the layer is a transposed conv (see above).
      kernel_dilation: an int or one per spatial axis.
      feature_group_count: grouped convs: only pairs within a group are
        measured.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      `R` of shape `(c_in // feature_group_count, c_out)`, laid out like the
      kernel's last two axes: `R[i, j]` pairs output channel `j` with input
      channel `(j // (c_out // groups)) * (c_in // groups) + i`. For ungrouped
      convs, `(c_in, c_out)`.

      A pair has no SDR, and is NaN (never inf), when its input channel has
      no power on the averaged frequencies: an all-zero (dead) channel, or,
      without `include_dc` on an undilated grid, a constant one (all its
      power is at frequency 0). Numerically: at most $2^{10}\varepsilon^2$
      of the channel's total power ($\varepsilon$ the machine epsilon),
      the FFT's rounding of a constant map. Likewise a pair whose kernel has
      no energy there (e.g. an all-zero kernel). `conv_pair_gaps` and
      `conv_penalty` count such pairs as 0; `sdr_flax.layer_stats` counts
      them as undefined.

    Raises:
      TypeError: if an input is not a floating-point array.
      ValueError: on ranks, channels, groups, strides or dilations that do
        not fit, or a (dilated) kernel larger than the grid.

    References:
      Eq. (8) and Sec. 4 of Besserve et al., 2021, adapted to multi-channel
      layers (see the theory page).
    """
    spectra, kernel, geometry = _prepare(
        maps,
        kernel,
        spectra_given=False,
        strides=strides,
        transpose=transpose,
        kernel_dilation=kernel_dilation,
        feature_group_count=feature_group_count,
    )
    sk, ss, kk, count = _pair_sums(spectra, kernel, geometry, include_dc)
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


@functools.partial(jax.jit, static_argnames=_STATIC)
def conv_penalty(
    spectra: Float[ArrayLike, "c_in *spatial"],
    kernel: Float[ArrayLike, "*k c_in_per_group c_out"],
    *,
    strides: int | Sequence[int] = 1,
    transpose: bool = False,
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    include_dc: bool = False,
) -> Float[Array, ""]:
    r"""Spectral independence penalty of a conv layer, summed over its pairs.

    $$\sum_{i,j} L(k_{ij}; S_i), \quad
      L(k; S) = \Big\langle |\hat{k}|^2
        \Big(\frac{S}{\langle S\rangle} - 1\Big)\Big\rangle^2,$$

    with the spectra held constant (stop-gradient): the gradient reaches the
    kernel only (step sizes and the kernel's energy: see
    `spectral_independence_penalty`). Finite, with a finite gradient, for
    all-zero kernels or maps: a channel with no power on the averaged
    frequencies (whose pairs `conv_sdr` gives as NaN) contributes 0.

    Args:
      spectra: the input channels' spectra from `channel_spectra`, shape
        `(c_in, *spatial)` (a batch's, or a moving average).
      kernel: the layer's kernel, as in `conv_sdr`.
      strides: as in `conv_sdr`.
      transpose: as in `conv_sdr`.
      kernel_dilation: as in `conv_sdr`.
      feature_group_count: as in `conv_sdr`.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      The scalar penalty.

    Raises:
      TypeError: as `conv_sdr`.
      ValueError: as `conv_sdr`.

    References:
      Eq. (13) of Besserve et al., 2021.
    """
    gaps = conv_pair_gaps(
        spectra,
        kernel,
        strides=strides,
        transpose=transpose,
        kernel_dilation=kernel_dilation,
        feature_group_count=feature_group_count,
        include_dc=include_dc,
    )
    return jnp.sum(gaps**2)


def _gaps(spectra, kernel, geometry: _Geometry, include_dc: bool):
    """The per-pair gaps <|k̂|² S>/<S> - <|k̂|²> whose squares eq. (13) sums.

    A gap equals <|k̂|²> (ρ - 1); zero for a channel with no power.
    """
    sk, ss, kk, count = _pair_sums(spectra, kernel, geometry, include_dc)
    positive = _powered(spectra, ss, geometry)
    gap = jnp.where(positive, sk / jnp.where(positive, ss, 1.0) - kk / count, 0.0)
    return _to_kernel_layout(jnp.broadcast_to(gap, sk.shape), geometry.groups)


@functools.partial(jax.jit, static_argnames=_STATIC)
def conv_pair_gaps(
    spectra: Float[ArrayLike, "c_in *spatial"],
    kernel: Float[ArrayLike, "*k c_in_per_group c_out"],
    *,
    strides: int | Sequence[int] = 1,
    transpose: bool = False,
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    include_dc: bool = False,
) -> Float[Array, "c_in_per_group c_out"]:
    r"""The signed per-pair terms of `conv_penalty`, laid out like `conv_sdr`.

    $$G[i, j] = \Big\langle |\hat{k}_{ij}|^2
        \Big(\frac{S_i}{\langle S_i\rangle} - 1\Big)\Big\rangle
      = \langle |\hat{k}_{ij}|^2\rangle\,(\rho_{ij} - 1),$$

    so `conv_penalty` is `sum(G**2)`. Quadratic in the kernel; per-pair
    step rules (e.g. a Gauss–Newton step on each pair) need the terms apart.

    Args:
      spectra: as in `conv_penalty`.
      kernel: as in `conv_penalty`.
      strides: as in `conv_sdr`.
      transpose: as in `conv_sdr`.
      kernel_dilation: as in `conv_sdr`.
      feature_group_count: as in `conv_sdr`.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      `G` of shape `(c_in // feature_group_count, c_out)`; 0 for the pairs of
      a channel with no power on the averaged frequencies (NaN in
      `conv_sdr`).

    Raises:
      TypeError: as `conv_sdr`.
      ValueError: as `conv_sdr`.
    """
    spectra, kernel, geometry = _prepare(
        spectra,
        kernel,
        spectra_given=True,
        strides=strides,
        transpose=transpose,
        kernel_dilation=kernel_dilation,
        feature_group_count=feature_group_count,
    )
    return _gaps(spectra, kernel, geometry, include_dc)
