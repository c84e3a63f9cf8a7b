r"""The paper's toy models and the drift of their training, in pure JAX.

- Model 1 (eq. 3): the linear two-layer circular convnet
  $X = k_2 \circledast k_1 \circledast Z$ on a prime grid, $Z$ a single Dirac
  whose location has probabilities $\pi$ (`model1`, `sample_dirac`).
- Example 1, the eye generator: $k_2$ an eye inside a $\delta\times\delta$
  square, $k_1$ two Diracs at a fixed horizontal distance (`eye_generator`,
  its SDR in closed form `eye_generator_sdr`). Stretching $k_1$ by
  $g \in \mathcal{S}_d$ extrapolates the eye distance (`stretch_extrapolate`,
  `extrapolation_error`).
- Model 2 (eq. 9): $X = \mathrm{diag}(a)\,\mathrm{diag}(b)\,Z$ (`model2`).
- Training dynamics: gradient descent, SGD and stale-gradient (asynchronous)
  SGD on $|C - ab|^2$ (`product_sgd`, Sec. 3.2), and SGD of Model 1 on the
  real and imaginary parts of the kernels' DFT coefficients, optionally
  interleaved with gradient steps on the penalty of eq. (13)
  (`fourier_sgd`, Sec. 3.3–3.4).

Every simulation is one `jax.lax.scan` over steps; batch seeds or settings
with `jax.vmap`. The 2-D grids are `(d', d)`: rows first, the stretched
(horizontal) axis last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sdr import _checks
from sdr._ratio import spectral_independence_penalty
from sdr._spectra import cause_spectrum, circular_convolve, nonzero_mean, power
from sdr._stretch import is_prime, stretch, stretch_fourier, stretch_group

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float, Int

__all__ = [
    "EYE_1D",
    "EYE_2D",
    "EyeGenerator",
    "KernelPath",
    "ProductPath",
    "balanced_kernels",
    "extrapolation_error",
    "eye_generator",
    "eye_generator_sdr",
    "fourier_sgd",
    "model1",
    "model2",
    "product_sgd",
    "sample_dirac",
    "stretch_extrapolate",
]

EYE_1D: np.ndarray = np.array([0.2, 1.0, 1.5, 1.0, 0.2], np.float32)
"""The default 1-D eye of `eye_generator` (DESIGN.md's example), δ = 5."""


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


# --------------------------------------------------------------------------
# Input checks

_INT = (int, np.integer)


def _check_grid(name: str, grid: Sequence[int]) -> tuple[int, ...]:
    grid = tuple(int(s) for s in grid)
    if len(grid) not in (1, 2):
        raise ValueError(
            f"Model 1 lives on a 1-D grid (d,) or a 2-D grid (d', d); `{name}` "
            f"has spatial shape {grid}."
        )
    bad = [s for s in grid if not is_prime(s)]
    if bad:
        raise ValueError(
            f"Model 1 needs prime grid sizes (the stretch group S_d acts on "
            f"them); `{name}` has spatial shape {grid}, and {bad} is not prime."
        )
    return grid


def _pad(name: str, kernel, grid: tuple[int, ...]) -> jax.Array:
    """Zero-pads a kernel at the origin (top-left corner) to `grid`."""
    kernel = _checks.as_float(name, kernel)
    if kernel.ndim != len(grid):
        raise ValueError(
            f"`{name}` must have the rank of the grid {grid} (rank {len(grid)}); "
            f"got shape {kernel.shape}."
        )
    if any(k > g for k, g in zip(kernel.shape, grid, strict=True)):
        raise ValueError(
            f"`{name}` of shape {kernel.shape} is larger than the grid {grid}."
        )
    return jnp.pad(
        kernel, [(0, g - k) for k, g in zip(kernel.shape, grid, strict=True)]
    )


def _on_grid(name: str, kernel) -> jax.Array:
    """A kernel given on a whole Model 1 grid (any size ≤ grid is not enough)."""
    kernel = _checks.as_float(name, kernel)
    _check_grid(name, kernel.shape)
    return kernel


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"`axis` {axis} is out of range for a {ndim}-D grid.")
    return axis % ndim


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


