"""What the 1-D and 2-D eye-generator experiments share: runs and their metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import sdr
from sdr import toys


def run_fourier(target, settings, *, key, **options) -> toys.KernelPath:
    """`toys.fourier_sgd` for every run of `settings`, vmapped and jitted.

    Args:
      target: the noiseless image.
      settings: per run (leading axis), `k1`, `k2`, `noise`, `rate` (the
        penalty rate) and `start_step` (the penalty's first step).
      key: split into one noise key per run.
      **options: the settings every run shares, as `toys.fourier_sgd` takes
        them: `lr` and `steps` (required), `record_every`, `penalty_steps`,
        `include_dc`.

    Returns:
      The recorded kernels of every run.
    """
    n = settings["k1"].shape[0]
    return jax.jit(
        jax.vmap(
            lambda k, k1, k2, s, r, p: toys.fourier_sgd(
                k, k1, k2, target, noise=s, penalty_rate=r, penalty_start=p, **options
            )
        )
    )(
        jax.random.split(key, n),
        settings["k1"],
        settings["k2"],
        settings["noise"],
        settings["rate"],
        settings["start_step"],
    )


def solution_metrics(k1, k2, k1_true, k2_true) -> dict[str, jax.Array]:
    """Scalars of one solution against the truth (vmapped over runs and steps).

    Args:
      k1: the solution's first kernel, on the grid.
      k2: its second kernel, on the grid.
      k1_true: the true first kernel.
      k2_true: the true second kernel.

    Returns:
      ρ with and without the zero frequency, the group-mean extrapolation
      error (also with the true phases), the phase incoherence of Prop. 2's
      λ, the spectral flatness of k2, the modulus gap and the fit error.
    """
    axes = tuple(range(k1.ndim))
    a, b = jnp.fft.fftn(k1), jnp.fft.fftn(k2)
    a_true, b_true = jnp.fft.fftn(k1_true), jnp.fft.fftn(k2_true)
    # The learned moduli with the true phases.
    phase_fixed = [
        jnp.fft.ifftn(
            jax.lax.complex(
                jnp.abs(z) * jnp.cos(jnp.angle(t)), jnp.abs(z) * jnp.sin(jnp.angle(t))
            ),
            axes=axes,
        ).real
        for z, t in ((a, a_true), (b, b_true))
    ]
    # Prop. 2's factor λ(ν) = k̂2/k̂2* at the non-zero frequencies, weighted by
    # |k̂2*|² (the image power each frequency carries after any stretch).
    lam = (b / b_true).reshape(-1)[1:]
    weight = jnp.abs(b_true.reshape(-1)[1:]) ** 2
    weight = weight / jnp.sum(weight)
    b2 = jnp.abs(b) ** 2
    target = jnp.fft.ifftn(a_true * b_true, axes=axes).real
    fit = jnp.sum((jnp.fft.ifftn(a * b, axes=axes).real - target) ** 2)
    return {
        "rho_dc": sdr.spectral_density_ratio(k1[None], k2, include_dc=True),
        "rho": sdr.spectral_density_ratio(k1[None], k2),
        "error": jnp.mean(toys.extrapolation_error(k1, k2, k1_true, k2_true)),
        "error_true_phases": jnp.mean(
            toys.extrapolation_error(*phase_fixed, k1_true, k2_true)
        ),
        "phase_incoherence": 1.0 - jnp.abs(jnp.sum(weight * lam / jnp.abs(lam))),
        "k2_flatness": jnp.exp(jnp.mean(jnp.log(b2))) / jnp.mean(b2),
        "modulus_gap": jnp.mean(jnp.abs(jnp.log(jnp.abs(a) ** 2 / jnp.abs(b) ** 2))),
        "fit_error": fit / jnp.sum(target**2),
    }


def penalty_stability_bound(k1, k2) -> float:
    """Largest scale-free penalty rate that is linearly stable near ρ = 1.

    max w² / (4 ⟨w²⟩_k), w = S/⟨S⟩ − 1 (all frequencies), S = |k̂1|², the
    mean weighted by |k̂2|²: the Gauss–Newton curvature of eq. (13).

    Args:
      k1: the first kernel, whose power spectrum is S.
      k2: the second kernel, whose power spectrum weights the mean.

    Returns:
      The bound.
    """
    s = np.abs(np.fft.fftn(np.asarray(k1, np.float64))) ** 2
    k = np.abs(np.fft.fftn(np.asarray(k2, np.float64))) ** 2
    w2 = (s / s.mean() - 1) ** 2
    return float(w2.max() / (4 * np.sum(w2 * k) / np.sum(k)))


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean, std, min, max over runs (NaN runs excluded, and counted).

    Args:
      values: one value per run.

    Returns:
      `mean`, `std`, `min`, `max` and `runs_not_finite`; only `mean` (NaN)
      and `runs_not_finite` when no run is finite.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": float("nan"), "runs_not_finite": int(values.size)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "runs_not_finite": int(values.size - finite.size),
    }
