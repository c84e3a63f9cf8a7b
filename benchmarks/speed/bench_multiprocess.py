"""Time the harness's training step over several processes on one machine.

The same global batch is trained (`benchmarks.harness.train`'s step on the
procedural faces, each process rendering its rows) in three layouts, each
in fresh OS processes on the CPU:

- `1x1`: one process, one device: the single-process step;
- `1xN`: one process over N devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=N`);
- `Nx1`: N processes of one device each, started with `--distributed`'s
  `jax.distributed.initialize` on 127.0.0.1 (gloo collectives over loopback
  TCP).

Each layout compiles the step, takes `--warmup` steps, then times `--steps`
steps (wall time of `next(batches)`, the step, and waiting for its loss, on
process 0; the collectives keep the processes in step). The layouts run in
`--rounds` interleaved rounds; a layout's figure is the median over all its
timed steps. Printed: the median step of each layout and its ratio to `1x1`
(target: `Nx1` ≤ 1.5×), and `Nx1` against `1xN` (the cost of processes over
devices). The processes share the machine's cores: on a small machine N
processes compete for them, as N devices of one process do.

    python -m benchmarks.speed.bench_multiprocess [--processes 2 4]
        [--config small] [--batch 64] [--steps 20] [--rounds 2]

Writes `results/bench_multiprocess.json` (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import environment
from benchmarks.harness import launch

MODULE = "benchmarks.speed.bench_multiprocess"
TARGET_RATIO = 1.5
ROOT = pathlib.Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line.

    Args:
      argv: the arguments (default `sys.argv[1:]`).

    Returns:
      The parsed arguments.
    """
    p = environment.parser(MODULE, "Time the training step over 1, 2, 4 processes.")
    p.add_argument("--processes", type=int, nargs="+", default=[2, 4])
    p.add_argument("--config", choices=("tiny", "small", "paper"), default="small")
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--penalty", choices=("none", "sdr"), default="none")
    p.add_argument("--steps", type=int, default=20, help="timed steps a round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--timeout", type=int, default=900, help="seconds, one layout")
    p.add_argument(
        "--out", type=pathlib.Path, default="results/bench_multiprocess.json"
    )
    # One worker process of a layout (started by this script).
    p.add_argument("--worker", nargs=3, type=int, metavar=("PORT", "N", "I"))
    p.add_argument("--result", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.processes) < 2 or args.steps < 1 or args.warmup < 0:
        p.error("--processes must be ≥ 2, --steps ≥ 1, --warmup ≥ 0")
    if any(args.batch % n for n in args.processes):
        p.error(f"--batch {args.batch} must split over {args.processes} processes")
    return args


def worker(args: argparse.Namespace) -> None:
    """One process of a layout: compiles, warms up, times; process 0 writes
    `{"seconds": [...], "cpu_seconds": [...], "environment": ...}` to
    `--result`.

    Args:
      args: from `parse_args`, with `--worker PORT N I` (N = 1: no
        `jax.distributed`).
    """
    import jax

    from benchmarks.harness import data, distributed, train

    port, count, index = args.worker
    start = ["--distributed", "--coordinator", f"127.0.0.1:{port}"]
    start += ["--num-processes", str(count), "--process-id", str(index)]
    targs = train.parse_args(
        [
            *("--config", args.config, "--batch", str(args.batch)),
            *("--penalty", args.penalty, "--out", "unused"),
            *(start if count > 1 else []),
        ]
    )
    distributed.initialize(targs)
    mesh = data.data_mesh()
    state, step, noise_key, config = train.fresh_step(targs, mesh)
    size = config.image_size
    batches = data.Batches("faces", args.batch, size, 0, 0, mesh)
    seconds, cpu_seconds = [], []
    for i in range(args.warmup + args.steps):
        key = jax.random.fold_in(noise_key, i)
        wall, cpu, (state, terms) = environment.timed(
            lambda: step(state, next(batches), key)  # noqa: B023
        )
        if i >= args.warmup:
            seconds.append(wall)
            cpu_seconds.append(cpu)
    if jax.process_index() == 0:
        record = {"seconds": seconds, "cpu_seconds": cpu_seconds}
        record["loss"] = float(terms["loss"])
        record["environment"] = environment.describe()
        record["devices"] = jax.device_count()
        args.result.write_text(json.dumps(record))


