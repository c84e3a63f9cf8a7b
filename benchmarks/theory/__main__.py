"""The command line of the theory run: experiments, figures, `theory.json`.

python -m benchmarks.theory --out DIR
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from benchmarks import environment, theory
from benchmarks.theory.eye_1d import eye_experiments_1d
from benchmarks.theory.eye_2d import eye_experiment_2d
from benchmarks.theory.figures import figure_2, figure_3a, figure_3b, figure_penalty
from benchmarks.theory.product import model2_experiment, product_experiments
from benchmarks.theory.progress import Progress
from benchmarks.theory.summary import json_ready, print_summary

STAGES = (
    "Fig. 3a: GD, SGD, ASGD on |c − ab|²",
    "Prop. 6: SGD on Model 2",
    "Fig. 3b, Fig. 2, Sec. 3.4: 1-D eye generator grid",
    "Fig. 2: 2-D eye generator",
    "figures",
)
"""The stages of a run, in order, as the progress display names them."""


def _meta(command: str, runtime: float, progress: Progress) -> dict[str, Any]:
    """The run's command, timings and machine (`environment.describe`)."""
    env = environment.describe()
    return {
        "command": command,
        "runtime_s": runtime,
        "stage_s": progress.times,
        "date": env["date"],
        "python": env["python_version"],
        "jax": env["jax_version"],
        "device": env["device"]["repr"],
        "cpus": env["cpu_count"],
        "platform": env["platform"],
        "environment": env,
    }


def main(argv: list[str] | None = None) -> None:
    """Runs every experiment, draws the figures and writes `theory.json`.

    Args:
      argv: the command-line arguments (default `sys.argv[1:]`).
    """
    parser = environment.parser("benchmarks.theory", theory.__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="folder for the PNG figures and theory.json",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    command = environment.command("benchmarks.theory", argv)
    stages = list(STAGES)
    progress = Progress(stages)
    results: dict[str, Any] = {}
    with progress.stage(stages[0]):
        results["fig3a"], arr_a = product_experiments()
    with progress.stage(stages[1]):
        results["fig3a"]["model2_prop6"] = model2_experiment()
    with progress.stage(stages[2]):
        eye1, arr1 = eye_experiments_1d()
    with progress.stage(stages[3]):
        eye2, arr2 = eye_experiment_2d()
    results["fig3b"] = eye1["fig3b"]
    results["fig2"] = {"one_d": eye1["fig2_1d"], "two_d": eye2}
    results["sec34"] = eye1["sec34"]
    with progress.stage(stages[4]):
        figure_3a(args.out, arr_a)
        figure_3b(args.out, arr1, results["fig3b"])
        figure_2(args.out, arr1, arr2, eye2)
        figure_penalty(args.out, arr1)
    progress.close()
    results["meta"] = _meta(command, time.perf_counter() - start, progress)
    (args.out / "theory.json").write_text(
        json.dumps(json_ready(results), indent=1) + "\n"
    )
    print_summary(results)
    print(f"wrote {args.out}/theory.json and 4 PNG figures")
    print(f"command: {command}")
    print(f"total runtime: {results['meta']['runtime_s']:.1f} s")


if __name__ == "__main__":
    main()
