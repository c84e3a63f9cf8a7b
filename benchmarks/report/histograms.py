"""The SDR histograms (Fig. 5): each generative layer against its inverse.

For each decoder level, the distribution of log2 of the pair SDR ρ of the
decoder's (or generator's) layer and of the encoder's (or discriminator's)
layer on the same grid, from one eval record.
"""

from __future__ import annotations

import pathlib

import numpy as np

from benchmarks.harness.rundir import Run
from benchmarks.report.plotting import _DPI, _figure
from benchmarks.report.records import mirror_pairs
from benchmarks.report.tables import _fmt


def _draw_layer(ax, stats: dict | None, layer: str, color: str, edges) -> None:
    """One layer's histogram as a density, or an empty `no SDR` legend entry."""
    unmeasured = stats is not None and stats.get("pairs") == 0
    if stats is None or unmeasured or len(stats.get("counts", [])) != len(edges) - 1:
        # An empty line, so that the legend says the layer has no SDR.
        ax.plot([], [], color=color, linestyle=":", label=f"{layer}\nno SDR")
        return
    counts = np.asarray(stats["counts"], float)
    total = counts.sum()
    density = counts / (total * np.diff(edges)) if total else counts
    label = (
        f"{layer}\nmedian ρ {_fmt(stats.get('median'))}, "
        f"generic share {_fmt(stats.get('generic_share'))}"
    )
    ax.stairs(density, edges, fill=True, alpha=0.35, color=color)
    ax.stairs(density, edges, color=color, label=label)


def plot_sdr_histograms(
    run: Run, record: dict, path: pathlib.Path, *, aliases: bool = True
) -> None:
    """Fig. 5 for one run: decoder vs encoder SDR histograms, level by level.

    Args:
      run: the run.
      record: the eval record whose histograms are drawn.
      path: the PNG to write.
      aliases: draw the statistics with the aliases of the zero frequency
        counted (`sdr`), or left out (`sdr_without_aliases`, recorded for
        the transposed convs; the other layers do not depend on it).
    """
    edges = np.asarray(run.config.get("sdr_bins") or np.linspace(-2, 2, 65), float)
    pairs = mirror_pairs(run)
    fig = _figure(figsize=(3.3 * len(pairs), 4.3))
    axes = np.atleast_1d(fig.subplots(1, len(pairs), sharex=True))
    sdr = record.get("sdr", {})
    if not aliases:
        sdr = {**sdr, **record.get("sdr_without_aliases", {})}
    for ax, (level, dec, enc) in zip(axes, pairs, strict=True):
        for layer, color in ((dec, "C0"), (enc, "C3")):
            _draw_layer(ax, sdr.get(layer), layer, color, edges)
        ax.axvline(0.0, color="k", linestyle="--", linewidth=1)
        ax.legend(
            fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False
        )
        ax.set_title(
            f"{level}: {dec.split('/')[-1]} vs {enc.split('/')[-1]}", fontsize=10
        )
        ax.set_xlabel(r"$\log_2 \rho$ (pair SDR)")
        ax.set_xlim(edges[0], edges[-1])
    axes[0].set_ylabel("density")
    fig.suptitle(
        f"{run.label}: SDR of {run.roles[0]} (blue) vs {run.roles[1]} (red) layers, "
        f"step {record['step']} (cf. Fig. 5)"
        + ("" if aliases else ", aliases of the zero frequency left out")
    )
    fig.savefig(path, dpi=_DPI)
