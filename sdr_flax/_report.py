"""Pictures of per-layer pair SDRs (needs matplotlib, in the `bench` extra)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping

import jax
import numpy as np

from sdr_flax._layers import GENERIC_BAND, summarize


def plot_layer_sdr(
    sdrs: Mapping[str, jax.Array],
    path: str | pathlib.Path,
    *,
    title: str | None = None,
    bins: int = 40,
) -> pathlib.Path:
    """Saves a PNG with one histogram of pair SDRs per layer.

    The x axis is logarithmic and centred on ρ = 1; the shaded band marks the
    generic pairs (|log ρ| < log 1.25); each panel's title gives the median and
    the share of generic pairs (`summarize`), and the number of undefined
    (NaN) pairs when there are some, which the histogram leaves out. It is
    drawn on a `matplotlib.figure.Figure` of its own: matplotlib's backend
    and pyplot's figures are left as they are.

    Args:
      sdrs: the output of `layer_sdr`.
      path: where to write the PNG (parent folders are created).
      title: a title for the whole figure.
      bins: histogram bins per panel.

    Returns:
      The path written.

    Raises:
      ImportError: without matplotlib (`pip install "sdr[bench]"`).
      ValueError: if `sdrs` is empty.
    """
    if not sdrs:
        raise ValueError("`sdrs` is empty: there is no layer to plot.")
    # Optional dependency (the `bench` extra). A bare Figure, not pyplot: no
    # global figure state, and the user's backend is left as it is.
    from matplotlib.figure import Figure

    summaries = summarize(sdrs)
    cols = min(4, len(sdrs))
    rows = math.ceil(len(sdrs) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, r), s in zip(axes.flat, sdrs.items(), summaries, strict=False):
        r = np.asarray(r, np.float64).ravel()
        log_r = np.log10(r[np.isfinite(r) & (r > 0)])
        span = max(0.5, float(np.max(np.abs(log_r))) if log_r.size else 0.5)
        ax.axvspan(-np.log10(GENERIC_BAND), np.log10(GENERIC_BAND), color="0.9")
        ax.hist(log_r, bins=np.linspace(-span, span, bins + 1), color="tab:blue")
        ax.axvline(0.0, color="k", lw=0.8)
        undefined = f", {s.undefined} undefined" if s.undefined else ""
        ax.set_title(
            f"{name}\nmedian {s.median:.3f}, generic {100 * s.generic_share:.0f}%"
            f"{undefined}",
            fontsize=9,
        )
        ax.set_xlabel("log10 ρ", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(sdrs) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
