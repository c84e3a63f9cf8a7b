"""The training harness end to end: train, kill, resume, report; CelebA on
mock data; data parallelism over forced host devices."""

import json
import os
import pathlib
import re
import signal
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import assert_png_image
from train_runs import close, compare_runs, run_lines

from benchmarks import nets, report
from benchmarks.harness import checkpoint, launch, rundir, train
from benchmarks.nets import dcgan

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config", "tiny", "--batch", "8", "--eval-batch", "8", "--no-progress"]
# The runs made in this process use its default devices, all of them: their
# batches must split over every one (8 does not over 3 GPUs).
_PER_DEVICE = ["--batch", str(8 * jax.device_count())]
_PER_DEVICE += ["--eval-batch", str(8 * jax.device_count())]


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


def _subprocess(args, log: pathlib.Path, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    cmd = [sys.executable, "-m", "benchmarks.harness.train", *args]
    return launch.spawn(cmd, env=env, log=log, cwd=ROOT)


def _run(args, log: pathlib.Path, env_extra):
    """A training run in a subprocess, to its end."""
    proc = _subprocess(args, log, env_extra)
    try:
        assert proc.wait(timeout=600) == 0, log.read_text()
    finally:
        launch.stop([proc])


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
    # All three runs on one CPU device, whatever the host: the resumed run is
    # compared with the uninterrupted one at rtol 1e-5, which holds for one
    # device of one backend (the same reductions in the same order); a host's
    # default devices could be several accelerators, whose reductions may
    # differ from run to run (and a batch of 8 does not split over 3).
    cpu = launch.cpu_env(1)
    killed = tmp_path / "killed"
    log = tmp_path / "killed.log"
    proc = _subprocess([*args, "--out", str(killed)], log, cpu)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "2").exists():
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = run_lines(killed)
    assert written and written[-1]["step"] < 30  # it died mid-run

    _run([*args, "--out", str(killed)], tmp_path / "resumed.log", cpu)
    reference = tmp_path / "reference"
    _run([*args, "--out", str(reference)], tmp_path / "reference.log", cpu)
    for run in (killed, reference):
        listed = json.loads((run / "config.json").read_text())["devices"]
        assert len(listed) == 1 and "cpu" in listed[0].lower(), listed
    resumed = run_lines(killed)
    close(resumed, run_lines(reference))
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
    # Every figure the report names exists and is a PNG that decodes; the
    # sample panels (one per run) have the size of their fixed layout.
    from matplotlib.image import imread

    named = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    panels = [f"images_1_{killed.name}.png", f"images_2_{reference.name}.png"]
    assert set(panels) <= set(named), named
    assert sorted(p.name for p in out.glob("*.png")) == sorted(set(named))
    for name in named:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = imread(out / name)
        assert pixels.ndim == 3 and pixels.shape[-1] in (3, 4), (name, pixels.shape)
        assert pixels[..., :3].std() > 0.01, f"{name} is blank"
    for name, run in zip(panels, (killed, reference), strict=True):
        shape = imread(out / name).shape[:2]
        size = _panel_pixels(run / "images" / "step_0000030.npz", run)
        assert np.abs(np.subtract(shape, size)).max() <= 1, (name, shape, size)


