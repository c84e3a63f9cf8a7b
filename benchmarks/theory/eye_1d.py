"""Example 1 in 1-D: Fig. 3b, the 1-D numbers of Fig. 2 and the Sec. 3.4 grid."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import sdr
from benchmarks.theory.eye_common import (
    penalty_stability_bound,
    run_fourier,
    solution_metrics,
    summarise,
)
from benchmarks.theory.settings import (
    CURVE_STEPS,
    D1,
    DISTANCE1,
    DRIFT_STEPS,
    FINAL,
    GRID_SEEDS,
    LR1,
    MAIN_SEEDS,
    NOISE_MAIN,
    NOISES,
    RATE_MAIN,
    RATES,
    RECORD1,
    STARTS,
    STEPS1,
    VARIANTS,
)
from sdr import toys

# Every 1-D run: SGD at rate LR1 for STEPS1 steps.
_run_1d = functools.partial(run_fourier, lr=LR1, steps=STEPS1)

# The metrics of the Sec. 3.4 grid table.
_TABLE_KEYS = (
    "rho_dc",
    "rho",
    "error",
    "error_true_phases",
    "phase_incoherence",
    "k2_flatness",
    "fit_error",
)


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


def _select(cells: list[dict], **kw) -> np.ndarray:
    """The mask of the runs whose cell has the given values."""
    return np.array([all(c[k] == v for k, v in kw.items()) for c in cells])


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
        "trivial": solution_metrics(
            toys.stretch_extrapolate(k1_true, k2_true, 1),
            jnp.zeros_like(k2_true).at[(0,) * k2_true.ndim].set(1.0),
            k1_true,
            k2_true,
        ),
        "true": solution_metrics(k1_true, k2_true, k1_true, k2_true),
        "balanced": solution_metrics(*balanced, k1_true, k2_true),
    }


def _train_grid(true, target, settings) -> tuple:
    """Runs the grid: (path, metrics by run and record, steps, final metrics).

    "Final" is the mean over the last `FINAL` of the records, NaN for runs
    that diverged.
    """
    path = _run_1d(target, settings, record_every=RECORD1, key=jax.random.key(5))
    path = jax.block_until_ready(path)
    metrics = jax.jit(
        jax.vmap(jax.vmap(lambda a, b: solution_metrics(a, b, true.k1, true.k2)))
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
    return path, metrics, steps, final


def _fig3b_numbers(true, metrics, final, steps, main, ref) -> dict:
    """Fig. 3b: the SDR of the truth, of the balanced limit and of SGD."""
    return {
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
        "sdr_sgd_final": summarise(final["rho"][main]),
        "sdr_sgd_final_include_dc": summarise(final["rho_dc"][main]),
        "sdr_sgd_by_step": {
            str(int(s)): float(metrics["rho"][main, i].mean())
            for i, s in enumerate(steps)
            if s in (0, 500, 1000, 2000, 4000, 8000)
        },
        "modulus_gap_mean_abs_log_ratio": {
            "start": float(metrics["modulus_gap"][main, 0].mean()),
            "final": summarise(final["modulus_gap"][main]),
        },
        "fit_error_final": summarise(final["fit_error"][main]),
    }


def _fig2_numbers(final, main, ref, group, new_distance) -> dict:
    """Fig. 2 in 1-D: the extrapolation error per g and over the group."""
    per_g_sgd = ref["per_g_sgd"]
    return {
        "per_g_mean_error_sgd": {
            str(int(g)): float(e) for g, e in zip(group, per_g_sgd.mean(0), strict=True)
        },
        "stretched_eye_distance_per_g": {
            str(int(g)): int(t) for g, t in zip(group, new_distance, strict=True)
        },
        "group_mean_error_true": 0.0,
        "group_mean_error_sgd_final": summarise(final["error"][main]),
        "group_mean_error_balanced_limit": float(ref["error_balanced"]),
        "trivial_solution_k1_c_k2_delta": {
            k: float(v) for k, v in ref["trivial"].items()
        },
        "true_solution": {k: float(v) for k, v in ref["true"].items()},
        "balanced_limit": {k: float(v) for k, v in ref["balanced"].items()},
        "worst_g_error_sgd": float(per_g_sgd.mean(0).max()),
        "group_mean_error_sgd_true_phases_final": summarise(
            final["error_true_phases"][main]
        ),
    }


def _grid_table(cells, final) -> list[dict]:
    """One row per (start, σ, rate) cell of the grid: its final metrics."""
    table = []
    for s in STARTS:
        for n in NOISES:
            for r in RATES:
                m = _select(cells, start=s, noise=n, rate=r) & (
                    np.array([c["seed"] for c in cells]) < GRID_SEEDS
                )
                table.append(
                    {"start": s, "noise": n, "rate": r}
                    | {k: summarise(final[k][m]) for k in _TABLE_KEYS}
                )
    return table


def _sec34_numbers(true, table) -> dict:
    """Sec. 3.4: the grid table, the error ratios and the settings."""
    plain = {(row["start"], row["noise"]): row for row in table if row["rate"] == 0}
    ratios = np.array(
        [
            row["error"]["mean"] / plain[row["start"], row["noise"]]["error"]["mean"]
            for row in table
            if row["rate"] > 0
        ]
    )
    return {
        "penalty_over_plain_final_error": {
            "cells": int(ratios.size),
            "min": float(np.nanmin(ratios)),
            "max": float(np.nanmax(ratios)),
            "cells_lower": int(np.sum(ratios < 1)),
        },
        "penalty_rate_linear_stability_bound": {
            "truth": penalty_stability_bound(true.k1, true.k2),
            "balanced_limit": penalty_stability_bound(
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


def _curves(cells, metrics, steps) -> dict:
    """The curves of the figure's panels (a)-(b): means over the 8 seeds."""
    seed = np.array([c["seed"] for c in cells])
    marks = [i for i, t in enumerate(steps) if t in CURVE_STEPS]
    return {
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
            _select(cells, start=start, noise=NOISE_MAIN, rate=rate)
            & (seed < GRID_SEEDS)
        ]
    }


