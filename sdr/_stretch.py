"""The stretch group S_d, its action on signals and the generic ratio (eq. 6)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float, Int


def is_prime(d: int) -> bool:
    """Whether `d` is a prime number (the lengths the stretch group acts on).

    Args:
      d: an integer.

    Returns:
      True if `d` is prime.
    """
    d = int(d)
    if d < 2:
        return False
    return all(d % p for p in range(2, int(d**0.5) + 1))


def _check_prime(name: str, d: int) -> None:
    if not is_prime(d):
        raise ValueError(
            f"The stretch group S_d needs a prime d; {name} is {d}, which is not prime."
        )


def stretch_group(d: int) -> Int[Array, " d_minus_1"]:
    r"""The elements $1, \dots, d-1$ of the stretch group $\mathcal{S}_d$.

    The multiplicative group of integers modulo a prime `d`; its Haar measure
    is uniform over these elements.

    Args:
      d: a prime.

    Returns:
      int32 array of shape `(d - 1,)`.

    Raises:
      ValueError: if `d` is not prime.

    References:
      Sec. 2.4 and App. B.5 of Besserve et al., 2021.
    """
    _check_prime("d", d)
    return jnp.arange(1, d, dtype=jnp.int32)


def group_inverse(g: Int[ArrayLike, "*b"], d: int) -> Int[Array, "*b"]:
    r"""Inverse $g^{-1}$ of elements of $\mathcal{S}_d$: $g\,g^{-1} \equiv 1 \pmod d$.

    Works with traced `g` (a table lookup).

    Args:
      g: group elements (integers not divisible by `d`).
      d: a prime.

    Returns:
      The inverses in $1, \dots, d-1$, the shape of `g`.

    Raises:
      ValueError: if `d` is not prime.
      TypeError: if `g` is not an integer array.
    """
    _check_prime("d", d)
    g = _as_int("g", g)
    table = np.zeros(d, dtype=np.int32)
    table[1:] = [pow(int(e), -1, d) for e in range(1, d)]
    return jnp.asarray(table)[g % d]


def _as_int(name: str, g) -> jax.Array:
    g = jnp.asarray(g)
    if not jnp.issubdtype(g.dtype, jnp.integer):
        raise TypeError(
            f"`{name}` must hold integer group elements; got dtype {g.dtype} with "
            f"shape {g.shape}."
        )
    return g


def _concrete_int(g: jax.Array) -> int | None:
    try:
        return int(g)
    except (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerIntegerConversionError,
    ):
        return None


def _normalise_axes(name: str, axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    axes = tuple(axes)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(
                f"`axes` entry {ax} is out of range for `{name}` of rank {ndim}."
            )
        out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`axes` has repeated entries: {axes}.")
    return tuple(out)


def _permute(x, g, axes, inverse: bool):
    x = jnp.asarray(x)
    axes = _normalise_axes("x", axes, x.ndim)
    g = _as_int("g", g)
    if g.ndim != 0:
        raise ValueError(
            f"`g` must be a single group element (a scalar); got shape {g.shape}. "
            "Use jax.vmap over group elements."
        )
    for ax in axes:
        d = x.shape[ax]
        _check_prime(f"the length of axis {ax} of `x` (shape {x.shape})", d)
        concrete = _concrete_int(g)
        if concrete is not None and concrete % d == 0:
            raise ValueError(
                f"`g` = {concrete} is not an element of S_{d}: it is divisible by {d}."
            )
        factor = group_inverse(g, d) if inverse else g % d
        index = (factor * jnp.arange(d, dtype=jnp.int32)) % d
        x = jnp.take(x, index, axis=ax)
    return x


def stretch(
    x: ArrayLike, g: Int[ArrayLike, ""], *, axes: Sequence[int] = (-1,)
) -> Array:
    r"""The stretch action of $g \in \mathcal{S}_d$ on the named axes.

    $$(g \cdot x)[m] = x[(g\,m) \bmod d]$$

    on each axis in `axes` (of prime length d), the other axes untouched.
    Works with a traced `g`, e.g. under `jax.vmap` over group elements.

    Args:
      x: an array.
      g: a group element (scalar integer, not divisible by d).
      axes: the axes to stretch.

    Returns:
      $g \cdot x$, the shape and dtype of `x`.

    Raises:
      ValueError: if a stretched axis has a non-prime length, or `g` is a
        concrete multiple of it.
      TypeError: if `g` is not an integer.

    References:
      Sec. 2.4 of Besserve et al., 2021.
    """
    return _permute(x, g, axes, inverse=False)


def stretch_fourier(
    x_hat: ArrayLike, g: Int[ArrayLike, ""], *, axes: Sequence[int] = (-1,)
) -> Array:
    r"""The stretch action in Fourier space.

    $$\widehat{(g \cdot x)}[u] = \hat{x}[(g^{-1}\,u) \bmod d],$$

    so that `stretch_fourier(fft(x), g) == fft(stretch(x, g))`: stretching an
    axis by g rescales its frequency axis by $g^{-1}$.

    Args:
      x_hat: a DFT along `axes` (or any function of frequency, e.g. a power
        spectrum).
      g: a group element.
      axes: the frequency axes.

    Returns:
      The transformed array, the shape of `x_hat`.

    Raises:
      ValueError: as `stretch`.
      TypeError: as `stretch`.

    References:
      Sec. 2.4 and App. B.4 of Besserve et al., 2021.
    """
    return _permute(x_hat, g, axes, inverse=True)


def generic_ratio(
    contrast: Callable[[Any, Any], Float[Array, ""]],
    cause: Any,
    mechanism: Any,
    *,
    group: Int[ArrayLike, " g"],
    action: Callable[[Any, Any], Any] = stretch,
) -> Float[Array, ""]:
    r"""Generic ratio of a cause and a mechanism for a contrast and a group.

    $$\rho = \frac{\varphi(\text{cause}, \text{mech})}
                  {\mathbb{E}_{g \sim \mu_G}\,
                   \varphi(g \cdot \text{cause}, \text{mech})},$$

    the expectation being the mean over the elements of a finite group (its
    Haar measure), computed in one vectorised call (`jax.vmap`).

    Args:
      contrast: $\varphi$, `contrast(cause, mechanism) -> scalar`.
      cause: the cause (any pytree `action` accepts).
      mechanism: the mechanism (any pytree `contrast` accepts).
      group: the group elements, stacked along the first axis, e.g.
        `stretch_group(d)`.
      action: `action(cause, g) -> g · cause`; default `stretch` on the last
        axis.

    Returns:
      The scalar ratio; 1 means generic.

    Raises:
      ValueError: if `group` is empty.

    References:
      Eq. (6), Definition 2 of Besserve et al., 2021.
    """
    group = jnp.asarray(group)
    if group.ndim == 0 or group.shape[0] == 0:
        raise ValueError(
            f"`group` must stack at least one element along axis 0; got shape "
            f"{group.shape}."
        )
    transformed = jax.vmap(lambda g: contrast(action(cause, g), mechanism))(group)
    return contrast(cause, mechanism) / jnp.mean(transformed)
