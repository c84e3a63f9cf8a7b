"""Where a training writes, and what it shows as it runs.

- `Records`: the run directory (`metrics.jsonl`, the evaluation panels,
  through `rundir.RunDir`), the TensorBoard events and the checkpoint
  manager of a run, and its evaluation, compiled ahead and timed.
- `EventWriter`: TensorBoard event files in `RUN/tensorboard/`, written with
  tensorboardX (no TensorFlow import): every number of every train and eval
  record as a scalar (nested dicts flattened with `/`: `stretch_mse/fine`;
  the train record's under `train/`), each evaluation's image panels as a
  grid (`images/<panel>`) and the histogram of `log2 ρ` of each layer's
  pairs (`sdr/<layer>/log2_rho`, over `evaluate.SDR_BINS`). Only the first
  process writes. A resumed run appends a new event file that starts with
  a purge marker (tensorboardX's `purge_step`): TensorBoard then drops the
  events of the earlier files from the step after the checkpoint on, which
  the resumed run writes again.
- `Monitor`: the progress bar; a `jax.profiler` trace of `--profile-steps`
  training steps, from the second step on (compilation and the first step's
  warm-up stay out of it), into `RUN/profile/`; and one printed line with
  the expected wall time of the run, measured over the steps up to the
  first log line after the first step (and after the profiled steps), with
  the evaluations timed at their first run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from benchmarks import environment
from benchmarks.harness import evaluate, rundir
from benchmarks.harness.checkpoint import TrainState

__all__ = ["EventWriter", "Monitor", "Records", "scalars"]


def scalars(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested record, by their `/`-joined keys as tags.

    A tag keeps letters, digits, `_`, `-`, `.` and `/`; `+` becomes `_plus_`
    (`centre+0.5`: `centre_plus_0.5`) and any other character `_`.

    Args:
      tree: a JSON-ready dict (`evaluate.to_python`); lists, strings and
        non-finite numbers (a feature not found, a layer without an SDR) are
        left out.
      prefix: put before every key.

    Returns:
      Flat `{"a/b": value}`.
    """
    flat = {}
    for key, value in tree.items():
        name = prefix + re.sub(r"[^-/\w.]", "_", str(key).replace("+", "_plus_"))
        if isinstance(value, Mapping):
            flat.update(scalars(value, f"{name}/"))
        elif _finite(value):
            flat[name] = float(value)
    return flat


