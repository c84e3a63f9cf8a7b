"""The short comparison: a β-VAE without and with the penalty, then the report.

    python -m benchmarks.experiments.compare [--out runs/compare] [--steps 1500]
    python -m benchmarks.experiments.compare --preset paper --out runs/paper

Trains two runs on the procedural faces (`benchmarks.harness.train`, same seed, same
batches), `OUT/none` with Adam alone and `OUT/sdr` with Adam followed by
`sdr_flax.spectral_independence` on the intermediate, fine and image levels,
then writes `OUT/report/report.md` (`benchmarks.report`). Interrupted, the same
command resumes where it stopped. Other options pass through to
`benchmarks.harness.train` and override the preset's.

`--preset` picks the sizes and the length (`PRESETS`): `quick` (default) is
sized for a CPU (the `tiny` model on 32×32 faces, batch 32, 1,500 steps);
`paper` is the full-size model on 64×64 images for `PAPER_STEPS` = 10,000
steps, the training length of the paper's Fig. 4a (Sec. 4.1: "the VAE
trained with 10000 iterations"), with the batch of 64 of the public
reference code, for an accelerator. `--steps paper` means the same 10,000
steps with any preset.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from benchmarks import environment, report
from benchmarks.harness import train

# The training length of the paper's Fig. 4a (Sec. 4.1: 10,000 iterations);
# Fig. 4b, 4e and 4f are after 50,000.
PAPER_STEPS = 10_000

# The options each preset hands to `benchmarks.harness.train`, and its steps.
PRESETS = {
    "quick": {
        "args": [
            *("--config", "tiny", "--batch", "32"),
            *("--eval-every", "200", "--checkpoint-every", "200"),
        ],
        "steps": 1500,
    },
    "paper": {
        "args": [
            *("--config", "paper", "--image-size", "64", "--batch", "64"),
            *("--eval-every", "500", "--checkpoint-every", "500"),
        ],
        "steps": PAPER_STEPS,
    },
}
# The quick preset's options (the defaults before presets existed).
DEFAULTS = PRESETS["quick"]["args"]


def parse_steps(text: str) -> int:
    """A `--steps` value: a positive count, or `paper` for `PAPER_STEPS`.

    Args:
      text: the option's text.

    Returns:
      The number of steps.

    Raises:
      argparse.ArgumentTypeError: for anything else.
    """
    if text == "paper":
        return PAPER_STEPS
    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of steps or 'paper'; got {text!r}"
        )
    return steps


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Runs both trainings and the report.

    Args:
      argv: the command line; unknown options go to `benchmarks.harness.train`
        (after the preset's options, so they override them).

    Returns:
      The report's directory.
    """
    parser = environment.parser(
        "benchmarks.experiments.compare",
        "Train a beta-VAE without and with the SDR penalty, then report.",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("runs/compare")
    )
    parser.add_argument("--preset", choices=tuple(PRESETS), default="quick")
    parser.add_argument(
        "--steps",
        type=parse_steps,
        help="steps per run, or 'paper' (10,000); default: the preset's",
    )
    args, rest = parser.parse_known_args(argv)
    preset = PRESETS[args.preset]
    steps = preset["steps"] if args.steps is None else args.steps
    start = time.perf_counter()
    runs = []
    for penalty in ("none", "sdr"):
        print(f"== training with penalty={penalty}")
        out = args.out / penalty
        train.main(
            [
                *preset["args"],
                *rest,
                "--penalty",
                penalty,
                "--steps",
                str(steps),
                "--out",
                str(out),
            ]
        )
        runs.append(str(out))
    report_dir = args.out / "report"
    report.main([*runs, "--out", str(report_dir)])
    minutes = (time.perf_counter() - start) / 60
    print(f"== done in {minutes:.1f} min: {report_dir / 'report.md'}")
    return report_dir


if __name__ == "__main__":
    main()
