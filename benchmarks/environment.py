"""The machine a benchmark ran on, the timers and the command lines.

Every script that prints or saves measured figures records `describe()` with
them, and times with `timed` / `median_time`, so that figures from different
scripts are taken and labelled the same way. Every command builds its
`argparse` parser with `parser`, records how it was run with `command`, and
saves its record with `save_record`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


def command(module: str, argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces a run of `python -m module`.

    Args:
      module: the module run with `python -m`.
      argv: its arguments (default `sys.argv[1:]`).

    Returns:
      The shell-quoted command.
    """
    given = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", module, *given])


def parser(module: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of the command `python -m module`.

    Args:
      module: the module run with `python -m` (its name in the usage line).
      description: what the command does, for `--help`.

    Returns:
      A parser with no arguments yet.
    """
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description)


def describe() -> dict[str, Any]:
    """The software and the device that a measurement ran on.

    Returns:
      A JSON-ready dict: the date (UTC), the Python, JAX and NumPy versions,
      the platform, the first device (its platform, kind and name) and the
      number of CPU cores.
    """
    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "platform": platform.platform(),
        "device": {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "repr": str(device),
        },
        "cpu_count": os.cpu_count(),
    }


def headline() -> str:
    """`describe()` in one line, for the top of a benchmark's output."""
    d = describe()
    device = d["device"]
    return (
        f"jax {d['jax_version']}, numpy {d['numpy_version']}, device "
        f"{device['platform']} ({device['device_kind']}), {d['cpu_count']} CPU cores"
    )


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and process CPU time of one call, waiting for its results.

    Args:
      fn: the call; JAX arrays in its result are waited for.

    Returns:
      `(wall_seconds, cpu_seconds, result)`; the CPU time is the process's,
      all threads.
    """
    start, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, time.process_time() - cpu, out


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls, after one untimed warm-up call.

    Args:
      fn: the call (see `timed`).
      repeats: the number of timed calls, ≥ 1.

    Returns:
      The median, in seconds.

    Raises:
      ValueError: if `repeats` < 1.
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be at least 1; got {repeats}.")
    jax.block_until_ready(fn())
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def fmt_time(t: float) -> str:
    """Seconds, as milliseconds below one second, right-aligned."""
    return f"{t * 1e3:9.2f} ms" if t < 1 else f"{t:9.3f} s "


def fmt_duration(seconds: float) -> str:
    """`seconds` for people: `0.053 s`, `42 s`, `1 min 32 s`, `2 h 5 min`.

    Args:
      seconds: a duration.

    Returns:
      The text.
    """
    if seconds < 59.5:
        return f"{seconds:.2g} s" if seconds < 9.5 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min"


def save_record(record: dict[str, Any], path: pathlib.Path) -> None:
    """Writes a benchmark's record as indented JSON and says where.

    Args:
      record: the record (JSON-serialisable).
      path: the file; its folder is made if missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
