"""The study's page: paired tables, Fig. 4g with bands, the trade-off.

`write_study(out)` collects the runs (`results.collect`), writes the table
(`OUT/results.jsonl`) and the page `OUT/report/study.md` with its PNGs:

- the arms and their seeds, and the commands that made the study
  (`OUT/commands.txt`, one line per command run);
- per base (the settings held fixed) and per penalised arm, the paired
  comparison with the arm without the penalty of the same base, every
  metric of `metric_names` (`paired`);
- `stretch_mse` per level against the step, a thin line per seed and the
  mean with its 95 % band per arm (Fig. 4g);
- the trade-off figure and the reconstruction-matched comparison
  (`tradeoff`).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.study import paired, results, tradeoff

LEVELS = ("coarse", "intermediate", "fine", "image")
COMMANDS = "commands.txt"
# The metrics of the trade-off figure and the reconstruction-matched table.
TRADEOFF_METRICS = (
    "stretch_mse/intermediate", "stretch_mse/fine",
    "stretch_norm/intermediate", "stretch_norm/fine",
    "truth_mse/eye_distance/intermediate", "truth_mse/eye_distance/fine",
)  # fmt: skip


def record_command(out: pathlib.Path, command: str) -> None:
    """Appends `command` to the study's `commands.txt` (once)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / COMMANDS
    seen = path.read_text().splitlines() if path.exists() else []
    if command not in seen:
        with path.open("a") as f:
            f.write(command + "\n")


def metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The final metrics the page reports, in the page's order."""
    names = {k for r in rows for k in r["final"]}

    def order(name: str):
        groups = (
            *("recon_mse", "stretch_mse/", "stretch_norm/", "stretch_highpass"),
            *("slope/", "truth_mse/"),
            *("eyes_position/", "sdr_median/", "generic_share/"),
        )
        group = next((i for i, g in enumerate(groups) if name.startswith(g)), None)
        level = next((i for i, lv in enumerate(LEVELS) if name.endswith(lv)), -1)
        digits = [int(d) for d in re.findall(r"\d+", name)]
        return (group, name.rsplit("/", 1)[0], level, digits, name)

    keep = [n for n in names if order(n)[0] is not None]
    skip = ("/none", "/output")  # the references: equal in both arms' scale only
    return sorted((n for n in keep if not n.endswith(skip)), key=order)


def _fmt(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.4g}"


def _pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{100 * x:+.1f} %"