def _panel_pixels(npz: pathlib.Path, run: pathlib.Path) -> tuple[int, int]:
    """(height, width) in pixels of `report.plot_images`'s figure of a run's
    panels: 10 in wide at `report._DPI`; two blocks of image rows (the panels,
    then one |difference| row per level), scaled so that a row of samples
    fills the 7.3 in between the labels (1.5 in) and the colour bar (1.2 in),
    under a 0.5 in title, 0.4 in apart, above a 0.15 in margin."""
    levels = json.loads((run / "config.json").read_text())["levels"]
    with np.load(npz) as f:
        names = set(f.files)
        n, h, w = f["input"].shape[:3]
    fixed = {"input", "reconstruction", "stretched_output"}
    stretched = [lv for lv in levels if f"stretch_{lv}" in names]
    rows = len(names & fixed) + len(stretched)
    rows += len([k for k in names if k.startswith("truth_")])
    gap = max(1, w // 16)
    scale = 7.3 / (n * w + (n - 1) * gap)  # inches per pixel of a sample

    def block(r):
        return r * h + (r - 1) * gap

    inches = 0.5 + (block(rows) + block(len(stretched))) * scale + 0.4 + 0.15
    return round(inches * report._DPI), round(10.0 * report._DPI)


def test_sharded_over_four_devices_equals_one_device(tmp_path):
    # Both runs on the CPU, with the device counts forced, whatever the host.
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
    procs = {}
    try:
        for name, devices in (("four", 4), ("one", 1)):
            procs[name] = _subprocess(
                [*args, "--out", str(tmp_path / name)],
                tmp_path / f"{name}.log",
                launch.cpu_env(devices),
            )
        for name, proc in procs.items():
            status = proc.wait(timeout=600)
            assert status == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        launch.stop(procs.values())
    configs = {
        name: json.loads((tmp_path / name / "config.json").read_text())
        for name in ("four", "one")
    }
    for name, devices in (("four", 4), ("one", 1)):
        listed = configs[name]["devices"]
        assert len(listed) == devices and all(d.startswith("cpu") for d in listed), (
            name,
            listed,
        )
    edges = np.asarray(configs["one"]["sdr_bins"], float)
    distances = compare_runs(
        run_lines(tmp_path / "four"), run_lines(tmp_path / "one"), edges
    )
    assert distances  # the step-4 evaluation measured some layers
    for where, layer, emd, bound in distances:
        print(f"{where} {layer}: EMD {emd:.2e} (bound {bound:.2e})")


def test_architectures_are_listed_by_model_name():
    assert list(nets.ARCHITECTURES) == ["vae", "dcgan"]
    for name, arch in nets.ARCHITECTURES.items():
        assert arch.name == name
        assert tuple(arch.levels) == tuple(arch.mirror) == nets.LEVEL_NAMES
    with pytest.raises(ValueError, match=r"known ones are \['vae', 'dcgan'\]"):
        nets.get("gan")
    with pytest.raises(ValueError, match="config must be one of"):
        dcgan.config("huge")


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
                *_PER_DEVICE,
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
    lines = run_lines(tmp_path / "celeb")
    evals = [ln for ln in lines if ln["kind"] == "eval"]
    assert [ln["step"] for ln in evals] == [0, 2]
    assert "truth_mse" not in evals[-1]
    assert set(evals[-1]["stretch_mse"]) == {"coarse", "intermediate", "fine", "image"}


def test_dcgan_two_generator_updates_per_discriminator_update(tmp_path):
    out = tmp_path / "gan"
    train.main(
        [
            *TINY,
            *_PER_DEVICE,
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
    restored = rundir.checkpoints(out / "checkpoints").restore(
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
    model, variables, config = checkpoint.load_model(out)
    assert isinstance(model, dcgan.DCGAN) and config["architecture"] == "dcgan"
    np.testing.assert_array_equal(
        variables["params"]["generator"]["deconv1"]["kernel"],
        restored["params"]["generator"]["deconv1"]["kernel"],
    )
    lines = run_lines(out)
    assert {"g_loss", "d_loss"} <= set(lines[-2 if lines[-1]["kind"] == "eval" else -1])
    last = [ln for ln in lines if ln["kind"] == "eval"][-1]
    assert any(name.startswith("generator/") for name in last["sdr"])
    assert any(name.startswith("discriminator/") for name in last["sdr"])
    report.main([str(out), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "report.md").read_text()
    assert "g_loss" in text and "discriminator/conv1" in text
    # The evaluations wrote their samples, and every figure the report names
    # exists and shows something.
    evals = [ln["step"] for ln in lines if ln["kind"] == "eval"]
    images = sorted(p.name for p in (out / "images").glob("*.npz"))
    assert images == [f"step_{s:07d}.npz" for s in evals], images
    named = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert named
    for name in named:
        assert_png_image(tmp_path / "report" / name)


def test_penalty_step_and_aliases_flags_and_their_rates(tmp_path):
    base = ["--out", str(tmp_path / "run")]
    args = train.parse_args(base)
    assert (args.penalty_step, args.penalty_rate) == ("gauss-newton", 0.5)
    assert args.penalty_aliases == "include"
    args = train.parse_args([*base, "--penalty-step", "gradient"])
    assert args.penalty_rate == train.PENALTY_RATES["gradient"]
    args = train.parse_args(
        [*base, "--penalty-step", "gradient", "--penalty-rate", "3"]
    )
    assert args.penalty_rate == 3.0
    with pytest.raises(SystemExit):
        train.parse_args([*base, "--penalty-aliases", "maybe"])


def test_run_recorded_without_the_newer_flags_resumes_with_their_defaults(tmp_path):
    out = tmp_path / "run"
    args = train.parse_args(["--out", str(out), *TINY, "--penalty", "sdr"])
    run, recorded = train.open_run(args)
    assert recorded["penalty_step"] == "gauss-newton"
    assert recorded["penalty_aliases"] == "include"
    old = {
        k: v
        for k, v in recorded.items()
        if k not in ("penalty_step", "penalty_aliases")
    }
    run.write_config(json.dumps({"args": old}))
    train.open_run(args)  # missing = the defaults: same settings
    for flags in (["--penalty-aliases", "exclude"], ["--penalty-step", "gradient"]):
        other = train.parse_args(["--out", str(out), *TINY, "--penalty", "sdr", *flags])
        with pytest.raises(SystemExit, match="other settings"):
            train.open_run(other)


def test_heads_and_paper_steps_flags(tmp_path):
    base = ["--out", str(tmp_path / "r"), *TINY]
    assert train.parse_args(base).heads is None
    args = train.parse_args([*base, "--heads", "reference", "--steps", "paper"])
    assert args.heads == "reference"
    assert args.steps == train.PAPER_STEPS == 10_000
    config = checkpoint.model_config(args)
    assert config.heads == "reference"
    with pytest.raises(SystemExit):
        train.parse_args([*base, "--heads", "reference", "--model", "dcgan"])
    with pytest.raises(SystemExit):
        train.parse_args([*base, "--steps", "many"])