def run_layout(args: argparse.Namespace, processes: int, devices: int) -> dict:
    """Starts one layout's processes and waits for process 0's record.

    Args:
      args: from `parse_args`.
      processes: the number of processes.
      devices: CPU devices per process.

    Returns:
      Process 0's record (`worker`).

    Raises:
      RuntimeError: if a process fails or runs past `--timeout` (all of the
        layout's processes are then killed).
    """
    port = launch.free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **launch.cpu_env(devices)}
    with tempfile.TemporaryDirectory() as tmp:
        result = pathlib.Path(tmp) / "result.json"
        common = [sys.executable, "-m", MODULE, "--config", args.config]
        common += ["--batch", str(args.batch), "--penalty", args.penalty]
        common += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        common += ["--result", str(result)]
        logs = [pathlib.Path(tmp) / f"{i}.log" for i in range(processes)]
        procs = []
        try:
            for i in range(processes):
                cmd = [*common, "--worker", str(port), str(processes), str(i)]
                procs.append(launch.spawn(cmd, env=env, log=logs[i], cwd=ROOT))
            deadline = time.monotonic() + args.timeout
            for proc, log in zip(procs, logs, strict=True):
                status = proc.wait(timeout=max(1, deadline - time.monotonic()))
                if status:
                    raise RuntimeError(f"a worker failed:\n{log.read_text()[-3000:]}")
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{processes}x{devices} ran past --timeout") from None
        finally:
            launch.stop(procs)
        return json.loads(result.read_text())


def summarise(times: dict[str, list[float]], processes: list[int]) -> dict:
    """Medians and ratios of the layouts' step times.

    Args:
      times: layout name (`1x1`, `1x2`, `2x1`, …) → timed steps, all rounds.
      processes: the process counts N measured.

    Returns:
      `{"median_s": {layout: s}, "ratio_to_1x1": {layout: r},
      "processes_over_devices": {"N": r}}`.
    """
    median = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "median_s": median,
        "ratio_to_1x1": {name: t / median["1x1"] for name, t in median.items()},
        "processes_over_devices": {
            str(n): median[f"{n}x1"] / median[f"1x{n}"] for n in processes
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the layouts in rounds, prints the figures, writes the JSON record.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      0.
    """
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    command = environment.command(MODULE, argv)
    print(f"command: {command}")
    layouts = [(1, 1)] + [(1, n) for n in args.processes]
    layouts += [(n, 1) for n in args.processes]
    times: dict[str, list[float]] = {f"{p}x{d}": [] for p, d in layouts}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    described = None
    for r in range(args.rounds):
        for p, d in layouts:
            tick = time.perf_counter()
            record = run_layout(args, p, d)
            name = f"{p}x{d}"
            times[name] += record["seconds"]
            cpu[name] += record["cpu_seconds"]
            described = described or record["environment"]
            print(
                f"round {r + 1}: {name:>4} ({p} process{'es' if p > 1 else ''} of "
                f"{d} device{'s' if d > 1 else ''}): median step "
                f"{environment.fmt_time(statistics.median(record['seconds']))} "
                f"(loss {record['loss']:.4f}; {time.perf_counter() - tick:.0f} s "
                "with start and compile)"
            )
    summary = summarise(times, args.processes)
    print_summary(args, summary, described)
    record = {
        "command": command,
        "environment": described,
        "config": args.config,
        "batch": args.batch,
        "penalty": args.penalty,
        "steps_timed_per_round": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "seconds": times,
        "cpu_seconds_process_0": cpu,
        **summary,
        "target_ratio": TARGET_RATIO,
        "target_met": {
            str(n): summary["ratio_to_1x1"][f"{n}x1"] <= TARGET_RATIO
            for n in args.processes
        },
    }
    environment.save_record(record, args.out)
    return 0


def print_summary(args: argparse.Namespace, summary: dict, described: dict) -> None:
    """Prints the medians and ratios of `summarise`.

    Args:
      args: from `parse_args`.
      summary: from `summarise`.
      described: `environment.describe()` of a worker.
    """
    d = described
    print(
        f"\njax {d['jax_version']}, {d['device']['platform']} "
        f"({d['device']['device_kind']}), {d['cpu_count']} CPU cores; config "
        f"{args.config}, global batch {args.batch}, penalty {args.penalty}"
    )
    print(f"median of {args.rounds} x {args.steps} timed steps per layout:")
    for name, seconds in summary["median_s"].items():
        ratio = summary["ratio_to_1x1"][name]
        print(f"  {name:>4}  {environment.fmt_time(seconds)}  {ratio:5.2f}x 1x1")
    for n in args.processes:
        ratio = summary["ratio_to_1x1"][f"{n}x1"]
        met = "MET" if ratio <= TARGET_RATIO else "NOT MET"
        over = summary["processes_over_devices"][str(n)]
        print(
            f"  {n} processes: {ratio:.2f}x the single-process step (target ≤ "
            f"{TARGET_RATIO}x: {met}); {over:.2f}x one process over {n} devices"
        )


if __name__ == "__main__":
    sys.exit(main())