def paired_table(
    comparisons: dict[str, paired.Paired], names: tuple[str, str]
) -> list[str]:
    """Markdown lines of a table of paired comparisons, a row per metric."""
    a, b = names
    lines = [
        f"| metric | seeds | {a} | {b} | difference | 95 % interval | "
        f"seeds lower | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for metric, p in comparisons.items():
        if p.n == 0:
            continue
        lines.append(
            f"| `{metric}` | {p.n} | {_fmt(p.mean_a)} | {_fmt(p.mean_b)} | "
            f"{_fmt(p.diff)} ({_pct(p.relative)}) | [{_fmt(p.low)}, {_fmt(p.high)}] "
            f"| {p.lower}/{p.n} | {p.verdict} |"
        )
    return lines


# The metrics of the summary across arms, at the top of each base's section.
SUMMARY_METRICS = (
    "recon_mse", "stretch_mse/intermediate", "stretch_mse/fine",
    "stretch_norm/intermediate", "stretch_norm/fine", "slope/fine",
    "truth_mse/eye_distance/intermediate", "truth_mse/eye_distance/fine",
)  # fmt: skip
_MARKS = {"lower": "lower", "higher": "higher", "no difference at 95 %": "n.s."}


def _cell(p: paired.Paired, relative: bool = True) -> str:
    """`−33 % [−56, −2] lower`: the relative difference and interval (raw
    numbers where `relative` is False or the control's mean is not > 0)."""
    if p.n == 0:
        return "—"
    mark = _MARKS.get(p.verdict, p.verdict)
    if not (relative and p.mean_a > 0):
        return f"{_fmt(p.diff)} [{_fmt(p.low)}, {_fmt(p.high)}] {mark}"
    rel = [100 * v / p.mean_a for v in (p.diff, p.low, p.high)]
    if not all(np.isfinite(rel)):
        return f"{rel[0]:+.0f} % ({mark})"
    return f"{rel[0]:+.0f} % [{rel[1]:+.0f}, {rel[2]:+.0f}] {mark}"


def summary_table(
    control: Sequence[dict[str, Any]], penalised: dict[str, Sequence[dict[str, Any]]]
) -> list[str]:
    """Markdown lines: a row per penalised arm, `SUMMARY_METRICS` as columns.

    Each cell is the paired difference relative to the control's mean, with
    its 95 % interval, and the verdict (`n.s.`: no difference at 95 %).
    """
    metrics = [m for m in SUMMARY_METRICS if any(m in r["final"] for r in control)]
    lines = [
        "| arm | seeds | " + " | ".join(f"`{m}`" for m in metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for arm, rows in penalised.items():
        cells = [
            _cell(paired.compare_arms(control, rows, m), not m.startswith("slope/"))
            for m in metrics
        ]
        n = paired.compare_arms(control, rows, metrics[0]).n
        lines.append(f"| `{arm}` | {n} | " + " | ".join(cells) + " |")
    return lines


def plot_bands(groups: dict[str, list[dict]], path: pathlib.Path) -> None:
    """Fig. 4g: `stretch_mse` per level against the step, bands per arm.

    Args:
      groups: arm → its rows (one per seed, the same evaluation steps).
      path: the PNG to write.
    """
    from matplotlib.figure import Figure

    recorded = {k for g in groups.values() for r in g for k in r["history"]}
    levels = [lv for lv in LEVELS if f"stretch_mse/{lv}" in recorded]
    fig = Figure(figsize=(3.3 * len(levels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(levels), sharex=True))
    for ax, level in zip(axes, levels, strict=True):
        key = f"stretch_mse/{level}"
        for i, (arm, rows) in enumerate(groups.items()):
            steps = rows[0]["history"]["steps"]
            curves = [r["history"][key] for r in rows if r["history"]["steps"] == steps]
            for c in curves:
                ax.plot(steps, c, color=f"C{i}", lw=0.6, alpha=0.45)
            mean, low, high = paired.band(curves)
            ax.plot(
                steps, mean, color=f"C{i}", lw=1.8, label=f"{arm} ({len(curves)} seeds)"
            )
            ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.18, lw=0)
        ax.set_title(f"stretch at {level}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MSE(extrapolation, stretched output)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle("Fig. 4g: mean and 95 % band over seeds, thin lines per seed")
    fig.savefig(path, dpi=110)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)


def _base_title(base: str) -> str:
    import json

    b = json.loads(base)
    steps, batch = b.get("steps"), b.get("batch")
    return f"{b.get('model')} `{b.get('config')}`, {steps:,} steps, batch {batch}"


def _base_section(rows, base, arms_of_base, report: pathlib.Path, k: int) -> list[str]:
    """The page's lines for one base: tables, bands, trade-off, matched."""
    lines = [f"## {_base_title(base)}", ""]
    control = next((g for (b, arm), g in arms_of_base.items() if arm == "none"), None)
    lines += ["| arm | seeds |", "|---|---|"]
    lines += [f"| `{arm}` | {', '.join(str(r['seed']) for r in g)} |"
              for (_, arm), g in arms_of_base.items()]  # fmt: skip
    lines.append("")
    main = {arm: g for (_, arm), g in arms_of_base.items() if "-kl" not in arm}
    # A band needs seeds: arms with one seed so far are left off the figure.
    main = {arm: g for arm, g in main.items() if len(g) > 1} or main
    bands = report / f"fig4g_bands_{k}.png"
    plot_bands(main, bands)
    lines += [f"![Fig. 4g with bands]({bands.name})", ""]
    if control is None:
        return [*lines, "No arm without the penalty: nothing to pair with.", ""]
    names = metric_names(rows)
    penalised = [
        (arm, g) for (_, arm), g in arms_of_base.items() if arm.startswith("sdr")
    ]
    others = {arm: g for (_, arm), g in arms_of_base.items() if arm != "none"}
    if others:
        lines += [
            "Against `none`, seed by seed: the difference relative to `none`'s "
            "mean, its 95 % interval, and the verdict (n.s.: no difference at "
            "95 %).",
            "",
            *summary_table(control, others),
            "",
        ]
    if penalised:
        figure = report / f"tradeoff_{k}.png"
        tradeoff.plot_tradeoff(rows, base, TRADEOFF_METRICS, figure)
        lines += ["### Reconstruction against extrapolation", "",
                  f"![trade-off]({figure.name})", ""]  # fmt: skip
    for arm, g in penalised:
        comparisons = {m: paired.compare_arms(control, g, m) for m in names}
        lines += [f"### `{arm}` against `none`", ""]
        lines += [*paired_table(comparisons, ("none", arm)), ""]
        matched, matches = tradeoff.matched_comparison(
            rows, g, ["recon_mse", *TRADEOFF_METRICS]
        )
        found = "; ".join(_match_text(m) for m in matches)
        lines += [
            f"Reconstruction-matched: `{arm}` against the unpenalised checkpoint "
            f"of the same seed with the closest `recon_mse` ({found}).",
            "",
            *paired_table(matched, ("matched", arm)),
            "",
        ]
    return lines


def _match_text(match: dict[str, Any]) -> str:
    """`seed 0: step 700` (and the KL weight where it is not the config's)."""
    text = f"seed {match['seed']}: step {match['step']}"
    if match["kl_weight"] is not None:
        text += f", KL weight {match['kl_weight']:g}"
    return text


def write_study(out: pathlib.Path) -> pathlib.Path:
    """Writes the study's table and page.

    Args:
      out: the study's directory.

    Returns:
      The page's path, `out/report/study.md`.

    Raises:
      SystemExit: no finished run in `out/runs`.
    """
    rows, notes = results.collect(out)
    if not rows:
        raise SystemExit(f"{out}: no finished run under {out / 'runs'}")
    table = results.write_table(out, rows)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    lines = ["# Study", "", f"{len(rows)} finished runs; the table: `{table}`.", ""]
    commands = out / COMMANDS
    if commands.exists():
        lines += ["Made by:", "", "```bash", commands.read_text().strip(), "```", ""]
    lines += [
        "Each difference is `with − without`, seed by seed (the runs of a seed "
        "share initialisation and data order), with its 95 % t-interval "
        "(`scipy.stats.ttest_rel`); the verdict is `lower` or `higher` when the "
        "interval excludes 0. Intervals are per metric, not corrected for the "
        "number of metrics. `stretch_norm` is `stretch_mse` divided by the "
        "stretched output's high-pass energy (`stretch_highpass`); `slope` is "
        "the least-squares slope of `stretch_mse` over the second half of "
        "training, per 1,000 steps.",
        "",
    ]
    groups = paired.arms(rows)
    bases = sorted({b for b, _ in groups})
    for k, base in enumerate(bases):
        mine = {key: g for key, g in groups.items() if key[0] == base}
        lines += _base_section(rows, base, mine, report, k)
    if notes:
        lines += ["## Left out", "", *[f"- {n}" for n in notes], ""]
    path = report / "study.md"
    path.write_text("\n".join(lines))
    return path
