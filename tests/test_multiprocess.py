"""Training with JAX's multi-controller runtime: two OS processes on this
machine (loopback, gloo collectives), checked against one process over the
same two devices; one process killed, the run resumed, then stopped by a
SIGTERM to one process."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from train_runs import ADAM_SPREAD, close, compare_runs, run_lines

from benchmarks.harness import checkpoint, data, distributed, faces, launch, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The one-process run takes STEPS steps. The two-process run (to go on to
# step 1000: `--steps` may change on resuming) has process 1 killed once step
# KILL_AFTER is logged, after the checkpoint at CHECKPOINT_EVERY: the resumed
# run recomputes steps it had logged. Process 1 of the resumed run gets a
# SIGTERM once step TERM_AFTER is logged: both save the same step and stop.
STEPS, CHECKPOINT_EVERY, KILL_AFTER, TERM_AFTER = 12, 4, 5, 7
ARGS = [
    *("--config", "tiny", "--batch", "8", "--eval-batch", "8", "--no-progress"),
    *("--log-every", "1", "--eval-every", "4"),
    *("--checkpoint-every", str(CHECKPOINT_EVERY)),
    *("--profile-steps", "1"),
]
HEARTBEAT = 5  # --heartbeat-timeout, seconds (JAX's default is 100)
SURVIVOR_BOUND = HEARTBEAT + 30  # seconds for the other process to stop
RUN_TIMEOUT = 300  # seconds, any one invocation


def _start(args, log: pathlib.Path, devices: int, cache: str) -> subprocess.Popen:
    """One training process on `devices` CPU devices, in its own group."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",  # the log as it goes (the test reads it)
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **launch.cpu_env(devices),
    }
    cmd = [sys.executable, "-m", "benchmarks.harness.train", *ARGS, *args]
    return launch.spawn(cmd, env=env, log=log, cwd=ROOT)


def _start_pair(out: pathlib.Path, cache: str, logs: list):
    """Two processes of one device each training `out` on towards step 1000;
    their logs appended to `logs`."""
    port = launch.free_port()
    procs = []
    for i in range(2):
        logs.append(out.parent / f"{out.name}.{len(logs)}.log")
        flags = ["--distributed", "--coordinator", f"127.0.0.1:{port}"]
        flags += ["--num-processes", "2", "--process-id", str(i)]
        flags += ["--heartbeat-timeout", str(HEARTBEAT)]
        args = ["--steps", "1000", "--out", str(out), *flags]
        procs.append(_start(args, logs[-1], 1, cache))
    return procs


def _wait(procs, logs, deadline: float, status: int) -> None:
    for proc, log in zip(procs, logs, strict=True):
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == status, log.read_text()[-5000:]