def _finite(value: Any) -> bool:
    """A finite number (NaN: a feature not found, a layer without an SDR)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and bool(np.isfinite(value))


class EventWriter:
    """TensorBoard event files of a run (see the module); no-op when disabled.

    Args:
      directory: where the event files go (`RUN/tensorboard`).
      start: the steps already taken (the checkpoint resumed from; 0 for a
        fresh run): events of earlier files after it are purged.
      enabled: False writes nothing (`--no-tensorboard`).
    """

    def __init__(self, directory: pathlib.Path, *, start: int, enabled: bool = True):
        self.directory = directory
        self._writer = None
        if enabled and jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            # A resumed run keeps step `start`'s events (they are before the
            # checkpoint); a run without a checkpoint redoes step 0's.
            self._writer = SummaryWriter(
                str(directory),
                purge_step=start + 1 if start else 0,
                flush_secs=30,
                filename_suffix=f".from{start:09d}",
            )

    def train(self, record: Mapping[str, Any]) -> None:
        """Writes a train record's numbers as `train/<key>`.

        Args:
          record: the `metrics.jsonl` record, with its `step`.
        """
        if self._writer is None:
            return
        step = record["step"]
        numbers = {k: v for k, v in record.items() if k not in ("step", "kind")}
        for tag, value in scalars(numbers, "train/").items():
            self._writer.add_scalar(tag, value, step)

    def evaluation(
        self,
        step: int,
        metrics: Mapping[str, Any],
        stats: Mapping[str, Any],
        images: Mapping[str, np.ndarray],
    ) -> None:
        """Writes an evaluation: scalars, SDR histograms, image grids.

        Args:
          step: the training step.
          metrics: the evaluation's metrics, JSON-ready.
          stats: the SDR statistics by layer, JSON-ready (`sdr` of the record).
          images: panel → uint8 images `(n, h, w, c)` (`evaluate.to_uint8`).
        """
        if self._writer is None:
            return
        for tag, value in scalars({**metrics, "sdr": stats}).items():
            self._writer.add_scalar(tag, value, step)
        without = metrics.get("sdr_without_aliases", {})
        for group, layers in (("sdr", stats), ("sdr_without_aliases", without)):
            for layer, layer_stats in layers.items():
                self._histogram(f"{group}/{layer}/log2_rho", layer_stats, step)
        for name, panel in images.items():
            self._writer.add_images(f"images/{name}", panel, step, dataformats="NHWC")
        self._writer.flush()

    def _histogram(self, tag: str, layer_stats: Mapping[str, Any], step: int):
        counts = np.asarray(layer_stats["counts"], np.float64)
        if counts.sum() == 0:  # a layer without an SDR
            return
        edges = evaluate.SDR_BINS
        centres = (edges[1:] + edges[:-1]) / 2
        self._writer.add_histogram_raw(
            tag,
            min=float(edges[0]),
            max=float(edges[-1]),
            num=int(counts.sum()),
            sum=float(counts @ centres),
            sum_squares=float(counts @ centres**2),
            bucket_limits=edges[1:].tolist(),
            bucket_counts=counts.tolist(),
            global_step=step,
        )

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclasses.dataclass
class Records:
    """Where a training writes: its run directory, events and checkpoints.

    Attributes:
      run: the run directory's writer.
      manager: the checkpoint manager.
      evaluator: from `evaluate.make_evaluator` (compiled by `compile`).
      eval_x: the evaluation batch.
      eval_key: the evaluation's key.
      events: the TensorBoard writer.
    """

    run: rundir.RunDir
    manager: Any
    evaluator: Any
    eval_x: jax.Array
    eval_key: jax.Array
    events: EventWriter

    def compile(self, state: TrainState) -> None:
        """Compiles the evaluation ahead, so that no evaluation's time has it.

        Args:
          state: a training state of the shapes and shardings evaluated.
        """
        tick = time.perf_counter()
        self.evaluator = self.evaluator.lower(
            _variables(state), self.eval_x, self.eval_key
        ).compile()
        print(f"compiled the evaluation in {time.perf_counter() - tick:.1f} s")

    def evaluate(self, step: int, state: TrainState) -> float:
        """Logs the evaluation of `state`, saves its panels, writes its events.

        Args:
          step: the training step.
          state: the training state after it.

        Returns:
          The evaluation's wall time, in seconds.
        """
        tick = time.perf_counter()
        out = self.evaluator(_variables(state), self.eval_x, self.eval_key)
        metrics, stats = evaluate.to_python(out[0]), evaluate.to_python(out[1])
        self.run.log({"step": step, "kind": "eval", **metrics, "sdr": stats})
        images = evaluate.to_uint8(out[2])
        self.run.save_images(step, images)
        self.events.evaluation(step, metrics, stats, images)
        return time.perf_counter() - tick

    def log_train(self, record: dict) -> None:
        """Logs a train record to `metrics.jsonl` and TensorBoard.

        Args:
          record: `{"step", "kind": "train", ...}`.
        """
        self.run.log(record)
        self.events.train(record)


def _variables(state: TrainState) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)  # above a progress bar, or plainly without one


class Monitor:
    """The progress bar, profiler window and wall-time estimate of a loop.

    The loop calls `before(step, state)` and `after(step, state)` around each
    step, `logged(step, loss, seconds)` after each log line,
    `evaluated(seconds)` after each evaluation and `close()` at the end (it
    stops a trace still running and closes the bar).

    Args:
      directory: where the trace goes (`RUN/profile`).
      start: the steps taken before the loop.
      steps: the last step.
      eval_every: `--eval-every` (evaluations are counted in the estimate).
      profile_steps: the steps to trace (0: none).
      progress: show a progress bar.
    """

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        start: int,
        steps: int,
        eval_every: int,
        profile_steps: int = 0,
        progress: bool = True,
    ):
        from tqdm import tqdm

        self.bar = tqdm(
            total=steps,
            initial=start,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
        )
        self.directory = directory
        self.start, self.steps, self.eval_every = start, steps, eval_every
        self.first_traced = start + 2
        self.last_traced = min(start + 1 + profile_steps, steps)
        self.tracing = False
        if profile_steps and self.last_traced < self.first_traced:
            _say("--profile-steps: no step left after the first; nothing traced")
        # The clock runs from the end of this step: the first step, or the
        # last traced one (tracing slows steps down).
        self.clock_step = max(start + 1, self.last_traced)
        self.clock: float | None = None
        self.excluded = 0.0
        self.eval_seconds: float | None = None
        self.estimated = False

    def before(self, step: int, state: Any) -> None:
        """Starts the trace before the first traced step."""
        if step == self.first_traced and step <= self.last_traced:
            jax.block_until_ready(state)  # the step before stays out
            jax.profiler.start_trace(str(self.directory))
            self.tracing = True

    def after(self, step: int, state: Any) -> None:
        """Counts the step, stops the trace after the last traced step, and
        starts the clock after the first step (or the last traced one)."""
        self.bar.update(1)
        if self.tracing and step == self.last_traced:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.tracing = False
            _say(
                f"profiled steps {self.first_traced}–{step} into {self.directory} "
                f"(tensorboard --logdir {self.directory}, or ui.perfetto.dev)"
            )
        if step == self.clock_step:
            jax.block_until_ready(state)
            self.clock, self.excluded = time.perf_counter(), 0.0

    def evaluated(self, seconds: float) -> None:
        """Notes an evaluation's wall time (the first one is the estimate's)."""
        if self.eval_seconds is None:
            self.eval_seconds = seconds
        self.excluded += seconds

    def logged(self, step: int, loss: float, seconds: float) -> None:
        """Shows a log line's loss and seconds per step on the bar; prints the
        expected wall time once, at the first log line after the clock
        started, unless the run ends there.

        Args:
          step: the step logged.
          loss: its loss.
          seconds: the seconds per step since the previous log line.
        """
        self.bar.set_postfix(loss=f"{loss:.4f}", s_per_step=f"{seconds:.3f}")
        if self.estimated or self.clock is None:
            return
        if not self.clock_step < step < self.steps:  # no step measured, or none left
            return
        self.estimated = True
        elapsed = time.perf_counter() - self.clock - self.excluded
        per_step = elapsed / (step - self.clock_step)
        n = self.steps - self.start
        every = self.eval_every
        evals = self.steps // every - self.start // every + bool(self.steps % every)
        total = n * per_step
        if evals and self.eval_seconds is not None:
            total += evals * self.eval_seconds
            tail = f", plus {_count(evals, 'evaluation')} of "
            tail += f"~{environment.fmt_duration(self.eval_seconds)}"
        elif evals:
            tail = f"; {_count(evals, 'evaluation')}, not timed yet, on top"
        else:
            tail = ""
        _say(
            f"expected: {environment.fmt_duration(total)} for {_count(n, 'step')} "
            f"({environment.fmt_duration(per_step)}/step{tail})"
        )

    def close(self) -> None:
        """Stops a trace still running (an interrupted run); closes the bar."""
        if self.tracing:
            jax.profiler.stop_trace()
            self.tracing = False
        self.bar.close()
