"""One table of a study: every finished run's settings, final numbers and curves.

`collect` reads every run directory under `OUT/runs` and makes one row per
finished run; `write_table` writes the rows to `OUT/results.jsonl`, one JSON
object a line, which is all that `paired`, `tradeoff` and `page` read.

A row holds:

- the settings, from the run's `config.json`: `config`, `steps` (the last
  evaluated step), `seed`, `penalty`, `rate`, `layers`, `kl_weight`, `arm`
  (what the seeds are paired over: `grid.RunSpec.arm`) and `base` (every
  other setting, so that only runs of the same base are compared);
- `final`: the last evaluation, flattened to `name → number` (`METRICS`);
- `history`: the same numbers at every evaluation, as lists by `steps`;
- `slope/<level>` in `final`: the least-squares slope of `stretch_mse` at
  the level over the second half of training (evaluations at or after half
  the steps), per 1,000 steps: the growth of distortion during training.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from benchmarks.harness.rundir import Run, load_run
from benchmarks.study.grid import RunSpec

# Arguments that make the arm or the seed; all the others make the base.
_ARM_ARGS = {"seed", "penalty", "penalty_rate", "penalty_layers", "kl_weight"}
# Arguments that do not change what a run computes.
_IGNORED_ARGS = {"data_dir", "log_every", "checkpoint_every", "distributed"}
TABLE = "results.jsonl"


def flatten(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one eval record, by name (`METRICS`).

    Args:
      record: an eval record of `metrics.jsonl`.

    Returns:
      `recon_mse`, `stretch_mse/<level>`, `stretch_highpass`,
      `stretch_norm/<level>` (`stretch_mse` over `stretch_highpass`),
      `truth_mse/<target>/<level>`, `eyes_position/<target>/<image>` and
      `eyes_width_ratio/<target>/<image>` (`truth_features`' eyes),
      `sdr_median/<layer>` and `generic_share/<layer>`; those the record has.
    """
    out: dict[str, float] = {}
    if "recon_mse" in record:
        out["recon_mse"] = record["recon_mse"]
    highpass = record.get("stretch_highpass")
    for level, v in record.get("stretch_mse", {}).items():
        out[f"stretch_mse/{level}"] = v
        if highpass:
            out[f"stretch_norm/{level}"] = v / highpass
    if highpass is not None:
        out["stretch_highpass"] = highpass
    for target, by_level in record.get("truth_mse", {}).items():
        for level, v in by_level.items():
            out[f"truth_mse/{target}/{level}"] = v
    for target, by_image in record.get("truth_features", {}).items():
        for image, features in by_image.items():
            eyes = features.get("eyes", {})
            for key, name in (("position", "eyes_position"),
                              ("width_ratio", "eyes_width_ratio")):  # fmt: skip
                if key in eyes:
                    out[f"{name}/{target}/{image}"] = eyes[key]
    for layer, stats in record.get("sdr", {}).items():
        out[f"sdr_median/{layer}"] = stats["median"]
        out[f"generic_share/{layer}"] = stats["generic_share"]
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}


def second_half_slope(
    steps: Sequence[int], values: Sequence[float], last: int
) -> float:
    """The least-squares slope of `values` over the steps ≥ `last / 2`, per 1,000.

    Args:
      steps: the evaluation steps.
      values: the values at those steps.
      last: the run's last step.

    Returns:
      The slope, or NaN with fewer than 3 finite points in the second half.
    """
    s = np.asarray(steps, float)
    v = np.asarray(values, float)
    keep = (s >= last / 2) & np.isfinite(v)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(s[keep] / 1000, v[keep], 1)[0])


def _spec(args: dict[str, Any], steps: int) -> RunSpec:
    """The run's settings as a `RunSpec` (its arm and name)."""
    sdr = args.get("penalty") == "sdr"
    return RunSpec(
        config=str(args.get("config")),
        steps=steps,
        seed=int(args.get("seed", 0)),
        penalty=str(args.get("penalty")),
        rate=float(args["penalty_rate"]) if sdr else None,
        layers=tuple(args.get("penalty_layers", ())) if sdr else (),
        kl_weight=args.get("kl_weight"),
    )


def row(run: Run) -> dict[str, Any]:
    """The table's row of one run.

    Args:
      run: a run read by `benchmarks.harness.rundir.load_run`.

    Returns:
      The row (see the module docstring).
    """
    args = run.args
    steps = int(run.evals[-1]["step"])
    spec = _spec(args, steps)
    base = {k: v for k, v in sorted(args.items()) if k not in _ARM_ARGS | _IGNORED_ARGS}
    base["steps"] = steps
    per_eval = [flatten(r) for r in run.evals]
    names = sorted({k for f in per_eval for k in f})
    history = {"steps": [int(r["step"]) for r in run.evals]}
    history.update({k: [f.get(k, math.nan) for f in per_eval] for k in names})
    final = dict(per_eval[-1])
    for key in names:
        if key.startswith("stretch_mse/"):
            level = key.split("/", 1)[1]
            slope = second_half_slope(history["steps"], history[key], steps)
            final[f"slope/{level}"] = slope
    return {
        "run": run.path.name,
        "config": spec.config,
        "steps": steps,
        "seed": spec.seed,
        "penalty": spec.penalty,
        "rate": spec.rate,
        "layers": list(spec.layers),
        "kl_weight": spec.kl_weight,
        "arm": spec.arm,
        "base": json.dumps(base, sort_keys=True),
        "final": final,
        "history": history,
    }


def collect(out: pathlib.Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of every finished run under `out/runs`.

    A run is finished when its last evaluation is at the step that its
    directory's name records (`RunSpec.name`); runs of other names count when
    they hold an evaluation after step 0.

    Args:
      out: the study's directory.

    Returns:
      `(rows, notes)`: the rows, sorted by base, arm and seed; and a note per
      run left out (unfinished or unreadable).
    """
    rows, notes = [], []
    for path in sorted((out / "runs").glob("*/")):
        try:
            run = load_run(path)
        except (OSError, ValueError) as e:
            notes.append(f"{path.name}: left out ({e})")
            continue
        last = run.evals[-1]["step"]
        target = _named_steps(path.name)
        if last == 0 or (target is not None and last < target):
            notes.append(f"{path.name}: left out, unfinished (step {last})")
            continue
        rows.append(row(run))
    rows.sort(key=lambda r: (r["base"], r["arm"], r["seed"]))
    return rows, notes


def _named_steps(name: str) -> int | None:
    """The steps in a `RunSpec.name` (`<config>-<steps>-s<seed>-...`), if any."""
    parts = name.split("-")
    if len(parts) > 2 and parts[1].isdigit() and parts[2].startswith("s"):
        return int(parts[1])
    return None


def write_table(out: pathlib.Path, rows: Iterable[dict[str, Any]]) -> pathlib.Path:
    """Writes the rows to `out/results.jsonl`.

    Args:
      out: the study's directory.
      rows: from `collect`.

    Returns:
      The table's path.
    """
    path = out / TABLE
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    path.write_text(text)
    return path


def read_table(path: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of a `results.jsonl`.

    Args:
      path: the table.

    Returns:
      The rows.
    """
    return [json.loads(line) for line in path.read_text().splitlines() if line]
