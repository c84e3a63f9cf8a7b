"""Reproduce the paper's theory on its toy models: Fig. 3a, Fig. 3b, Fig. 2, Sec. 3.4.

Every simulation is a `jax.lax.scan` over steps (`sdr.toys`), batched over
seeds and settings with `jax.vmap`. Settings are the constants below; the
docs page `docs/toys.md` explains each figure against the paper.

1. Fig. 3a, the 1×1 Model 2, c = 1 (`sdr.toys.product_sgd`):
   - gradient descent on |c − ab|² from six starts with step 1e-2 and 1e-3
     (small-step GD ≈ gradient flow): the drift of a² − b², which the
     gradient flow conserves (Prop. 8);
   - SGD on |C − ab|², C ~ N(c, σ²), from (2, 0.5) on the solution set,
     64 seeds: the distance to (√c, √c) and a² − b² against steps, and the
     decay rate of a² − b² against the prediction 4η²σ² (each step multiplies
     a² − b² by 1 − 4η²e², e the residual);
   - asynchronous SGD: the same with gradients computed on parameters τ
     steps old (fixed staleness τ = 1, 2, 4, 8; our definition, App. B.9 is
     not public);
   - Model 2 with 30 entries (Prop. 6): SGD from the truth drifts to
     A = B = √(A*B*), and the trace ratio ρ' goes from ≈ 1 to
     E[c²]/E[c]² > 1.
2. Fig. 3b, Example 1 in 1-D (d = 31, eye [0.2, 1, 1.5, 1, 0.2], eye
   distance 9; Z a Dirac at the origin, Gaussian noise on X): SGD on the real
   and imaginary parts of the DFT coefficients of k1, k2 from the true
   solution (`sdr.toys.fourier_sgd`), 32 seeds: |k̂1|² and |k̂2|² converge
   towards each other; the SDR of the true solution (closed form, zero
   frequency excluded; 1 with it included) and of the SGD solution.
3. Fig. 2: every group element of S_31 stretches k1 of the SGD solution and
   of the truth; the relative error of the extrapolated image against the
   true stretched image (`sdr.toys.extrapolation_error`), per g and averaged
   over the group; the same in 2-D (13×31 grid, 9×9 eye, SGD with and
   without the penalty) with pictures of the interference artefacts. The
   references: the balanced limit |k̂1| = |k̂2| (`balanced_kernels`) and the
   trivial factorisation k1 = c, k2 = δ.
4. Sec. 3.4: the same SGD interleaved with one gradient step per SGD step on
   the eq. (13) penalty (zero frequency included), over a grid of starts
   (the truth; the truth with the penalty switched on after 4000 plain SGD
   steps; random N(0, 0.3²) kernels; small N(0, 0.01²) kernels), noise
   levels σ ∈ {0.05, 0.1, 0.2} and penalty rates {0, 0.03, 0.1, 0.25, 1}, 8
   seeds each: SDR and extrapolation error over training, the error with the
   learned moduli but the true phases (what genericity, a condition on
   moduli, can act on), the incoherence of the phase of Prop. 2's factor
   λ(ν) = k̂2(ν)/k̂2*(ν) (0 when λ has one sign and no phase, weights
   |k̂2*|²) and the spectral flatness of k2 (1 = white). Two more
   penalty settings from the truth and random starts at σ = 0.1: the zero
   frequency excluded (rate 0.25), and five steps of rate 0.2 per SGD step.

Writes PNG figures and `theory.json` (every reported number, the settings
and this command) to `--out`.

    python -m benchmarks.theory --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import pathlib
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import sdr
from sdr import toys

# 1. Fig. 3a: the 1×1 problem |c − ab|².
C = 1.0
GD_STARTS = ((0.15, 0.6), (0.6, 0.15), (0.3, 0.3), (2.6, 1.6), (1.6, 2.6), (2.8, 0.9))
GD_RATES = (1e-2, 1e-3)
GD_STEPS, GD_RECORD = 20_000, 100
SGD_START = (2.0, 0.5)  # on the solution set ab = c
SGD_RATE, SGD_NOISE, SGD_STEPS, SGD_RECORD, SGD_SEEDS = 0.02, 0.5, 8000, 50, 64
DELAYS = (0, 1, 2, 4, 8)
# Model 2 (Prop. 6): a* ~ U(0.5, 1.5), b* ~ LogNormal(0, 0.5²), 30 entries.
M2_SIZE, M2_LOG_STD, M2_RATE, M2_SEEDS = 30, 0.5, 0.03, 32

# 2–4. Example 1 in 1-D.
D1, DISTANCE1 = 31, 9
LR1, STEPS1, RECORD1 = 0.03, 8000, 50
NOISE_MAIN = 0.1
STARTS = ("true", "drifted", "random", "small")
NOISES = (0.05, 0.1, 0.2)
RATES = (0.0, 0.03, 0.1, 0.25, 1.0)
RATE_MAIN = 0.25
GRID_SEEDS, MAIN_SEEDS = 8, 32
# Other penalty settings (name, rate, penalty steps per SGD step, include_dc),
# from the truth and random starts at σ = NOISE_MAIN: final = last 2 records.
VARIANTS = (
    ("zero frequency excluded", RATE_MAIN, 1, False),
    ("5 penalty steps per SGD step", 0.2, 5, True),
)
DRIFT_STEPS = STEPS1 // 2  # "drifted": penalty switched on after these steps
FINAL = 0.2  # "final" = mean over the last 20 % of the records
CURVE_STEPS = (0, 500, 1000, 2000, 3950, 4050, 4500, 6000, 8000)
# 2-D (pictures): a (13, 31) grid, the unit-energy 9×9 eye, eye distance 10.
GRID2, DISTANCE2 = (13, 31), 10
LR2, NOISE2, STEPS2, RECORD2, SEEDS2 = 0.02, 0.04, 6000, 1000, 4
SHOW_DISTANCES = (9, 10, 14, 18, 21)


def _f(x: Any, digits: int = 5) -> Any:
    """JSON-friendly floats (NaN → None), rounded."""
    if isinstance(x, dict):
        return {k: _f(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_f(v, digits) for v in x]
    if isinstance(x, np.ndarray | jax.Array):
        return _f(np.asarray(x).tolist(), digits)
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else round(float(x), digits)
    return x


class Progress:
    """Stage display: a tqdm bar when available, else stage lines; timings kept."""

    def __init__(self, names: list[str]) -> None:
        self.times: dict[str, float] = {}
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=len(names), unit="stage", file=sys.stderr)
            self.write = tqdm.write
        except ImportError:  # pragma: no cover - tqdm is a bench dependency
            self.bar = None
            self.write = print

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.bar is not None:
            self.bar.set_description(name)
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start
        self.write(f"  {name}: {self.times[name]:.1f} s")
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------
# 1. Fig. 3a


def product_experiments() -> tuple[dict, dict]:
    """GD, SGD and ASGD on |c − ab|²; returns (numbers, arrays for figures)."""
    starts = np.array(GD_STARTS, np.float32)
    a0 = np.repeat(starts[:, 0], len(GD_RATES))
    b0 = np.repeat(starts[:, 1], len(GD_RATES))
    rates = np.tile(np.array(GD_RATES, np.float32), len(starts))
    gd = jax.jit(
        jax.vmap(
            lambda a, b, lr: toys.product_sgd(
                jax.random.key(0),
                a,
                b,
                C,
                lr=lr,
                steps=GD_STEPS,
                record_every=GD_RECORD,
            )
        )
    )(a0, b0, rates)
    q = np.asarray(gd.a, np.float64) ** 2 - np.asarray(gd.b, np.float64) ** 2
    drift = np.abs(q - q[:, :1]).max(axis=1)
    residual = np.abs(np.asarray(gd.a[:, -1] * gd.b[:, -1]) - C)
    gd_rows = [
        {
            "start": [float(a0[i]), float(b0[i])],
            "lr": float(rates[i]),
            "q0": float(q[i, 0]),
            "q_final": float(q[i, -1]),
            "max_abs_drift": float(drift[i]),
            # On the diagonal (a0 = b0) a² − b² is 0 and stays 0 exactly.
            "relative_drift": float(drift[i] / abs(q[i, 0])) if q[i, 0] else None,
            "final_abs_residual_ab_minus_c": float(residual[i]),
        }
        for i in range(len(a0))
    ]

    seeds = SGD_SEEDS
    keys = jax.random.split(jax.random.key(1), seeds * len(DELAYS))
    delays = np.repeat(np.array(DELAYS, np.int32), seeds)
    sgd = jax.jit(
        jax.vmap(
            lambda k, tau: toys.product_sgd(
                k,
                *SGD_START,
                C,
                lr=SGD_RATE,
                steps=SGD_STEPS,
                noise=SGD_NOISE,
                delay=tau,
                max_delay=max(DELAYS),
                record_every=SGD_RECORD,
            )
        )
    )(keys, delays)
    a = np.asarray(sgd.a).reshape(len(DELAYS), seeds, -1)
    b = np.asarray(sgd.b).reshape(len(DELAYS), seeds, -1)
    steps = np.asarray(sgd.step[0])
    root = math.sqrt(C)
    dist = np.sqrt((a - root) ** 2 + (b - root) ** 2)
    q_sgd = a.astype(np.float64) ** 2 - b.astype(np.float64) ** 2
    predicted_rate = 4 * SGD_RATE**2 * SGD_NOISE**2
    marks = [0, 1000, 2000, 4000, 8000]
    rows = {}
    for j, tau in enumerate(DELAYS):
        q_mean = q_sgd[j].mean(axis=0)
        # Fitted decay rate of the mean a² − b² while it is above 5 % of q0.
        fit = q_mean > 0.05 * q_mean[0]
        rate = -np.polyfit(steps[fit], np.log(q_mean[fit]), 1)[0]
        rows[f"tau={tau}"] = {
            "delay": tau,
            "mean_distance_to_sqrt_c": {
                str(m): float(dist[j, :, m // SGD_RECORD].mean()) for m in marks
            },
            "std_distance_to_sqrt_c": {
                str(m): float(dist[j, :, m // SGD_RECORD].std()) for m in marks
            },
            "mean_a2_minus_b2": {str(m): float(q_mean[m // SGD_RECORD]) for m in marks},
            "fitted_decay_rate_of_mean_a2_minus_b2": float(rate),
            "runs_leaving_positive_quadrant": int(
                np.sum((a[j] <= 0).any(axis=1) | (b[j] <= 0).any(axis=1))
            ),
            "runs_not_finite": int(np.sum(~np.isfinite(a[j]).all(axis=1))),
        }
    numbers = {
        "c": C,
        "gradient_descent": {
            "steps": GD_STEPS,
            "runs": gd_rows,
            "max_relative_drift_by_lr": {
                str(lr): float(
                    max(
                        r["relative_drift"]
                        for r in gd_rows
                        if r["lr"] == np.float32(lr) and r["relative_drift"] is not None
                    )
                )
                for lr in GD_RATES
            },
        },
        "sgd": {
            "start": list(SGD_START),
            "lr": SGD_RATE,
            "noise_sigma": SGD_NOISE,
            "steps": SGD_STEPS,
            "seeds": seeds,
            "predicted_decay_rate_4_lr2_sigma2": predicted_rate,
            "by_delay": rows,
        },
    }
    arrays = {
        "gd_a": np.asarray(gd.a),
        "gd_b": np.asarray(gd.b),
        "gd_lr": rates,
        "a": a,
        "b": b,
        "dist": dist,
        "q": q_sgd,
        "steps": steps,
    }
    return numbers, arrays


def model2_experiment() -> dict:
    """Prop. 6: SGD on Model 2 from the truth drifts to A = B = √(A*B*)."""
    rng = np.random.default_rng(2)
    a_true = rng.uniform(0.5, 1.5, M2_SIZE).astype(np.float32)
    b_true = np.exp(rng.normal(0.0, M2_LOG_STD, M2_SIZE)).astype(np.float32)
    c = a_true * b_true
    path = jax.jit(
        jax.vmap(
            lambda k: toys.product_sgd(
                k,
                a_true,
                b_true,
                c,
                lr=M2_RATE,
                steps=SGD_STEPS,
                noise=SGD_NOISE,
                record_every=SGD_STEPS // 4,
            )
        )
    )(jax.random.split(jax.random.key(3), M2_SEEDS))
    ratio = np.asarray(jax.vmap(jax.vmap(sdr.trace_ratio))(path.a, path.b))
    root = np.sqrt(c)
    gap = np.abs(np.asarray(path.a[:, -1]) - root).mean() / root.mean()
    sample_limit = float(np.mean(c.astype(np.float64) ** 2) / np.mean(c) ** 2)
    # Population value of Prop. 6: E[c²]/E[c]² = E[a²]E[b²] / (E[a]E[b])².
    limit = (13 / 12) * math.exp(M2_LOG_STD**2)
    return {
        "entries": M2_SIZE,
        "a_true": "U(0.5, 1.5)",
        "b_true": f"LogNormal(0, {M2_LOG_STD}^2)",
        "lr": M2_RATE,
        "noise_sigma": SGD_NOISE,
        "steps": SGD_STEPS,
        "seeds": M2_SEEDS,
        "trace_ratio_true": float(sdr.trace_ratio(a_true, b_true)),
        "trace_ratio_sgd_by_step": {
            str(int(s)): float(ratio[:, i].mean()) for i, s in enumerate(path.step[0])
        },
        "trace_ratio_of_sqrt_solution": sample_limit,
        "prop6_population_limit": limit,
        "final_mean_abs_a_minus_sqrt_c_relative": float(gap),
    }


# --------------------------------------------------------------------------
# 2–4. Example 1


def _grid_runs(true: toys.EyeGenerator) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The settings of every 1-D run: the study grid plus the extra main seeds."""
    rng = np.random.default_rng(4)
    cells = [
        {"start": s, "noise": n, "rate": r, "seed": i}
        for s in STARTS
        for n in NOISES
        for r in RATES
        for i in range(GRID_SEEDS)
    ]
    cells += [
        {"start": "true", "noise": NOISE_MAIN, "rate": 0.0, "seed": i}
        for i in range(GRID_SEEDS, MAIN_SEEDS)
    ]
    k1 = np.zeros((len(cells), D1), np.float32)
    k2 = np.zeros((len(cells), D1), np.float32)
    for i, cell in enumerate(cells):
        if cell["start"] in ("true", "drifted"):
            k1[i], k2[i] = true.k1, true.k2
        else:
            scale = 0.3 if cell["start"] == "random" else 0.01
            k1[i], k2[i] = rng.normal(0.0, scale, (2, D1))
    settings = {
        "k1": k1,
        "k2": k2,
        "noise": np.array([c["noise"] for c in cells], np.float32),
        "rate": np.array([c["rate"] for c in cells], np.float32),
        "start_step": np.array(
            [DRIFT_STEPS if c["start"] == "drifted" else 0 for c in cells], np.int32
        ),
    }
    return cells, settings


