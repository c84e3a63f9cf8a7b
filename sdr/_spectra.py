"""Power spectra of causes and kernels, and the non-zero-frequency mean."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from sdr import _checks

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float


def power(z: jax.Array) -> jax.Array:
    """Squared modulus of a complex array, with a finite gradient at zero."""
    return jnp.real(z) ** 2 + jnp.imag(z) ** 2


def cause_spectrum(x: Float[ArrayLike, "n *spatial"]) -> Float[Array, "*spatial"]:
    r"""Mean power spectrum of `n` samples of a cause.

    $$S_x(\nu) = \frac{1}{n}\sum_{i=1}^{n} |\hat{x}_i(\nu)|^2,$$

    the DFT taken over every axis but the first.

    Args:
      x: `n` samples on a grid of any rank ≥ 1, shape `(n, *spatial)`.

    Returns:
      The spectrum, shape `spatial`, float32 (float64 for float64 input).

    Raises:
      TypeError: if `x` is not a floating-point array.
      ValueError: if `x` has rank < 2 or a grid of fewer than two points.

    References:
      The expectation in eq. (8) of Besserve et al., 2021.
    """
    x = _checks.as_float("x", x)
    if x.ndim < 2:
        raise ValueError(
            f"`x` must have shape (n, *spatial) with at least one spatial axis; "
            f"got shape {x.shape}."
        )
    return channel_spectra(x[..., None])[0]


def channel_spectra(
    maps: Float[ArrayLike, "n *spatial c"],
    *,
    half: bool = False,
) -> Float[Array, "c *spatial"]:
    r"""Mean power spectrum of every channel of a batch of maps.

    $$S_i(\nu) = \frac{1}{n}\sum_n |\hat{V}_{n,i}(\nu)|^2,$$

    the DFT over the spatial axes, channel axis moved to the front.

    The DFT is computed as products with the DFT matrix of each spatial axis
    (at full float32 precision), not as an FFT: under `jax.jit`, maps sharded
    over the batch or the channels then stay sharded (each device transforms
    its own maps and the mean over the batch is a sum across devices), where
    XLA would gather a sharded FFT's whole operand onto every device. The
    spectra equal an FFT's to float32 rounding.

    A real map's power spectrum is even, $S(\nu) = S(-\nu)$, so its half
    along the last spatial axis (the frequencies of `jnp.fft.rfftn`) holds
    all of it. `half=True` returns that half, of shape
    `(c, *spatial[:-1], W // 2 + 1)` for a last spatial axis of length `W`:
    about half the memory, and no expansion to the full grid. `conv_penalty`
    and `conv_pair_gaps` take it with `grid=spatial` (the half does not tell
    whether `W` is even or odd).

    Args:
      maps: channels-last maps, shape `(n, *spatial, c)`, spatial rank ≥ 1.
      half: return the half spectrum (see above) instead of the full one.

    Returns:
      The spectra, shape `(c, *spatial)`, or `(c, *spatial[:-1], W // 2 + 1)`
      with `half=True`.

    Raises:
      TypeError: if `maps` is not a floating-point array.
      ValueError: if `maps` has rank < 3 or a grid of fewer than two points.

    References:
      The cause spectrum of eq. (8) of Besserve et al., 2021, per channel.
    """
    maps = _checks.as_float("maps", maps)
    if maps.ndim < 3:
        raise ValueError(
            "`maps` must have shape (n, *spatial, c) with at least one spatial "
            f"axis; got shape {maps.shape}."
        )
    _checks.check_grid("maps", maps.shape[1:-1])
    grid = maps.shape[1:-1]
    spectra = jnp.moveaxis(jnp.mean(_half_power(maps), axis=0), -1, 0)
    if half:
        return spectra
    return spectra[(slice(None), *_hermitian_index(grid))]


# Einsum letters of the spatial axes (n, c, k, p and q name the others).
_SPATIAL = "abdefghijlmorstuvwxyz"


@functools.lru_cache(maxsize=64)
def _dft_matrices(length: int) -> tuple[np.ndarray, np.ndarray]:
    """The real matrices of the DFT along an axis of `length` points.

    A complex value is held as two real parts `(y0, y1)` standing for
    `y0 - i y1`. Returns `half` of shape `(length, 2, length // 2 + 1)`,
    the real DFT of a real signal (`rfft`), and `full` of shape
    `(length, 2, length, 2)`, the DFT of a complex one, both in float64.
    """
    x = np.arange(length)
    # Angles reduced modulo the period before scaling: exact integer phases.
    angle = 2 * np.pi * (np.outer(x, x) % length) / length
    cos, sin = np.cos(angle), np.sin(angle)
    half = np.stack([cos, sin], axis=1)[:, :, : length // 2 + 1]
    # (C - iS)(y0 - i y1) = (C y0 - S y1) - i (S y0 + C y1)
    full = np.stack([np.stack([cos, sin], axis=-1), np.stack([-sin, cos], axis=-1)], 1)
    return half, full


def _half_power(maps: jax.Array) -> jax.Array:
    """|DFT|² of every map over the spatial axes, the half (`rfftn`) spectrum.

    Channels-last maps `(n, *spatial, c)` give `(n, *spatial[:-1], W // 2 +
    1, c)`. The DFT is a product with the DFT matrix along each spatial axis,
    not an FFT: XLA partitions a matrix product along its other axes, so maps
    sharded over the batch or the channels stay sharded, while it replicates
    the whole operand of an FFT sharded on any axis. The matrices are exact
    to float32 rounding and the products run at full float32 precision
    (`Precision.HIGHEST`), so the spectra equal the FFT's to rounding.
    """
    grid = maps.shape[1:-1]
    axes = _SPATIAL[: len(grid)]
    rest = axes[:-1]
    dot = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)
    half, _ = _dft_matrices(grid[-1])
    z = dot(f"n{axes}c,{axes[-1]}pk->n{rest}pkc", maps, half.astype(maps.dtype))
    for i, (axis, length) in enumerate(zip(rest, grid[:-1], strict=True)):
        _, full = _dft_matrices(length)
        out = rest[:i] + axis.upper() + rest[i + 1 :]
        z = dot(
            f"n{rest}pkc,{axis}p{axis.upper()}q->n{out}qkc", z, full.astype(maps.dtype)
        )
    return jnp.sum(z * z, axis=len(grid))


def half_shape(grid: Sequence[int]) -> tuple[int, ...]:
    """The shape of the half (`rfftn`) spectrum of a real signal on `grid`."""
    return (*grid[:-1], grid[-1] // 2 + 1)


def _hermitian_index(grid: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Indices into a real signal's half spectrum (`rfftn`) giving the full one.

    A real signal's power spectrum is even: S(ν) = S(−ν mod grid).
    """
    nu = np.indices(grid)
    upper = nu[-1] > grid[-1] // 2
    mirrored = (-nu) % np.asarray(grid).reshape(-1, *([1] * len(grid)))
    return tuple(np.where(upper, m, n) for m, n in zip(mirrored, nu, strict=True))


