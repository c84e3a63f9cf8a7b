"""A Markdown report of training runs: the paper's Fig. 4 and Fig. 5, and a table.

    python -m benchmarks.report RUN [RUN ...] [--out DIR] [--step N]

Each `RUN` is a run directory written by `benchmarks.harness.train` (`config.json`,
`metrics.jsonl`, `images/step_<step>.npz`). The report compares the runs:

- one image grid per run (Fig. 4a–f): the reconstruction, the stretched
  output, the extrapolation at each decoder level, the ground truths (faces),
  and the pixel differences of each extrapolation from the stretched output;
- `stretch_mse` per level against the training step (Fig. 4g), `truth_mse`
  (faces), and the training loss;
- per run, the SDR histograms of each decoder layer against the encoder layer
  of the same grid (Fig. 5), and the median SDR and share of generic pairs
  of every layer against the step;
- a table of the final numbers of each run, also printed to stdout.

`DIR/report.md` is written with its PNGs beside it. `DIR` defaults to
`reports/<run>` (the first run's directory name, then `_vs_<run>` for each
further run), relative to the working directory. `--step N` picks the step
of the image grids and of the SDR histograms (default: each run's last);
the table always holds the last logged values.

Only NumPy is needed to import this module; matplotlib is imported when the
figures are drawn (its `Figure` objects are saved directly: no pyplot, no
global backend).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shlex
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.harness.rundir import Run, load_runs

STRETCH_NOTE = "1.5× horizontal stretch"
_MISSING = "—"
_TRUTH_REFERENCES = ("none", "output")
_DPI = 110


# --------------------------------------------------------------------- tables


def _fmt(value: Any) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, "#.4g")
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _get(record: dict | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _median_step_time(run: Run) -> float | None:
    times = [r["step_time_s"] for r in run.train[1:] if "step_time_s" in r]
    return statistics.median(times) if times else None


def _layers(runs: Sequence[Run]) -> list[str]:
    """All SDR layer names of the runs' evals: decoder then encoder, by number."""
    names = {name for run in runs for r in run.evals for name in r.get("sdr", {})}

    def key(name: str):
        digits = re.findall(r"\d+", name)
        return (
            not name.startswith(("decoder/", "generator/")),
            name.rstrip("0123456789"),
            int(digits[-1]) if digits else 0,
        )

    return sorted(names, key=key)


def _train_terms(runs: Sequence[Run]) -> list[str]:
    """The loss terms the runs log: loss, mse, kl (β-VAE); g_loss, d_loss (GAN)."""
    terms: list[str] = []
    for run in runs:
        for r in run.train:
            for k, v in r.items():
                skip = k in ("step", "kind", "step_time_s") or k in terms
                if not skip and isinstance(v, int | float):
                    terms.append(k)
    return terms or ["loss"]


def _truth_targets(runs: Sequence[Run]) -> list[str]:
    return sorted({t for run in runs for t in (_get(run.evals[-1], "truth_mse") or {})})


def _levels(runs: Sequence[Run]) -> list[str]:
    levels: list[str] = []
    for run in runs:
        levels += [lv for lv in run.levels if lv not in levels]
    return levels