def _run_fourier(
    target,
    settings,
    *,
    lr,
    steps,
    record_every,
    key,
    penalty_steps=1,
    include_dc=True,
) -> toys.KernelPath:
    n = settings["k1"].shape[0]
    return jax.jit(
        jax.vmap(
            lambda k, k1, k2, s, r, p: toys.fourier_sgd(
                k,
                k1,
                k2,
                target,
                lr=lr,
                steps=steps,
                noise=s,
                penalty_rate=r,
                penalty_start=p,
                penalty_steps=penalty_steps,
                include_dc=include_dc,
                record_every=record_every,
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


def _metrics(k1, k2, k1_true, k2_true) -> dict[str, jax.Array]:
    """Scalars of one solution against the truth (vmapped over runs and steps)."""
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


def _penalty_stability_bound(k1, k2) -> float:
    """Largest scale-free penalty rate that is linearly stable near ρ = 1.

    max w² / (4 ⟨w²⟩_k), w = S/⟨S⟩ − 1 (all frequencies), S = |k̂1|², the
    mean weighted by |k̂2|²: the Gauss–Newton curvature of eq. (13).
    """
    s = np.abs(np.fft.fftn(np.asarray(k1, np.float64))) ** 2
    k = np.abs(np.fft.fftn(np.asarray(k2, np.float64))) ** 2
    w2 = (s / s.mean() - 1) ** 2
    return float(w2.max() / (4 * np.sum(w2 * k) / np.sum(k)))


def _summary(values: np.ndarray) -> dict[str, float]:
    """Mean, std, min, max over runs (NaN runs excluded, and counted)."""
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


@jax.jit
def _reference_1d(k1_true, k2_true, k1_final, k2_final) -> dict[str, jax.Array]:
    """The truth's and the balanced limit's numbers, and per-g errors of SGD."""
    balanced = toys.balanced_kernels(k1_true, k2_true)
    return {
        "rho_true": sdr.spectral_density_ratio(k1_true[None], k2_true),
        "rho_dc_true": sdr.spectral_density_ratio(
            k1_true[None], k2_true, include_dc=True
        ),
        "rho_balanced": sdr.spectral_density_ratio(balanced[0][None], balanced[1]),
        "rho_dc_balanced": sdr.spectral_density_ratio(
            balanced[0][None], balanced[1], include_dc=True
        ),
        "error_balanced": jnp.mean(
            toys.extrapolation_error(*balanced, k1_true, k2_true)
        ),
        "per_g_sgd": jax.vmap(
            lambda a, b: toys.extrapolation_error(a, b, k1_true, k2_true)
        )(k1_final, k2_final),
        # The trivial factorisation k1 = c (the whole image), k2 = δ: |k̂2|² is
        # flat, so it is generic for any cause (ρ = 1 in both conventions).
        "trivial": _metrics(
            toys.stretch_extrapolate(k1_true, k2_true, 1),
            jnp.zeros_like(k2_true).at[(0,) * k2_true.ndim].set(1.0),
            k1_true,
            k2_true,
        ),
        "true": _metrics(k1_true, k2_true, k1_true, k2_true),
        "balanced": _metrics(*balanced, k1_true, k2_true),
    }


def eye_experiments_1d() -> tuple[dict, dict]:
    """Fig. 3b, Fig. 2 (1-D numbers) and the Sec. 3.4 grid."""
    true = toys.eye_generator(D1, DISTANCE1)
    target = toys.stretch_extrapolate(true.k1, true.k2, 1)
    cells, settings = _grid_runs(true)
    path = _run_fourier(
        target,
        settings,
        lr=LR1,
        steps=STEPS1,
        record_every=RECORD1,
        key=jax.random.key(5),
    )
    path = jax.block_until_ready(path)
    metrics = jax.jit(
        jax.vmap(jax.vmap(lambda a, b: _metrics(a, b, true.k1, true.k2)))
    )(path.k1, path.k2)
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    steps = np.asarray(path.step[0])
    last = steps >= (1 - FINAL) * STEPS1
    final = {
        k: np.nanmean(np.where(np.isfinite(v), v, np.nan)[:, last], axis=1)
        for k, v in metrics.items()
    }
    diverged = ~np.isfinite(metrics["rho_dc"]).all(axis=1)
    final = {k: np.where(diverged, np.nan, v) for k, v in final.items()}

    def select(**kw) -> np.ndarray:
        return np.array([all(c[k] == v for k, v in kw.items()) for c in cells])

    main = select(start="true", noise=NOISE_MAIN, rate=0.0)
    ref = _reference_1d(true.k1, true.k2, path.k1[main, -1], path.k2[main, -1])
    ref = jax.tree_util.tree_map(np.asarray, ref)
    per_g_sgd = ref["per_g_sgd"]
    group = np.arange(1, D1)
    new_distance = (np.asarray(sdr.group_inverse(group, D1)) * DISTANCE1) % D1
    fig3b = {
        "grid": D1,
        "eye": true.eye.tolist(),
        "eye_distance": DISTANCE1,
        "lr": LR1,
        "noise_sigma": NOISE_MAIN,
        "steps": STEPS1,
        "seeds": int(main.sum()),
        "sdr_true_closed_form": toys.eye_generator_sdr(D1, DISTANCE1),
        "sdr_true_closed_form_include_dc": toys.eye_generator_sdr(
            D1, DISTANCE1, include_dc=True
        ),
        "sdr_true_measured": float(ref["rho_true"]),
        "sdr_true_measured_include_dc": float(ref["rho_dc_true"]),
        "sdr_balanced_limit": float(ref["rho_balanced"]),
        "sdr_balanced_limit_include_dc": float(ref["rho_dc_balanced"]),
        "sdr_sgd_final": _summary(final["rho"][main]),
        "sdr_sgd_final_include_dc": _summary(final["rho_dc"][main]),
        "sdr_sgd_by_step": {
            str(int(s)): float(metrics["rho"][main, i].mean())
            for i, s in enumerate(steps)
            if s in (0, 500, 1000, 2000, 4000, 8000)
        },
        "modulus_gap_mean_abs_log_ratio": {
            "start": float(metrics["modulus_gap"][main, 0].mean()),
            "final": _summary(final["modulus_gap"][main]),
        },
        "fit_error_final": _summary(final["fit_error"][main]),
    }
    fig2 = {
        "per_g_mean_error_sgd": {
            str(int(g)): float(e) for g, e in zip(group, per_g_sgd.mean(0), strict=True)
        },
        "stretched_eye_distance_per_g": {
            str(int(g)): int(t) for g, t in zip(group, new_distance, strict=True)
        },
        "group_mean_error_true": 0.0,
        "group_mean_error_sgd_final": _summary(final["error"][main]),
        "group_mean_error_balanced_limit": float(ref["error_balanced"]),
        "trivial_solution_k1_c_k2_delta": {
            k: float(v) for k, v in ref["trivial"].items()
        },
        "true_solution": {k: float(v) for k, v in ref["true"].items()},
        "balanced_limit": {k: float(v) for k, v in ref["balanced"].items()},
        "worst_g_error_sgd": float(per_g_sgd.mean(0).max()),
        "group_mean_error_sgd_true_phases_final": _summary(
            final["error_true_phases"][main]
        ),
    }
    table = []
    for s in STARTS:
        for n in NOISES:
            for r in RATES:
                m = select(start=s, noise=n, rate=r) & (
                    np.array([c["seed"] for c in cells]) < GRID_SEEDS
                )
                table.append(
                    {"start": s, "noise": n, "rate": r}
                    | {
                        k: _summary(final[k][m])
                        for k in (
                            "rho_dc",
                            "rho",
                            "error",
                            "error_true_phases",
                            "phase_incoherence",
                            "k2_flatness",
                            "fit_error",
                        )
                    }
                )
    plain = {(row["start"], row["noise"]): row for row in table if row["rate"] == 0}
    ratios = np.array(
        [
            row["error"]["mean"] / plain[row["start"], row["noise"]]["error"]["mean"]
            for row in table
            if row["rate"] > 0
        ]
    )
    sec34 = {
        "penalty_over_plain_final_error": {
            "cells": int(ratios.size),
            "min": float(np.nanmin(ratios)),
            "max": float(np.nanmax(ratios)),
            "cells_lower": int(np.sum(ratios < 1)),
        },
        "penalty_rate_linear_stability_bound": {
            "truth": _penalty_stability_bound(true.k1, true.k2),
            "balanced_limit": _penalty_stability_bound(
                *toys.balanced_kernels(true.k1, true.k2)
            ),
        },
        "lr": LR1,
        "steps": STEPS1,
        "penalty_steps_per_sgd_step": 1,
        "penalty_include_dc": True,
        "penalty_rate": "scale-free: rate / (sum k2^2 * max_nu w^2)",
        "drifted_start_penalty_from_step": DRIFT_STEPS,
        "random_start_std": 0.3,
        "small_start_std": 0.01,
        "seeds_per_cell": GRID_SEEDS,
        "final_means_over_steps_from": int((1 - FINAL) * STEPS1),
        "grid": table,
    }
    arrays = {
        "cells": cells,
        "metrics": metrics,
        "steps": steps,
        "final": final,
        "k1": np.asarray(path.k1),
        "k2": np.asarray(path.k2),
        "true": true,
        "main": main,
        "per_g_sgd": per_g_sgd,
        "new_distance": new_distance,
    }
    # The curves of the figure's panels (a)-(b): means over the 8 seeds.
    seed = np.array([c["seed"] for c in cells])
    marks = [i for i, t in enumerate(steps) if t in CURVE_STEPS]
    sec34["curves_noise_0.1"] = {
        f"{start}, rate {rate}": {
            key: {
                str(int(steps[i])): float(np.nanmean(metrics[key][m, i])) for i in marks
            }
            for key in ("rho_dc", "error")
        }
        for start, rate in (
            ("true", 0.0),
            ("true", RATE_MAIN),
            ("drifted", RATE_MAIN),
            ("random", 0.0),
            ("random", RATE_MAIN),
        )
        for m in [
            select(start=start, noise=NOISE_MAIN, rate=rate) & (seed < GRID_SEEDS)
        ]
    }
    sec34["variants"] = _penalty_variants(true, target, settings, cells)
    return {"fig3b": fig3b, "fig2_1d": fig2, "sec34": sec34}, arrays


def _penalty_variants(true, target, settings, cells) -> list[dict]:
    """Two other penalty settings, from the truth and from random starts."""
    rows = []
    for name, rate, steps, include_dc in VARIANTS:
        m = np.array(
            [
                c["noise"] == NOISE_MAIN
                and c["rate"] == 0.0
                and c["start"] in ("true", "random")
                and c["seed"] < GRID_SEEDS
                for c in cells
            ]
        )
        sub = {k: v[m] for k, v in settings.items()}
        sub["rate"] = np.full(int(m.sum()), rate, np.float32)
        path = _run_fourier(
            target,
            sub,
            lr=LR1,
            steps=STEPS1,
            record_every=STEPS1 // 10,
            key=jax.random.key(7),
            penalty_steps=steps,
            include_dc=include_dc,
        )
        final = jax.jit(
            jax.vmap(jax.vmap(lambda a, b: _metrics(a, b, true.k1, true.k2)))
        )(path.k1[:, -2:], path.k2[:, -2:])
        final = {k: np.asarray(v).mean(1) for k, v in final.items()}
        starts = np.array(
            [c["start"] for c, keep in zip(cells, m, strict=True) if keep]
        )
        for start in ("true", "random"):
            sel = starts == start
            rows.append(
                {
                    "variant": name,
                    "start": start,
                    "noise": NOISE_MAIN,
                    "rate": rate,
                    "penalty_steps": steps,
                    "include_dc": include_dc,
                }
                | {
                    k: _summary(final[k][sel])
                    for k in (
                        "rho_dc",
                        "rho",
                        "error",
                        "error_true_phases",
                        "k2_flatness",
                    )
                }
            )
    return rows


@jax.jit
def _post_2d(k1_true, k2_true, k1, k2, shown) -> dict[str, Any]:
    """Per-g errors, metrics and the stretched images of the 2-D runs."""

    def images(a, b):
        return jax.vmap(lambda g: toys.stretch_extrapolate(a, b, g))(shown)

    return {
        "per_g": jax.vmap(
            lambda a, b: toys.extrapolation_error(a, b, k1_true, k2_true)
        )(k1, k2),
        "final": jax.vmap(lambda a, b: _metrics(a, b, k1_true, k2_true))(k1, k2),
        "images": jax.vmap(images)(k1, k2),
        "images_true": images(k1_true, k2_true),
    }


def eye_experiment_2d() -> tuple[dict, dict]:
    """Example 1 in 2-D: SGD and SGD + penalty from the truth (Fig. 2 pictures)."""
    eye = toys.EYE_2D / np.linalg.norm(toys.EYE_2D)
    true = toys.eye_generator(GRID2, DISTANCE2, eye=eye)
    target = toys.stretch_extrapolate(true.k1, true.k2, 1)
    n = 2 * SEEDS2
    settings = {
        "k1": np.broadcast_to(np.asarray(true.k1), (n, *GRID2)),
        "k2": np.broadcast_to(np.asarray(true.k2), (n, *GRID2)),
        "noise": np.full(n, NOISE2, np.float32),
        "rate": np.repeat(np.array([0.0, RATE_MAIN], np.float32), SEEDS2),
        "start_step": np.zeros(n, np.int32),
    }
    path = _run_fourier(
        target,
        settings,
        lr=LR2,
        steps=STEPS2,
        record_every=RECORD2,
        key=jax.random.key(6),
    )
    d = GRID2[-1]
    # The g with (g⁻¹ · distance) mod d = t, i.e. g = distance · t⁻¹ mod d.
    shown = [DISTANCE2 * pow(t, -1, d) % d for t in SHOW_DISTANCES]
    post = _post_2d(true.k1, true.k2, path.k1[:, -1], path.k2[:, -1], np.array(shown))
    post = jax.tree_util.tree_map(np.asarray, post)
    per_g, final = post["per_g"], post["final"]
    images = {
        "true": post["images_true"],
        "sgd": post["images"][0],
        "penalty": post["images"][SEEDS2],
    }
    plain, pen = slice(0, SEEDS2), slice(SEEDS2, n)
    numbers = {
        "grid": list(GRID2),
        "eye": "EYE_2D / ||EYE_2D|| (unit energy)",
        "eye_distance": DISTANCE2,
        "lr": LR2,
        "noise_sigma": NOISE2,
        "steps": STEPS2,
        "seeds": SEEDS2,
        "penalty_rate": RATE_MAIN,
        "sdr_true_closed_form": toys.eye_generator_sdr(GRID2, DISTANCE2, eye=eye),
        "sdr_true_closed_form_include_dc": toys.eye_generator_sdr(
            GRID2, DISTANCE2, eye=eye, include_dc=True
        ),
        "shown_g": shown,
        "shown_eye_distances": list(SHOW_DISTANCES),
    }
    for name, sl in (("sgd", plain), ("sgd_penalty", pen)):
        numbers[name] = {
            "sdr_final": _summary(final["rho"][sl]),
            "sdr_final_include_dc": _summary(final["rho_dc"][sl]),
            "group_mean_error": _summary(final["error"][sl]),
            "group_mean_error_true_phases": _summary(final["error_true_phases"][sl]),
            "fit_error": _summary(final["fit_error"][sl]),
            "error_at_shown_g": [float(per_g[sl, g - 1].mean()) for g in shown],
        }
    return numbers, {"images": images, "per_g": per_g, "true": true, "shown": shown}


# --------------------------------------------------------------------------
# Figures


def figure_3a(out: pathlib.Path, arr: dict) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    ax = axes[0]
    a_line = np.linspace(0.05, 3.0, 400)
    ax.plot(a_line, C / a_line, color="0.6", lw=1, label="solution set ab = c")
    fine = arr["gd_lr"] == np.float32(min(GD_RATES))
    for i in np.flatnonzero(fine):
        ax.plot(arr["gd_a"][i], arr["gd_b"][i], color="tab:red", lw=1.5)
        ax.plot(arr["gd_a"][i, 0], arr["gd_b"][i, 0], "o", color="tab:red", ms=7)
    ax.plot([], [], color="tab:red", label=f"gradient descent, η = {min(GD_RATES)}")
    tau = DELAYS.index(4)
    ax.plot(
        arr["a"][0, 0],
        arr["b"][0, 0],
        color="tab:green",
        lw=0.8,
        label="SGD sample path",
    )
    ax.plot(
        arr["a"][tau, 0],
        arr["b"][tau, 0],
        color="tab:blue",
        lw=0.8,
        alpha=0.8,
        label="ASGD (τ = 4) sample path",
    )
    ax.plot(*SGD_START, "o", color="k", ms=7)
    ax.plot(math.sqrt(C), math.sqrt(C), "*", color="k", ms=12, label="(√c, √c)")
    ax.set(
        xlim=(0, 3),
        ylim=(0, 3),
        xlabel="a",
        ylabel="b",
        title="(a) trajectories on |c − ab|², c = 1",
    )
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)

    steps = arr["steps"]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(DELAYS)))
    for j, t in enumerate(DELAYS):
        label = "SGD" if t == 0 else f"ASGD τ = {t}"
        mean = arr["dist"][j].mean(0)
        std = arr["dist"][j].std(0)
        axes[1].plot(steps, mean, color=colors[j], label=label)
        axes[1].fill_between(steps, mean - std, mean + std, color=colors[j], alpha=0.12)
        axes[2].semilogy(
            steps, np.abs(arr["q"][j].mean(0)), color=colors[j], label=label
        )
    q0 = arr["q"][0, :, 0].mean()
    axes[2].semilogy(
        steps,
        q0 * np.exp(-4 * SGD_RATE**2 * SGD_NOISE**2 * steps),
        "k--",
        lw=1,
        label="q0·exp(−4η²σ²t)",
    )
    axes[1].set(
        xlabel="step",
        ylabel="distance to (√c, √c)",
        title=f"(b) drift along ab = c (mean ± std, {SGD_SEEDS} seeds)",
    )
    axes[2].set(
        xlabel="step",
        ylabel="|mean a² − b²|",
        title="(c) the conserved quantity decays under SGD",
    )
    axes[2].set_ylim(1e-3, 10)
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig3a_product.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def figure_3b(out: pathlib.Path, arr: dict, num: dict) -> None:
    import matplotlib.pyplot as plt

    true = arr["true"]
    run = int(np.flatnonzero(arr["main"])[0])
    steps = arr["steps"]
    fig = plt.figure(figsize=(15, 4.8))
    grid = fig.add_gridspec(2, 3, width_ratios=(1, 1.5, 1.2))
    x = np.arange(D1)
    for row, (name, learned, ref) in enumerate(
        (("k1", arr["k1"][run, -1], true.k1), ("k2", arr["k2"][run, -1], true.k2))
    ):
        ax = fig.add_subplot(grid[row, 0])
        ax.bar(x, np.asarray(ref), color="0.75", label="true")
        ax.plot(x, learned, "o-", color="tab:red", ms=3, lw=1, label="SGD")
        ax.set_ylabel(name)
        if row == 0:
            ax.set_title("(a) final kernels (one seed)")
            ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[:, 1])
    freqs = (0, 2, 5, 9, 13)
    colors = plt.cm.tab10(np.arange(len(freqs)))
    a2 = np.abs(np.fft.fft(arr["k1"][run], axis=-1)) ** 2
    b2 = np.abs(np.fft.fft(arr["k2"][run], axis=-1)) ** 2
    for c, u in zip(colors, freqs, strict=True):
        ax.semilogy(steps, a2[:, u], color=c, lw=1.2, label=f"ν = {u}")
        ax.semilogy(steps, b2[:, u], color=c, lw=1.2, ls="--")
    ax.set(
        xlabel="step",
        ylabel="power",
        title="(b) |k̂1(ν)|² (solid) and |k̂2(ν)|² (dashed) under SGD",
    )
    ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(grid[:, 2])
    main = arr["main"]
    for key, color, label, ref in (
        ("rho", "tab:blue", "ρ (zero frequency excluded)", num["sdr_true_closed_form"]),
        ("rho_dc", "tab:orange", "ρ (include_dc=True)", 1.0),
    ):
        values = arr["metrics"][key][main]
        ax.plot(steps, values.mean(0), color=color, label=label)
        ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.15)
        ax.axhline(ref, color=color, ls=":", lw=1)
    ax.axhline(
        num["sdr_balanced_limit"],
        color="k",
        ls="--",
        lw=1,
        label="balanced limit |k̂1| = |k̂2|",
    )
    ax.set(
        xlabel="step",
        ylabel="SDR ρ(k1, k2)",
        title=f"(c) SDR, {int(main.sum())} seeds (dotted: the truth)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fig3b_fourier_sgd.png", dpi=110)
    plt.close(fig)


