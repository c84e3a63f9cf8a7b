"""`benchmarks.report` on synthetic run directories like the harness writes."""

import contextlib
import io
import json
import pathlib
import re
import subprocess
import sys

import pytest
from helpers import assert_png_image
from run_dirs import LEVELS, make_run, table_row, update_last_eval

from benchmarks import report
from benchmarks.harness import rundir

# Planted final numbers of run "b", checked in the table.
B_STRETCH_FINE = 0.0123456
B_RECON = 0.0789
B_STEP_TIMES = [9.0, 0.1, 0.3, 0.2]  # the first interval (warm-up) is left out


def referenced_pngs(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def check_png(path: pathlib.Path) -> None:
    assert_png_image(path, min_side=51)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two faces runs (no penalty vs SDR), their report and what it printed."""
    root = tmp_path_factory.mktemp("runs")
    a = make_run(root, "a", penalty="none", seed=1)
    b = make_run(
        root,
        "b",
        penalty="sdr",
        seed=2,
        step_times=B_STEP_TIMES,
        final_stretch_fine=B_STRETCH_FINE,
        final_recon=B_RECON,
    )
    out = root / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        path = report.main([str(a), str(b), "--out", str(out)])
    return a, b, out, path, printed.getvalue()


def test_report_mentions_runs_and_commands(two_runs):
    a, b, out, path, _ = two_runs
    assert path == out / "report.md"
    md = path.read_text()
    for run in (a, b):
        assert str(run) in md
        config = json.loads((run / "config.json").read_text())
        assert config["command"] in md
    assert "a (penalty none)" in md and "b (penalty sdr)" in md
    assert "Settings that differ between the runs: `penalty`, `seed`." in md
    assert "How to read" in md


def test_report_pngs_exist_and_are_valid(two_runs):
    _, _, out, path, _ = two_runs
    pngs = referenced_pngs(path.read_text())
    # 2 image grids, stretch_mse, truth_mse, training, 2 histograms, SDR curves.
    assert len(pngs) == 8, pngs
    for png in pngs:
        check_png(out / png)


def test_table_holds_planted_final_numbers(two_runs):
    _, b, _, path, _ = two_runs
    md = path.read_text()
    assert table_row(md, "stretch_mse fine")[1] == format(B_STRETCH_FINE, "#.4g")
    assert table_row(md, "stretch_mse fine")[1] == "0.01235"
    assert table_row(md, "recon_mse")[1] == "0.07890"
    assert table_row(md, "median step time (s)")[1] == "0.2000"
    assert table_row(md, "last step") == ["20", "20"]
    assert table_row(md, "train loss")[1] == format(0.5 / 4, "#.4g")
    lines = (b / "metrics.jsonl").read_text().splitlines()
    final = json.loads(lines[-1])
    assert final["kind"] == "eval"
    share = final["sdr"]["decoder/deconv2"]["generic_share"]
    assert table_row(md, "generic share decoder/deconv2")[1] == format(share, "#.4g")
    # The encoder's conv4 was never measured.
    assert "generic share encoder/conv4" not in md
    assert table_row(md, "generic share encoder/conv3")[1] != "—"


def _table(text: str, first_cell: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with `first_cell`."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_cell}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_sensitivity_table_holds_the_recorded_variants(two_runs):
    _, b, _, path, _ = two_runs
    md = path.read_text()
    final = json.loads((b / "metrics.jsonl").read_text().splitlines()[-1])
    rows = _table(md, "level (maps entering)")
    assert len(rows) == 4 * 5  # per level: default and four variants
    fine = next(i for i, r in enumerate(rows) if r[0] == "fine")
    assert rows[fine][1] == "derived: 7.75 (-0.25 from n/2)"
    assert rows[fine][4] == "0.01235"  # b's planted stretch_mse fine
    recorded = final["stretch_mse_sensitivity"]["fine"]
    variants = ("centre-0.5", "centre+0.5", "nearest", "array_centre")
    for row, variant in zip(rows[fine + 1 : fine + 5], variants, strict=True):
        assert row[4] == format(recorded[variant], "#.4g"), (variant, row)
    assert rows[fine + 3][2].startswith("nearest")
    assert rows[fine + 4][1] == "array centre n/2"
    assert "recorded no derived stretch centres" not in md


def test_readings_table_and_fig4g_labels(two_runs):
    _, b, _, path, _ = two_runs
    md = path.read_text()
    final = json.loads((b / "metrics.jsonl").read_text().splitlines()[-1])
    rows = _table(md, "paper's level")
    assert [r[1] for r in rows] == ["input", "output"] * 4
    fine = next(i for i, r in enumerate(rows) if r[0].startswith("fine"))
    assert "Fig. 4g" in rows[fine][0]
    assert rows[fine][4] == "0.01235"  # input reading: b's stretch_mse fine
    # Output reading: the maps leaving deconv3, which enter deconv4 (`image`).
    assert "entering `decoder/deconv4` (harness `image`)" in rows[fine + 1][2]
    image = format(final["stretch_mse"]["image"], "#.4g")
    assert rows[fine + 1][4] == image
    assert rows[-1][2].startswith("leaving `decoder/deconv4`: the output image")
    assert rows[-1][3:] == ["0.000", "0.000"]
    assert "that is the panel `image`" in md and "the panel `fine`" in md
    assert report.fig4g_levels(list(LEVELS)) == {"input": "fine", "output": "image"}


def test_runs_recorded_before_the_derived_centres_still_report(tmp_path):
    old = make_run(tmp_path, "old", centres=False, final_stretch_fine=0.0042)
    new = make_run(tmp_path, "new", seed=3)
    out = tmp_path / "r"
    with contextlib.redirect_stdout(io.StringIO()):
        md = report.main([str(old), str(new), "--out", str(out)]).read_text()
    assert "Note: old (penalty none) recorded no derived stretch centres" in md
    rows = _table(md, "level (maps entering)")
    fine = next(i for i, r in enumerate(rows) if r[0] == "fine")
    assert rows[fine][3] == "—"  # not stretched about the derived centre
    assert [r[3] for r in rows[fine + 1 : fine + 4]] == ["—"] * 3
    assert rows[fine + 4][3] == "0.004200"  # its stretch_mse, about n/2
    assert rows[fine + 4][4] != "—"
    # The output reading of an old run: the next level's stretch_mse, then 0.
    runs = report.load_runs([old])
    image = runs[0].evals[-1]["stretch_mse"]["image"]
    assert report.output_reading(runs[0], "fine") == image
    assert report.output_reading(runs[0], "image") == 0.0


def test_table_is_printed(two_runs):
    a, b, _, path, printed = two_runs
    assert report.summary_table(report.load_runs([a, b])) in printed
    assert f"wrote {path}" in printed


def test_celeb_a_run_with_only_step_0(tmp_path):
    """A CelebA run (no ground truths) that has logged only its step-0 eval."""
    celeb = make_run(
        tmp_path, "celeb", dataset="celeb_a", eval_steps=(0,), train_steps=()
    )
    out = tmp_path / "r"
    with contextlib.redirect_stdout(io.StringIO()):
        path = report.main([str(celeb), "--out", str(out)])
    md = path.read_text()
    assert "No run has ground-truth renders" in md
    assert "| truth_mse" not in md
    assert table_row(md, "train loss") == ["—"]
    assert table_row(md, "median step time (s)") == ["—"]
    assert table_row(md, "last step") == ["0"]
    pngs = referenced_pngs(md)
    assert "truth_mse.png" not in pngs and len(pngs) == 5, pngs
    for png in pngs:
        check_png(out / png)


def test_celeb_a_beside_faces(tmp_path, two_runs):
    _, b, _, _, _ = two_runs
    celeb = make_run(
        tmp_path, "celeb", dataset="celeb_a", eval_steps=(0,), train_steps=()
    )
    runs = report.load_runs([celeb, b])
    text = report.describe_runs(runs)
    assert "different datasets (celeb_a, faces)" in text
    assert "The runs end at different steps (0, 20)." in text
    table = report.summary_table(runs)
    assert table_row(table, "truth_mse eye_distance fine")[0] == "—"
    assert table_row(table, "truth_mse eye_distance fine")[1] != "—"
    assert table_row(table, "train loss")[0] == "—"


def test_celeb_a_alone_has_no_truth_figure(tmp_path):
    celeb = make_run(tmp_path, "celeb", dataset="celeb_a", eval_steps=(0, 10))
    runs = report.load_runs([celeb])
    assert not report.plot_truth_mse(runs, tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()
    assert "truth_mse" not in report.summary_table(runs)


@pytest.mark.parametrize("missing", ["config.json", "metrics.jsonl"])
def test_missing_file_is_a_clear_error(tmp_path, missing):
    run = make_run(tmp_path, "broken", eval_steps=(0,), train_steps=())
    (run / missing).unlink()
    with pytest.raises(SystemExit, match=re.escape(str(run / missing))):
        report.main([str(run), "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "nope"))):
        report.main([str(tmp_path / "nope")])


def test_malformed_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path, "bad", eval_steps=(0,), train_steps=(5,))
    with (run / "metrics.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(SystemExit, match=re.escape(f"{run / 'metrics.jsonl'}:3")):
        report.main([str(run)])


def test_unfinished_last_line_is_skipped(tmp_path):
    run = make_run(tmp_path, "live", eval_steps=(0,), train_steps=(5,))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 10, "kind": "tr')  # a training run is writing it
    loaded = rundir.load_run(run)
    assert [r["step"] for r in loaded.train] == [5]
    assert loaded.notes and "unfinished" in loaded.notes[0]


def test_step_not_logged_is_a_clear_error(tmp_path, two_runs):
    a, _, _, _, _ = two_runs
    with pytest.raises(SystemExit, match=r"no eval record at step 7; eval steps: "):
        report.main([str(a), "--step", "7", "--out", str(tmp_path / "r")])


def test_step_picks_images_and_histograms(tmp_path):
    run = make_run(tmp_path, "a")
    runs = report.load_runs([run])
    images, records = report.check_step(runs, 10)
    assert images == {"a": 10} and records["a"]["step"] == 10
    images, records = report.check_step(runs, None)
    assert images == {"a": 20} and records["a"]["step"] == 20
    (run / "images" / "step_0000010.npz").unlink()
    runs = report.load_runs([run])
    with pytest.raises(ValueError, match=r"no images at step 10; steps with images"):
        report.check_step(runs, 10)


def test_mirror_pairs():
    run = rundir.Run(
        path=pathlib.Path("x"),
        name="x",
        config={"args": {}, "levels": LEVELS},
        train=[],
        evals=[{"step": 0}],
        image_steps=[],
    )
    assert report.mirror_pairs(run) == [
        ("coarse", "decoder/deconv1", "encoder/conv4"),
        ("intermediate", "decoder/deconv2", "encoder/conv3"),
        ("fine", "decoder/deconv3", "encoder/conv2"),
        ("image", "decoder/deconv4", "encoder/conv1"),
    ]


def test_duplicate_directory_names_are_told_apart(tmp_path):
    x = make_run(tmp_path / "x", "run", eval_steps=(0,), train_steps=())
    y = make_run(tmp_path / "y", "run", eval_steps=(0,), train_steps=())
    assert [r.name for r in report.load_runs([x, y])] == ["x/run", "y/run"]


def test_import_does_not_load_matplotlib():
    code = "import sys, benchmarks.report; assert 'matplotlib' not in sys.modules"
    root = pathlib.Path(__file__).parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_table_holds_the_eyes_position_and_shape(tmp_path):
    run = make_run(tmp_path, "f")
    eyes = {"position": 0.625, "reference_width_ratio": 1.375}
    features = {key: {"eyes": eyes} for key in ("none", "output", *LEVELS)}
    update_last_eval(run, truth_features={"eye_distance": features})
    table = report.summary_table(rundir.load_runs([run]))
    assert table_row(table, "eyes position (px) eye_distance fine") == ["0.6250"]
    assert table_row(table, "eyes width ÷ recon's eye_distance output") == ["1.375"]
    # Runs recorded without these metrics get no such rows.
    plain = make_run(tmp_path, "g")
    assert "eyes position" not in report.summary_table(rundir.load_runs([plain]))


def test_fig5_is_drawn_again_without_the_aliases_when_recorded(tmp_path):
    run = make_run(tmp_path, "a")
    sdr = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["sdr"]
    update_last_eval(
        run, sdr_without_aliases={"decoder/deconv1": sdr["decoder/deconv1"]}
    )
    plain = make_run(tmp_path, "b")
    out = tmp_path / "report"
    md = report.write_report(rundir.load_runs([run, plain]), out).read_text()
    check_png(out / "sdr_hist_no_aliases_1_a.png")
    assert "sdr_hist_no_aliases_1_a.png" in md
    assert not list(out.glob("sdr_hist_no_aliases_2_*"))
