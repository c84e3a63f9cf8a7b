r"""Model 1 (the two-layer circular convnet), its Dirac latents, its stretch
extrapolation (the images, their error, the balanced limit), and Model 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from sdr import _checks
from sdr._spectra import circular_convolve, power
from sdr._stretch import stretch, stretch_fourier, stretch_group
from sdr.toys._grid import axis_index, check_grid, concrete, on_grid, pad

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float, Int


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
    (Prop. 5). In the paper (Sec. 3.1) $m = d - 1$, $d$ prime, $a, b > 0$ and $Z$ has
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


def stretch_extrapolate(
    k1: Float[ArrayLike, "*grid"],
    k2: Float[ArrayLike, "*k2"],
    g: Int[ArrayLike, ""],
    *,
    axis: int = -1,
) -> Float[Array, "*grid"]:
    r"""The image of the extrapolated Model 1 $(g\cdot k_1, k_2)$ for $Z = \delta_0$.

    $$X_g = k_2 \circledast (g \cdot k_1), \qquad
      (g\cdot k_1)[m] = k_1[(g\,m) \bmod d]$$

    along `axis` (`sdr.stretch`). For $Z$ a Dirac elsewhere the image is this
    one shifted; the extrapolated distribution $\mathcal{D}_{(g\cdot f_1,
    f_2)}$ of eq. (5) is the law of those shifts. Works with a traced `g`
    (e.g. under `jax.vmap` over `sdr.stretch_group(d)`).

    Args:
      k1: the first kernel on the whole grid, shape `(d,)` or `(d', d)`,
        prime sizes.
      k2: the second kernel, no larger than the grid.
      g: a group element of $\mathcal{S}_d$, d the length of `axis`.
      axis: the stretched axis (default the last, horizontal one).

    Returns:
      The image, the shape of `k1`.

    Raises:
      TypeError: for non-floating kernels or a non-integer `g`.
      ValueError: for a bad grid or kernel, or a concrete `g` divisible by d.

    References:
      Eq. (5), Sec. 2.4 and Fig. 2 of Besserve et al., 2021.
    """
    k1 = on_grid("k1", k1)
    k2 = pad("k2", k2, k1.shape)
    axes = (axis_index("k1", axis, k1.ndim),)
    return circular_convolve(stretch(k1, g, axes=axes), k2)


def extrapolation_error(
    k1: Float[ArrayLike, "*grid"],
    k2: Float[ArrayLike, "*k2"],
    k1_true: Float[ArrayLike, "*grid"],
    k2_true: Float[ArrayLike, "*k2_true"],
    *,
    axis: int = -1,
) -> Float[Array, " d_minus_1"]:
    r"""Relative error of stretch extrapolation against the true model, per $g$.

    $$e(g) = \frac{\|k_2 \circledast (g\cdot k_1) - k_2^* \circledast
      (g\cdot k_1^*)\|^2}{\|k_2^* \circledast (g\cdot k_1^*)\|^2}
      \quad\text{for every } g \in \mathcal{S}_d,$$

    the extrapolated images of a solution and of the truth for the same
    latent Dirac (any location gives the same value), as in Fig. 2. Its mean
    over the group is the error under the Haar measure; $e(1)$ is the error of
    the fit itself. 0 for every g iff the solution is $\mathcal{S}$-equivalent
    to the truth (Prop. 2: $\hat k_1 = \lambda^{-1}\hat k_1^*$,
    $\hat k_2 = \lambda\hat k_2^*$ with one $\lambda$).

    Args:
      k1: the solution's first kernel on the whole grid.
      k2: the solution's second kernel.
      k1_true: the true first kernel, the shape of `k1`.
      k2_true: the true second kernel.
      axis: the stretched axis.

    Returns:
      `e(g)` for `g = 1 … d − 1` (`sdr.stretch_group(d)`), shape `(d − 1,)`.

    Raises:
      TypeError: for non-floating kernels.
      ValueError: for a bad grid or kernel, or `k1_true` of another shape
        than `k1`.

    References:
      Definition 1, Prop. 2 and Fig. 2 of Besserve et al., 2021.
    """
    k1 = on_grid("k1", k1)
    k1_true = on_grid("k1_true", k1_true)
    if k1_true.shape != k1.shape:
        raise ValueError(
            f"`k1` and `k1_true` must be on the same grid; got shapes {k1.shape} "
            f"and {k1_true.shape}."
        )
    axis = axis_index("k1", axis, k1.ndim)
    k2 = pad("k2", k2, k1.shape)
    k2_true = pad("k2_true", k2_true, k1.shape)

    # In Fourier (Parseval): the DFT of k2 ⊛ (g·k1) is k̂2 · (g·k̂1), and
    # (g·k̂1)[u] = k̂1[g⁻¹u] (`sdr.stretch_fourier`): two FFTs per kernel pair.
    a, b = jnp.fft.fftn(k1), jnp.fft.fftn(k2)
    a_true, b_true = jnp.fft.fftn(k1_true), jnp.fft.fftn(k2_true)

    def error(g):
        x = b * stretch_fourier(a, g, axes=(axis,))
        x_true = b_true * stretch_fourier(a_true, g, axes=(axis,))
        return jnp.sum(power(x - x_true)) / jnp.sum(power(x_true))

    return jax.vmap(error)(stretch_group(k1.shape[axis]))


def balanced_kernels(
    k1: Float[ArrayLike, "*grid"], k2: Float[ArrayLike, "*k2"]
) -> tuple[Float[Array, "*grid"], Float[Array, "*grid"]]:
    r"""The end point of SGD's drift: both kernels given the same DFT modulus.

    $$\hat k_1' = \sqrt{|\hat k_1 \hat k_2|}\, e^{i\arg \hat k_1},\qquad
      \hat k_2' = \sqrt{|\hat k_1 \hat k_2|}\, e^{i\arg \hat k_2}$$

    at every frequency: the same product $\hat k_1\hat k_2$ (the same images),
    $|\hat k_1'|^2 = |\hat k_2'|^2$, the phases kept. It is where the drift of
    Sec. 3.3 leads when the phases do not move, the convolutional analogue of
    Prop. 6's $A = B = \sqrt{A^*B^*}$; its SDR is
    $\langle|\hat c|^2\rangle / \langle|\hat c|\rangle^2 \ge 1$,
    $c = k_2 \circledast k_1$, the cause being $k_1'$ (Z a Dirac).

    Args:
      k1: the first kernel on the whole grid, shape `(d,)` or `(d', d)`.
      k2: the second kernel, no larger than the grid.

    Returns:
      `(k1', k2')`, both on the grid of `k1`.

    Raises:
      TypeError: for non-floating kernels.
      ValueError: for a bad grid or kernel.

    References:
      Prop. 6 and Sec. 3.3 of Besserve et al., 2021.
    """
    k1 = on_grid("k1", k1)
    k2 = pad("k2", k2, k1.shape)
    a, b = jnp.fft.fftn(k1), jnp.fft.fftn(k2)
    modulus = jnp.sqrt(jnp.abs(a) * jnp.abs(b))

    def rebuild(z):
        angle = jnp.angle(z)  # 0 where z = 0
        spectrum = jax.lax.complex(modulus * jnp.cos(angle), modulus * jnp.sin(angle))
        return jnp.fft.ifftn(spectrum).real.astype(k1.dtype)

    return rebuild(a), rebuild(b)
