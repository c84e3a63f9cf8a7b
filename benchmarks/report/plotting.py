"""Shared pieces of the report's figures: figures, colours, lines, axes, legends.

matplotlib is imported inside the functions, when a figure is drawn; its
`Figure` objects are saved directly (no pyplot, no global backend).
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.harness.rundir import Run
from benchmarks.report.records import _get

_DPI = 110


def _figure(**kwargs):
    """A matplotlib `Figure` with the constrained layout."""
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _color(i: int) -> str:
    """The colour of the `i`-th run."""
    return f"C{i % 10}"


def _series(records: Sequence[dict], *keys: str) -> tuple[list[int], list[float]]:
    """The steps and the numbers at `keys` of the records that have one."""
    steps, values = [], []
    for r in records:
        v = _get(r, *keys)
        if isinstance(v, int | float):
            steps.append(r["step"])
            values.append(float(v))
    return steps, values


def _line(ax, steps, values, i: int, label: str | None, **kwargs) -> bool:
    """Draws the series in the `i`-th run's colour; False when it is empty."""
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
