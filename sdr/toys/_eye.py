r"""Example 1, the eye generator: its true kernels and their SDR in closed form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import jax.numpy as jnp
import numpy as np

from sdr import _checks
from sdr.toys._grid import INT, check_grid, pad

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float

EYE_1D: np.ndarray = np.array([0.2, 1.0, 1.5, 1.0, 0.2], np.float32)
"""The default 1-D eye of `eye_generator`, δ = 5: the eye of the closed-form
example in the theory page (docs/theory.md, "The zero frequency")."""


def _default_eye_2d() -> np.ndarray:
    rows, cols = np.mgrid[-4:5, -4:5].astype(np.float64)
    white = np.abs(rows) <= 2.6 * (1 - (cols / 4.6) ** 2)  # the almond
    iris = rows**2 + cols**2 <= 1.6**2
    eye = np.where(white, 1.0, 0.0) - 0.65 * iris
    eye[4, 4] = 0.0  # the pupil
    return eye.astype(np.float32)


EYE_2D: np.ndarray = _default_eye_2d()
"""The default 2-D eye of `eye_generator`: an almond (1) with a darker iris
(0.35) and a black pupil (0), 9 pixels wide and 5 high in a 9×9 square
(δ = 9)."""


class EyeGenerator(NamedTuple):
    """The true kernels of Example 1 on a grid.

    Attributes:
      k1: the cause kernel, on the whole grid: 1 at the origin and at
        `distance` along the last (horizontal) axis, 0 elsewhere.
      k2: the eye zero-padded at the origin to the grid.
      eye: the eye itself, shape `(δ,)` or `(δ, δ)`.
      distance: the horizontal distance between the eyes, in pixels.
    """

    k1: Float[Array, "*grid"]
    k2: Float[Array, "*grid"]
    eye: Float[Array, "*delta"]
    distance: int


def eye_generator(
    grid: int | Sequence[int],
    distance: int,
    *,
    eye: Float[ArrayLike, "*delta"] | None = None,
) -> EyeGenerator:
    r"""The eye generator of Example 1: Model 1 putting two eyes side by side.

    $k_2$ is the eye shape, non-zero inside a $\delta\times\delta$ square at
    the origin; $k_1$ has two unit pixels, at the origin and `distance`
    pixels to the right (last axis), so $k_2 \circledast k_1 \circledast Z$
    draws two eyes `distance` apart wherever the Dirac $Z$ is. Stretching
    $k_1$ by $g \in \mathcal{S}_d$ moves the second eye to
    $g^{-1}\cdot$`distance` mod d and keeps the eyes' shape (Fig. 2, top).

    The eyes do not overlap (on the circle) iff
    $\delta \le$ `distance` $\le d - \delta$; then the SDR with the zero
    frequency included is exactly 1 (see `eye_generator_sdr`).

    Args:
      grid: `d` (1-D) or `(d', d)` (2-D), prime sizes.
      distance: the horizontal eye distance, in `1 … d − 1`.
      eye: the eye, 1-D `(δ,)` or square 2-D `(δ, δ)` with `δ < d` (and
        `δ ≤ d'`); default `EYE_1D` or `EYE_2D` by the grid's rank.

    Returns:
      An `EyeGenerator` `(k1, k2, eye, distance)`, float32.

    Raises:
      TypeError: if `eye` is not floating.
      ValueError: for a non-prime grid, a distance outside `1 … d − 1`, or
        an eye that is not square, of the wrong rank, or not smaller than d.

    References:
      Example 1 and Fig. 2 of Besserve et al., 2021.
    """
    grid = check_grid("grid", (grid,) if isinstance(grid, INT) else grid)
    d = grid[-1]
    if eye is None:
        eye = EYE_1D if len(grid) == 1 else EYE_2D
    eye = _checks.as_float("eye", eye)
    if eye.ndim != len(grid) or len(set(eye.shape)) != 1:
        raise ValueError(
            f"`eye` must be {'(δ,)' if len(grid) == 1 else 'square (δ, δ)'} for "
            f"the grid {grid}; got shape {eye.shape}."
        )
    if eye.shape[0] >= d or any(e > g for e, g in zip(eye.shape, grid, strict=True)):
        raise ValueError(
            f"The eye's square side δ = {eye.shape[0]} must be smaller than "
            f"d = {d} and fit the grid {grid}."
        )
    if not isinstance(distance, INT) or not 1 <= distance < d:
        raise ValueError(f"`distance` must be an int in 1 … {d - 1}; got {distance!r}.")
    distance = int(distance)
    k1 = np.zeros(grid, np.float32)
    k1[(0,) * len(grid)] = 1.0
    k1[(0,) * (len(grid) - 1) + (distance,)] = 1.0
    return EyeGenerator(jnp.asarray(k1), pad("eye", eye, grid), eye, distance)


def eye_generator_sdr(
    grid: int | Sequence[int],
    distance: int,
    *,
    eye: Float[ArrayLike, "*delta"] | None = None,
    include_dc: bool = False,
) -> float:
    r"""The SDR of the true eye generator, in closed form.

    For the cause $V = k_1$ (two unit Diracs `distance` apart, $Z$ a Dirac at
    the origin) and the mechanism $k_2$ (the eye) on a grid of $N$ points,
    $S_V(\nu) = 2 + 2\cos(2\pi\nu\cdot D)$, so with $E = \sum k^2$,
    $K_0 = (\sum k)^2$ and $r = \sum_m k[m]\,k[m + D]$ (the circular
    autocorrelation of the eye at the eye distance, 0 when the eyes do not
    overlap),

    $$\rho = \frac{(2NE + 2Nr - 4K_0)(N - 1)}{(2N - 4)(NE - K_0)}$$

    over the non-zero frequencies (for $r = 0$ and $N = d$ the closed form of
    the theory page, docs/theory.md, "The zero frequency": e.g. 0.902 for
    d = 31 and the default 1-D eye), and
    $\rho = 1 + r/E$ over all frequencies (exactly 1 without overlap).
    Computed in float64 with NumPy.

    Args:
      grid: as in `eye_generator`.
      distance: as in `eye_generator`.
      eye: as in `eye_generator`.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      The ratio $\rho(V, k_2)$ as a Python float.

    Raises:
      ValueError: as `eye_generator`.

    References:
      Prop. 4, its proof (App. A.3) and Example 1 of Besserve et al., 2021.
    """
    true = eye_generator(grid, distance, eye=eye)
    k = np.asarray(true.k2, np.float64)
    n = k.size
    energy, k0 = float(np.sum(k**2)), float(np.sum(k)) ** 2
    r = float(np.sum(k * np.roll(k, -distance, axis=-1)))
    if include_dc:
        return 1.0 + r / energy
    return (
        (2 * n * energy + 2 * n * r - 4 * k0)
        * (n - 1)
        / ((2 * n - 4) * (n * energy - k0))
    )