def _await(pair, log: pathlib.Path, done, what: str) -> None:
    """Waits until `done()`, while both processes of `pair` run."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not done():
        assert all(p.poll() is None for p in pair), log.read_text()[-5000:]
        assert time.monotonic() < deadline, f"no {what} in {RUN_TIMEOUT} s"
        time.sleep(0.02)


def _await_step(pair, out: pathlib.Path, step: int, log: pathlib.Path) -> None:
    """Waits until `out` logged the train line of `step`."""
    path, line = out / "metrics.jsonl", f'"step": {step}, "kind": "train"'
    _await(pair, log, lambda: path.exists() and line in path.read_text(), line)


def _checkpoint_steps(out: pathlib.Path) -> list[int]:
    steps = (int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    return sorted(steps)


def _kill_one(pair, out: pathlib.Path, log: pathlib.Path) -> dict:
    """Kills process 1 once step KILL_AFTER is logged; times process 0's end."""
    _await_step(pair, out, KILL_AFTER, log)
    pair[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    pair[0].wait(timeout=SURVIVOR_BOUND + 30)
    seconds = time.monotonic() - killed
    pair[1].wait()
    return {"status": pair[0].returncode, "seconds": seconds}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`one`: one process over two devices, uninterrupted. `two`: two
    processes of one device each; process 1 killed after step KILL_AFTER,
    both restarted, process 1 sent SIGTERM after step TERM_AFTER."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    cache = str(tmp / "jax_cache")
    one, two, logs = tmp / "one", tmp / "two", []
    procs = [
        _start(["--steps", str(STEPS), "--out", str(one)], tmp / "one.log", 2, cache)
    ]
    try:
        procs += _start_pair(two, cache, logs)
        survivor = _kill_one(procs[1:], two, logs[0])
        before_kill = run_lines(two)
        resumed_from = _checkpoint_steps(two)[-1]
        procs += _start_pair(two, cache, logs)
        # Lines the killed run logged after its checkpoint go first.
        _await(procs[3:], logs[2], lambda: "resuming" in logs[2].read_text(), "resume")
        _await_step(procs[3:], two, TERM_AFTER, logs[2])
        procs[4].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + RUN_TIMEOUT
        _wait(procs[3:], logs[2:], deadline, 130)
        _wait(procs[:1], [tmp / "one.log"], deadline, 0)
    finally:
        launch.stop(procs)
    return {
        "one": one,
        "two": two,
        "before_kill": before_kill,
        "resumed_from": resumed_from,
        "survivor": survivor,
        "log_one": (tmp / "one.log").read_text(),
        "logs_two": [log.read_text() for log in logs],
    }


def _stopped_at(runs) -> int:
    """The step both processes saved and stopped at after the SIGTERM."""
    said = [
        re.findall(r"the last checkpoint is step (\d+)", log)
        for log in runs["logs_two"][2:]
    ]
    assert said[0] == said[1] and len(said[0]) == 1, said
    return int(said[0][0])


def test_two_processes_train_as_one_process_over_two_devices(runs):
    configs = {
        name: json.loads((runs[name] / "config.json").read_text())
        for name in ("one", "two")
    }
    assert configs["one"]["processes"] == 1 and configs["two"]["processes"] == 2
    assert len(configs["one"]["devices"]) == len(configs["two"]["devices"]) == 2
    assert "distributed" not in configs["two"]["args"]  # not a setting of the run
    edges = np.asarray(configs["one"]["sdr_bins"], float)
    last = _stopped_at(runs)
    one = [ln for ln in run_lines(runs["one"]) if ln["step"] <= last]
    distances = compare_runs(run_lines(runs["two"]), one, edges)
    assert distances  # the evaluations measured some layers


def test_a_killed_process_stops_the_other(runs):
    survivor = runs["survivor"]
    assert survivor["status"] != 0, runs["logs_two"][0][-3000:]
    assert survivor["seconds"] < SURVIVOR_BOUND, survivor
    print(f"process 0 ended {survivor['seconds']:.1f} s after the kill: {survivor}")
    assert runs["resumed_from"] == CHECKPOINT_EVERY  # killed between checkpoints


def test_sigterm_to_one_process_saves_the_same_step_in_both(runs):
    last = _stopped_at(runs)
    assert TERM_AFTER < last <= STEPS  # the step both reached after the signal
    assert _checkpoint_steps(runs["two"])[-1] == last


def test_resumed_run_loses_and_repeats_no_step(runs):
    last = _stopped_at(runs)
    lines = run_lines(runs["two"])
    steps = [(ln["step"], ln["kind"]) for ln in lines]
    assert len(steps) == len(set(steps))
    assert [s for s, k in steps if k == "train"] == list(range(1, last + 1))
    assert [s for s, k in steps if k == "eval"] == list(range(0, last + 1, 4))
    # Lines logged before the kill, after the checkpoint resumed from, were
    # computed again: the same numbers (same processes, same programs).
    by_key = {(ln["step"], ln["kind"]): ln for ln in lines}
    before = runs["before_kill"]
    assert [ln for ln in before if ln["step"] > runs["resumed_from"]]
    close(before, [by_key[ln["step"], ln["kind"]] for ln in before])


def test_only_process_zero_writes_the_run_directory(runs):
    # Each process writes only its own profiler traces.
    two = runs["two"]
    # Two invocations (killed, resumed), one event file each; a second
    # writer would also have doubled every metrics line (checked above).
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 2
    images = sorted(p.name for p in (two / "images").iterdir())
    evals = range(0, _stopped_at(runs) + 1, 4)
    assert images == [f"step_{s:07d}.npz" for s in evals]
    assert sorted(p.name for p in two.iterdir()) == [
        "checkpoints",
        "config.json",
        "images",
        "metrics.jsonl",
        "profile",
        "tensorboard",
    ]


def test_each_process_writes_its_own_profile(runs):
    one = runs["one"] / "profile"  # one process: the trace as in one process
    assert len(list(one.glob("plugins/profile/*/*.xplane.pb"))) == 1
    profile = runs["two"] / "profile"
    assert sorted(p.name for p in profile.iterdir()) == ["process-0", "process-1"]
    for i in range(2):
        # One trace per invocation (killed, resumed), one file of each kind.
        traces = list((profile / f"process-{i}").glob("plugins/profile/*/*.xplane.pb"))
        assert len(traces) == 2, traces


def test_each_process_renders_its_own_rows(runs):
    line = "process 0 of 1: rows 0–7 of each batch of 8, on 2 of 2 devices"
    assert line in runs["log_one"]
    for i, log in enumerate(runs["logs_two"]):
        rows = "0–3" if i % 2 == 0 else "4–7"
        assert f"process {i % 2} of 2: rows {rows} of each batch of 8, on 1 of 2" in log


def test_checkpoints_are_written_collectively(runs):
    step = 2 * CHECKPOINT_EVERY  # written by the resumed run, kept by both
    with jax.numpy_dtype_promotion("standard"):  # orbax mixes Python scalars
        _, two, _ = checkpoint.load_model(runs["two"], step=step)
        _, one, _ = checkpoint.load_model(runs["one"], step=step)
    # After k updates two correct runs' parameters part by at most 2·lr·k
    # (tests/test_train.py).
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=ADAM_SPREAD * step),
        two["params"],
        one["params"],
    )


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0"],
            {},
            "need --distributed",
        ),
        (["--distributed", "--num-processes", "2"], {}, "go together"),
        (
            [
                "--distributed",
                "--coordinator",
                "h:1",
                "--num-processes",
                "2",
                "--process-id",
                "2",
            ],
            {},
            "not in 0 … 1",
        ),
        (
            [
                "--distributed",
                "--coordinator",
                "h",
                "--num-processes",
                "2",
                "--process-id",
                "0",
            ],
            {},
            "not HOST:PORT",
        ),
        (
            [
                "--distributed",
                "--coordinator",
                "h:1",
                "--num-processes",
                "0",
                "--process-id",
                "0",
            ],
            {},
            "must be ≥ 1",
        ),
        (
            ["--distributed"],
            {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "3"},
            "not in 0 … 1",
        ),
        (["--distributed"], {"JAX_PROCESS_ID": "one"}, "not an integer"),
        (["--heartbeat-timeout", "0"], {}, "must be ≥ 1"),
    ],
)
def test_inconsistent_distributed_flags_are_refused(
    tmp_path, monkeypatch, capsys, flags, env, message
):
    for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        train.parse_args(["--out", str(tmp_path), *flags])
    assert message in capsys.readouterr().err


