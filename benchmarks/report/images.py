"""The image grids (Fig. 4a–f): samples, extrapolations and their differences.

`load_images` reads a run's evaluation panels at a step; `plot_images` draws
them as one grid per run, with the pixel differences of each extrapolation
from the stretched output below.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from benchmarks.harness.rundir import Run
from benchmarks.report.plotting import _DPI
from benchmarks.report.records import STRETCH_NOTE

# The grid's fixed layout, in inches: its width, the margins left (row
# labels) and right (colour bar), the title, the space between blocks, and
# the space below.
_WIDTH, _LEFT, _RIGHT = 10.0, 1.5, 1.2
_TITLE, _BETWEEN, _BELOW = 0.5, 0.4, 0.15


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


def _panel_rows(run: Run, panels: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """`(panel, row title)` of the grid's image rows, top to bottom."""
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
    rows += [(f"stretch_{lv}", f"stretch at\n{lv}") for lv in run.levels]
    rows += [
        (k, "truth:\n" + k.removeprefix("truth_").replace("_", " "))
        for k in sorted(panels)
        if k.startswith("truth_")
    ]
    return [(k, title) for k, title in rows if k in panels]


def _blocks(
    panels: dict[str, np.ndarray],
    rows: Sequence[tuple[str, str]],
    diffs: dict[str, np.ndarray],
) -> tuple[list[tuple[np.ndarray, list[str]]], int, int]:
    """The grid's blocks of rows (images, then differences), each one array.

    Returns:
      `(block, row titles)` per block, the height of an image, and the gap
      between images, in pixels.
    """
    images = [panels[k] for k, _ in rows]
    images = [np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x for x in images]
    h, w = images[0].shape[1:3]
    gap = max(1, w // 16)
    top = _stack([_mosaic(x, gap, 255) for x in images], gap, 255)
    blocks = [(top, [title for _, title in rows])]
    if diffs:
        bottom = _stack([_mosaic(d, gap, np.nan) for d in diffs.values()], gap, np.nan)
        blocks.append((bottom, [f"|diff| at\n{level}" for level in diffs]))
    return blocks, h, gap


def _draw_block(ax, block: np.ndarray, titles: list[str], h: int, gap: int, vmax):
    """Shows one block on `ax` with its row titles; returns the image."""
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
    return im


def _difference_colorbar(fig, ax, im) -> None:
    """The title of the difference block `ax` and its colour bar on the right."""
    ax.set_title(
        "|extrapolation − stretched output|, mean over RGB (intensity 0–1)",
        fontsize=9,
    )
    position = ax.get_position()
    cax = fig.add_axes(
        (
            (_WIDTH - _RIGHT + 0.15) / _WIDTH,
            position.y0,
            0.2 / _WIDTH,
            position.height,
        )
    )
    fig.colorbar(im, cax=cax, label="|difference|")


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
    rows = _panel_rows(run, panels)
    diffs = (
        extrapolation_differences(panels, list(run.levels))
        if "stretched_output" in panels
        else {}
    )
    if vmax is None:
        vmax = max([float(d.max()) for d in diffs.values()] + [1 / 255])
    # Two axes, each showing a block of rows: one imshow per block.
    blocks, h, gap = _blocks(panels, rows, diffs)
    from matplotlib.figure import Figure

    # A fixed layout, in inches (a layout engine and fixed-aspect images fight).
    scale = (_WIDTH - _LEFT - _RIGHT) / blocks[0][0].shape[1]  # inches per pixel
    heights = [b.shape[0] * scale for b, _ in blocks]
    height = _TITLE + sum(heights) + _BETWEEN * (len(blocks) - 1) + _BELOW
    fig = Figure(figsize=(_WIDTH, height))
    bottom_edge = height - _TITLE
    axes = []
    for (block, titles), block_height in zip(blocks, heights, strict=True):
        bottom_edge -= block_height
        ax = fig.add_axes(
            (
                _LEFT / _WIDTH,
                bottom_edge / height,
                (_WIDTH - _LEFT - _RIGHT) / _WIDTH,
                block_height / height,
            )
        )
        bottom_edge -= _BETWEEN
        axes.append(ax)
        im = _draw_block(ax, block, titles, h, gap, vmax)
    if diffs:
        _difference_colorbar(fig, axes[1], im)
    fig.suptitle(
        f"{run.label}: samples at step {step} ({STRETCH_NOTE})",
        y=1 - 0.15 / height,
        va="top",
    )
    fig.savefig(path, dpi=_DPI)
