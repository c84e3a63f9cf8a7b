"""What a training shows besides metrics.jsonl: TensorBoard events (and their
purge on resumption), the profiler trace, the expected-time line.

The event files are read back with TensorFlow's own record reader and
`Event` protocol buffer, not with the writer's code.
"""

import contextlib
import gzip
import io
import json
import re
import shutil

import jax
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import environment
from benchmarks.harness import events, train

TINY = ["--config", "tiny", "--batch", "4", "--eval-batch", "4", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    # The runs below compile the same programs.
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = [getattr(jax.config, n) for n in names]
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0.0)
    yield
    for n, v in zip(names, saved, strict=True):
        jax.config.update(n, v)


def _train(args: list[str]) -> str:
    """Runs the trainer; returns what it printed."""
    printed = io.StringIO()
    # optax and orbax mix Python scalars with typed arrays.
    with jax.numpy_dtype_promotion("standard"), contextlib.redirect_stdout(printed):
        train.main([*TINY, *args])
    return printed.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """6 steps, logged every 2, evaluated every 3, steps 2-3 profiled."""
    out = tmp_path_factory.mktemp("run") / "run"
    printed = _train(
        [
            *("--steps", "6", "--log-every", "2", "--eval-every", "3"),
            *("--profile-steps", "2", "--out", str(out)),
        ]
    )
    return out, printed


def _files(run) -> list:
    """The events of each event file, files in TensorBoard's (name) order."""
    paths = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    return [
        [tf.compat.v1.Event.FromString(r.numpy()) for r in tf.data.TFRecordDataset(p)]
        for p in paths
    ]


def _values(files) -> list[tuple[str, int, object]]:
    """(tag, step, value) of every summary value as TensorBoard keeps them: a
    session-start event at step s drops the events read before it at steps
    >= s (tensorboardX's `purge_step`)."""
    kept = []
    for file in files:
        for e in file:
            if (
                e.HasField("session_log")
                and e.session_log.status == e.session_log.START
            ):
                kept = [v for v in kept if v[1] < e.step]
            for v in e.summary.value:
                kept.append((v.tag, e.step, v))
    return kept


def _scalars(values, tag) -> dict[int, float]:
    found = [(step, v.simple_value) for t, step, v in values if t == tag]
    assert len({s for s, _ in found}) == len(found), (tag, found)  # no repeats
    return dict(found)


def _same(found: dict[int, float], logged: dict[int, float], what: str) -> None:
    """The same steps, and values equal up to the event file's float32."""
    assert sorted(found) == sorted(logged), (what, found, logged)
    for step, value in logged.items():
        np.testing.assert_allclose(found[step], value, rtol=1e-6, err_msg=what)


def _records(run, kind) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["kind"] == kind}


def _numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested record by `/`-joined path."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, float | int) and np.isfinite(value):
            flat[f"{prefix}{key}"] = value
    return flat


def test_events_hold_every_scalar_the_histograms_and_the_panels(run):
    out, _ = run
    values = _values(_files(out))
    trains, evals = _records(out, "train"), _records(out, "eval")
    assert sorted(trains) == [2, 4, 6] and sorted(evals) == [0, 3, 6]
    for key in ("loss", "mse", "kl", "step_time_s"):
        logged = {s: r[key] for s, r in trains.items()}
        _same(_scalars(values, f"train/{key}"), logged, key)
    for tag, get in {
        "recon_mse": lambda r: r["recon_mse"],
        "stretch_mse/fine": lambda r: r["stretch_mse"]["fine"],
        "sdr/decoder/deconv2/median": lambda r: r["sdr"]["decoder/deconv2"]["median"],
    }.items():
        _same(_scalars(values, tag), {s: get(r) for s, r in evals.items()}, tag)
    # Every finite number of the last evaluation, and nothing else.
    record = {k: v for k, v in evals[6].items() if k not in ("step", "kind")}
    # TensorBoard's tags take no `+` (`centre+0.5`).
    expected = {k.replace("+", "_plus_"): v for k, v in _numbers(record).items()}
    assert "stretch_mse_sensitivity/fine/centre_plus_0.5" in expected
    found = {
        t: v.simple_value for t, s, v in values if s == 6 and v.HasField("simple_value")
    }
    found = {t: v for t, v in found.items() if not t.startswith("train/")}
    assert found.keys() == expected.keys(), set(found) ^ set(expected)
    assert "truth_mse/eye_distance/image" in found and len(found) > 100
    for tag, value in expected.items():
        np.testing.assert_allclose(found[tag], value, rtol=1e-6, err_msg=tag)
    for step, record in evals.items():
        counts = record["sdr"]["decoder/deconv2"]["counts"]
        [histo] = [
            v.histo
            for t, s, v in values
            if t == "sdr/decoder/deconv2/log2_rho" and s == step
        ]
        np.testing.assert_array_equal(histo.bucket, counts)
        np.testing.assert_allclose(histo.bucket_limit, np.linspace(-2, 2, 65)[1:])
        assert histo.num == sum(counts) > 0
        with np.load(out / "images" / f"step_{step:07d}.npz") as panels:
            for name in ("reconstruction", "stretch_fine"):
                [image] = [
                    v.image for t, s, v in values if t == f"images/{name}" and s == step
                ]
                grid = tf.io.decode_png(image.encoded_image_string).numpy()
                row = np.concatenate(list(panels[name]), axis=1)  # 4 images, 1 row
                np.testing.assert_array_equal(grid, row)


