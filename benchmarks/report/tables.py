"""The summary table: the last logged numbers of each run, formatted.

One row per figure (settings, training terms, step time, errors, SDR
statistics of each layer), one column per run; `summary_table` writes it in
Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.harness.rundir import Run
from benchmarks.report.records import (
    _TRUTH_REFERENCES,
    _get,
    _layers,
    _levels,
    _median_step_time,
    _train_terms,
    _truth_targets,
)

_MISSING = "—"


def _fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, `—` for None."""
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


def _setting(run: Run, arg: str, *, sdr_only: bool = False) -> str | None:
    """A training argument of the run (None for an SDR one of a run without)."""
    value = run.args.get(arg)
    if value is None or (sdr_only and run.penalty != "sdr"):
        return None
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _sdr_stat(record: dict | None, layer: str, stat: str) -> Any:
    """One SDR statistic of a layer; `no SDR` for a layer recorded as unmeasured."""
    if _get(record, "sdr", layer, "pairs") == 0:
        return "no SDR"
    return _get(record, "sdr", layer, stat)


def _sdr_rows(runs: Sequence[Run]) -> list[tuple[str, list[Any]]]:
    """The SDR rows: median, generic share and undefined pairs of each layer."""
    rows: list[tuple[str, list[Any]]] = []
    layers = _layers(runs)
    for stat, title in (("median", "median SDR ρ"), ("generic_share", "generic share")):
        for layer in layers:
            values = [_sdr_stat(r.evals[-1], layer, stat) for r in runs]
            rows.append((f"{title} {layer}", values))
    for layer in layers:
        undefined = [_sdr_stat(r.evals[-1], layer, "undefined") for r in runs]
        if any(isinstance(u, int | float) and u > 0 for u in undefined):
            rows.append((f"undefined pairs {layer}", undefined))
    return rows


# The feature errors shown: the eyes' position (px) and width ratio to the
# network's own reconstruction (≈ 1: the eyes keep their shape).
_FEATURE_STATS = (
    ("position", "position (px)"),
    ("reference_width_ratio", "width ÷ recon's"),
)


def _feature_rows(runs: Sequence[Run], levels: Sequence[str]) -> list[tuple]:
    """Rows of the eyes' position and shape errors against each truth."""
    rows = []
    targets = {t for r in runs for t in (r.evals[-1].get("truth_features") or {})}
    for target in sorted(targets):
        for stat, title in _FEATURE_STATS:
            for key in (*_TRUTH_REFERENCES, *levels):
                rows.append(
                    (
                        f"eyes {title} {target} {key}",
                        [
                            _get(
                                r.evals[-1], "truth_features", target, key, "eyes", stat
                            )
                            for r in runs
                        ],
                    )
                )
    return rows


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

    add("path", [f"`{r.path}`" for r in runs])
    for arg in ("dataset", "penalty", "config", "batch", "seed"):
        add(arg, [_setting(r, arg) for r in runs])
    add("penalty layers", [_setting(r, "penalty_layers", sdr_only=True) for r in runs])
    add("penalty rate", [_setting(r, "penalty_rate", sdr_only=True) for r in runs])
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
    rows += _feature_rows(runs, levels)
    rows += _sdr_rows(runs)
    return [(name, [_fmt(v) for v in values]) for name, values in rows]


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
