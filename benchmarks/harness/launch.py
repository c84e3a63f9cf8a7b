"""Processes started on this machine: forced CPU devices, a free loopback port,
and process groups that are signalled whole.

What a multi-process run on one host needs (`bench_multiprocess` and the
tests of `--distributed` start their processes with it): each process sees
`devices` CPU devices whatever accelerators the host has, the processes meet
on a free port of 127.0.0.1, each runs in its own process group with its
output in a log file, and `stop` kills every group left running. The study
runner starts its trainings the same way and stops them with SIGTERM, so
that they save.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence

_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def cpu_env(devices: int) -> dict[str, str]:
    """Environment variables that put a child process on exactly `devices`
    CPU devices, whatever the host's accelerators and its own `XLA_FLAGS`.

    Args:
      devices: the number of CPU devices the child sees.

    Returns:
      `JAX_PLATFORMS` and `XLA_FLAGS` (the parent's other XLA flags kept), to
      merge into the child's environment.

    Raises:
      ValueError: if `devices` < 1.
    """
    if devices < 1:
        raise ValueError(f"`devices` must be at least 1; got {devices}.")
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith(_DEVICE_COUNT)]
    flags.append(f"{_DEVICE_COUNT}={devices}")
    return {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags)}


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free when asked (for a coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(
    cmd: Sequence[str],
    *,
    log: pathlib.Path,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    append: bool = False,
) -> subprocess.Popen:
    """Starts `cmd` in a process group of its own, its output going to `log`.

    Args:
      cmd: the command and its arguments.
      log: the file that takes its stdout and stderr.
      env: the whole environment of the process (default: this process's).
      cwd: its working directory (default: this process's).
      append: add to `log` (a run that resumes) instead of overwriting it.

    Returns:
      The process; `stop` signals its group.
    """
    with log.open("ab" if append else "wb") as f:
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(
    procs: Iterable[subprocess.Popen], sig: signal.Signals = signal.SIGKILL
) -> None:
    """Sends `sig` to the process group of each process still running, then
    waits for every process.

    Args:
      procs: processes started by `spawn`.
      sig: `SIGKILL` (the default) ends them at once; `SIGTERM` lets a
        training save its checkpoint before it exits.
    """
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
    for proc in procs:
        proc.wait()
