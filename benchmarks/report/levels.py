"""The stretch at each level: both readings of the paper's levels, and how
much the stretch error depends on the stretch's centre and interpolation.

The paper names its generator's four conv layers coarse, intermediate, fine
and image, and stretches "all maps of a given hidden convolutional layer"
(Sec. 4.1 of the paper). The harness's level `k` stretches the maps
*entering* the layer `deconv<k>` (the input reading, `stretch_mse`); read as
the maps the layer computes, the same level stretches the maps *leaving*
`deconv<k>`: those entering the next layer, and for the last layer the
output image itself, whose stretch is the stretched output (the output
reading, `stretch_mse_output_maps`; for runs recorded without it, the next
level's `stretch_mse`). The paper's Fig. 4g (its fine level) is the
harness's `fine` under the input reading and the next level (`image`)
under the output reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.harness.rundir import Run
from benchmarks.report.records import _get, _levels
from benchmarks.report.tables import _fmt

# The level the paper's Fig. 4g stretches.
FIG4G_LEVEL = "fine"
# The variants of `stretch_mse_sensitivity`: their centre and interpolation.
VARIANTS = {
    "centre-0.5": ("derived − ½ map pixel", "linear"),
    "centre+0.5": ("derived + ½ map pixel", "linear"),
    "nearest": ("derived", "nearest (maps and output)"),
    "array_centre": ("array centre n/2", "linear"),
}


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"
    return "\n".join([row(header), rule, *(row(r) for r in rows)])


def output_reading(run: Run, level: str, record: dict | None = None) -> Any:
    """The stretch error of a level under the output reading.

    Args:
      run: the run.
      level: one of its levels.
      record: an eval record of the run (default: its last).

    Returns:
      `stretch_mse_output_maps[level]` where recorded; otherwise the next
      level's `stretch_mse` (the maps leaving a level's layer enter the next
      level's), or 0.0 for the last level (its output is the image). None
      where neither is recorded.
    """
    record = run.evals[-1] if record is None else record
    value = _get(record, "stretch_mse_output_maps", level)
    if value is not None:
        return value
    levels = list(run.levels)
    if level not in levels:
        return None
    after = levels.index(level) + 1
    if after == len(levels):
        return 0.0 if _get(record, "stretch_mse") else None
    return _get(record, "stretch_mse", levels[after])


def fig4g_levels(levels: Sequence[str]) -> dict[str, str | None]:
    """The harness level that the paper's Fig. 4g stretches, per reading.

    Args:
      levels: the levels, coarse to image.

    Returns:
      `{"input": "fine", "output": the level after it}` (None where there is
      no such level).
    """
    levels = list(levels)
    if FIG4G_LEVEL not in levels:
        return {"input": None, "output": None}
    after = levels.index(FIG4G_LEVEL) + 1
    return {
        "input": FIG4G_LEVEL,
        "output": levels[after] if after < len(levels) else None,
    }


def readings_table(runs: Sequence[Run]) -> str:
    """Each paper level's stretch error under both readings, per run.

    Args:
      runs: the runs (their last eval records).

    Returns:
      A Markdown table: a row per paper level and reading, with the maps it
      stretches and one column per run.
    """
    levels = _levels(runs)
    layers = next((r.levels for r in runs if r.levels), {})
    rows = []
    for k, level in enumerate(levels):
        layer = f"`{layers.get(level, level)}`"
        name = f"{level} ({layer})" + (", Fig. 4g" if level == FIG4G_LEVEL else "")
        rows.append(
            [
                name,
                "input",
                f"entering {layer} (harness `{level}`)",
                *(_fmt(_get(r.evals[-1], "stretch_mse", level)) for r in runs),
            ]
        )
        if k + 1 < len(levels):
            after = levels[k + 1]
            where = (
                f"leaving {layer} = entering `{layers.get(after, after)}` "
                f"(harness `{after}`)"
            )
        else:
            where = f"leaving {layer}: the output image (= the stretched output)"
        rows.append(
            ["", "output", where, *(_fmt(output_reading(r, level)) for r in runs)]
        )
    return _markdown(
        ["paper's level", "reading", "maps stretched", *_labels(runs)], rows
    )


def _labels(runs: Sequence[Run]) -> list[str]:
    return [r.label for r in runs]


def _centre_note(runs: Sequence[Run], level: str) -> str:
    """The level's recorded centre and its offset from n/2, e.g. `3.625 (−0.375)`."""
    for run in runs:
        centre = _get(run.evals[-1], "stretch_centre", level)
        offset = _get(run.evals[-1], "stretch_centre_offset", level)
        if centre is not None and offset is not None:
            return f"derived: {centre:g} ({offset:+g} from n/2)"
    return "derived"


def sensitivity_table(runs: Sequence[Run]) -> str:
    """`stretch_mse` per level against the stretch's centre and interpolation.

    Args:
      runs: the runs (their last eval records).

    Returns:
      A Markdown table: per level, the default (derived centre, linear
      interpolation) and each variant of `VARIANTS`, one column per run.
      A run recorded without derived centres (no `stretch_centre`) stretched
      about the array centre: its `stretch_mse` fills the array-centre row,
      `—` the others.
    """
    rows = []
    for level in _levels(runs):
        cells = []
        for run in runs:
            record = run.evals[-1]
            derived = _get(record, "stretch_centre") is not None
            cells.append(_get(record, "stretch_mse", level) if derived else None)
        rows.append([level, _centre_note(runs, level), "linear", *map(_fmt, cells)])
        for variant, (centre, interpolation) in VARIANTS.items():
            cells = []
            for run in runs:
                record = run.evals[-1]
                value = _get(record, "stretch_mse_sensitivity", level, variant)
                if variant == "array_centre" and _get(record, "stretch_centre") is None:
                    value = _get(record, "stretch_mse", level)
                cells.append(value)
            rows.append(["", centre, interpolation, *map(_fmt, cells)])
    header = ["level (maps entering)", "centre", "interpolation", *_labels(runs)]
    return _markdown(header, rows)
