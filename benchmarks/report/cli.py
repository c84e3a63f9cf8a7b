"""The command line: `python -m benchmarks.report RUN [RUN ...]`.

`main` reads the runs, writes the report (`markdown.write_report`) and
prints the summary table.
"""

from __future__ import annotations

import argparse
import pathlib

from benchmarks import environment
from benchmarks.harness.rundir import load_runs
from benchmarks.report.markdown import write_report
from benchmarks.report.records import _slug, check_step
from benchmarks.report.tables import summary_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line `argv` (default `sys.argv[1:]`), parsed."""
    p = environment.parser(
        "benchmarks.report",
        "A Markdown report (Fig. 4, Fig. 5, a table) of training runs.",
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
    command = environment.command("benchmarks.report", argv)
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
