r"""Training dynamics of the toys: SGD on $|C - ab|^2$ and on Model 1's spectra.

Every simulation is one `jax.lax.scan` over steps (`_record`), recording the
state every `record_every` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from sdr import _checks
from sdr._ratio import spectral_independence_penalty
from sdr._spectra import cause_spectrum, nonzero_mean
from sdr.toys._grid import INT, check_grid, concrete, pad

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike, Float, Int

    # Model 2's parameters and targets: arrays of one shape, taken entrywise.
    Entries = Float[ArrayLike, "*shape"]


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
    """The number of records after the first; raises for a bad schedule."""
    if not isinstance(steps, INT) or not isinstance(record_every, INT):
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


def _product_inputs(a0, b0, c) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`a0`, `b0`, `c` as float arrays of one shape, or an error."""
    a0 = _checks.as_float("a0", a0)
    b0 = _checks.as_float("b0", b0)
    c = _checks.as_float("c", c)
    if not a0.shape == b0.shape == c.shape:
        raise ValueError(
            f"`a0`, `b0` and `c` must have the same shape; got {a0.shape}, "
            f"{b0.shape} and {c.shape}."
        )
    return a0, b0, c


def _check_delay(delay, max_delay: int | None) -> int:
    """The size of the history buffer less one (`max_delay`, default `delay`)."""
    if max_delay is None:
        if not isinstance(delay, INT):
            raise ValueError(
                "`max_delay` must be given when `delay` is not a Python int; got "
                f"delay {delay!r}."
            )
        max_delay = delay
    value = concrete(delay)
    if not isinstance(max_delay, INT) or max_delay < 0:
        raise ValueError(f"`max_delay` must be an int ≥ 0; got {max_delay!r}.")
    if value is not None and not 0 <= int(value) <= max_delay:
        raise ValueError(f"`delay` must be in 0 … {max_delay}; got {int(value)}.")
    return max_delay


def _product_step(key, c, lr, noise, delay, size: int) -> Callable:
    """One step of `product_sgd` on the state `(a, b, history)` at step `t`."""
    lr = jnp.asarray(lr, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    delay = jnp.asarray(delay, jnp.int32)

    def step(state, t):
        a, b, history = state
        stale_a, stale_b = history[(t - delay) % size]
        xi = jax.random.normal(jax.random.fold_in(key, t), c.shape, jnp.float32)
        e = c + noise * xi - stale_a * stale_b
        a, b = a + 2 * lr * e * stale_b, b + 2 * lr * e * stale_a
        history = history.at[(t + 1) % size].set(jnp.stack([a, b]))
        return a, b, history

    return step


def product_sgd(
    key: jax.Array,
    a0: Entries,
    b0: Entries,
    c: Entries,
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
      write. (Our definition: the paper's Sec. 3.2 leaves its ASGD to
      App. B.9 of the extended version, arXiv:2004.00184.)

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
    a0, b0, c = _product_inputs(a0, b0, c)
    size = _check_delay(delay, max_delay) + 1
    history = jnp.broadcast_to(jnp.stack([a0, b0]), (size, 2, *a0.shape))
    step = _product_step(key, c, lr, noise, delay, size)
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


def _penalty_updates(penalty_rate, penalty_steps: int, include_dc: bool) -> Callable:
    """`penalty_steps` scale-free gradient steps on eq. (13) with respect to k2.

    Returns `penalty_steps_on(k2, cause, on)`: `k2` after the steps, or `k2`
    unchanged where `on` is False.
    """
    penalty_rate = jnp.asarray(penalty_rate, jnp.float32)
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

    return penalty_steps_on


def _fourier_step(key, target, lr, noise, penalty_start, penalty) -> Callable:
    """One SGD step of `fourier_sgd` on `(k1, k2)` at step `t`, then `penalty`."""
    lr = jnp.asarray(lr, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    penalty_start = jnp.asarray(penalty_start, jnp.int32)

    def step(state, t):
        k1, k2 = state
        eps = jax.random.normal(jax.random.fold_in(key, t), target.shape, jnp.float32)
        x_hat = jnp.fft.fftn(target + noise * eps)
        a, b = jnp.fft.fftn(k1), jnp.fft.fftn(k2)
        e = x_hat - a * b
        k1 = k1 + 2 * lr * jnp.fft.ifftn(e * jnp.conj(b)).real
        k2 = k2 + 2 * lr * jnp.fft.ifftn(e * jnp.conj(a)).real
        return k1, penalty(k2, k1[None], t >= penalty_start)

    return step


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

    $Z$ is the Dirac at the origin and the data are $X_t = $ `target`
    $+ \sigma\varepsilon_t$, $\varepsilon_t$ white Gaussian noise on the grid.
    Each step is one SGD step on the real and imaginary parts of every DFT
    coefficient $a = \hat k_1(\nu)$, $b = \hat k_2(\nu)$ of the loss
    $\sum_\nu |\hat X_t(\nu) - a b|^2$: with $e = \hat X_t - ab$,

    $$a \leftarrow a + 2\eta\, e\, \bar b, \qquad b \leftarrow b + 2\eta\, e\, \bar a,$$

    each frequency a complex copy of `product_sgd`'s problem, so
    $|\hat k_1|^2 - |\hat k_2|^2$ shrinks by the factor $1 - 4\eta^2|e|^2$ at every
    frequency and step (Sec. 3.3). By Parseval this is exactly SGD with rate $\eta$
    on the real kernels for $\|X_t - k_2 \circledast k_1\|^2$; they stay real.

    With `penalty_rate` $> 0$, each SGD step is followed by `penalty_steps`
    gradient steps on `sdr.spectral_independence_penalty(k1[None], k2)` (eq. 13,
    the cause $V = k_1$: $S = |\hat k_1|^2$ held constant) with respect to $k_2$
    only, each with the scale-free rate `penalty_rate` $/(\sum k_2^2 \max_\nu w_\nu^2)$,
    $w = S/\langle S\rangle - 1$. Near $\rho = 1$ they are linearly stable iff
    `penalty_rate` $< \max_\nu w^2 / (4\,\langle w^2\rangle_k)$, the mean weighted by
    $|\hat k_2|^2$ (the Gauss–Newton curvature of eq. 13): always above 1/4, and
    1/2 for the true eye generator, whose eye has its energy where $|w|$ is largest.

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
      penalty_rate: the scale-free rate of the penalty steps; 0 turns them off
        (may be traced).
      penalty_steps: penalty steps after each SGD step.
      penalty_start: the first SGD step (0-based) after which the penalty steps
        run; before it, plain SGD (may be traced).
      include_dc: whether the penalty averages over the zero frequency too (the
        convention under which the true eye generator is generic).
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
    grid = check_grid("target", target.shape)
    k1, k2 = pad("k1", k1, grid), pad("k2", k2, grid)
    if not isinstance(penalty_steps, INT) or penalty_steps < 0:
        raise ValueError(f"`penalty_steps` must be an int ≥ 0; got {penalty_steps!r}.")
    penalty = _penalty_updates(penalty_rate, penalty_steps, include_dc)
    step = _fourier_step(key, target, lr, noise, penalty_start, penalty)
    path, step_numbers = _record(step, (k1, k2), steps, record_every, lambda s: s)
    return KernelPath(*path, step_numbers)
