"""Validation of static (trace-time) properties of inputs."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def as_float(name: str, x) -> jax.Array:
    """Returns `x` as a real floating array computed in at least float32.

    float16 and bfloat16 are promoted to float32; float64 (with x64 enabled)
    stays float64.

    Raises:
      TypeError: if `x` is not a real floating-point array.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must be a real floating-point array; got dtype {x.dtype} "
            f"with shape {x.shape}."
        )
    return x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32)


def check_ndim(name: str, x: jax.Array, ndim: int, what: str) -> None:
    """Raises `ValueError` unless `x.ndim == ndim`."""
    if x.ndim != ndim:
        raise ValueError(
            f"`{name}` must have rank {ndim} ({what}); got shape {x.shape}."
        )


def check_grid(name: str, shape: Sequence[int]) -> None:
    """Raises `ValueError` unless the grid has more than one point."""
    if any(s < 1 for s in shape) or math.prod(shape) < 2:
        raise ValueError(
            f"The spatial grid of `{name}` must have at least two points and no "
            f"empty axis; got spatial shape {tuple(shape)}."
        )


def check_kernel_fits(
    kernel_extent: Sequence[int], grid: Sequence[int], kernel_shape: Sequence[int]
) -> None:
    """Raises `ValueError` if a (dilated) kernel is larger than the grid."""
    if any(k > g for k, g in zip(kernel_extent, grid, strict=True)):
        raise ValueError(
            f"`kernel` with spatial extent {tuple(kernel_extent)} (shape "
            f"{tuple(kernel_shape)}) is larger than the grid {tuple(grid)} it is "
            "measured on."
        )


def positive_int(name: str, value) -> int:
    """Returns `value` as an int, or raises `ValueError` unless it is a positive
    integer (a Python or NumPy int; not a bool)."""
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            pass
        else:
            if number >= 1:
                return number
    raise ValueError(f"`{name}` must be a positive int; got {value!r}.")


def positive_ints(name: str, value: int | Sequence[int]) -> int | tuple[int, ...]:
    """Normalises a positive int, or a sequence of them, to an int or a tuple.

    Raises:
      ValueError: unless `value` is a positive int or a sequence of them.
    """
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        try:
            return tuple(positive_int(name, v) for v in value)
        except ValueError:
            pass
    elif isinstance(value, np.ndarray) and value.ndim == 1:
        return positive_ints(name, value.tolist())
    else:
        try:
            return positive_int(name, value)
        except ValueError:
            pass
    raise ValueError(
        f"`{name}` must be a positive int or a sequence of positive ints (one per "
        f"spatial axis); got {value!r}."
    )


def per_axis(name: str, value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    """Expands an int or a sequence into one positive int per spatial axis."""
    try:
        values = positive_ints(name, value)
    except ValueError:
        values = ()
    if isinstance(values, int):
        values = (values,) * rank
    if len(values) != rank:
        raise ValueError(
            f"`{name}` must be a positive int or {rank} positive ints (one per "
            f"spatial axis); got {value!r}."
        )
    return values
