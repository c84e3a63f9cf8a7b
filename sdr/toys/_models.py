r"""Model 1 (the two-layer circular convnet), its Dirac latents, and Model 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from sdr import _checks
from sdr._spectra import circular_convolve
from sdr.toys._grid import check_grid, concrete, pad

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float


def model1(
    k1: Float[ArrayLike, "*k1"],
    k2: Float[ArrayLike, "*k2"],
    z: Float[ArrayLike, "n *grid"],
) -> Float[Array, "n *grid"]:
    r"""Model 1, the linear two-layer circular convnet.

    $$X = k_2 \circledast V, \qquad V = k_1 \circledast Z,$$

    $\circledast$ the circular convolution on the prime grid of `z`, the
    kernels zero-padded at the origin. The cause of the mechanism $k_2$ is
    $V$ (`sdr.circular_convolve(z, k1)`).

    Args:
      k1: the first kernel, no larger than the grid, of its rank.
      k2: the second kernel, likewise.
      z: `n` latent images, shape `(n, d)` or `(n, d', d)` (d, d' prime),
        e.g. from `sample_dirac`.

    Returns:
      The `n` images $X$, the shape of `z`.

    Raises:
      TypeError: for non-floating inputs.
      ValueError: for a grid that is not 1-D or 2-D with prime sizes, or a
        kernel of the wrong rank or larger than the grid.

    References:
      Model 1, eq. (3) of Besserve et al., 2021.
    """
    z = _checks.as_float("z", z)
    if z.ndim not in (2, 3):
        raise ValueError(
            f"`z` must have shape (n, d) or (n, d', d); got shape {z.shape}."
        )
    grid = check_grid("z", z.shape[1:])
    k1 = pad("k1", k1, grid)
    k2 = pad("k2", k2, grid)
    return circular_convolve(circular_convolve(z, k1), k2)


def sample_dirac(
    key: jax.Array, pi: Float[ArrayLike, "*grid"], n: int
) -> Float[Array, "n *grid"]:
    r"""`n` latent images $Z$ of Model 1: one pixel set to 1, at a random place.

    The pixel is at location $m$ with probability $\pi_m$, independently
    across samples.

    Args:
      key: a PRNG key.
      pi: the location probabilities on the grid, shape `(d,)` or `(d', d)`
        (d, d' prime), non-negative, summing to 1.
      n: the number of samples.

    Returns:
      float32 one-hot images of shape `(n, *pi.shape)`.

    Raises:
      TypeError: if `pi` is not floating.
      ValueError: for a bad grid, `n < 1`, or (when `pi` is concrete) a
        negative entry or a sum other than 1.

    References:
      Model 1 of Besserve et al., 2021.
    """
    pi = _checks.as_float("pi", pi)
    grid = check_grid("pi", pi.shape)
    n = _checks.positive_int("n", n)
    values = concrete(pi)
    if values is not None and (
        np.any(values < 0) or not np.isclose(values.sum(), 1.0, rtol=1e-4)
    ):
        raise ValueError(
            "`pi` must be non-negative and sum to 1; got min "
            f"{values.min():.3g} and sum {values.sum():.6g}."
        )
    flat = jnp.log(pi.reshape(-1))
    index = jax.random.categorical(key, flat, shape=(n,))
    return jax.nn.one_hot(index, flat.size, dtype=jnp.float32).reshape(n, *grid)


def model2(
    a: Float[ArrayLike, " m"], b: Float[ArrayLike, " m"], z: Float[ArrayLike, "n m"]
) -> Float[Array, "n m"]:
    r"""Model 2, the diagonal linear model $X = \mathrm{diag}(a)\,\mathrm{diag}(b)\,Z$.

    Its generic ratio under the trace contrast is `sdr.trace_ratio(a, b)`
    (Prop. 5). In the paper $m = d - 1$, $d$ prime, $a, b > 0$ and $Z$ has
    positive independent entries with $\mathbb{E} Z_k^2 = 1$; none of that is
    needed to compute $X$.

    Args:
      a: the diagonal of A, shape `(m,)`.
      b: the diagonal of B, shape `(m,)`.
      z: `n` latent vectors, shape `(n, m)`.

    Returns:
      $X = a \odot b \odot z$, shape `(n, m)`.

    Raises:
      TypeError: for non-floating inputs.
      ValueError: if the shapes do not match.

    References:
      Model 2, eq. (9) of Besserve et al., 2021.
    """
    a = _checks.as_float("a", a)
    b = _checks.as_float("b", b)
    z = _checks.as_float("z", z)
    if a.ndim != 1 or a.shape != b.shape or z.ndim != 2 or z.shape[1] != a.shape[0]:
        raise ValueError(
            "`a` and `b` must have shape (m,) and `z` shape (n, m); got "
            f"{a.shape}, {b.shape} and {z.shape}."
        )
    return (a * b)[None] * z
