"""The figures against the training step: Fig. 4g, ground-truth errors,
training terms, and the SDR of each layer during training.

One line per run, in the run's colour; each function writes one PNG.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from benchmarks.harness.rundir import Run
from benchmarks.report.levels import fig4g_levels
from benchmarks.report.plotting import (
    _DPI,
    _figure,
    _line,
    _run_legend,
    _series,
    _step_axis,
)
from benchmarks.report.records import (
    _TRUTH_REFERENCES,
    STRETCH_NOTE,
    _levels,
    _train_terms,
    mirror_pairs,
)

# The panel titles' note on the paper's Fig. 4g, per reading of its levels.
_FIG4G_NOTES = {
    "output": "\n(Fig. 4g, output reading)",
    "input": "\n(Fig. 4g if input reading)",
}


def plot_stretch_mse(runs: Sequence[Run], path: pathlib.Path) -> None:
    """Fig. 4g: `stretch_mse` per level against the step, one line per run.

    The panels of the paper's Fig. 4g (its fine level) say under which
    reading of the paper's levels they are it (`benchmarks.report.levels`).

    Args:
      runs: the runs.
      path: the PNG to write.
    """
    levels = _levels(runs)
    fig4g = {lv: reading for reading, lv in fig4g_levels(levels).items() if lv}
    fig = _figure(figsize=(3.2 * len(levels), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(levels), sharex=True))
    for ax, level in zip(axes, levels, strict=True):
        for i, run in enumerate(runs):
            _line(ax, *_series(run.evals, "stretch_mse", level), i, run.label)
        note = _FIG4G_NOTES[fig4g[level]] if level in fig4g else ""
        ax.set_title(f"stretch at {level}{note}", fontsize=9)
        _step_axis(ax)
    axes[0].set_ylabel("MSE(extrapolation, stretched output)")
    fig.suptitle(f"Extrapolation vs stretched output ({STRETCH_NOTE}; cf. Fig. 4g)")
    _run_legend(fig, runs)
    fig.savefig(path, dpi=_DPI)


def plot_truth_mse(runs: Sequence[Run], path: pathlib.Path) -> bool:
    """`truth_mse` per target and level against the step, one line per run.

    Args:
      runs: the runs.
      path: the PNG to write.

    Returns:
      False (and nothing written) when no run has ground truths.
    """
    targets = sorted(
        {t for run in runs for r in run.evals for t in r.get("truth_mse", {})}
    )
    if not targets:
        return False
    columns = [*_TRUTH_REFERENCES, *_levels(runs)]
    titles = {"none": "reconstruction (none)", "output": "stretched output"}
    fig = _figure(figsize=(2.8 * len(columns), 2.6 * len(targets) + 0.9))
    axes = np.asarray(
        fig.subplots(
            len(targets), len(columns), sharex=True, sharey="row", squeeze=False
        )
    )
    drawn = [False] * len(runs)
    for row, target in enumerate(targets):
        for col, key in enumerate(columns):
            ax = axes[row, col]
            for i, run in enumerate(runs):
                series = _series(run.evals, "truth_mse", target, key)
                drawn[i] |= _line(ax, *series, i, run.label)
            ax.set_title(
                f"{target}: {titles.get(key, 'stretch at ' + key)}", fontsize=9
            )
            _step_axis(ax, label=False)
            if row == len(targets) - 1:
                ax.set_xlabel("step")
        axes[row, 0].set_ylabel("MSE vs ground truth")
    fig.suptitle("Extrapolations vs ground-truth renders of the intervention")
    _run_legend(fig, runs, drawn=drawn)
    fig.savefig(path, dpi=_DPI)
    return True


def plot_training(runs: Sequence[Run], path: pathlib.Path) -> None:
    """The training loss, its terms, and the evaluation reconstruction error.

    Args:
      runs: the runs.
      path: the PNG to write.
    """
    panels = [("train", key, f"train {key}") for key in _train_terms(runs)]
    panels.append(("eval", "recon_mse", "eval recon_mse"))
    fig = _figure(figsize=(3.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), sharex=True)
    for ax, (kind, key, title) in zip(axes, panels, strict=True):
        drawn = False
        for i, run in enumerate(runs):
            records = run.train if kind == "train" else run.evals
            drawn |= _line(ax, *_series(records, key), i, run.label)
        if not drawn:
            ax.text(
                0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes
            )
            ax.set_yticks([])
        ax.set_title(title)
        _step_axis(ax)
    fig.suptitle("Training")
    _run_legend(fig, runs)
    fig.savefig(path, dpi=_DPI)


def _role_handles(runs: Sequence[Run]) -> list:
    """Legend entries of the line styles: generative layer, inverse layer."""
    from matplotlib.lines import Line2D

    return [
        (
            Line2D([], [], color="gray", marker="o", markersize=3),
            f"{runs[0].roles[0]} layer",
        ),
        (
            Line2D(
                [],
                [],
                color="gray",
                linestyle="--",
                marker="s",
                markersize=3,
                markerfacecolor="none",
            ),
            f"{runs[0].roles[1]} layer",
        ),
    ]


def plot_sdr_training(runs: Sequence[Run], path: pathlib.Path) -> None:
    """Median SDR and generic share of each layer against the step.

    Columns are the decoder levels with their mirror encoder layer; the
    decoder layer is drawn solid, the encoder layer dashed, one colour per run.

    Args:
      runs: the runs.
      path: the PNG to write.
    """
    levels = _levels(runs)
    stats = (("median", "median SDR ρ"), ("generic_share", "generic share"))
    fig = _figure(figsize=(3.2 * len(levels), 6.0))
    axes = np.asarray(
        fig.subplots(2, len(levels), sharex=True, sharey="row", squeeze=False)
    )
    for i, run in enumerate(runs):
        pairs = {level: (dec, enc) for level, dec, enc in mirror_pairs(run)}
        for col, level in enumerate(levels):
            if level not in pairs:
                continue
            for row, (stat, _) in enumerate(stats):
                dec, enc = pairs[level]
                _line(axes[row, col], *_series(run.evals, "sdr", dec, stat), i, None)
                _line(
                    axes[row, col],
                    *_series(run.evals, "sdr", enc, stat),
                    i,
                    None,
                    linestyle="--",
                    marker="s",
                    markerfacecolor="none",
                )
    for col, level in enumerate(levels):
        run = next((r for r in runs if level in r.levels), runs[0])
        pair = {lv: (d, e) for lv, d, e in mirror_pairs(run)}.get(level, ("?", "?"))
        axes[0, col].set_title(f"{level}: {pair[0]} / {pair[1]}", fontsize=8)
        axes[0, col].axhline(1.0, color="k", linewidth=0.8, linestyle=":")
        axes[1, col].set_xlabel("step")
        for row in range(2):
            _step_axis(axes[row, col], label=False)
    for row, (_, title) in enumerate(stats):
        axes[row, 0].set_ylabel(title)
    fig.suptitle("SDR of each layer during training")
    _run_legend(fig, runs, extra=_role_handles(runs))
    fig.savefig(path, dpi=_DPI)