def test_distributed_flags_are_not_settings_of_the_run(tmp_path):
    base = ["--out", str(tmp_path / "run"), "--config", "tiny"]
    flags = ["--distributed", "--coordinator", "10.0.0.1:1234"]
    flags += ["--num-processes", "4", "--process-id", "3", "--heartbeat-timeout", "5"]
    args = train.parse_args([*base, *flags])
    assert (args.coordinator, args.num_processes, args.process_id) == (
        "10.0.0.1:1234",
        4,
        3,
    )
    run, recorded = train.open_run(args)
    assert not set(distributed.FLAGS) & set(recorded)
    run.write_config(json.dumps({"args": recorded}))
    train.open_run(train.parse_args(base))  # the same run, resumable


def test_faces_batches_are_the_process_rows_of_the_global_batch():
    mesh = data.data_mesh()
    batches = data.Batches("faces", 8, 32, seed=3, start_step=5, mesh=mesh)
    rows, devices = data.process_rows(batches.sharding, batches.shape)
    np.testing.assert_array_equal(rows, np.arange(8))  # one process: every row
    np.testing.assert_array_equal(batches.rows, rows)
    assert devices == list(mesh.devices.flat)
    assert data.row_ranges(np.array([0, 1, 2, 3, 8, 9, 11])) == "0–3, 8–9, 11"
    for step in (5, 6):
        expected = faces.batch(3, step, 8, size=32)[0]
        np.testing.assert_allclose(next(batches), expected, rtol=0, atol=1e-6)