# --------------------------------------------------------------------------
# Model 1 and Example 1


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
    grid = _check_grid("z", z.shape[1:])
    k1 = _pad("k1", k1, grid)
    k2 = _pad("k2", k2, grid)
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
    grid = _check_grid("pi", pi.shape)
    if not isinstance(n, _INT) or n < 1:
        raise ValueError(f"`n` must be a positive int; got {n!r}.")
    n = int(n)
    concrete = _concrete(pi)
    if concrete is not None and (
        np.any(concrete < 0) or not np.isclose(concrete.sum(), 1.0, rtol=1e-4)
    ):
        raise ValueError(
            "`pi` must be non-negative and sum to 1; got min "
            f"{concrete.min():.3g} and sum {concrete.sum():.6g}."
        )
    flat = jnp.log(pi.reshape(-1))
    index = jax.random.categorical(key, flat, shape=(n,))
    return jax.nn.one_hot(index, flat.size, dtype=jnp.float32).reshape(n, *grid)


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
    grid = _check_grid("grid", (grid,) if isinstance(grid, _INT) else grid)
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
    if not isinstance(distance, _INT) or not 1 <= distance < d:
        raise ValueError(f"`distance` must be an int in 1 … {d - 1}; got {distance!r}.")
    distance = int(distance)
    k1 = np.zeros(grid, np.float32)
    k1[(0,) * len(grid)] = 1.0
    k1[(0,) * (len(grid) - 1) + (distance,)] = 1.0
    return EyeGenerator(jnp.asarray(k1), _pad("eye", eye, grid), eye, distance)


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

    over the non-zero frequencies (DESIGN.md's formula when $r = 0$ and
    $N = d$: e.g. 0.902 for d = 31 and the default 1-D eye), and
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


# --------------------------------------------------------------------------
# Stretch extrapolation


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
    k1 = _on_grid("k1", k1)
    k2 = _pad("k2", k2, k1.shape)
    return circular_convolve(stretch(k1, g, axes=(_axis(axis, k1.ndim),)), k2)


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
    k1 = _on_grid("k1", k1)
    k1_true = _on_grid("k1_true", k1_true)
    if k1_true.shape != k1.shape:
        raise ValueError(
            f"`k1` and `k1_true` must be on the same grid; got shapes {k1.shape} "
            f"and {k1_true.shape}."
        )
    axis = _axis(axis, k1.ndim)
    k2 = _pad("k2", k2, k1.shape)
    k2_true = _pad("k2_true", k2_true, k1.shape)

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
    k1 = _on_grid("k1", k1)
    k2 = _pad("k2", k2, k1.shape)
    a, b = jnp.fft.fftn(k1), jnp.fft.fftn(k2)
    modulus = jnp.sqrt(jnp.abs(a) * jnp.abs(b))

    def rebuild(z):
        angle = jnp.angle(z)  # 0 where z = 0
        spectrum = jax.lax.complex(modulus * jnp.cos(angle), modulus * jnp.sin(angle))
        return jnp.fft.ifftn(spectrum).real.astype(k1.dtype)

    return rebuild(a), rebuild(b)


# --------------------------------------------------------------------------
# Model 2


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


# --------------------------------------------------------------------------
# Training dynamics


class ProductPath(NamedTuple):
    """A recorded trajectory of `product_sgd`.

    Attributes:
      a: `a` after steps `0, r, 2r, …, steps` (r = `record_every`), shape
        `(steps // r + 1, *c.shape)`.
      b: `b` at the same steps.
      step: the step numbers, shape `(steps // r + 1,)`.
    """

    a: Float[Array, "records *shape"]
    b: Float[Array, "records *shape"]
    step: Int[Array, " records"]


def _check_schedule(steps: int, record_every: int) -> int:
    if not isinstance(steps, _INT) or not isinstance(record_every, _INT):
        raise TypeError(
            f"`steps` and `record_every` must be ints; got {steps!r} and "
            f"{record_every!r}."
        )
    if steps < 1 or record_every < 1 or steps % record_every:
        raise ValueError(
            f"`steps` ({steps}) must be a positive multiple of `record_every` "
            f"({record_every})."
        )
    return steps // record_every