def figure_2(out: pathlib.Path, arr1: dict, arr2: dict, num2: dict) -> None:
    import matplotlib.pyplot as plt

    images = arr2["images"]
    rows = (
        ("true", "true solution"),
        ("sgd", "SGD solution"),
        ("penalty", f"SGD + penalty ({RATE_MAIN})"),
    )
    cols = len(SHOW_DISTANCES)
    fig = plt.figure(figsize=(15, 8.2))
    grid = fig.add_gridspec(4, cols, height_ratios=(1, 1, 1, 1.6))
    vmax = float(np.abs(images["true"]).max())
    for r, (key, label) in enumerate(rows):
        for c in range(cols):
            t = SHOW_DISTANCES[c]
            delta = toys.EYE_2D.shape[0]
            shift = (GRID2[0] // 2 - delta // 2, (GRID2[1] - (t + delta)) // 2)
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(
                np.roll(images[key][c], shift, axis=(0, 1)),
                cmap="gray",
                vmin=-0.25 * vmax,
                vmax=vmax,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"g = {arr2['shown'][c]}: eye distance {t}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    ax = fig.add_subplot(grid[3, :])
    order = np.argsort(arr1["new_distance"])
    dist = arr1["new_distance"][order]
    ax.semilogy(
        dist,
        arr1["per_g_sgd"].mean(0)[order],
        "o-",
        color="tab:red",
        label=f"1-D SGD solution (d = {D1}, {arr1['per_g_sgd'].shape[0]} seeds)",
    )
    d = GRID2[-1]
    g2 = np.arange(1, d)
    dist2 = (np.asarray(sdr.group_inverse(g2, d)) * DISTANCE2) % d
    order2 = np.argsort(dist2)
    ax.semilogy(
        dist2[order2],
        arr2["per_g"][:SEEDS2].mean(0)[order2],
        "s-",
        color="tab:purple",
        label=f"2-D SGD solution ({GRID2[0]}×{d})",
    )
    ax.semilogy(
        dist2[order2],
        arr2["per_g"][SEEDS2:].mean(0)[order2],
        "^-",
        color="tab:green",
        label="2-D SGD + penalty",
    )
    ax.axvline(DISTANCE1, color="tab:red", ls=":", lw=1)
    ax.axvline(DISTANCE2, color="tab:purple", ls=":", lw=1)
    ax.set(
        xlabel="eye distance after stretching, (g⁻¹ · distance) mod d",
        ylabel="relative error of the extrapolated image",
        title="extrapolation error per group element (the truth's is 0); "
        "dotted: the training distance (g = 1)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig2_extrapolation.png", dpi=110)
    plt.close(fig)


def figure_penalty(out: pathlib.Path, arr: dict) -> None:
    import matplotlib.pyplot as plt

    cells, metrics, steps = arr["cells"], arr["metrics"], arr["steps"]
    seed = np.array([c["seed"] for c in cells])

    def pick(start, noise, rate):
        return np.array(
            [
                c["start"] == start and c["noise"] == noise and c["rate"] == rate
                for c in cells
            ]
        ) & (seed < GRID_SEEDS)

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.6))
    axes = axes.ravel()
    lines = (
        ("true", 0.0, "tab:blue", "-", "truth, SGD"),
        ("true", RATE_MAIN, "tab:orange", "-", "truth, SGD + penalty"),
        ("drifted", RATE_MAIN, "tab:green", "-", f"truth, penalty from {DRIFT_STEPS}"),
        ("random", 0.0, "tab:blue", ":", "random start, SGD"),
        ("random", RATE_MAIN, "tab:orange", ":", "random start, SGD + penalty"),
    )
    for start, rate, color, ls, label in lines:
        m = pick(start, NOISE_MAIN, rate)
        for ax, key in ((axes[0], "rho_dc"), (axes[1], "error")):
            ax.plot(
                steps, np.nanmean(metrics[key][m], 0), color=color, ls=ls, label=label
            )
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set(
        xlabel="step",
        ylabel="ρ (include_dc=True)",
        title=f"(a) SDR, σ = {NOISE_MAIN}, rate {RATE_MAIN}, 8 seeds",
    )
    axes[1].set(
        xlabel="step",
        ylabel="group-mean extrapolation error",
        title="(b) extrapolation error, same runs",
    )
    axes[0].legend(fontsize=7)
    final = arr["final"]
    x = np.arange(len(RATES))
    colors = dict(
        zip(STARTS, ("tab:blue", "tab:green", "tab:red", "tab:purple"), strict=True)
    )
    styles = dict(zip(NOISES, (":", "-", "--"), strict=True))
    for key, ax, title, ylabel in (
        ("error", axes[2], "(c) final error", "group-mean error"),
        (
            "error_true_phases",
            axes[3],
            "(d) final error, learned moduli + true phases",
            "group-mean error",
        ),
        (
            "k2_flatness",
            axes[4],
            "(e) spectral flatness of k2 (1 = white)",
            "geometric / arithmetic mean of |k̂2|²",
        ),
    ):
        for s in STARTS:
            for n in NOISES:
                y = [np.nanmean(final[key][pick(s, n, r)]) for r in RATES]
                ax.plot(
                    x,
                    y,
                    color=colors[s],
                    ls=styles[n],
                    marker="o",
                    ms=3,
                    label=f"{s}, σ = {n}",
                )
        ax.set_xticks(x, [str(r) for r in RATES])
        ax.set(xlabel="penalty rate (0 = plain SGD)", ylabel=ylabel, title=title)
    axes[4].legend(fontsize=6, ncol=2)
    true = arr["true"]
    u = np.arange(D1 // 2 + 1)
    ax = axes[5]
    ax.semilogy(u, np.abs(np.fft.fft(true.k1))[u] ** 2, "k-", lw=1.5, label="|k̂1*|²")
    ax.semilogy(u, np.abs(np.fft.fft(true.k2))[u] ** 2, "k--", lw=1.5, label="|k̂2*|²")
    for rate, color, name in (
        (0.0, "tab:blue", "SGD"),
        (RATE_MAIN, "tab:orange", "SGD + penalty"),
    ):
        m = pick("true", NOISE_MAIN, rate)
        a2 = (np.abs(np.fft.fft(arr["k1"][m, -1], axis=-1)) ** 2).mean(0)
        b2 = (np.abs(np.fft.fft(arr["k2"][m, -1], axis=-1)) ** 2).mean(0)
        ax.semilogy(u, a2[u], "-", color=color, label=f"|k̂1|², {name}")
        note = " (on |k̂1|²)" if rate == 0.0 else ""
        ax.semilogy(u, b2[u], "--", color=color, label=f"|k̂2|², {name}{note}")
    ax.set(
        xlabel="frequency ν",
        ylabel="power",
        ylim=(1e-3, 50),
        title=f"(f) final spectra from the truth, σ = {NOISE_MAIN}",
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "sec34_penalty.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="folder for the PNG figures and theory.json",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    command = shlex.join(["python", "-m", "benchmarks.theory", *sys.argv[1:]])
    stages = [
        "Fig. 3a: GD, SGD, ASGD on |c − ab|²",
        "Prop. 6: SGD on Model 2",
        "Fig. 3b, Fig. 2, Sec. 3.4: 1-D eye generator grid",
        "Fig. 2: 2-D eye generator",
        "figures",
    ]
    progress = Progress(stages)
    results: dict[str, Any] = {}
    with progress.stage(stages[0]):
        results["fig3a"], arr_a = product_experiments()
    with progress.stage(stages[1]):
        results["fig3a"]["model2_prop6"] = model2_experiment()
    with progress.stage(stages[2]):
        eye1, arr1 = eye_experiments_1d()
    with progress.stage(stages[3]):
        eye2, arr2 = eye_experiment_2d()
    results["fig3b"] = eye1["fig3b"]
    results["fig2"] = {"one_d": eye1["fig2_1d"], "two_d": eye2}
    results["sec34"] = eye1["sec34"]
    with progress.stage(stages[4]):
        figure_3a(args.out, arr_a)
        figure_3b(args.out, arr1, results["fig3b"])
        figure_2(args.out, arr1, arr2, eye2)
        figure_penalty(args.out, arr1)
    progress.close()
    results["meta"] = {
        "command": command,
        "runtime_s": time.perf_counter() - start,
        "stage_s": progress.times,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    (args.out / "theory.json").write_text(json.dumps(_f(results), indent=1) + "\n")
    print_summary(results)
    print(f"wrote {args.out}/theory.json and 4 PNG figures")
    print(f"command: {command}")
    print(f"total runtime: {results['meta']['runtime_s']:.1f} s")


def print_summary(r: dict) -> None:
    """The headline numbers, one line each."""
    a = r["fig3a"]
    print("Fig. 3a")
    for lr, drift in a["gradient_descent"]["max_relative_drift_by_lr"].items():
        print(f"  GD η = {lr}: max relative drift of a² − b²: {drift:.2e}")
    sgd = a["sgd"]
    print(
        f"  SGD: predicted decay rate of a² − b²: "
        f"{sgd['predicted_decay_rate_4_lr2_sigma2']:.2e}/step"
    )
    for name, row in sgd["by_delay"].items():
        d = row["mean_distance_to_sqrt_c"]
        print(
            f"  {name}: distance to (√c, √c) {d['0']:.3f} → {d['2000']:.3f} (2000) "
            f"→ {d['8000']:.3f} (8000); fitted rate "
            f"{row['fitted_decay_rate_of_mean_a2_minus_b2']:.2e}/step"
        )
    m2 = a["model2_prop6"]
    print(
        f"  Model 2: ρ' true {m2['trace_ratio_true']:.3f}, SGD end "
        f"{list(m2['trace_ratio_sgd_by_step'].values())[-1]:.3f}, √(a*b*) "
        f"{m2['trace_ratio_of_sqrt_solution']:.3f}, Prop. 6 limit "
        f"{m2['prop6_population_limit']:.3f}"
    )
    b = r["fig3b"]
    print("Fig. 3b")
    print(
        f"  SDR true: closed form {b['sdr_true_closed_form']:.4f} (measured "
        f"{b['sdr_true_measured']:.4f}), include_dc "
        f"{b['sdr_true_measured_include_dc']:.4f}"
    )
    print(
        f"  SDR SGD final: {b['sdr_sgd_final']['mean']:.3f} ± "
        f"{b['sdr_sgd_final']['std']:.3f} (include_dc "
        f"{b['sdr_sgd_final_include_dc']['mean']:.3f}); balanced limit "
        f"{b['sdr_balanced_limit']:.3f}"
    )
    f2 = r["fig2"]["one_d"]
    print("Fig. 2")
    print(
        f"  1-D group-mean extrapolation error: SGD "
        f"{f2['group_mean_error_sgd_final']['mean']:.3f}, balanced limit "
        f"{f2['group_mean_error_balanced_limit']:.3f}, truth 0"
    )
    two = r["fig2"]["two_d"]
    print(
        f"  2-D: SGD {two['sgd']['group_mean_error']['mean']:.3f} (ρ "
        f"{two['sgd']['sdr_final']['mean']:.3f}); SGD + penalty "
        f"{two['sgd_penalty']['group_mean_error']['mean']:.3f} (ρ_dc "
        f"{two['sgd_penalty']['sdr_final_include_dc']['mean']:.3f})"
    )
    print("Sec. 3.4 (final error, mean of 8 seeds; rate 0 = plain SGD)")
    for row in r["sec34"]["grid"]:
        if row["noise"] == NOISE_MAIN:
            print(
                f"  {row['start']:8s} σ = {row['noise']:<4} rate {row['rate']:<5}: "
                f"ρ_dc {row['rho_dc']['mean']:.3f}  error {row['error']['mean']:.3f}"
                f"  (true phases {row['error_true_phases']['mean']:.3f})"
                f"  k2 flatness {row['k2_flatness']['mean']:.3f}"
                f"  diverged {row['rho_dc']['runs_not_finite']}"
            )
    for row in r["sec34"]["variants"]:
        print(
            f"  variant {row['variant']!r}, {row['start']} start: ρ_dc "
            f"{row['rho_dc']['mean']:.3f}, ρ {row['rho']['mean']:.3f}, error "
            f"{row['error']['mean']:.3f}, diverged {row['rho_dc']['runs_not_finite']}"
        )
    ratio = r["sec34"]["penalty_over_plain_final_error"]
    print(
        f"  over all {ratio['cells']} (start, σ, rate > 0) cells: final error with "
        f"the penalty / without: {ratio['min']:.2f} … {ratio['max']:.2f}; cells "
        f"where the penalty lowered it: {ratio['cells_lower']}"
    )
    t = r["fig2"]["one_d"]["trivial_solution_k1_c_k2_delta"]
    print(
        f"  trivial solution k1 = c, k2 = δ: ρ {t['rho']:.3f}, ρ_dc "
        f"{t['rho_dc']:.3f}, error {t['error']:.3f}"
    )


if __name__ == "__main__":
    main()
