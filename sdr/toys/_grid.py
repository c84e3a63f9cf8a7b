"""Input checks of the toy models: prime grids, kernels padded to them."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sdr import _checks
from sdr._stretch import _check_prime, _normalise_axes

INT = (int, np.integer)
"""The types accepted as Python-level integers (sizes, distances, schedules)."""


def check_grid(name: str, grid: Sequence[int]) -> tuple[int, ...]:
    """A Model 1 grid: 1-D `(d,)` or 2-D `(d', d)`, prime sizes.

    Args:
      name: the argument the grid comes from, for the error messages.
      grid: the spatial shape.

    Returns:
      The grid as a tuple of ints.

    Raises:
      ValueError: for a grid that is not 1-D or 2-D, or a size that is not
        prime.
    """
    grid = tuple(int(s) for s in grid)
    if len(grid) not in (1, 2):
        raise ValueError(
            f"Model 1 lives on a 1-D grid (d,) or a 2-D grid (d', d); `{name}` "
            f"has spatial shape {grid}."
        )
    for axis, size in enumerate(grid):
        _check_prime(f"the length of axis {axis} of `{name}` (shape {grid})", size)
    return grid


def pad(name: str, kernel, grid: tuple[int, ...]) -> jax.Array:
    """Zero-pads a kernel at the origin (top-left corner) to `grid`.

    Args:
      name: the argument's name, for the error messages.
      kernel: the kernel, of the grid's rank and no larger than it.
      grid: the grid, from `check_grid`.

    Returns:
      The padded kernel, float32 (float64 kept).

    Raises:
      TypeError: for a non-floating kernel.
      ValueError: for a kernel of another rank or larger than the grid.
    """
    kernel = _checks.as_float(name, kernel)
    _checks.check_ndim(name, kernel, len(grid), f"the rank of the grid {grid}")
    if any(k > g for k, g in zip(kernel.shape, grid, strict=True)):
        raise ValueError(
            f"`{name}` of shape {kernel.shape} is larger than the grid {grid}."
        )
    return jnp.pad(
        kernel, [(0, g - k) for k, g in zip(kernel.shape, grid, strict=True)]
    )


def on_grid(name: str, kernel) -> jax.Array:
    """A kernel given on a whole Model 1 grid (any size ≤ grid is not enough).

    Args:
      name: the argument's name, for the error messages.
      kernel: the kernel; its shape is the grid.

    Returns:
      The kernel as a float array.

    Raises:
      TypeError: for a non-floating kernel.
      ValueError: as `check_grid`.
    """
    kernel = _checks.as_float(name, kernel)
    check_grid(name, kernel.shape)
    return kernel


def axis_index(name: str, axis: int, ndim: int) -> int:
    """`axis` of an array of rank `ndim`, made non-negative.

    Raises:
      ValueError: if `axis` is out of range.
    """
    return _normalise_axes(name, (axis,), ndim)[0]


def concrete(x) -> np.ndarray | None:
    """`x` as a NumPy array, or None when it is traced."""
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None