def _record(step_fn, state, steps: int, record_every: int, view):
    """Runs `state = step_fn(state, t)` for t < steps; records `view(state)`."""
    records = _check_schedule(steps, record_every)

    def chunk(state, r):
        def inner(state, i):
            return step_fn(state, r * record_every + i), None

        state, _ = jax.lax.scan(inner, state, jnp.arange(record_every))
        return state, view(state)

    _, path = jax.lax.scan(chunk, state, jnp.arange(records))
    first = jax.tree_util.tree_map(lambda x: x[None], view(state))
    path = jax.tree_util.tree_map(lambda f, p: jnp.concatenate([f, p]), first, path)
    return path, jnp.arange(records + 1, dtype=jnp.int32) * record_every


def product_sgd(
    key: jax.Array,
    a0: Float[ArrayLike, "*shape"],
    b0: Float[ArrayLike, "*shape"],
    c: Float[ArrayLike, "*shape"],
    *,
    lr: Float[ArrayLike, ""],
    steps: int,
    noise: Float[ArrayLike, ""] = 0.0,
    delay: Int[ArrayLike, ""] = 0,
    max_delay: int | None = None,
    record_every: int = 1,
) -> ProductPath:
    r"""Gradient descent, SGD or stale-gradient SGD on $|C - ab|^2$, entrywise.

    The 1×1 Model 2 of Sec. 3.2 (or, with vector arguments, Model 2 itself,
    each entry on its own): at step $t$ a target
    $C_t = c + \sigma\,\xi_t$, $\xi_t \sim \mathcal{N}(0, 1)$ i.i.d. per
    entry, is drawn and

    $$e_t = C_t - a_{t-\tau} b_{t-\tau},\quad
      a_{t+1} = a_t + 2\eta\, e_t\, b_{t-\tau},\quad
      b_{t+1} = b_t + 2\eta\, e_t\, a_{t-\tau},$$

    the gradient of $\ell = |C_t - ab|^2$ (eq. 11) evaluated at the
    parameters of $\tau$ steps before (with $a_{t} = a_0$ for $t < 0$).

    - $\sigma = 0$, $\tau = 0$: gradient descent on eq. (10); for small
      $\eta$ it follows the gradient flow, which conserves $a^2 - b^2$
      (Prop. 8). Each step multiplies $a^2 - b^2$ by exactly
      $1 - 4\eta^2 e_t^2$.
    - $\sigma > 0$, $\tau = 0$: SGD (Prop. 9). Near the solution set
      $e_t^2 \approx \sigma^2$, so $a^2 - b^2$ decays about like
      $\exp(-4\eta^2\sigma^2 t)$ and the iterate drifts along $ab = c$
      towards $(\sqrt c, \sqrt c)$.
    - $\tau > 0$: asynchronous SGD with a fixed staleness $\tau$: each
      gradient is computed on parameters $\tau$ updates old, as when $\tau$
      other workers update a shared copy between a worker's read and its
      write. (Our definition: the paper's App. B.9 is not public.)

    Args:
      key: a PRNG key (unused when `noise` is 0).
      a0: initial `a`.
      b0: initial `b`, the shape of `a0`.
      c: the true product $c = a^* b^*$, the shape of `a0`.
      lr: the step size $\eta$ (may be traced, e.g. under `jax.vmap`).
      steps: the number of steps.
      noise: the target noise $\sigma$ (may be traced).
      delay: the staleness $\tau \ge 0$ (may be traced if `max_delay` is
        given).
      max_delay: the largest `delay` the history buffer holds; default
        `delay` (which must then be a Python int).
      record_every: record every this many steps (divides `steps`).

    Returns:
      A `ProductPath` with the recorded `a`, `b` and step numbers.

    Raises:
      TypeError: for non-floating `a0`, `b0`, `c` or non-int schedule.
      ValueError: for mismatched shapes, a bad schedule, or a negative or
        too large `delay`.

    References:
      Eqs. (10)–(11), Sec. 3.2 and App. B.7–B.9 of Besserve et al., 2021.
    """
    a0 = _checks.as_float("a0", a0)
    b0 = _checks.as_float("b0", b0)
    c = _checks.as_float("c", c)
    if not a0.shape == b0.shape == c.shape:
        raise ValueError(
            f"`a0`, `b0` and `c` must have the same shape; got {a0.shape}, "
            f"{b0.shape} and {c.shape}."
        )
    if max_delay is None:
        if not isinstance(delay, _INT):
            raise ValueError(
                "`max_delay` must be given when `delay` is not a Python int; got "
                f"delay {delay!r}."
            )
        max_delay = delay
    concrete = _concrete(delay)
    if not isinstance(max_delay, _INT) or max_delay < 0:
        raise ValueError(f"`max_delay` must be an int ≥ 0; got {max_delay!r}.")
    if concrete is not None and not 0 <= int(concrete) <= max_delay:
        raise ValueError(f"`delay` must be in 0 … {max_delay}; got {int(concrete)}.")
    lr = jnp.asarray(lr, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    delay = jnp.asarray(delay, jnp.int32)
    size = max_delay + 1
    history = jnp.broadcast_to(jnp.stack([a0, b0]), (size, 2, *a0.shape))

    def step(state, t):
        a, b, history = state
        stale_a, stale_b = history[(t - delay) % size]
        xi = jax.random.normal(jax.random.fold_in(key, t), c.shape, jnp.float32)
        e = c + noise * xi - stale_a * stale_b
        a, b = a + 2 * lr * e * stale_b, b + 2 * lr * e * stale_a
        history = history.at[(t + 1) % size].set(jnp.stack([a, b]))
        return a, b, history

    (a, b), step_numbers = _record(
        step, (a0, b0, history), steps, record_every, lambda s: (s[0], s[1])
    )
    return ProductPath(a, b, step_numbers)


class KernelPath(NamedTuple):
    """A recorded trajectory of `fourier_sgd`, as spatial kernels.

    Attributes:
      k1: the first kernel after steps `0, r, …, steps`, shape
        `(steps // r + 1, *grid)`.
      k2: the second kernel at the same steps.
      step: the step numbers.
    """

    k1: Float[Array, "records *grid"]
    k2: Float[Array, "records *grid"]
    step: Int[Array, " records"]


def fourier_sgd(
    key: jax.Array,
    k1: Float[ArrayLike, "*k1"],
    k2: Float[ArrayLike, "*k2"],
    target: Float[ArrayLike, "*grid"],
    *,
    lr: Float[ArrayLike, ""],
    steps: int,
    noise: Float[ArrayLike, ""] = 0.0,
    penalty_rate: Float[ArrayLike, ""] = 0.0,
    penalty_steps: int = 1,
    penalty_start: Int[ArrayLike, ""] = 0,
    include_dc: bool = True,
    record_every: int = 1,
) -> KernelPath:
    r"""VAE-like SGD of Model 1 on the DFT coefficients, optionally with eq. (13).

    $Z$ is the Dirac at the origin and the data are
    $X_t = $ `target` $+ \sigma\varepsilon_t$, $\varepsilon_t$ white Gaussian
    noise on the grid. Each step is one SGD step on the real and imaginary
    parts of every DFT coefficient $a = \hat k_1(\nu)$, $b = \hat k_2(\nu)$
    of the loss $\sum_\nu |\hat X_t(\nu) - a b|^2$: with
    $e = \hat X_t - ab$,

    $$a \leftarrow a + 2\eta\, e\, \bar b, \qquad
      b \leftarrow b + 2\eta\, e\, \bar a,$$

    each frequency a complex copy of `product_sgd`'s problem, so
    $|\hat k_1|^2 - |\hat k_2|^2$ shrinks by the factor
    $1 - 4\eta^2|e|^2$ at every frequency and step (Sec. 3.3). By Parseval
    this is exactly SGD with rate $\eta$ on the real kernels for the loss
    $\|X_t - k_2 \circledast k_1\|^2$; kernels stay real.

    With `penalty_rate` $> 0$, each SGD step is followed by `penalty_steps`
    gradient steps on `sdr.spectral_independence_penalty(k1[None], k2)`
    (eq. 13, the cause $V = k_1$, i.e. $S = |\hat k_1|^2$ held constant)
    with respect to $k_2$ only, each with the scale-free rate
    `penalty_rate` $/(\sum k_2^2 \max_\nu w_\nu^2)$,
    $w = S/\langle S\rangle - 1$. Near $\rho = 1$ such steps are linearly
    stable iff `penalty_rate` $< \max_\nu w^2 / (4\,\langle w^2\rangle_k)$,
    $\langle w^2\rangle_k$ the mean of $w^2$ weighted by $|\hat k_2|^2$ (the
    Gauss–Newton curvature of eq. 13): always above 1/4, and 1/2 for the
    true eye generator, whose eye has its energy where $|w|$ is largest.

    Args:
      key: a PRNG key for the noise.
      k1: the initial first kernel, no larger than the grid.
      k2: the initial second kernel, no larger than the grid.
      target: the noiseless image $k_2^*\circledast k_1^*\circledast\delta_0$,
        shape `(d,)` or `(d', d)` (prime sizes): the grid.
      lr: the SGD step size $\eta$ (may be traced). Stable for
        $\eta < 1/\max_\nu(|a|^2 + |b|^2)$.
      steps: the number of SGD steps.
      noise: $\sigma$, the standard deviation of the noise per pixel (may be
        traced). In Fourier its variance is $\sigma^2 N$ per frequency.
      penalty_rate: the scale-free rate of the penalty steps; 0 turns them
        off (may be traced).
      penalty_steps: penalty steps after each SGD step.
      penalty_start: the first SGD step (0-based) after which the penalty
        steps run; before it, plain SGD (may be traced).
      include_dc: whether the penalty averages over the zero frequency too
        (the convention under which the true eye generator is generic).
      record_every: record every this many SGD steps (divides `steps`).

    Returns:
      A `KernelPath` of the recorded kernels (on the whole grid).

    Raises:
      TypeError: for non-floating inputs or a non-int schedule.
      ValueError: for a bad grid, kernels larger than it, a bad schedule or
        `penalty_steps < 0`.

    References:
      Sec. 3.3, Sec. 3.4 and eq. (13) of Besserve et al., 2021.
    """
    target = _checks.as_float("target", target)
    grid = _check_grid("target", target.shape)
    k1 = _pad("k1", k1, grid)
    k2 = _pad("k2", k2, grid)
    if not isinstance(penalty_steps, _INT) or penalty_steps < 0:
        raise ValueError(f"`penalty_steps` must be an int ≥ 0; got {penalty_steps!r}.")
    lr = jnp.asarray(lr, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    penalty_rate = jnp.asarray(penalty_rate, jnp.float32)
    penalty_start = jnp.asarray(penalty_start, jnp.int32)
    penalty_grad = jax.grad(spectral_independence_penalty, argnums=1)

    def penalty_steps_on(k2, cause, on):
        s = cause_spectrum(cause)
        w_max = jnp.max((s / nonzero_mean(s, include_dc=include_dc) - 1.0) ** 2)

        def one(_, k2):
            scale = jnp.sum(k2**2) * w_max
            rate = jnp.where(
                on & (scale > 0), penalty_rate / jnp.where(scale > 0, scale, 1.0), 0.0
            )
            return k2 - rate * penalty_grad(cause, k2, include_dc=include_dc)

        return jax.lax.fori_loop(0, penalty_steps, one, k2)

    def step(state, t):
        k1, k2 = state
        eps = jax.random.normal(jax.random.fold_in(key, t), grid, jnp.float32)
        x_hat = jnp.fft.fftn(target + noise * eps)
        a, b = jnp.fft.fftn(k1), jnp.fft.fftn(k2)
        e = x_hat - a * b
        k1 = k1 + 2 * lr * jnp.fft.ifftn(e * jnp.conj(b)).real
        k2 = k2 + 2 * lr * jnp.fft.ifftn(e * jnp.conj(a)).real
        return k1, penalty_steps_on(k2, k1[None], t >= penalty_start)

    (k1_path, k2_path), step_numbers = _record(
        step, (k1, k2), steps, record_every, lambda s: s
    )
    return KernelPath(k1_path, k2_path, step_numbers)
