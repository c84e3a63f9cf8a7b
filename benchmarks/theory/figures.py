"""The figures of the theory run: Fig. 3a, Fig. 3b, Fig. 2 and Sec. 3.4, as PNG.

Each function draws from the arrays an experiment returned and writes one
file into the output folder.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

import sdr
from benchmarks.theory.settings import (
    D1,
    DELAYS,
    DISTANCE1,
    DISTANCE2,
    DRIFT_STEPS,
    GD_RATES,
    GRID2,
    GRID_SEEDS,
    NOISE_MAIN,
    NOISES,
    RATE_MAIN,
    RATES,
    SEEDS2,
    SGD_NOISE,
    SGD_RATE,
    SGD_SEEDS,
    SGD_START,
    SHOW_DISTANCES,
    STARTS,
    C,
)
from sdr import toys


def _over_steps(ax, ylabel: str, title: str) -> None:
    """Labels an axes whose x axis is the training step."""
    ax.set(xlabel="step", ylabel=ylabel, title=title)


def _trajectories(ax, arr: dict) -> None:
    """Fig. 3a (a): GD, SGD and ASGD paths in the (a, b) plane."""
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


def figure_3a(out: pathlib.Path, arr: dict) -> None:
    """Fig. 3a: trajectories, the drift to (√c, √c), the decay of a² − b².

    Args:
      out: the output folder; writes `fig3a_product.png`.
      arr: the arrays of `product_experiments`.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    _trajectories(axes[0], arr)
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
    _over_steps(
        axes[1],
        "distance to (√c, √c)",
        f"(b) drift along ab = c (mean ± std, {SGD_SEEDS} seeds)",
    )
    _over_steps(
        axes[2], "|mean a² − b²|", "(c) the conserved quantity decays under SGD"
    )
    axes[2].set_ylim(1e-3, 10)
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig3a_product.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def figure_3b(out: pathlib.Path, arr: dict, num: dict) -> None:
    """Fig. 3b: the final kernels, |k̂1|² and |k̂2|² under SGD, the SDR.

    Args:
      out: the output folder; writes `fig3b_fourier_sgd.png`.
      arr: the arrays of `eye_experiments_1d`.
      num: its `fig3b` numbers (the reference SDRs).
    """
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
    _over_steps(ax, "power", "(b) |k̂1(ν)|² (solid) and |k̂2(ν)|² (dashed) under SGD")
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
    _over_steps(
        ax, "SDR ρ(k1, k2)", f"(c) SDR, {int(main.sum())} seeds (dotted: the truth)"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fig3b_fourier_sgd.png", dpi=110)
    plt.close(fig)


def _pictures(fig, grid, arr2: dict) -> None:
    """Fig. 2, top rows: the extrapolated 2-D images at the shown distances."""
    images = arr2["images"]
    rows = (
        ("true", "true solution"),
        ("sgd", "SGD solution"),
        ("penalty", f"SGD + penalty ({RATE_MAIN})"),
    )
    cols = len(SHOW_DISTANCES)
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


def _error_per_g(ax, arr1: dict, arr2: dict) -> None:
    """Fig. 2, bottom: the extrapolation error per group element."""
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


def figure_2(out: pathlib.Path, arr1: dict, arr2: dict, num2: dict) -> None:
    """Fig. 2: stretch extrapolation in 2-D pictures, and its error per g.

    Args:
      out: the output folder; writes `fig2_extrapolation.png`.
      arr1: the arrays of `eye_experiments_1d`.
      arr2: the arrays of `eye_experiment_2d`.
      num2: the numbers of `eye_experiment_2d` (not drawn).
    """
    import matplotlib.pyplot as plt

    cols = len(SHOW_DISTANCES)
    fig = plt.figure(figsize=(15, 8.2))
    grid = fig.add_gridspec(4, cols, height_ratios=(1, 1, 1, 1.6))
    _pictures(fig, grid, arr2)
    _error_per_g(fig.add_subplot(grid[3, :]), arr1, arr2)
    fig.tight_layout()
    fig.savefig(out / "fig2_extrapolation.png", dpi=110)
    plt.close(fig)


def _picker(cells: list[dict]):
    """`pick(start, noise, rate)`: the mask of that cell's first 8 seeds."""
    seed = np.array([c["seed"] for c in cells])

    def pick(start, noise, rate):
        return np.array(
            [
                c["start"] == start and c["noise"] == noise and c["rate"] == rate
                for c in cells
            ]
        ) & (seed < GRID_SEEDS)

    return pick


def _penalty_curves(axes, arr: dict, pick) -> None:
    """Sec. 3.4 (a)-(b): SDR and extrapolation error over training."""
    metrics, steps = arr["metrics"], arr["steps"]
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
    _over_steps(
        axes[0],
        "ρ (include_dc=True)",
        f"(a) SDR, σ = {NOISE_MAIN}, rate {RATE_MAIN}, 8 seeds",
    )
    _over_steps(
        axes[1], "group-mean extrapolation error", "(b) extrapolation error, same runs"
    )
    axes[0].legend(fontsize=7)


def _penalty_finals(axes, arr: dict, pick) -> None:
    """Sec. 3.4 (c)-(e): final error, with true phases, and k2's flatness."""
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


def _penalty_spectra(ax, arr: dict, pick) -> None:
    """Sec. 3.4 (f): the final spectra of the runs from the truth."""
    true = arr["true"]
    u = np.arange(D1 // 2 + 1)
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


def figure_penalty(out: pathlib.Path, arr: dict) -> None:
    """Sec. 3.4: the penalty's SDR, errors and spectra over the grid.

    Args:
      out: the output folder; writes `sec34_penalty.png`.
      arr: the arrays of `eye_experiments_1d`.
    """
    import matplotlib.pyplot as plt

    pick = _picker(arr["cells"])
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.6))
    axes = axes.ravel()
    _penalty_curves(axes, arr, pick)
    _penalty_finals(axes, arr, pick)
    _penalty_spectra(axes[5], arr, pick)
    fig.tight_layout()
    fig.savefig(out / "sec34_penalty.png", dpi=110)
    plt.close(fig)
