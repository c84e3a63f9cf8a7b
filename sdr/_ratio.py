"""The Spectral Density Ratio (eq. 8), the power contrast (eq. 7), the trace
ratio (Prop. 5) and the spectral independence penalty (eq. 13)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from sdr import _checks
from sdr._spectra import cause_spectrum, kernel_spectrum, nonzero_mean

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float


@functools.partial(jax.jit, static_argnames=("of_spectra", "include_dc"))
def _of_cause_and_kernel(x, kernel, *, of_spectra, include_dc: bool):
    """`of_spectra(S, |k̂|², include_dc=...)` of a cause `x` and a kernel.

    The one jitted implementation of the statistics of a cause and a kernel
    (the SDR, the penalty): the inputs are checked, then their spectra taken.
    """
    x = _checks.as_float("x", x)
    kernel = _checks.as_float("kernel", kernel)
    if x.ndim < 2:
        raise ValueError(
            "`x` must have shape (n, *spatial) with at least one spatial axis; "
            f"got shape {x.shape}."
        )
    if kernel.ndim != x.ndim - 1:
        raise ValueError(
            f"`kernel` must have the rank of the spatial grid of `x` "
            f"(x has shape {x.shape}, so rank {x.ndim - 1}); got kernel shape "
            f"{kernel.shape}."
        )
    s, k2 = cause_spectrum(x), kernel_spectrum(kernel, x.shape[1:])
    return of_spectra(s, k2, include_dc=include_dc)


def _ratio_from_spectra(s, k2, *, include_dc: bool):
    """Eq. (8) from a cause spectrum and a kernel power spectrum."""
    mean = functools.partial(nonzero_mean, include_dc=include_dc)
    return mean(s * k2) / (mean(s) * mean(k2))


def spectral_density_ratio(
    x: Float[ArrayLike, "n *spatial"],
    kernel: Float[ArrayLike, "*k"],
    *,
    include_dc: bool = False,
) -> Float[Array, ""]:
    r"""Spectral Density Ratio (SDR) of a kernel on a cause.

    $$\rho(x, k) = \frac{\langle S_x\,|\hat{k}|^2\rangle}
                        {\langle S_x\rangle\,\langle|\hat{k}|^2\rangle},$$

    with $S_x$ the mean power spectrum of the samples (`cause_spectrum`),
    $\hat{k}$ the DFT of the kernel zero-padded at the origin to the grid, and
    $\langle\cdot\rangle$ the mean over non-zero frequencies
    (`nonzero_mean`). $\rho = 1$: the kernel is generic with respect to the
    cause (spectrally independent); $\rho > 1$: it amplifies the frequencies
    where the cause has power. Invariant to scaling either argument.

    Args:
      x: `n` samples of the cause, shape `(n, *spatial)`, any spatial rank ≥ 1.
      kernel: the mechanism, of rank `len(spatial)`, no larger than the grid.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      The scalar ratio, float32. NaN when the cause or the kernel has no
      power at the averaged frequencies (the ratio is then undefined).

    Raises:
      TypeError: if an input is not a floating-point array.
      ValueError: on a rank mismatch, a kernel larger than the grid or a grid
        of fewer than two points.

    References:
      Eq. (8) and Prop. 4 of Besserve et al., 2021.
    """
    return _of_cause_and_kernel(
        x, kernel, of_spectra=_ratio_from_spectra, include_dc=bool(include_dc)
    )


@functools.partial(jax.jit, static_argnames="include_dc")
def power_contrast(
    x: Float[ArrayLike, "n *spatial"], *, include_dc: bool = False
) -> Float[Array, ""]:
    r"""Power contrast: total power across non-constant frequencies.

    $$\mathcal{P}(x) = \langle S_x \rangle.$$

    Args:
      x: `n` samples, shape `(n, *spatial)`.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      The scalar contrast.

    Raises:
      TypeError: if `x` is not a floating-point array.
      ValueError: if `x` has rank < 2 or a grid of fewer than two points.

    References:
      Eq. (7) of Besserve et al., 2021.
    """
    return nonzero_mean(cause_spectrum(x), include_dc=include_dc)


@jax.jit
def trace_ratio(
    a: Float[ArrayLike, "*d"], b: Float[ArrayLike, "*d"]
) -> Float[Array, ""]:
    r"""Generic ratio of the diagonal Model 2 under the trace contrast.

    $$\rho'(a, b) = \frac{\langle a^2 b^2\rangle}
                         {\langle a^2\rangle\,\langle b^2\rangle},$$

    means over all entries (the diagonal coefficients; there is no zero
    frequency in Model 2).

    Args:
      a: diagonal of A.
      b: diagonal of B, the shape of `a`.

    Returns:
      The scalar ratio.

    Raises:
      TypeError: for non-floating inputs.
      ValueError: if the shapes differ or are empty.

    References:
      Prop. 5 of Besserve et al., 2021.
    """
    a = _checks.as_float("a", a)
    b = _checks.as_float("b", b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"`a` and `b` must have the same non-empty shape; got {a.shape} and "
            f"{b.shape}."
        )
    a2, b2 = a**2, b**2
    return jnp.mean(a2 * b2) / (jnp.mean(a2) * jnp.mean(b2))


def _penalty_from_spectra(s, k2, *, include_dc: bool):
    """Eq. (13) from a cause spectrum and a kernel power spectrum of one shape,
    `s` held constant (stop-gradient); a cause with no power gives 0."""
    s = jax.lax.stop_gradient(s)
    mean = functools.partial(nonzero_mean, include_dc=include_dc)
    ms = mean(s)
    positive = ms > 0
    weight = jnp.where(positive, s / jnp.where(positive, ms, 1.0) - 1.0, 0.0)
    return mean(k2 * weight) ** 2


def spectral_independence_penalty(
    x: Float[ArrayLike, "n *spatial"],
    kernel: Float[ArrayLike, "*k"],
    *,
    include_dc: bool = False,
) -> Float[Array, ""]:
    r"""Spectral independence penalty of a kernel on a cause.

    $$L(k; S) = \Big\langle |\hat{k}|^2
        \Big(\frac{S}{\langle S\rangle} - 1\Big)\Big\rangle^2
      = (\rho - 1)^2\,\langle|\hat{k}|^2\rangle^2,$$

    to be minimised over the kernel only: the cause spectrum $S$ of `x` is a
    constant (stop-gradient), so no gradient reaches `x`. Gradient descent on
    it drives $\rho \to 1$, but not at constant energy: $L$ is homogeneous of
    degree 4 in $k$, so a step of size $\eta$ removes about $8\eta L$ of
    $\sum k^2$ (in the cases measured, from $\rho$ ≈ 1.5–10 down to 1,
    between 6 % and 89 % of $\sum k^2$ remained). $\rho$ ignores scale, so
    the kernel may be rescaled afterwards. A step that was stable in every case tried is
    $\eta \le 1 / (\sum k^2 \max_\nu (S/\langle S\rangle - 1)^2)$. Value
    and gradient are finite for all-zero kernels and maps (a cause with no
    power gives 0).

    Args:
      x: `n` samples of the cause, shape `(n, *spatial)`.
      kernel: the kernel, of rank `len(spatial)`.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      The scalar penalty.

    Raises:
      TypeError: if an input is not a floating-point array.
      ValueError: as `spectral_density_ratio`.

    References:
      Eq. (13) of Besserve et al., 2021.
    """
    return _of_cause_and_kernel(
        x, kernel, of_spectra=_penalty_from_spectra, include_dc=bool(include_dc)
    )