def test_no_tensorboard_and_no_estimate_for_a_run_shorter_than_a_log_interval(
    tmp_path, capsys
):
    out = tmp_path / "quiet"
    with jax.numpy_dtype_promotion("standard"):
        train.main(
            [
                *TINY,
                "--steps",
                "3",
                "--log-every",
                "5",
                "--no-tensorboard",
                "--out",
                str(out),
            ]
        )
    assert not (out / "tensorboard").exists()
    assert (out / "metrics.jsonl").exists()
    assert "expected:" not in capsys.readouterr().out


def test_resumed_run_purges_the_events_after_its_checkpoint(tmp_path):
    out = tmp_path / "resumed"
    args = ["--log-every", "1", "--eval-every", "3", "--checkpoint-every", "2"]
    _train([*args, "--steps", "3", "--out", str(out)])
    # As if killed after step 3's events, before its checkpoint.
    shutil.rmtree(out / "checkpoints" / "3")
    first = _files(out)
    assert len(first) == 1
    _train([*args, "--steps", "4", "--out", str(out)])
    files = _files(out)
    assert len(files) == 2  # a second file, after the first in name order
    starts = [e.step for e in files[1] if e.HasField("session_log")]
    assert starts == [3]  # the purge marker: the step after the checkpoint
    raw = [v for file in files for e in file for v in e.summary.value]
    assert sum(v.tag == "train/loss" for v in raw) == 5  # step 3 twice
    values = _values(files)
    losses = _scalars(values, "train/loss")
    logged = {s: r["loss"] for s, r in _records(out, "train").items()}
    assert sorted(losses) == sorted(logged) == [1, 2, 3, 4]
    _same(losses, logged, "loss")
    assert sorted(_scalars(values, "recon_mse")) == [0, 3, 4]


def test_profile_traces_the_steps_after_the_first(run):
    out, printed = run
    [trace] = (out / "profile" / "plugins" / "profile").glob("*/*.trace.json.gz")
    assert list(trace.parent.glob("*.xplane.pb"))  # TensorBoard's profile plugin
    with gzip.open(trace) as f:
        calls = [
            (e["ts"], e["ts"] + e["dur"])
            for e in json.load(f)["traceEvents"]
            if e.get("ph") == "X" and "jit(step)" in e.get("name", "")
        ]
    # Each call shows as two nested events; count the outer ones.
    outer = [
        c
        for c in calls
        if not any(o != c and o[0] <= c[0] <= c[1] <= o[1] for o in calls)
    ]
    assert len(outer) == 2, calls  # steps 2 and 3; not step 1
    assert "profiled steps 2–3" in printed


def test_the_expected_time_is_printed_once(run):
    _, printed = run
    lines = [ln for ln in printed.splitlines() if ln.startswith("expected:")]
    assert len(lines) == 1, printed
    pattern = r"expected: .+ for 6 steps \(.+ s/step, plus 2 evaluations of ~.+ s\)"
    assert re.fullmatch(pattern, lines[0]), lines[0]


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (0, "expected: 30 s for 100 steps (0.1 s/step, plus 10 evaluations of ~2 s)"),
        (50, "expected: 15 s for 50 steps (0.1 s/step, plus 5 evaluations of ~2 s)"),
    ],
)
def test_expected_time_arithmetic(tmp_path, monkeypatch, capsys, start, expected):
    clock = _Clock()
    monkeypatch.setattr(events.time, "perf_counter", clock)
    monitor = events.Monitor(
        tmp_path, start=start, steps=100, eval_every=10, progress=False
    )
    monitor.evaluated(2.0)  # step `start`'s evaluation, before the clock
    monitor.after(start + 1, None)  # the clock starts after the first step
    clock.now += 0.5
    monitor.evaluated(3.0)  # an evaluation during the interval is not steps
    clock.now += 3.0 + 0.5
    monitor.logged(start + 11, loss=0.1, seconds=0.1)
    monitor.logged(start + 21, loss=0.1, seconds=0.1)  # once only
    monitor.close()
    assert capsys.readouterr().out.splitlines() == [expected]


def test_durations():
    assert [environment.fmt_duration(s) for s in (0.0532, 42.4, 92, 3599.4, 7500)] == [
        "0.053 s",
        "42 s",
        "1 min 32 s",
        "59 min 59 s",
        "2 h 5 min",
    ]
