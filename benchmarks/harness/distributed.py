"""Several processes training one run: JAX's multi-controller start (`--distributed`).

Every process runs the same command with `--distributed`; `initialize` then
calls `jax.distributed.initialize` before anything touches a device. Where
the processes come from:

- explicit flags: `--coordinator HOST:PORT --num-processes N --process-id I`
  (process 0 serves the coordinator on PORT; plain SSH, or processes on one
  machine);
- otherwise the environment: `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (read
  here) with `JAX_COORDINATOR_ADDRESS` (read by JAX), or what
  `jax.distributed.initialize()` detects by itself: SLURM (`srun`, one task
  per host), Open MPI, a Cloud TPU pod slice.

On the CPU the collectives between processes go through gloo over TCP
(`jax_cpu_collectives_implementation`). A process that stops sending
heartbeats for `--heartbeat-timeout` seconds is declared dead by the
coordination service, and the others then stop instead of waiting forever;
a process whose peer died in a collective fails at once. None of these
flags is a setting of the run (`FLAGS`): a run may be resumed with others.

Interruptions (`catch_sigterm`, `check_preempted`, `can_save`): one process
turns SIGTERM into `Interrupted` at once. Several processes may be at
different steps when a signal comes, and saving is collective, so there
JAX's preemption notifier takes SIGTERM (sent to any of them) and every
process raises `Interrupted` after the same step
(`multihost_utils.reached_preemption_sync_point`); a Ctrl-C stops them
without saving.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from benchmarks.harness import data

FLAGS = (
    "distributed",
    "coordinator",
    "num_processes",
    "process_id",
    "heartbeat_timeout",
)
"""The arguments of this module, none of them recorded with the run."""
HEARTBEAT_TIMEOUT = 100
"""JAX's default `heartbeat_timeout_seconds`."""
_EXPLICIT = ("coordinator", "num_processes", "process_id")


def add_args(p: argparse.ArgumentParser) -> None:
    """Adds `--distributed` and the flags that say where the processes are.

    Args:
      p: the training's parser.
    """
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one of several processes (jax.distributed.initialize)",
    )
    p.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address and port"
    )
    p.add_argument("--num-processes", type=int, metavar="N")
    p.add_argument("--process-id", type=int, metavar="I", help="0 … N - 1")
    p.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=HEARTBEAT_TIMEOUT,
        metavar="SECONDS",
        help="a process silent this long is dead, and the run stops",
    )


def _from_env(name: str) -> int | None:
    """An integer environment variable, or None when unset."""
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits with a usage error for inconsistent flags.

    The explicit flags need `--distributed` and go together; `JAX_NUM_PROCESSES`
    and `JAX_PROCESS_ID` stand in for the last two where the flags are absent.

    Args:
      p: the training's parser (its `error` exits).
      args: the parsed arguments.
    """
    given = [
        f"--{n.replace('_', '-')}" for n in _EXPLICIT if getattr(args, n) is not None
    ]
    if given and not args.distributed:
        p.error(f"{', '.join(given)} need --distributed")
    if given and len(given) != len(_EXPLICIT):
        p.error("--coordinator, --num-processes and --process-id go together")
    if args.heartbeat_timeout < 1:
        p.error("--heartbeat-timeout must be ≥ 1")
    if not args.distributed:
        return
    if given:
        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            p.error(f"--coordinator {args.coordinator!r} is not HOST:PORT")
        count, index = args.num_processes, args.process_id
        names = ("--num-processes", "--process-id")
    else:
        names = ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
        try:
            count, index = (_from_env(name) for name in names)
        except ValueError as e:
            p.error(str(e))
    if count is not None and count < 1:
        p.error(f"{names[0]} must be ≥ 1; got {count}")
    if count is not None and index is not None and not 0 <= index < count:
        p.error(f"{names[1]} {index} is not in 0 … {count - 1} ({names[0]} {count})")


def initialize(args: argparse.Namespace) -> None:
    """Joins the other processes (`jax.distributed.initialize`), if distributed.

    Must run before anything touches a device. Sets gloo as the CPU's
    collectives first where the CPU may be the platform trained on (the
    setting concerns the CPU backend only). `--heartbeat-timeout` is also
    how long a process that ends waits for the others to end.

    Args:
      args: with the flags of `add_args`, checked by `check_args`.
    """
    if not args.distributed:
        return
    platforms = (jax.config.jax_platforms or "cpu").split(",")
    if "cpu" in platforms:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    count, index = args.num_processes, args.process_id
    if args.coordinator is None:
        count, index = _from_env("JAX_NUM_PROCESSES"), _from_env("JAX_PROCESS_ID")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=count,
        process_id=index,
        heartbeat_timeout_seconds=args.heartbeat_timeout,
        shutdown_timeout_seconds=args.heartbeat_timeout,
    )


def describe(rows: np.ndarray, batch_size: int) -> str:
    """One line on this process's share: its index, its devices and its rows.

    Args:
      rows: the indices of the rows of each global batch this process reads
        (`data.Batches.rows`).
      batch_size: the global batch size.

    Returns:
      The line.
    """
    return (
        f"process {jax.process_index()} of {jax.process_count()}: rows "
        f"{data.row_ranges(rows)} of each batch of {batch_size}, on "
        f"{jax.local_device_count()} of {jax.device_count()} devices"
    )


class Interrupted(Exception):
    """SIGTERM: the training saves a checkpoint and stops."""


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def catch_sigterm() -> Callable[[], None]:
    """Turns SIGTERM into `Interrupted`, in a single process only.

    Returns:
      A function that puts the previous handler back.
    """
    if jax.process_count() > 1:  # JAX's preemption notifier takes it
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    return lambda: signal.signal(signal.SIGTERM, previous)


def check_preempted(step: int) -> None:
    """Raises `Interrupted` after the step that every process stops at once
    one of them got SIGTERM (several processes; call it after every step).

    Args:
      step: the step just taken.

    Raises:
      Interrupted: at that step.
    """
    if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(step):
        raise Interrupted("SIGTERM")


def can_save(error: BaseException) -> bool:
    """Whether every process stopped after the same step, so that the
    collective save of a checkpoint can run.

    Args:
      error: what stopped the training loop (`Interrupted`, `KeyboardInterrupt`).

    Returns:
      True for one process, or for `Interrupted`.
    """
    return jax.process_count() == 1 or isinstance(error, Interrupted)
