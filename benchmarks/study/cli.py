"""The command line: `python -m benchmarks.study`.

    python -m benchmarks.study --out runs/study --seeds 0-7
    python -m benchmarks.study --out runs/study --seeds 0-3 --penalty sdr \\
        --rate 0.1 0.5 1.0 --layers fine coarse,intermediate,fine,image
    python -m benchmarks.study --out runs/study --seeds 0-3 --penalty none \\
        --kl-weight 0.01 0.03
    python -m benchmarks.study --out runs/study --report-only

Every option that names an axis takes several values; the study is their
product (`grid.expand`). Options after `--` go to every training
(`benchmarks.harness.train`), after the study's own (`grid.TRAIN_ARGS`).
Runs of several commands with the same `--out` make one study: finished
runs are skipped, and the table and the page cover every run in `OUT/runs`.
"""

from __future__ import annotations

import argparse
import pathlib

from benchmarks import environment, nets
from benchmarks.nets import common
from benchmarks.study import grid, runner


def _layers(text: str) -> tuple[str, ...]:
    levels = tuple(t for t in text.split(",") if t)
    unknown = [lv for lv in levels if lv not in nets.LEVEL_NAMES]
    if not levels or unknown:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated levels of {nets.LEVEL_NAMES}; got {text!r}"
        )
    return levels


def _kl(text: str) -> float | None:
    return None if text == "default" else float(text)


def _seeds(text: str) -> list[int]:
    try:
        return grid.parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list]:
    """The study's options, and the options for every training (after `--`)."""
    p = environment.parser(
        "benchmarks.study",
        "Train a grid of runs (seeds x penalty x rate x layers x config x steps), "
        "resumably, and write one table and one page of paired comparisons.",
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/study"))
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="e.g. 0-7 or 0,3")
    p.add_argument("--penalty", nargs="+", choices=("none", "sdr"),
                   default=["none", "sdr"])  # fmt: skip
    p.add_argument("--rate", nargs="+", type=float, default=[0.5])
    p.add_argument(
        "--layers",
        nargs="+",
        type=_layers,
        default=[grid.DEFAULT_LAYERS],
        help="sets of penalised levels, each comma-separated",
    )
    p.add_argument("--config", nargs="+", choices=common.CONFIGS, default=["tiny"])
    p.add_argument("--steps", nargs="+", type=int, default=[1500])
    p.add_argument(
        "--kl-weight",
        nargs="+",
        type=_kl,
        default=[None],
        help="the β-VAE's KL weights, or 'default' (the config's)",
    )
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing; rebuild the table and the page")  # fmt: skip
    p.add_argument("--no-progress", dest="progress", action="store_false")
    argv = list(argv) if argv is not None else None
    train_args: list[str] = []
    if argv is not None and "--" in argv:
        i = argv.index("--")
        argv, train_args = argv[:i], argv[i + 1 :]
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be ≥ 1")
    if any(n < 1 for n in args.steps):
        p.error("--steps must be ≥ 1")
    return args, train_args


def specs_of(args: argparse.Namespace) -> list[grid.RunSpec]:
    """The runs that the parsed options ask for."""
    return grid.expand(
        seeds=args.seeds,
        penalties=args.penalty,
        rates=args.rate,
        layers=args.layers,
        configs=args.config,
        steps=args.steps,
        kl_weights=args.kl_weight,
    )


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Trains the study's unfinished runs, then writes its table and page.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      The page's path.

    Raises:
      SystemExit: a training failed (after the others ran and the page was
        written), or the study was interrupted (130).
    """
    import sys

    args, train_args = parse_args(sys.argv[1:] if argv is None else argv)
    failed: list[str] = []
    if not args.report_only:
        failed = runner.run_study(
            specs_of(args),
            args.out,
            train_args=[*grid.TRAIN_ARGS, *train_args],
            jobs=args.jobs,
            progress=args.progress,
        )
    from benchmarks.study import page

    path = page.write_study(args.out)
    print(f"wrote {path}")
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: {', '.join(failed)}")
    return path