def eye_experiments_1d() -> tuple[dict, dict]:
    """Fig. 3b, Fig. 2 (1-D numbers) and the Sec. 3.4 grid.

    Returns:
      `(numbers, arrays)`: the JSON-ready numbers under `fig3b`, `fig2_1d` and
      `sec34`, and what the figures draw.
    """
    true = toys.eye_generator(D1, DISTANCE1)
    target = toys.stretch_extrapolate(true.k1, true.k2, 1)
    cells, settings = _grid_runs(true)
    path, metrics, steps, final = _train_grid(true, target, settings)
    main = _select(cells, start="true", noise=NOISE_MAIN, rate=0.0)
    ref = _reference_1d(true.k1, true.k2, path.k1[main, -1], path.k2[main, -1])
    ref = jax.tree_util.tree_map(np.asarray, ref)
    group = np.arange(1, D1)
    new_distance = (np.asarray(sdr.group_inverse(group, D1)) * DISTANCE1) % D1
    fig3b = _fig3b_numbers(true, metrics, final, steps, main, ref)
    fig2 = _fig2_numbers(final, main, ref, group, new_distance)
    sec34 = _sec34_numbers(true, _grid_table(cells, final))
    arrays = {
        "cells": cells,
        "metrics": metrics,
        "steps": steps,
        "final": final,
        "k1": np.asarray(path.k1),
        "k2": np.asarray(path.k2),
        "true": true,
        "main": main,
        "per_g_sgd": ref["per_g_sgd"],
        "new_distance": new_distance,
    }
    sec34["curves_noise_0.1"] = _curves(cells, metrics, steps)
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
        path = _run_1d(
            target,
            sub,
            record_every=STEPS1 // 10,
            key=jax.random.key(7),
            penalty_steps=steps,
            include_dc=include_dc,
        )
        final = jax.jit(
            jax.vmap(jax.vmap(lambda a, b: solution_metrics(a, b, true.k1, true.k2)))
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
                    k: summarise(final[k][sel])
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
