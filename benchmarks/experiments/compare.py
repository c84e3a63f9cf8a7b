"""The short comparison: a β-VAE without and with the penalty, then the report.

    python -m benchmarks.experiments.compare [--out runs/compare] [--steps 1500]

Trains two runs on the procedural faces (`benchmarks.harness.train`, same seed, same
batches), `OUT/none` with Adam alone and `OUT/sdr` with Adam followed by
`sdr_flax.spectral_independence` on the intermediate, fine and image levels,
then writes `OUT/report/report.md` (`benchmarks.report`). Interrupted, the same
command resumes where it stopped. Other options pass through to
`benchmarks.harness.train` (e.g. `--config paper --image-size 64 --steps 50000` for
the full-size comparison on an accelerator).
"""

from __future__ import annotations

import pathlib
import time

from benchmarks import environment, report
from benchmarks.harness import train

DEFAULTS = [
    "--config",
    "tiny",
    "--batch",
    "32",
    "--eval-every",
    "200",
    "--checkpoint-every",
    "200",
]


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Runs both trainings and the report.

    Args:
      argv: the command line; unknown options go to `benchmarks.harness.train`
        (after this command's defaults, so they override them).

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
    parser.add_argument("--steps", type=int, default=1500)
    args, rest = parser.parse_known_args(argv)
    start = time.perf_counter()
    runs = []
    for penalty in ("none", "sdr"):
        print(f"== training with penalty={penalty}")
        out = args.out / penalty
        train.main(
            [
                *DEFAULTS,
                *rest,
                "--penalty",
                penalty,
                "--steps",
                str(args.steps),
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