def kernel_spectrum(
    kernel: Float[ArrayLike, "*k"], shape: Sequence[int]
) -> Float[Array, "*shape"]:
    r"""Power spectrum $|\hat{k}|^2$ of a kernel zero-padded at the origin.

    The kernel is placed in the top-left corner of a grid of `shape` (zeros
    elsewhere) before the DFT.

    Args:
      kernel: a kernel of the same rank as `shape`.
      shape: the spatial shape of the grid.

    Returns:
      $|\hat{k}(\nu)|^2$, shape `shape`.

    Raises:
      TypeError: if `kernel` is not a floating-point array.
      ValueError: if the ranks differ or the kernel is larger than the grid.
    """
    kernel = _checks.as_float("kernel", kernel)
    shape = tuple(int(s) for s in shape)
    if kernel.ndim != len(shape):
        raise ValueError(
            f"`kernel` must have the rank of the grid {shape} "
            f"(rank {len(shape)}); got shape {kernel.shape}."
        )
    _checks.check_kernel_fits(kernel.shape, shape, kernel.shape)
    kh = jnp.fft.fftn(kernel, s=shape, axes=tuple(range(kernel.ndim)))
    return power(kh)


def nonzero_mean(
    p: Float[ArrayLike, "*spatial"], *, include_dc: bool = False
) -> Float[Array, ""]:
    r"""Mean of a spectrum over the non-zero frequencies, $\langle p \rangle$.

    $$\langle p \rangle = \frac{\sum_\nu p(\nu) - p(0)}{N - 1},$$

    N the number of grid points and $p(0)$ the entry at index 0 of every axis.

    Args:
      p: a function on the frequency grid (every axis is a frequency axis).
      include_dc: average over all N frequencies instead, the zero one
        included.

    Returns:
      A scalar.

    Raises:
      ValueError: if the grid has fewer than two points.

    References:
      The bracket of eqs. (7)–(8) of Besserve et al., 2021.
    """
    p = _checks.as_float("p", p)
    _checks.check_grid("p", p.shape)
    total = jnp.sum(p)
    if include_dc:
        return total / p.size
    return (total - p[(0,) * p.ndim]) / (p.size - 1)


def circular_convolve(
    x: Float[ArrayLike, "*batch *spatial"], kernel: Float[ArrayLike, "*k"]
) -> Float[Array, "*batch *spatial"]:
    r"""Circular convolution $k \circledast x$ on the grid of `x`.

    The kernel is zero-padded at the origin to the grid formed by the last
    `kernel.ndim` axes of `x`; leading axes of `x` are batch axes.

    Args:
      x: signals, shape `(*batch, *spatial)`.
      kernel: a kernel of rank `len(spatial)`, no larger than the grid.

    Returns:
      $(k \circledast x)[m] = \sum_a k[a]\, x[(m - a) \bmod \mathrm{shape}]$,
      the shape of `x`.

    Raises:
      TypeError: for non-floating inputs.
      ValueError: if `x` has fewer axes than `kernel` or the kernel does not
        fit the grid.
    """
    x = _checks.as_float("x", x)
    kernel = _checks.as_float("kernel", kernel)
    if x.ndim < kernel.ndim:
        raise ValueError(
            f"`x` must have at least the rank of `kernel`; got shapes {x.shape} "
            f"and {kernel.shape}."
        )
    axes = tuple(range(x.ndim - kernel.ndim, x.ndim))
    grid = x.shape[x.ndim - kernel.ndim :]
    _checks.check_kernel_fits(kernel.shape, grid, kernel.shape)
    kh = jnp.fft.fftn(kernel, s=grid, axes=range(kernel.ndim))
    kh = kh.reshape((1,) * (x.ndim - kernel.ndim) + kh.shape)
    return jnp.fft.ifftn(jnp.fft.fftn(x, axes=axes) * kh, axes=axes).real.astype(
        jnp.result_type(x.dtype, kernel.dtype)
    )
