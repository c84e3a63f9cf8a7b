"""The main job: a β-VAE without and with the penalty, paired over seeds.

    python -m benchmarks.experiments.compare [--out runs/compare] [--seeds 3]
    python -m benchmarks.experiments.compare --preset paper --out runs/paper

Trains `--seeds` pairs of runs on the procedural faces (`benchmarks.study`:
each pair shares its seed, initialisation and data order, and differs only
by the penalty): `OUT/runs/<config>-<steps>-s<seed>-none` with Adam alone
and `OUT/runs/...-sdr-r0.5-intermediate+fine+image` with Adam followed by
`sdr_flax.spectral_independence` on the intermediate, fine and image
levels. Then it writes

- `OUT/report/study.md` (`benchmarks.study.page`): for every final metric
  the mean of each arm and the paired difference with its 95 % interval
  and a verdict, the slope of `stretch_mse` over the second half of
  training (the paper's claim that the penalty limits the growth of
  distortion), Fig. 4g with a line per seed and a band, the trade-off of
  reconstruction against extrapolation and the reconstruction-matched
  comparison;
- `OUT/report/seed0/report.md` (`benchmarks.report`): the image grids, SDR
  histograms and curves of the first seed's pair.

Interrupted, the same command resumes where it stopped; more `--seeds`
train only the new ones. Other options pass through to
`benchmarks.harness.train` and override the preset's.

`--preset` picks the sizes and the length (`PRESETS`): `quick` (default) is
sized for a CPU (the `tiny` model on 32×32 faces, batch 32, 1,500 steps);
`paper` is the full-size model on 64×64 images for
`benchmarks.harness.train.PAPER_STEPS` = 10,000 steps, the training length
of the paper's Fig. 4a (Sec. 4.1: "the VAE trained with 10000 iterations"),
with the batch of 64 of the public reference code, for an accelerator.
`--steps paper` means the same 10,000 steps with any preset.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from benchmarks import environment, report
from benchmarks.harness import train
from benchmarks.nets import common
from benchmarks.study import grid, page, runner

# The model size, options and length of each preset.
PRESETS = {
    "quick": {"config": "tiny", "args": grid.TRAIN_ARGS, "steps": 1500},
    "paper": {
        "config": "paper",
        "args": (
            *("--image-size", "64", "--batch", "64"),
            *("--eval-every", "500", "--checkpoint-every", "500"),
        ),
        "steps": train.PAPER_STEPS,
    },
}
SEEDS = 3


def parse_steps(text: str) -> int:
    """A `--steps` value: a positive count, or `paper` for `train.PAPER_STEPS`.

    Args:
      text: the option's text.

    Returns:
      The number of steps.

    Raises:
      argparse.ArgumentTypeError: for anything else.
    """
    if text == "paper":
        return train.PAPER_STEPS
    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of steps or 'paper'; got {text!r}"
        )
    return steps


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count; got {text!r}")
    return value


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The comparison's options, and the rest (for `benchmarks.harness.train`)."""
    parser = environment.parser(
        "benchmarks.experiments.compare",
        "Train a beta-VAE without and with the SDR penalty over several seeds, "
        "then report the paired differences.",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("runs/compare")
    )
    parser.add_argument("--preset", choices=tuple(PRESETS), default="quick")
    parser.add_argument(
        "--seeds", type=_positive, default=SEEDS, help=f"pairs (default {SEEDS})"
    )
    parser.add_argument("--config", choices=common.CONFIGS,
                        help="the model's size (default: the preset's)")  # fmt: skip
    parser.add_argument(
        "--steps",
        type=parse_steps,
        help="steps per run, or 'paper' (10,000); default: the preset's",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Trains the pairs and writes both reports.

    Args:
      argv: the command line; unknown options go to `benchmarks.harness.train`
        (after the preset's options, so they override them).

    Returns:
      The paired report's path (`OUT/report/study.md`).

    Raises:
      SystemExit: a training failed (its `train.log` says why), or the job
        was interrupted (130; the same command resumes).
    """
    args, rest = parse_args(argv)
    preset = PRESETS[args.preset]
    steps = preset["steps"] if args.steps is None else args.steps
    specs = grid.expand(
        seeds=range(args.seeds),
        configs=[args.config or preset["config"]],
        steps=[steps],
    )
    start = time.perf_counter()
    page.record_command(
        args.out, environment.command("benchmarks.experiments.compare", argv)
    )
    failed = runner.run_study(
        specs, args.out, train_args=[*preset["args"], *rest], progress=args.progress
    )
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: {', '.join(failed)}")
    study = page.write_study(args.out)
    first = [runner.run_dir(args.out, s) for s in specs if s.seed == 0]
    report.main([*map(str, first), "--out", str(study.parent / "seed0")])
    minutes = (time.perf_counter() - start) / 60
    print(f"== done in {minutes:.1f} min: {study} (seed 0's figures: "
          f"{study.parent / 'seed0' / 'report.md'})")  # fmt: skip
    return study


if __name__ == "__main__":
    main()