def test_sigterm_in_one_process_raises_interrupted_and_saves():
    before = signal.getsignal(signal.SIGTERM)
    restore = distributed.catch_sigterm()
    try:
        with pytest.raises(distributed.Interrupted, match="SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before
    distributed.check_preempted(1)  # one process: nothing to synchronise
    assert distributed.can_save(KeyboardInterrupt())


def test_processes_found_from_the_environment(tmp_path):
    # No explicit flags: JAX_COORDINATOR_ADDRESS (read by JAX) with
    # JAX_NUM_PROCESSES and JAX_PROCESS_ID (read by the harness).
    code = (
        "import jax; from benchmarks.harness import distributed, train; "
        "distributed.initialize(train.parse_args(['--distributed', '--out', 'x'])); "
        "print('joined', jax.process_index(), jax.process_count(), jax.device_count())"
    )
    port, procs, logs = launch.free_port(), [], []
    try:
        for i in range(2):
            env = {**os.environ, "PYTHONPATH": str(ROOT), **launch.cpu_env(1)}
            env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
            env.update(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
            logs.append(tmp_path / f"{i}.log")
            cmd = [sys.executable, "-c", code]
            procs.append(launch.spawn(cmd, env=env, log=logs[-1], cwd=tmp_path))
        _wait(procs, logs, time.monotonic() + 120, 0)
    finally:
        launch.stop(procs)
    for i, log in enumerate(logs):
        assert f"joined {i} 2 2" in log.read_text()


def test_cpu_env_replaces_the_device_count_and_keeps_other_flags(monkeypatch):
    monkeypatch.setenv(
        "XLA_FLAGS",
        "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=8",
    )
    env = launch.cpu_env(3)
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["XLA_FLAGS"].split() == [
        "--xla_cpu_enable_fast_math=false",
        "--xla_force_host_platform_device_count=3",
    ]
    with pytest.raises(ValueError, match="at least 1; got 0"):
        launch.cpu_env(0)


def test_spawn_appends_when_asked_and_stop_delivers_the_signal(tmp_path):
    # A child that logs, then says which signal ended it (the study runner
    # stops its trainings with SIGTERM so that they save).
    child = (
        "import signal, sys, time\n"
        "def on(sig, frame):\n"
        "    print('got', signal.Signals(sig).name, flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "train.log"
    log.write_text("earlier run\n")

    def started(proc):
        deadline = time.monotonic() + 30
        while "started" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    proc = launch.spawn([sys.executable, "-c", child], log=log, append=True)
    started(proc)
    launch.stop([proc], signal.SIGTERM)
    assert proc.returncode == 0
    assert log.read_text() == "earlier run\nstarted\ngot SIGTERM\n"

    proc = launch.spawn([sys.executable, "-c", child], log=log)  # overwrites
    started(proc)
    launch.stop([proc])  # SIGKILL: no handler runs
    assert proc.returncode == -signal.SIGKILL
    assert log.read_text() == "started\n"
