"""The training harness end to end: train, kill, resume, report; CelebA on
mock data; data parallelism over forced host devices."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from benchmarks import report, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config", "tiny", "--batch", "8", "--eval-batch", "8", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    # The runs below compile the same programs, in this process and in
    # subprocesses (which get the directory through the environment).
    path = str(tmp_path_factory.mktemp("jax_cache"))
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = [getattr(jax.config, n) for n in names]
    jax.config.update(names[0], path)
    jax.config.update(names[1], 0.0)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    yield
    for n, v in zip(names, saved, strict=True):
        jax.config.update(n, v)
    del os.environ["JAX_COMPILATION_CACHE_DIR"]
    del os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax and orbax mix Python scalars with typed arrays.
    with jax.numpy_dtype_promotion("standard"):
        yield


def _lines(run: pathlib.Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for ln in lines:
        ln.pop("step_time_s", None)  # wall time differs
    return lines


def _close(a, b, rtol=1e-5, atol=0.0):
    np.testing.assert_equal(len(a), len(b))

    def check(u, v):
        if isinstance(u, str):
            assert u == v
        else:
            np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)

    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys(), (x.keys(), y.keys())
        jax.tree.map(check, x, y)


def _subprocess(args, log: pathlib.Path, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    cmd = [sys.executable, "-m", "benchmarks.train", *args]
    with log.open("wb") as f:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
        )


def test_kill_resume_equals_uninterrupted_then_report(tmp_path):
    args = [
        *TINY,
        "--steps",
        "30",
        "--log-every",
        "1",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "2",
        "--penalty",
        "sdr",
    ]
    killed = tmp_path / "killed"
    log = tmp_path / "killed.log"
    proc = _subprocess([*args, "--out", str(killed)], log)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "2").exists():
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = _lines(killed)
    assert written and written[-1]["step"] < 30  # it died mid-run

    train.main([*args, "--out", str(killed)])  # resume
    reference = tmp_path / "reference"
    train.main([*args, "--out", str(reference)])
    resumed = _lines(killed)
    _close(resumed, _lines(reference))
    steps = [(ln["step"], ln["kind"]) for ln in resumed]
    assert len(steps) == len(set(steps))  # no duplicated line
    assert [s for s, k in steps if k == "train"] == list(range(1, 31))  # none lost
    assert [s for s, k in steps if k == "eval"] == [0, 10, 20, 30]
    images = sorted(p.name for p in (killed / "images").glob("*.npz"))
    assert images == [f"step_{s:07d}.npz" for s in (0, 10, 20, 30)]

    # Same settings resume; other settings are refused.
    with pytest.raises(SystemExit, match="other settings"):
        train.main([*args, "--out", str(killed), "--penalty-rate", "0.1"])

    out = tmp_path / "report"
    from benchmarks import report

    report.main([str(killed), str(reference), "--out", str(out)])
    text = (out / "report.md").read_text()
    assert "killed" in text and "reference" in text
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sharded_over_four_devices_equals_one_device(tmp_path):
    args = [
        *TINY,
        "--steps",
        "4",
        "--log-every",
        "1",
        "--eval-every",
        "4",
        "--checkpoint-every",
        "4",
    ]
    log = tmp_path / "four.log"
    proc = _subprocess(
        [*args, "--out", str(tmp_path / "four")],
        log,
        {
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            "JAX_PLATFORMS": "cpu",
        },
    )
    train.main([*args, "--out", str(tmp_path / "one")])
    assert proc.wait(timeout=600) == 0, log.read_text()
    config = json.loads((tmp_path / "four" / "config.json").read_text())
    assert len(config["devices"]) == 4
    assert (
        len(json.loads((tmp_path / "one" / "config.json").read_text())["devices"]) == 1
    )
    four, one = _lines(tmp_path / "four"), _lines(tmp_path / "one")
    binned = {"four": [], "one": []}
    for name, lines in (("four", four), ("one", one)):
        for ln in lines:
            for layer in ln.get("sdr", {}).values():
                binned[name].append(
                    (layer.pop("generic_share"), np.asarray(layer.pop("counts")))
                )
    # Reductions split over devices add in another order, so a pair SDR on
    # a histogram bin's edge (or on the generic band's) may fall either side.
    _close(four, one, rtol=2e-3, atol=1e-6)
    for (share_a, a), (share_b, b) in zip(binned["four"], binned["one"], strict=True):
        moved = np.abs(a - b).sum() / 2  # pairs in another bin
        assert a.sum() == b.sum() and moved <= max(1, 0.01 * a.sum()), (a, b)
        assert abs(share_a - share_b) <= 0.01


def test_batch_must_split_over_devices(tmp_path):
    with pytest.raises(ValueError, match="multiple of"):
        train.main([*TINY, "--batch", "0", "--out", str(tmp_path / "x")])


def test_celeb_a_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    # tfds's mock swaps in a fake file system, process-wide, while it builds a
    # dataset; with 64 examples the prefetch thread never reaches a second
    # epoch (whose pipeline it would build while orbax writes a checkpoint).
    with tfds.testing.mock_data(num_examples=64):
        train.main(
            [
                *TINY,
                "--dataset",
                "celeb_a",
                "--steps",
                "2",
                "--eval-every",
                "2",
                "--out",
                str(tmp_path / "celeb"),
            ]
        )
    lines = _lines(tmp_path / "celeb")
    evals = [ln for ln in lines if ln["kind"] == "eval"]
    assert [ln["step"] for ln in evals] == [0, 2]
    assert "truth_mse" not in evals[-1]
    assert set(evals[-1]["stretch_mse"]) == {"coarse", "intermediate", "fine", "image"}


def test_dcgan_two_generator_updates_per_discriminator_update(tmp_path):
    out = tmp_path / "gan"
    train.main(
        [
            *TINY,
            "--model",
            "dcgan",
            "--penalty",
            "sdr",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--out",
            str(out),
        ]
    )
    restored = train._checkpoints(out / "checkpoints").restore(
        3, args=ocp.args.StandardRestore()
    )
    counts = {
        net: [
            int(np.asarray(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(
                restored["opt_state"][net]
            )
            if "count" in jax.tree_util.keystr(path)
        ]
        for net in ("generator", "discriminator")
    }
    assert set(counts["generator"]) == {6} and set(counts["discriminator"]) == {3}
    lines = _lines(out)
    assert {"g_loss", "d_loss"} <= set(lines[-2 if lines[-1]["kind"] == "eval" else -1])
    last = [ln for ln in lines if ln["kind"] == "eval"][-1]
    assert any(name.startswith("generator/") for name in last["sdr"])
    assert any(name.startswith("discriminator/") for name in last["sdr"])
    report.main([str(out), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "report.md").read_text()
    assert "g_loss" in text and "discriminator/conv1" in text
