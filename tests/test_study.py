"""The study: its grid, its table, paired statistics, the trade-off, the runner."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_png_image
from scipy import stats

from benchmarks.study import grid, page, paired, results, runner, tradeoff
from benchmarks.study.cli import parse_args, specs_of

# --- the grid ---------------------------------------------------------------


def test_expand_pairs_each_seed_and_runs_the_control_once():
    specs = grid.expand(
        seeds=[0, 1], rates=[0.1, 1.0], layers=[("fine",), ("coarse", "fine")]
    )
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) == 2 * (1 + 4)
    assert "tiny-1500-s0-none" in names
    assert "tiny-1500-s1-sdr-r0.1-coarse+fine" in names
    assert sum(s.penalty == "none" for s in specs) == 2


def test_run_spec_argv_sets_what_the_name_says():
    spec = grid.RunSpec("tiny", 40, 3, "sdr", 1.0, ("fine", "image"), 0.02)
    argv = spec.argv("OUT", train_args=["--batch", "8"])
    assert argv[:2] == ["--batch", "8"]
    text = " ".join(argv)
    for part in ("--config tiny", "--steps 40", "--seed 3", "--penalty sdr",
                 "--penalty-rate 1 ", "--penalty-layers fine image",
                 "--kl-weight 0.02", "--out OUT"):  # fmt: skip
        assert part in text
    assert spec.name == "tiny-40-s3-sdr-r1-fine+image-kl0.02"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"penalty": "sdr"},  # no rate, no layers
        {"penalty": "none", "rate": 0.5, "layers": ("fine",)},
        {"penalty": "l2"},
        {"penalty": "sdr", "rate": 0.5, "layers": ("middle",)},
    ],
)
def test_run_spec_refuses_inconsistent_settings(kwargs):
    with pytest.raises(ValueError):
        grid.RunSpec("tiny", 10, 0, **kwargs)


def test_parse_seeds():
    assert grid.parse_seeds("0-3") == [0, 1, 2, 3]
    assert grid.parse_seeds("5,1-2,1") == [1, 2, 5]
    for bad in ("3-1", "-1", "a"):
        with pytest.raises(ValueError):
            grid.parse_seeds(bad)


def test_cli_builds_the_grid_and_splits_the_training_options():
    args, train_args = parse_args(
        ["--seeds", "0-1", "--rate", "0.1", "1", "--layers", "fine",
         "coarse,fine", "--kl-weight", "default", "0.01", "--", "--batch", "8"]
    )  # fmt: skip
    assert train_args == ["--batch", "8"]
    specs = specs_of(args)
    # Per seed: 2 controls (KL default, 0.01) and 2 × 2 × 2 penalised runs.
    assert len(specs) == 2 * (2 + 8)
    with pytest.raises(SystemExit):
        parse_args(["--layers", "fine,middle"])


# --- paired statistics ------------------------------------------------------


def test_paired_matches_the_t_interval_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.1, size=6)
    b = a - 0.2 + rng.normal(0, 0.05, size=6)
    p = paired.paired(a, b)
    d = b - a
    half = stats.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6)
    np.testing.assert_allclose([p.low, p.high], [d.mean() - half, d.mean() + half])
    assert p.verdict == "lower" and p.lower == 6 and p.n == 6
    assert p.relative == pytest.approx(d.mean() / a.mean())


def test_paired_verdicts_and_edge_cases():
    assert paired.paired([1, 2, 3], [2, 3.1, 4.2]).verdict == "higher"
    assert paired.paired([1, 2, 3], [1.1, 1.9, 3.05]).verdict == (
        "no difference at 95 %"
    )
    assert paired.paired([1.0], [0.5]).verdict == "too few seeds"
    constant = paired.paired([1, 2], [0.5, 1.5])
    assert constant.low == constant.high == -0.5 and constant.verdict == "lower"
    # A NaN leaves its seed out of both arms.
    assert paired.paired([1, math.nan, 3], [0, 5, 2]).n == 2
    with pytest.raises(ValueError, match="length"):
        paired.paired([1, 2], [1])


def test_band_covers_the_mean_with_the_t_quantile():
    curves = [[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]
    mean, low, high = paired.band(curves)
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(high[0] - mean[0], stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert low[1] == high[1] == 2.0


# --- the table ---------------------------------------------------------------


def _write_run(root, spec, recon, stretch, *, highpass=0.01, every=100):
    """A finished run directory of `spec` with given curves (per eval)."""
    path = runner.run_dir(root, spec)
    path.mkdir(parents=True)
    args = {"config": spec.config, "seed": spec.seed, "penalty": spec.penalty,
            "penalty_rate": spec.rate or 0.5, "batch": 32, "model": "vae",
            "penalty_layers": list(spec.layers or grid.DEFAULT_LAYERS),
            "kl_weight": spec.kl_weight, "eval_every": every}  # fmt: skip
    (path / "config.json").write_text(json.dumps({"args": args}))
    lines = []
    for i, (r, s) in enumerate(zip(recon, stretch, strict=True)):
        lines.append({"step": i * every, "kind": "eval", "recon_mse": r,
                      "stretch_mse": {"fine": s}, "stretch_highpass": highpass,
                      "sdr": {"decoder/deconv3": {"median": 1.0 + s,
                                                  "generic_share": 0.5}}})  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_row_flattens_the_last_evaluation_and_fits_the_second_half(tmp_path):
    spec = grid.RunSpec("tiny", 400, 0, "none")
    # stretch_mse grows by 0.002 per 100 steps after step 200: 0.02 per 1,000.
    _write_run(tmp_path, spec, [0.2, 0.1, 0.08, 0.07, 0.06],
               [0.0, 0.05, 0.010, 0.012, 0.014], highpass=0.004)  # fmt: skip
    rows, notes = results.collect(tmp_path)
    assert notes == [] and len(rows) == 1
    final = rows[0]["final"]
    assert final["recon_mse"] == 0.06
    assert final["stretch_norm/fine"] == pytest.approx(0.014 / 0.004)
    assert final["slope/fine"] == pytest.approx(0.02)
    assert final["sdr_median/decoder/deconv3"] == pytest.approx(1.014)
    assert rows[0]["arm"] == "none" and rows[0]["steps"] == 400
    assert rows[0]["history"]["steps"] == [0, 100, 200, 300, 400]


def test_collect_leaves_out_unfinished_runs_with_a_note(tmp_path):
    _write_run(tmp_path, grid.RunSpec("tiny", 400, 0, "none"), [0.2, 0.1], [0, 0])
    rows, notes = results.collect(tmp_path)
    assert rows == [] and "unfinished (step 100)" in notes[0]


def test_second_half_slope_needs_three_points():
    assert math.isnan(results.second_half_slope([0, 100, 200], [1, 2, 3], 200))


# --- the trade-off ------------------------------------------------------------


def _study(tmp_path):
    """Two seeds: the penalised run's recon matches the control's step 200."""
    none_recon = [0.3, 0.2, 0.1, 0.08, 0.06]
    none_fine = [0.0, 0.02, 0.03, 0.04, 0.05]
    for seed in (0, 1):
        _write_run(tmp_path, grid.RunSpec("tiny", 400, seed, "none"),
                   none_recon, none_fine)  # fmt: skip
        pen = grid.RunSpec("tiny", 400, seed, "sdr", 0.5, grid.DEFAULT_LAYERS)
        _write_run(tmp_path, pen, [0.3, 0.2, 0.15, 0.12, 0.1 + seed * 0.001],
                   [0.0, 0.01, 0.01, 0.01, 0.01 + seed * 0.002])  # fmt: skip
    return results.collect(tmp_path)[0]


def test_matched_comparison_picks_the_closest_checkpoint(tmp_path):
    rows = _study(tmp_path)
    pen = [r for r in rows if r["penalty"] == "sdr"]
    comparisons, matches = tradeoff.matched_comparison(
        rows, pen, ["recon_mse", "stretch_mse/fine"]
    )
    assert [m["step"] for m in matches] == [200, 200]
    fine = comparisons["stretch_mse/fine"]
    assert fine.mean_a == pytest.approx(0.03)
    assert fine.mean_b == pytest.approx(0.011)
    assert fine.verdict == "lower"
    # Against the final control instead: the penalised runs reconstruct worse.
    plain = paired.compare_arms(
        [r for r in rows if r["penalty"] == "none"], pen, "recon_mse"
    )
    assert plain.verdict == "higher"


def test_baseline_skips_the_first_checkpoints(tmp_path):
    rows = _study(tmp_path)
    base = rows[0]["base"]
    steps = [c["step"] for c in tradeoff.baseline_checkpoints(rows, base, 0)]
    assert steps == [100, 200, 300, 400]


def test_write_study_writes_the_table_page_and_figures(tmp_path):
    _study(tmp_path)
    page.record_command(tmp_path, "python -m benchmarks.study --seeds 0-1")
    page.record_command(tmp_path, "python -m benchmarks.study --seeds 0-1")
    path = page.write_study(tmp_path)
    text = path.read_text()
    assert text.count("python -m benchmarks.study --seeds 0-1") == 1
    assert "| `stretch_mse/fine` | 2 |" in text
    assert "Reconstruction-matched" in text and "seed 0: step 200" in text
    # The summary row: recon_mse differences 0.04 and 0.041 over a mean of 0.06,
    # t(0.975, 1) = 12.706: 0.0405 ± 0.00635, i.e. +68 % [+57, +78].
    summary = next(x for x in text.splitlines() if x.startswith("| `sdr") and "%" in x)
    assert summary.split(" | ")[1:3] == ["2", "+68 % [+57, +78] higher"]
    for png in ("fig4g_bands_0.png", "tradeoff_0.png"):
        assert_png_image(path.parent / png)
        assert f"]({png})" in text
    table = results.read_table(tmp_path / results.TABLE)
    assert {r["run"] for r in table} == {p.name for p in (tmp_path / "runs").iterdir()}


def test_write_study_refuses_an_empty_study(tmp_path):
    with pytest.raises(SystemExit, match="no finished run"):
        page.write_study(tmp_path)


# --- the runner ----------------------------------------------------------------

_TINY = ["--batch", "4", "--eval-batch", "4", "--eval-every", "2",
         "--checkpoint-every", "2", "--log-every", "1"]  # fmt: skip


def test_runner_reports_a_failed_training_and_goes_on(tmp_path):
    # A run the trainer refuses (--eval-every 0) is reported, not raised.
    bad = grid.RunSpec("tiny", 2, 1, "none")
    failed = runner.run_study(
        [bad], tmp_path, train_args=[*_TINY, "--eval-every", "0"], progress=False
    )
    assert failed == [bad.name]
    log = (runner.run_dir(tmp_path, bad) / "train.log").read_text()
    assert "--eval-every must be" in log


def test_study_command_line_end_to_end(tmp_path):
    """`python -m benchmarks.study` trains, skips on rerun, writes its page."""
    cmd = [sys.executable, "-m", "benchmarks.study", "--out", str(tmp_path),
           "--seeds", "0", "--steps", "2", "--no-progress", "--", *_TINY]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "2 runs, 0 finished, 2 to train" in first.stdout
    page_path = pathlib.Path(tmp_path, "report", "study.md")
    assert "| `recon_mse` | 1 |" in page_path.read_text()
    path = tmp_path / "runs" / "tiny-2-s0-none"
    assert runner.finished(path, 2) and runner.steps_done(path) == 2
    log = (path / "train.log").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "2 runs, 2 finished, 0 to train" in second.stdout
    assert (path / "train.log").read_text() == log  # nothing started again


def test_forecast_prints_the_whole_jobs_time_early_then_measured():
    lines = []
    forecast = runner._Forecast(3000, lines.append)
    forecast.first_steps(0.05)
    forecast.first_steps(1.0)  # printed once
    forecast.run_ended(100.0, 1000, 2000)
    forecast.run_ended(1.0, 1000, 1000)  # printed once
    assert len(lines) == 2
    assert lines[0].startswith("expected: 2 min 30 s for the job's 3,000 steps")
    assert lines[1].startswith("expected: 3 min 20 s more for the job's other 2,000")


def test_step_time_leaves_out_the_warm_up(tmp_path):
    records = [{"step": i, "kind": "train", "step_time_s": t}
               for i, t in enumerate([9.0, 0.1, 0.3, 0.2])]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + '{"step": 4, "ki'
    )
    assert runner.step_time(tmp_path) == pytest.approx(0.2)
    assert runner.step_time(tmp_path / "missing") is None


def test_relative_difference_only_of_a_positive_mean():
    assert math.isnan(paired.paired([-1.0, -2.0], [1.0, 0.0]).relative)
    assert paired.paired([2.0, 2.0], [1.0, 1.0]).relative == -0.5
