"""Running a study's trainings: each once, resumably, with the whole job's ETA.

Each run is `python -m benchmarks.harness.train` in its own process, in
`OUT/runs/<name>` (`RunSpec.name`). A run whose last evaluation is at its
last step is finished and skipped; any other is started or resumed (the
trainer resumes from its latest checkpoint). So a killed study, run again
with the same command, goes on where it stopped, and a grid extended by new
values trains only the new runs. One progress bar counts the steps of the
whole study, so its ETA is the job's, not one run's.
"""

from __future__ import annotations

import json
import pathlib
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from benchmarks import environment
from benchmarks.harness import launch
from benchmarks.study.grid import TRAIN_ARGS, RunSpec

_POLL_S = 2.0


def run_dir(out: pathlib.Path, spec: RunSpec) -> pathlib.Path:
    """The run directory of `spec` in the study `out`."""
    return out / "runs" / spec.name


def _records(path: pathlib.Path) -> Iterator[dict]:
    """The records of a run's `metrics.jsonl` so far (none if not written).

    A line that does not parse as a JSON object (one being written) is
    skipped.
    """
    metrics = path / "metrics.jsonl"
    if not metrics.exists():
        return
    with metrics.open() as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def steps_done(path: pathlib.Path) -> int:
    """The last step that the run at `path` logged (0 if none).

    Args:
      path: a run directory, possibly not yet written.

    Returns:
      The largest `step` of its `metrics.jsonl`.
    """
    steps = [r["step"] for r in _records(path) if isinstance(r.get("step"), int)]
    return max(steps, default=0)


def step_time(path: pathlib.Path) -> float | None:
    """The median logged seconds per step of a run, leaving out the first log.

    Args:
      path: a run directory, possibly being written.

    Returns:
      The median of `step_time_s` over the train records after the first
      (which holds the warm-up), or None with fewer than 3 of them.
    """
    times = [
        float(r["step_time_s"])
        for r in _records(path)
        if r.get("kind") == "train" and "step_time_s" in r
    ]
    return statistics.median(times[1:]) if len(times) >= 3 else None


class _Forecast:
    """The whole job's expected time, printed twice: early, then measured.

    Early, from the first run's first logged step times (the steps alone);
    then when the first run ends, from its wall time per step, start-up
    and evaluations included.
    """

    def __init__(self, steps_left: int, write):
        self.steps_left = steps_left
        self.write = write
        self.early = self.measured = False

    def first_steps(self, seconds_per_step: float) -> None:
        if self.early or self.measured:
            return
        self.early = True
        self.write(
            f"expected: {environment.fmt_duration(self.steps_left * seconds_per_step)}"
            f" for the job's {self.steps_left:,} steps at {seconds_per_step:.3f} "
            "s/step, plus start-up and evaluations (re-estimated after the first run)"
        )

    def run_ended(self, seconds: float, steps: int, steps_left: int) -> None:
        if self.measured or steps <= 0 or steps_left <= 0:
            return
        self.measured = True
        self.write(
            f"expected: {environment.fmt_duration(steps_left * seconds / steps)} more"
            f" for the job's other {steps_left:,} steps (the first run took "
            f"{seconds:.0f} s for {steps:,})"
        )


def finished(path: pathlib.Path, steps: int) -> bool:
    """Whether the run at `path` has its evaluation at step `steps`.

    Args:
      path: a run directory.
      steps: the run's length.

    Returns:
      True if `metrics.jsonl` holds an eval record at `steps`.
    """
    return any(
        r.get("kind") == "eval" and r.get("step") == steps for r in _records(path)
    )


def _start(spec: RunSpec, out: pathlib.Path, train_args: Sequence[str]):
    """The training process of `spec`, its output added to the run's `train.log`."""
    path = run_dir(out, spec)
    path.mkdir(parents=True, exist_ok=True)
    argv = spec.argv(str(path), train_args)
    cmd = [sys.executable, "-m", "benchmarks.harness.train", *argv, "--no-progress"]
    return launch.spawn(cmd, log=path / "train.log", append=True)


def run_study(
    specs: Sequence[RunSpec],
    out: pathlib.Path,
    *,
    train_args: Sequence[str] = TRAIN_ARGS,
    jobs: int = 1,
    progress: bool = True,
) -> list[str]:
    """Trains every unfinished run of `specs`, `jobs` at a time.

    Args:
      specs: the study's runs.
      out: the study's directory.
      train_args: the options every run gets (before its own).
      jobs: how many trainings run at once.
      progress: whether to show the study's progress bar.

    Returns:
      The names of the runs that failed (their `train.log` says why).

    Raises:
      SystemExit: 130 when interrupted (Ctrl-C, SIGTERM): the running
        trainings save a checkpoint first, and the same command resumes.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be ≥ 1; got {jobs}")
    todo = [s for s in specs if not finished(run_dir(out, s), s.steps)]
    total = sum(s.steps for s in specs)
    base = total - sum(s.steps for s in todo)
    done = {s.name: steps_done(run_dir(out, s)) for s in todo}
    start_at = dict(done)
    print(
        f"study {out}: {len(specs)} runs, {len(specs) - len(todo)} finished, "
        f"{len(todo)} to train ({total - base - sum(done.values()):,} steps)"
    )
    bar = tqdm(
        total=total,
        initial=base + sum(done.values()),
        unit="step",
        disable=not progress,
    )
    failed: list[str] = []
    running: dict[str, subprocess.Popen] = {}
    started: dict[str, float] = {}
    queue = list(todo)
    forecast = _Forecast(sum(s.steps for s in todo) - sum(done.values()), tqdm.write)
    steps_of = {s.name: s.steps for s in todo}
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                spec = queue.pop(0)
                running[spec.name] = _start(spec, out, train_args)
                started[spec.name] = time.perf_counter()
            time.sleep(_POLL_S)
            for name, process in list(running.items()):
                # Only the running trainings' files are read: they alone change.
                done[name] = steps_done(out / "runs" / name)
                if not forecast.early and (t := step_time(out / "runs" / name)):
                    forecast.first_steps(t)
                if process.poll() is not None:
                    del running[name]
                    seconds = time.perf_counter() - started[name]
                    if process.returncode != 0:
                        failed.append(name)
                        tqdm.write(f"{name}: failed (exit {process.returncode})")
                    else:
                        tqdm.write(f"{name}: finished in {seconds:.0f} s")
                        left = sum(steps_of[k] - v for k, v in done.items())
                        forecast.run_ended(
                            seconds, steps_of[name] - start_at[name], left
                        )
            bar.update(max(0, base + sum(done.values()) - bar.n))
    except KeyboardInterrupt:
        bar.close()
        # SIGTERM: each training saves its checkpoint and stops.
        launch.stop(running.values(), signal.SIGTERM)
        print("interrupted: the trainings saved; rerun the same command to resume")
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    return failed


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
