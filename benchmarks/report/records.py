"""What the report reads from runs: record fields, levels, layers, loss terms.

`_get` walks the nested dict records of `metrics.jsonl`; the other helpers
collect, over several runs, the names that the table has rows for and the
figures have panels for, and pick the eval record of the step shown.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks.harness.rundir import Run

STRETCH_NOTE = "1.5× horizontal stretch"
_TRUTH_REFERENCES = ("none", "output")


def _get(record: dict | None, *keys: str) -> Any:
    """`record[keys[0]][keys[1]]...`, or None where a key is missing."""
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _slug(text: str) -> str:
    """`text` with every run of characters unsafe in a file name as `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _median_step_time(run: Run) -> float | None:
    """The median logged step time, leaving out the first (warm-up) interval."""
    times = [r["step_time_s"] for r in run.train[1:] if "step_time_s" in r]
    return statistics.median(times) if times else None


def _layers(runs: Sequence[Run]) -> list[str]:
    """All SDR layer names of the runs' evals: decoder then encoder, by number."""
    names = {name for run in runs for r in run.evals for name in r.get("sdr", {})}

    def key(name: str):
        digits = re.findall(r"\d+", name)
        return (
            not name.startswith(("decoder/", "generator/")),
            name.rstrip("0123456789"),
            int(digits[-1]) if digits else 0,
        )

    return sorted(names, key=key)


def _train_terms(runs: Sequence[Run]) -> list[str]:
    """The loss terms the runs log: loss, mse, kl (β-VAE); g_loss, d_loss (GAN)."""
    terms: list[str] = []
    for run in runs:
        for r in run.train:
            for k, v in r.items():
                skip = k in ("step", "kind", "step_time_s") or k in terms
                if not skip and isinstance(v, int | float):
                    terms.append(k)
    return terms or ["loss"]


def _truth_targets(runs: Sequence[Run]) -> list[str]:
    """The ground-truth targets of the runs' last eval records, sorted."""
    return sorted({t for run in runs for t in (_get(run.evals[-1], "truth_mse") or {})})


def _levels(runs: Sequence[Run]) -> list[str]:
    """The decoder levels of the runs, in the order they first appear."""
    levels: list[str] = []
    for run in runs:
        levels += [lv for lv in run.levels if lv not in levels]
    return levels


def mirror_pairs(run: Run) -> list[tuple[str, str, str]]:
    """Generative layers paired with the inverse network's layer on the same grid.

    From the run's `mirror` map when it has one; otherwise the encoder runs
    in the mirror order: with `n` decoder levels, decoder
    `deconv<k>` pairs with encoder `conv<n + 1 - k>` (deconv1, the coarse
    level, with the encoder's last conv).

    Args:
      run: the run.

    Returns:
      `(level, decoder layer, encoder layer)` per level, coarse to image.
    """
    levels = run.levels
    mirror = run.config.get("mirror")
    if mirror:
        return [(level, layer, mirror[level]) for level, layer in levels.items()]
    n = len(levels)
    pairs = []
    for level, layer in levels.items():
        match = re.search(r"(\d+)$", layer)
        k = int(match.group(1)) if match else list(levels).index(level) + 1
        pairs.append((level, layer, f"encoder/conv{n + 1 - k}"))
    return pairs


def _eval_at(run: Run, step: int | None) -> dict:
    """The eval record of `run` at `step` (its last for None)."""
    if step is None:
        return run.evals[-1]
    for r in run.evals:
        if r["step"] == step:
            return r
    raise ValueError(
        f"{run.path}: no eval record at step {step}; eval steps: "
        f"{[r['step'] for r in run.evals]}"
    )


def check_step(
    runs: Sequence[Run], step: int | None
) -> tuple[dict[str, int], dict[str, dict]]:
    """The image step and eval record of each run for the figures at `step`.

    Args:
      runs: the runs.
      step: the step asked for, or None for each run's last.

    Returns:
      Run name → image step (runs without images left out), and run name →
      eval record.

    Raises:
      ValueError: a run has no images or no eval record at `step` (the
        message lists the steps it has).
    """
    image_steps, records = {}, {}
    for run in runs:
        records[run.name] = _eval_at(run, step)
        if step is not None:
            if step not in run.image_steps:
                raise ValueError(
                    f"{run.path}: no images at step {step}; steps with images: "
                    f"{run.image_steps or 'none'}"
                )
            image_steps[run.name] = step
        elif run.image_steps:
            image_steps[run.name] = run.image_steps[-1]
    return image_steps, records
