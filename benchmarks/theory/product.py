"""Fig. 3a and Prop. 6: GD, SGD and stale-gradient SGD on |c − ab|², and Model 2."""

from __future__ import annotations

import math

import jax
import numpy as np

import sdr
from benchmarks.theory.settings import (
    DELAYS,
    GD_RATES,
    GD_RECORD,
    GD_STARTS,
    GD_STEPS,
    M2_LOG_STD,
    M2_RATE,
    M2_SEEDS,
    M2_SIZE,
    SGD_NOISE,
    SGD_RATE,
    SGD_RECORD,
    SGD_SEEDS,
    SGD_START,
    SGD_STEPS,
    C,
)
from sdr import toys


def _gradient_descent() -> tuple[np.ndarray, np.ndarray, np.ndarray, toys.ProductPath]:
    """GD from every start with every rate: (a0, b0, rates, paths)."""
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
    return a0, b0, rates, gd


def _gd_rows(a0, b0, rates, gd: toys.ProductPath) -> list[dict]:
    """The drift of a² − b² and the final residual of each GD run."""
    q = np.asarray(gd.a, np.float64) ** 2 - np.asarray(gd.b, np.float64) ** 2
    drift = np.abs(q - q[:, :1]).max(axis=1)
    residual = np.abs(np.asarray(gd.a[:, -1] * gd.b[:, -1]) - C)
    return [
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


def _sgd_runs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SGD and ASGD from `SGD_START`: a and b of shape (delays, seeds, records)."""
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
    return a, b, np.asarray(sgd.step[0])


def _by_delay(a, b, steps) -> tuple[np.ndarray, np.ndarray, dict]:
    """Distance to (√c, √c), a² − b² and the numbers of each staleness τ."""
    root = math.sqrt(C)
    dist = np.sqrt((a - root) ** 2 + (b - root) ** 2)
    q_sgd = a.astype(np.float64) ** 2 - b.astype(np.float64) ** 2
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
    return dist, q_sgd, rows


def product_experiments() -> tuple[dict, dict]:
    """GD, SGD and ASGD on |c − ab|² (Fig. 3a).

    Returns:
      `(numbers, arrays)`: the JSON-ready numbers, and the trajectories the
      figure draws.
    """
    a0, b0, rates, gd = _gradient_descent()
    gd_rows = _gd_rows(a0, b0, rates, gd)
    a, b, steps = _sgd_runs()
    dist, q_sgd, rows = _by_delay(a, b, steps)
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
            "seeds": SGD_SEEDS,
            "predicted_decay_rate_4_lr2_sigma2": 4 * SGD_RATE**2 * SGD_NOISE**2,
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
    """Prop. 6: SGD on Model 2 from the truth drifts to A = B = √(A*B*).

    Returns:
      The JSON-ready numbers: the trace ratio ρ' of the truth, of SGD by step
      and of the square-root solution, and Prop. 6's population limit.
    """
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
