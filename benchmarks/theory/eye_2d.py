"""Example 1 in 2-D: SGD with and without the penalty, and Fig. 2's pictures."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from benchmarks.theory.eye_common import run_fourier, solution_metrics, summarise
from benchmarks.theory.settings import (
    DISTANCE2,
    GRID2,
    LR2,
    NOISE2,
    RATE_MAIN,
    RECORD2,
    SEEDS2,
    SHOW_DISTANCES,
    STEPS2,
)
from sdr import toys


@jax.jit
def _post_2d(k1_true, k2_true, k1, k2, shown) -> dict[str, Any]:
    """Per-g errors, metrics and the stretched images of the 2-D runs."""

    def images(a, b):
        return jax.vmap(lambda g: toys.stretch_extrapolate(a, b, g))(shown)

    return {
        "per_g": jax.vmap(
            lambda a, b: toys.extrapolation_error(a, b, k1_true, k2_true)
        )(k1, k2),
        "final": jax.vmap(lambda a, b: solution_metrics(a, b, k1_true, k2_true))(
            k1, k2
        ),
        "images": jax.vmap(images)(k1, k2),
        "images_true": images(k1_true, k2_true),
    }


def eye_experiment_2d() -> tuple[dict, dict]:
    """Example 1 in 2-D: SGD and SGD + penalty from the truth (Fig. 2 pictures).

    Returns:
      `(numbers, arrays)`: the JSON-ready numbers, and the stretched images
      and per-g errors the figure draws.
    """
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
    path = run_fourier(
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
            "sdr_final": summarise(final["rho"][sl]),
            "sdr_final_include_dc": summarise(final["rho_dc"][sl]),
            "group_mean_error": summarise(final["error"][sl]),
            "group_mean_error_true_phases": summarise(final["error_true_phases"][sl]),
            "fit_error": summarise(final["fit_error"][sl]),
            "error_at_shown_g": [float(per_g[sl, g - 1].mean()) for g in shown],
        }
    return numbers, {"images": images, "per_g": per_g, "true": true, "shown": shown}
