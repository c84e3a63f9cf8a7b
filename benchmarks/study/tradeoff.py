"""Extrapolation against reconstruction: does the penalty do more than blur?

A model that reconstructs worse, with less fine detail, can score a smaller
`stretch_mse` for that reason alone. Two controls separate the two:

- the trade-off figure (`plot_tradeoff`): each run's final `recon_mse`
  against its extrapolation errors, with the unpenalised runs' earlier
  evaluations (fewer steps) and the runs with a larger KL weight as the
  blur baseline: penalised points below the baseline's curve at the same
  reconstruction error show an effect that blurring does not have;
- the reconstruction-matched comparison (`matched_comparison`): for each
  seed, the penalised run against the unpenalised checkpoint of the same
  seed whose `recon_mse` is closest (`baseline_checkpoints`: every
  evaluation after step 0 of every run without the penalty of that seed
  and base, whatever its KL weight), paired over the seeds.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.study.paired import Paired, paired

# Checkpoints earlier than this share of a run's steps are not baselines:
# the first evaluations are far from any penalised run's reconstruction.
MIN_SHARE = 0.1


def baseline_checkpoints(
    rows: Sequence[dict[str, Any]], base: str, seed: int
) -> list[dict[str, float]]:
    """The evaluations of the unpenalised runs of one seed and base.

    Args:
      rows: the study's rows.
      base: the base compared within.
      seed: the seed.

    Returns:
      One flattened evaluation (`results.flatten`'s names, plus `step` and
      `kl_weight`) per evaluation at or after `MIN_SHARE` of the run's
      steps, of every such run.
    """
    out = []
    for r in rows:
        if r["base"] != base or r["seed"] != seed or r["penalty"] != "none":
            continue
        h = r["history"]
        for i, step in enumerate(h["steps"]):
            if step < max(1, MIN_SHARE * r["steps"]):
                continue
            point = {k: v[i] for k, v in h.items() if k != "steps"}
            point["step"] = step
            point["kl_weight"] = r["kl_weight"]
            out.append(point)
    return out


def closest(
    checkpoints: Sequence[dict[str, float]], recon: float
) -> dict[str, float] | None:
    """The checkpoint whose `recon_mse` is closest to `recon` (None if none)."""
    usable = [c for c in checkpoints if math.isfinite(c.get("recon_mse", math.nan))]
    if not usable:
        return None
    return min(usable, key=lambda c: abs(c["recon_mse"] - recon))


def matched_comparison(
    rows: Sequence[dict[str, Any]], arm_rows: Sequence[dict[str, Any]],
    metrics: Sequence[str],
) -> tuple[dict[str, Paired], list[dict[str, Any]]]:  # fmt: skip
    """Penalised runs against their reconstruction-matched baselines.

    Args:
      rows: the study's rows.
      arm_rows: the rows of one penalised arm (one per seed).
      metrics: the names compared (`recon_mse` shows the match's quality).

    Returns:
      `(comparisons, matches)`: metric → `Paired` (`a` the matched
      checkpoints, `b` the penalised runs), and per seed the match (seed,
      its step, KL weight and `recon_mse`, the penalised `recon_mse`).
    """
    a: dict[str, list[float]] = {m: [] for m in metrics}
    b: dict[str, list[float]] = {m: [] for m in metrics}
    matches = []
    for r in arm_rows:
        recon = r["final"].get("recon_mse", math.nan)
        match = closest(baseline_checkpoints(rows, r["base"], r["seed"]), recon)
        if match is None:
            continue
        matches.append({
            "seed": r["seed"], "step": match["step"],
            "kl_weight": match["kl_weight"], "recon_mse": match["recon_mse"],
            "penalised_recon_mse": recon,
        })  # fmt: skip
        for m in metrics:
            a[m].append(match.get(m, math.nan))
            b[m].append(r["final"].get(m, math.nan))
    return {m: paired(a[m], b[m]) for m in metrics}, matches


def plot_tradeoff(
    rows: Sequence[dict[str, Any]], base: str, metrics: Sequence[str],
    path: pathlib.Path,
) -> None:  # fmt: skip
    """Each run's `recon_mse` against each metric: penalised and baseline.

    Grey lines: each unpenalised run's evaluations during training (the
    earlier, the larger their `recon_mse`), one per seed and KL weight;
    black circles: their final evaluations, squares for a larger
    KL weight; coloured markers: the penalised runs' finals, one colour per
    arm, one point per seed.

    Args:
      rows: the study's rows.
      base: the base drawn.
      metrics: one panel per metric.
      path: the PNG to write.
    """
    from matplotlib.figure import Figure

    mine = [r for r in rows if r["base"] == base]
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    penalised = sorted({r["arm"] for r in mine if r["penalty"] == "sdr"})
    for ax, metric in zip(axes, metrics, strict=False):
        for r in mine:
            h, f = r["history"], r["final"]
            if r["penalty"] == "none":
                keep = [
                    i for i, s in enumerate(h["steps"]) if s >= MIN_SHARE * r["steps"]
                ]
                x = [h["recon_mse"][i] for i in keep]
                y = [h.get(metric, [math.nan] * len(h["steps"]))[i] for i in keep]
                ax.plot(x, y, color="0.6", lw=0.8, alpha=0.7, zorder=1)
                marker = "o" if r["kl_weight"] is None else "s"
                ax.plot(f["recon_mse"], f.get(metric, math.nan), marker,
                        color="k", ms=4, zorder=3)  # fmt: skip
            else:
                c = f"C{penalised.index(r['arm']) % 10}"
                ax.plot(f["recon_mse"], f.get(metric, math.nan), "D",
                        color=c, ms=4.5, zorder=4)  # fmt: skip
        ax.set_xlabel("recon_mse (final, or during training)")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    _legend(fig, penalised)
    fig.savefig(path, dpi=110)


def _legend(fig, penalised: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="0.6", lw=0.8),
        Line2D([], [], marker="o", color="k", ls="", ms=4),
        Line2D([], [], marker="s", color="k", ls="", ms=4),
    ]
    labels = ["no penalty, during training", "no penalty, final",
              "no penalty, larger KL weight, final"]  # fmt: skip
    for i, arm in enumerate(penalised):
        handles.append(Line2D([], [], marker="D", color=f"C{i % 10}", ls="", ms=4.5))
        labels.append(f"{arm}, final")
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
