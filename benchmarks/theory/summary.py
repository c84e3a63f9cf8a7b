"""The theory run's output: its numbers made JSON-ready, its headline lines."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from benchmarks.theory.settings import NOISE_MAIN


def json_ready(x: Any, digits: int = 5) -> Any:
    """JSON-friendly floats (NaN → None), rounded, through dicts and sequences.

    Args:
      x: a number, an array, or a dict, list or tuple of them.
      digits: the decimals kept.

    Returns:
      `x` with arrays as lists and floats rounded; non-finite floats None.
    """
    if isinstance(x, dict):
        return {k: json_ready(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_ready(v, digits) for v in x]
    if isinstance(x, np.ndarray | jax.Array):
        return json_ready(np.asarray(x).tolist(), digits)
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else round(float(x), digits)
    return x


def _print_fig3a(a: dict) -> None:
    """Fig. 3a and Prop. 6."""
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


def _print_fig3b_fig2(r: dict) -> None:
    """Fig. 3b and Fig. 2."""
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


def _print_sec34(r: dict) -> None:
    """Sec. 3.4: the grid at σ = NOISE_MAIN, the variants, the error ratios."""
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


def print_summary(r: dict) -> None:
    """The headline numbers, one line each.

    Args:
      r: the results of the run (the content of `theory.json`).
    """
    _print_fig3a(r["fig3a"])
    _print_fig3b_fig2(r)
    _print_sec34(r)