def summary_rows(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """The rows of the summary table: a name and one cell per run.

    Args:
      runs: the runs.

    Returns:
      `(row name, cells)` pairs; the numbers are the last logged ones
      (training terms from the last train record, the rest from the last
      eval record), formatted to 4 significant digits, `—` where missing.
    """
    rows: list[tuple[str, list[Any]]] = []

    def add(name: str, values: list[Any]) -> None:
        rows.append((name, values))

    def setting(run: Run, arg: str, *, sdr_only: bool = False) -> str | None:
        value = run.args.get(arg)
        if value is None or (sdr_only and run.penalty != "sdr"):
            return None
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    add("path", [f"`{r.path}`" for r in runs])
    for arg in ("dataset", "penalty", "config", "batch", "seed"):
        add(arg, [setting(r, arg) for r in runs])
    add("penalty layers", [setting(r, "penalty_layers", sdr_only=True) for r in runs])
    add("penalty rate", [setting(r, "penalty_rate", sdr_only=True) for r in runs])
    add("last step", [r.last_step for r in runs])
    add("last train step", [r.train[-1]["step"] if r.train else None for r in runs])
    for term in _train_terms(runs):
        add(
            f"train {term}",
            [_get(r.train[-1], term) if r.train else None for r in runs],
        )
    add("median step time (s)", [_median_step_time(r) for r in runs])
    add("last eval step", [r.evals[-1]["step"] for r in runs])
    add("recon_mse", [_get(r.evals[-1], "recon_mse") for r in runs])
    levels = _levels(runs)
    for level in levels:
        add(
            f"stretch_mse {level}",
            [_get(r.evals[-1], "stretch_mse", level) for r in runs],
        )
    for target in _truth_targets(runs):
        for key in (*_TRUTH_REFERENCES, *levels):
            add(
                f"truth_mse {target} {key}",
                [_get(r.evals[-1], "truth_mse", target, key) for r in runs],
            )
    layers = _layers(runs)
    for stat, title in (("median", "median SDR ρ"), ("generic_share", "generic share")):
        for layer in layers:
            add(f"{title} {layer}", [_sdr_stat(r.evals[-1], layer, stat) for r in runs])
    for layer in layers:
        undefined = [_sdr_stat(r.evals[-1], layer, "undefined") for r in runs]
        if any(isinstance(u, int | float) and u > 0 for u in undefined):
            add(f"undefined pairs {layer}", undefined)
    return [(name, [_fmt(v) for v in values]) for name, values in rows]


def _sdr_stat(record: dict | None, layer: str, stat: str) -> Any:
    """One SDR statistic of a layer; `no SDR` for a layer recorded as unmeasured."""
    if _get(record, "sdr", layer, "pairs") == 0:
        return "no SDR"
    return _get(record, "sdr", layer, stat)


def summary_table(runs: Sequence[Run]) -> str:
    """The summary table in Markdown: one row per figure, one column per run.

    Args:
      runs: the runs.

    Returns:
      The table (see `summary_rows`).
    """

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [
        row(["", *(r.label for r in runs)]),
        "|" + "|".join(["---"] + ["---:"] * len(runs)) + "|",
    ]
    lines += [row([name, *cells]) for name, cells in summary_rows(runs)]
    return "\n".join(lines)


# -------------------------------------------------------------------- figures


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _color(i: int) -> str:
    return f"C{i % 10}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def load_images(run: Run, step: int) -> dict[str, np.ndarray]:
    """The evaluation panels of a run at a step.

    Args:
      run: the run.
      step: a step in `run.image_steps`.

    Returns:
      Panel name → uint8 array `(n, H, W, 3)`.

    Raises:
      ValueError: the run has no images at `step`, or they are malformed.
    """
    if step not in run.image_steps:
        raise ValueError(
            f"{run.path}: no images at step {step}; steps with images: "
            f"{run.image_steps or 'none'}"
        )
    path = run.path / "images" / f"step_{step:07d}.npz"
    with np.load(path) as f:
        panels = {k: np.asarray(f[k]) for k in f.files}
    for k, v in panels.items():
        if v.ndim != 4 or v.shape[-1] not in (1, 3):
            raise ValueError(
                f"{path}: {k!r} has shape {v.shape}; expected (n, H, W, 3)"
            )
    return panels


def _mosaic(images: np.ndarray, gap: int, fill: float) -> np.ndarray:
    """Images (n, H, W, ...) side by side with `gap` columns of `fill`."""
    n, h, w = images.shape[:3]
    out = np.full((h, n * w + (n - 1) * gap, *images.shape[3:]), fill, images.dtype)
    for i in range(n):
        out[:, i * (w + gap) : i * (w + gap) + w] = images[i]
    return out


def _stack(rows: Sequence[np.ndarray], gap: int, fill: float) -> np.ndarray:
    """Row mosaics one above the other with `gap` rows of `fill`."""
    height = sum(r.shape[0] for r in rows) + (len(rows) - 1) * gap
    out = np.full((height, *rows[0].shape[1:]), fill, rows[0].dtype)
    top = 0
    for r in rows:
        out[top : top + r.shape[0]] = r
        top += r.shape[0] + gap
    return out


def extrapolation_differences(
    panels: dict[str, np.ndarray], levels: Sequence[str]
) -> dict[str, np.ndarray]:
    """|extrapolation − stretched output| per pixel, per level.

    Args:
      panels: from `load_images`.
      levels: the decoder levels.

    Returns:
      Level → float array `(n, H, W)`: the absolute difference averaged over
      the colour channels, in intensity units (0 to 1), for the levels that
      have a panel.
    """
    reference = panels["stretched_output"].astype(np.float64) / 255.0
    return {
        level: np.abs(panels[f"stretch_{level}"] / 255.0 - reference).mean(axis=-1)
        for level in levels
        if f"stretch_{level}" in panels
    }


def plot_images(
    run: Run, step: int, path: pathlib.Path, *, vmax: float | None = None
) -> None:
    """Fig. 4a–f for one run: samples, extrapolations and their differences.

    Args:
      run: the run.
      step: the image step.
      path: the PNG to write.
      vmax: the top of the difference colour scale (default: this run's
        largest difference).
    """
    panels = load_images(run, step)
    levels = list(run.levels)
    rows = [
        ("input", "input"),
        (
            "reconstruction",
            "sample"
            if run.roles[0] == "generator"
            else "original sample\n(reconstruction)",
        ),
        ("stretched_output", "stretched\noutput"),
    ]
    rows += [(f"stretch_{lv}", f"stretch at\n{lv}") for lv in levels]
    rows += [
        (k, "truth:\n" + k.removeprefix("truth_").replace("_", " "))
        for k in sorted(panels)
        if k.startswith("truth_")
    ]
    rows = [(k, title) for k, title in rows if k in panels]
    diffs = (
        extrapolation_differences(panels, levels)
        if "stretched_output" in panels
        else {}
    )
    if vmax is None:
        vmax = max([float(d.max()) for d in diffs.values()] + [1 / 255])
    images = [panels[k] for k, _ in rows]
    images = [np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x for x in images]
    h, w = images[0].shape[1:3]
    gap = max(1, w // 16)
    # Two axes, each showing a block of rows: one imshow per block.
    top = _stack([_mosaic(x, gap, 255) for x in images], gap, 255)
    blocks = [(top, [title for _, title in rows])]
    if diffs:
        bottom = _stack([_mosaic(d, gap, np.nan) for d in diffs.values()], gap, np.nan)
        blocks.append((bottom, [f"|diff| at\n{level}" for level in diffs]))
    from matplotlib.figure import Figure

    # A fixed layout, in inches (a layout engine and fixed-aspect images fight).
    width, left, right = 10.0, 1.5, 1.2  # margins: row labels; colour bar
    scale = (width - left - right) / top.shape[1]  # inches per pixel
    title, between, below = 0.5, 0.4, 0.15
    heights = [b.shape[0] * scale for b, _ in blocks]
    height = title + sum(heights) + between * (len(blocks) - 1) + below
    fig = Figure(figsize=(width, height))
    bottom_edge = height - title
    axes = []
    for (block, titles), block_height in zip(blocks, heights, strict=True):
        bottom_edge -= block_height
        ax = fig.add_axes(
            (
                left / width,
                bottom_edge / height,
                (width - left - right) / width,
                block_height / height,
            )
        )
        bottom_edge -= between
        axes.append(ax)
        if block.ndim == 3:
            im = ax.imshow(block, interpolation="nearest", aspect="auto")
        else:
            im = ax.imshow(
                block,
                cmap="magma",
                vmin=0.0,
                vmax=vmax,
                interpolation="nearest",
                aspect="auto",
            )
        ax.set_xticks([])
        ax.set_yticks(
            [i * (h + gap) + (h - 1) / 2 for i in range(len(titles))],
            titles,
            fontsize=9,
        )
        ax.tick_params(axis="y", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if diffs:
        axes[1].set_title(
            "|extrapolation − stretched output|, mean over RGB (intensity 0–1)",
            fontsize=9,
        )
        position = axes[1].get_position()
        cax = fig.add_axes(
            (
                (width - right + 0.15) / width,
                position.y0,
                0.2 / width,
                position.height,
            )
        )
        fig.colorbar(im, cax=cax, label="|difference|")
    fig.suptitle(
        f"{run.label}: samples at step {step} ({STRETCH_NOTE})",
        y=1 - 0.15 / height,
        va="top",
    )
    fig.savefig(path, dpi=_DPI)


def _series(records: Sequence[dict], *keys: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        v = _get(r, *keys)
        if isinstance(v, int | float):
            steps.append(r["step"])
            values.append(float(v))
    return steps, values


def _line(ax, steps, values, i: int, label: str | None, **kwargs) -> bool:
    if not steps:
        return False
    kwargs.setdefault("linestyle", "-")
    kwargs.setdefault("marker", "o")
    kwargs.setdefault("markersize", 3.5)
    ax.plot(steps, values, color=_color(i), label=label, **kwargs)
    return True


def _step_axis(ax, *, label: bool = True) -> None:
    """Integer steps on the x axis, a light grid."""
    from matplotlib.ticker import MaxNLocator

    left, right = ax.get_xlim()
    if right - left < 2:  # e.g. only step 0: no fractional steps on the axis
        middle = round((left + right) / 2)
        ax.set_xlim(middle - 1, middle + 1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.grid(alpha=0.3)
    if label:
        ax.set_xlabel("step")


def _run_legend(
    fig, runs: Sequence[Run], extra: Sequence = (), *, drawn: Sequence[bool] = ()
) -> None:
    """A legend of the runs' colours (only the runs `drawn`, when given)."""
    from matplotlib.lines import Line2D

    shown = [i for i in range(len(runs)) if not drawn or drawn[i]]
    handles = [Line2D([], [], color=_color(i), marker="o", markersize=3) for i in shown]
    labels = [runs[i].label for i in shown]
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(4, len(labels)),
        fontsize=9,
    )


def plot_stretch_mse(runs: Sequence[Run], path: pathlib.Path) -> None:
    """Fig. 4g: `stretch_mse` per level against the step, one line per run.

    Args:
      runs: the runs.
      path: the PNG to write.
    """
    levels = _levels(runs)
    fig = _figure(figsize=(3.2 * len(levels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(levels), sharex=True))
    for ax, level in zip(axes, levels, strict=True):
        for i, run in enumerate(runs):
            _line(ax, *_series(run.evals, "stretch_mse", level), i, run.label)
        ax.set_title(f"stretch at {level}")
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


def mirror_pairs(run: Run) -> list[tuple[str, str, str]]:
    """Generative layers paired with the inverse network's layer on the same grid.

    From the run's `mirror` map when it has one; otherwise the encoder runs
    in the mirror order: with `n` decoder levels, decoder
    `deconv<k>` pairs with encoder `conv<n + 1 - k>` (deconv1, the coarse
    level, with the encoder's last conv).

    Args:
      run: the run.

    Returns:
      `(level, decoder layer, encoder layer)` per level, coarse to image.
    """
    levels = run.levels
    mirror = run.config.get("mirror")
    if mirror:
        return [(level, layer, mirror[level]) for level, layer in levels.items()]
    n = len(levels)
    pairs = []
    for level, layer in levels.items():
        match = re.search(r"(\d+)$", layer)
        k = int(match.group(1)) if match else list(levels).index(level) + 1
        pairs.append((level, layer, f"encoder/conv{n + 1 - k}"))
    return pairs


def _eval_at(run: Run, step: int | None) -> dict:
    if step is None:
        return run.evals[-1]
    for r in run.evals:
        if r["step"] == step:
            return r
    raise ValueError(
        f"{run.path}: no eval record at step {step}; eval steps: "
        f"{[r['step'] for r in run.evals]}"
    )


def plot_sdr_histograms(run: Run, record: dict, path: pathlib.Path) -> None:
    """Fig. 5 for one run: decoder vs encoder SDR histograms, level by level.

    Args:
      run: the run.
      record: the eval record whose histograms are drawn.
      path: the PNG to write.
    """
    edges = np.asarray(run.config.get("sdr_bins") or np.linspace(-2, 2, 65), float)
    pairs = mirror_pairs(run)
    fig = _figure(figsize=(3.3 * len(pairs), 4.3))
    axes = np.atleast_1d(fig.subplots(1, len(pairs), sharex=True))
    sdr = record.get("sdr", {})
    for ax, (level, dec, enc) in zip(axes, pairs, strict=True):
        for layer, color in ((dec, "C0"), (enc, "C3")):
            stats = sdr.get(layer)
            unmeasured = stats is not None and stats.get("pairs") == 0
            if (
                stats is None
                or unmeasured
                or len(stats.get("counts", [])) != len(edges) - 1
            ):
                # An empty line, so that the legend says the layer has no SDR.
                ax.plot([], [], color=color, linestyle=":", label=f"{layer}\nno SDR")
                continue
            counts = np.asarray(stats["counts"], float)
            total = counts.sum()
            density = counts / (total * np.diff(edges)) if total else counts
            label = (
                f"{layer}\nmedian ρ {_fmt(stats.get('median'))}, "
                f"generic share {_fmt(stats.get('generic_share'))}"
            )
            ax.stairs(density, edges, fill=True, alpha=0.35, color=color)
            ax.stairs(density, edges, color=color, label=label)
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
    )
    fig.savefig(path, dpi=_DPI)


def plot_sdr_training(runs: Sequence[Run], path: pathlib.Path) -> None:
    """Median SDR and generic share of each layer against the step.

    Columns are the decoder levels with their mirror encoder layer; the
    decoder layer is drawn solid, the encoder layer dashed, one colour per run.

    Args:
      runs: the runs.
      path: the PNG to write.
    """
    from matplotlib.lines import Line2D

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
    _run_legend(
        fig,
        runs,
        extra=[
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
        ],
    )
    fig.savefig(path, dpi=_DPI)


# --------------------------------------------------------------------- report


def _devices(run: Run) -> str:
    devices = [str(d) for d in run.config.get("devices", [])]
    if len(devices) > 2:
        return f"{len(devices)} devices ({devices[0]}, …)"
    return ", ".join(devices) or "?"


def _differing_settings(runs: Sequence[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.args})
    return [k for k in keys if len({json.dumps(r.args.get(k)) for r in runs}) > 1]


def check_step(
    runs: Sequence[Run], step: int | None
) -> tuple[dict[str, int], dict[str, dict]]:
    """The image step and eval record of each run for the figures at `step`.

    Args:
      runs: the runs.
      step: the step asked for, or None for each run's last.

    Returns:
      Run name → image step (runs without images left out), and run name →
      eval record.

    Raises:
      ValueError: a run has no images or no eval record at `step` (the
        message lists the steps it has).
    """
    image_steps, records = {}, {}
    for run in runs:
        records[run.name] = _eval_at(run, step)
        if step is not None:
            if step not in run.image_steps:
                raise ValueError(
                    f"{run.path}: no images at step {step}; steps with images: "
                    f"{run.image_steps or 'none'}"
                )
            image_steps[run.name] = step
        elif run.image_steps:
            image_steps[run.name] = run.image_steps[-1]
    return image_steps, records


def describe_runs(runs: Sequence[Run]) -> str:
    """The report's first section: what was compared.

    Args:
      runs: the runs.

    Returns:
      Markdown: each run's name, path, dataset, config, last step, JAX version
      and devices, and its training command; then whether the datasets,
      settings or numbers of steps differ between the runs.
    """
    md = ["## Runs", ""]
    for run in runs:
        md += [
            f"- **{run.label}**: `{run.path}`, dataset {run.dataset}, "
            f"config {run.args.get('config', '?')}, last step {run.last_step}, "
            f"JAX {run.config.get('jax_version', '?')} on "
            f"{_devices(run)}",
            "",
            "  ```",
            f"  {run.config.get('command', '(no command recorded)')}",
            "  ```",
            "",
        ]
        md += [f"  Note: {note}" for note in run.notes]
    md.append("")
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) > 1:
        md += [
            f"**The runs use different datasets ({', '.join(datasets)})**: their "
            "images and errors are not on the same data.",
            "",
        ]
    differing = _differing_settings(runs)
    if len(runs) > 1:
        md += [
            (
                "Settings that differ between the runs: "
                + ", ".join(f"`{k}`" for k in differing)
                + "."
            )
            if differing
            else "The runs were trained with the same settings.",
            "",
        ]
    steps = sorted({r.last_step for r in runs})
    if len(steps) > 1:
        md += [f"The runs end at different steps ({', '.join(map(str, steps))}).", ""]

    return "\n".join(md).rstrip("\n") + "\n"


def write_report(
    runs: Sequence[Run],
    out: pathlib.Path,
    *,
    step: int | None = None,
    command: str | None = None,
) -> pathlib.Path:
    """Writes `out/report.md` and its PNGs.

    Args:
      runs: the runs to compare.
      out: the report directory (created if needed).
      step: the step of the image grids and SDR histograms (default: each
        run's last image step and last eval).
      command: the command that made the report, quoted in it.

    Returns:
      The path of `report.md`.

    Raises:
      ValueError: a run has no images or no eval record at `step`.
    """
    image_steps, records = check_step(runs, step)
    out.mkdir(parents=True, exist_ok=True)

    md: list[str] = ["# Training runs compared", ""]
    if command:
        md += [f"Made with `{command}`.", ""]
    md += [*describe_runs(runs).splitlines(), ""]

    md += [
        "## Final numbers",
        "",
        "Last logged values of each run: the training terms from the last "
        "train record (one training batch), the rest from the last eval record "
        "(the fixed evaluation batch, never trained on). Errors are mean "
        "squared errors of images in [-1, 1]. Median step time leaves out the "
        "first logged interval (warm-up); evaluations and "
        "checkpoints are not counted in it. SDR rows: median pair SDR ρ of each "
        "conv layer, and the share of pairs with |log ρ| < log 1.25, over the "
        "pairs with an SDR (`undefined pairs`: those whose input channel has no "
        "power). `no SDR`: a layer that cannot be measured (a kernel larger than "
        "its maps, or 1×1 maps). `—`: not measured (no train record yet, no "
        "ground truth on CelebA, or a run from before unmeasured layers were "
        "recorded).",
        "",
        summary_table(runs),
        "",
    ]

    md += [
        "## Extrapolation samples (Fig. 4a–f)",
        "",
        "How to read: each column is one sample of the evaluation batch. Rows: "
        "the input; the original sample (the reconstruction); the stretched "
        "output (the reconstruction stretched 1.5× horizontally about the "
        "centre); the extrapolation at each level (every map entering that "
        "decoder level stretched 1.5×, the rest of the decoder run on them); "
        "on faces, ground-truth renders of the intervention (eyes 1.5× further "
        "apart; face width and eye distance ×1.5). The lower block shows "
        "|extrapolation − stretched output| per pixel (mean over RGB, "
        "intensity 0–1) on one colour scale shared by all levels and by the "
        "runs on the same dataset, from 0 to the largest difference among "
        "them: dark where the "
        "extrapolation matches stretching the output, bright where it differs.",
        "",
    ]
    # One difference scale per dataset: 0 to the largest difference.
    vmax: dict[str, float] = {}
    for run in runs:
        if run.name in image_steps:
            panels = load_images(run, image_steps[run.name])
            if "stretched_output" in panels:
                diffs = extrapolation_differences(panels, run.levels).values()
                vmax[run.dataset] = max(
                    [vmax.get(run.dataset, 1 / 255)] + [float(d.max()) for d in diffs]
                )
    for i, run in enumerate(runs, 1):
        if run.name not in image_steps:
            md += [f"- {run.label}: no images in `{run.path / 'images'}`.", ""]
            continue
        png = f"images_{i}_{_slug(run.name)}.png"
        plot_images(run, image_steps[run.name], out / png, vmax=vmax.get(run.dataset))
        md += [f"![{run.label}: samples at step {image_steps[run.name]}]({png})", ""]

    md += [
        "## Stretching error during training (Fig. 4g)",
        "",
        "How to read: one panel per decoder level; the y axis is `stretch_mse`, "
        "the mean squared error between the extrapolation at that level and the "
        "stretched output on the evaluation batch, against the training step; "
        "one line per run. 0 means stretching the maps entering that level gives "
        "exactly the stretched output image. The paper's Fig. 4g shows the fine "
        "level.",
        "",
        "![stretch_mse](stretch_mse.png)",
        "",
    ]
    plot_stretch_mse(runs, out / "stretch_mse.png")

    if plot_truth_mse(runs, out / "truth_mse.png"):
        md += [
            "How to read the ground-truth errors: rows are the interventions "
            "rendered as ground truth (faces only); the y axis is the mean "
            "squared error against that truth of: the unedited reconstruction "
            "(`none`), the stretched output (`output`), and the extrapolation "
            "at each level. `none` and `output` are references for scale. Runs "
            "without ground truths (CelebA) are left out.",
            "",
            "![truth_mse](truth_mse.png)",
            "",
        ]
    else:
        md += [
            "No run has ground-truth renders (CelebA runs): no `truth_mse` figure.",
            "",
        ]

    md += [
        "## Training",
        "",
        "How to read: the training objective and its terms on the training "
        "batch at each logged step (β-VAE: `loss` = `mse` + kl_weight · `kl`; "
        "DCGAN: `loss` = `g_loss` + `d_loss`, the generator's and the "
        "discriminator's cross-entropies), and the reconstruction error on "
        "the evaluation batch (`recon_mse`, β-VAE only); one line per run.",
        "",
        "![training](training.png)",
        "",
    ]
    plot_training(runs, out / "training.png")

    md += [
        "## SDR of the generative layers vs their inverse (Fig. 5, App. B.13)",
        "",
        "How to read: for each level, the distribution over all (filter, "
        "activation map) pairs of a layer of log2 of the pair SDR ρ, as a "
        "density over the 64 bins of `sdr_bins` (-2 to 2; pairs beyond are "
        "counted in the end bins), for the decoder's (or a DCGAN generator's) "
        "layer (blue) and for the encoder's (or discriminator's) layer working "
        "on the same grid, in mirror order (red): deconv1 (coarse) with the "
        "last conv, …, deconv4 (image) with conv1. The dashed line is "
        "log2 ρ = 0 (ρ = 1, spectral independence). The legend gives each "
        "layer's median ρ and the share of generic pairs (|log ρ| < log 1.25). "
        "A layer whose kernel is larger than its maps has no SDR: the legend "
        "says 'no SDR'.",
        "",
    ]
    for i, run in enumerate(runs, 1):
        png = f"sdr_hist_{i}_{_slug(run.name)}.png"
        plot_sdr_histograms(run, records[run.name], out / png)
        md += [
            f"![{run.label}: SDR histograms at step {records[run.name]['step']}]"
            f"({png})",
            "",
        ]

    md += [
        "How to read the SDR during training: columns are the levels (decoder "
        "layer / mirror encoder layer); top row the median pair SDR ρ (dotted "
        "line: ρ = 1), bottom row the share of generic pairs; solid lines with "
        "dots are decoder layers, dashed lines with open squares encoder "
        "layers, one colour per run.",
        "",
        "![sdr_training](sdr_training.png)",
        "",
    ]
    plot_sdr_training(runs, out / "sdr_training.png")

    report = out / "report.md"
    report.write_text("\n".join(md))
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line.

    Args:
      argv: the arguments (default `sys.argv[1:]`).

    Returns:
      The parsed arguments.
    """
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="A Markdown report (Fig. 4, Fig. 5, a table) of training runs.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        type=pathlib.Path,
        metavar="RUN",
        help="run directories written by benchmarks.harness.train",
    )
    p.add_argument(
        "--out",
        type=pathlib.Path,
        metavar="DIR",
        help="report directory (default: reports/<run>[_vs_<run>...])",
    )
    p.add_argument(
        "--step",
        type=int,
        metavar="N",
        help="step of the image grids and SDR histograms (default: each run's last)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Writes the report of the runs on the command line.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      The path of `report.md`.

    Raises:
      SystemExit: a run directory is missing, incomplete or malformed, or
        `--step` is not a step of every run (the message says which).
    """
    args = parse_args(argv)
    command = shlex.join(
        ["python", "-m", "benchmarks.report", *(sys.argv[1:] if argv is None else argv)]
    )
    try:
        runs = load_runs(args.runs)
        check_step(runs, args.step)
    except (OSError, ValueError) as e:
        raise SystemExit(f"benchmarks.report: {e}") from None
    out = args.out or pathlib.Path("reports") / "_vs_".join(_slug(r.name) for r in runs)
    report = write_report(runs, out, step=args.step, command=command)
    print(summary_table(runs))
    print(f"\nwrote {report}")
    return report


if __name__ == "__main__":
    main()
