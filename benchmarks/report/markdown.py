"""The report page: `report.md`, section by section, with its PNGs.

`describe_runs` writes what was compared; each `_..._section` draws its
figures into the report directory and returns its Markdown lines;
`write_report` puts them together.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from benchmarks.harness.rundir import Run
from benchmarks.report.curves import (
    plot_sdr_training,
    plot_stretch_mse,
    plot_training,
    plot_truth_mse,
)
from benchmarks.report.histograms import plot_sdr_histograms
from benchmarks.report.images import (
    extrapolation_differences,
    load_images,
    plot_images,
)
from benchmarks.report.levels import fig4g_levels, readings_table, sensitivity_table
from benchmarks.report.records import _get, _levels, _slug, check_step
from benchmarks.report.tables import summary_table


def _devices(run: Run) -> str:
    """The run's devices, shortened past two."""
    devices = [str(d) for d in run.config.get("devices", [])]
    if len(devices) > 2:
        return f"{len(devices)} devices ({devices[0]}, …)"
    return ", ".join(devices) or "?"


def _differing_settings(runs: Sequence[Run]) -> list[str]:
    """The training arguments whose values are not the same in all runs."""
    keys = sorted({k for r in runs for k in r.args})
    return [k for k in keys if len({json.dumps(r.args.get(k)) for r in runs}) > 1]


def describe_runs(runs: Sequence[Run]) -> str:
    """The report's first section: what was compared.

    Args:
      runs: the runs.

    Returns:
      Markdown: each run's name, path, dataset, config, last step, JAX version
      and devices, and its training command; then whether the datasets,
      settings or numbers of steps differ between the runs.
    """
    md = ["## Runs", ""]
    for run in runs:
        md += [
            f"- **{run.label}**: `{run.path}`, dataset {run.dataset}, "
            f"config {run.args.get('config', '?')}, last step {run.last_step}, "
            f"JAX {run.config.get('jax_version', '?')} on "
            f"{_devices(run)}",
            "",
            "  ```",
            f"  {run.config.get('command', '(no command recorded)')}",
            "  ```",
            "",
        ]
        md += [f"  Note: {note}" for note in run.notes]
    md.append("")
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) > 1:
        md += [
            f"**The runs use different datasets ({', '.join(datasets)})**: their "
            "images and errors are not on the same data.",
            "",
        ]
    differing = _differing_settings(runs)
    if len(runs) > 1:
        md += [
            (
                "Settings that differ between the runs: "
                + ", ".join(f"`{k}`" for k in differing)
                + "."
            )
            if differing
            else "The runs were trained with the same settings.",
            "",
        ]
    steps = sorted({r.last_step for r in runs})
    if len(steps) > 1:
        md += [f"The runs end at different steps ({', '.join(map(str, steps))}).", ""]

    return "\n".join(md).rstrip("\n") + "\n"


def _final_numbers(runs: Sequence[Run]) -> list[str]:
    """The section of the summary table, with how to read it."""
    return [
        "## Final numbers",
        "",
        "Last logged values of each run: the training terms from the last "
        "train record (one training batch), the rest from the last eval record "
        "(the fixed evaluation batch, never trained on). Errors are mean "
        "squared errors of images in [-1, 1]. Median step time leaves out the "
        "first logged interval (warm-up); evaluations and "
        "checkpoints are not counted in it. SDR rows: median pair SDR ρ of each "
        "conv layer, and the share of pairs with |log ρ| < log 1.25, over the "
        "pairs with an SDR (`undefined pairs`: those whose input channel has no "
        "power). `no SDR`: a layer that cannot be measured (a kernel larger than "
        "its maps, or 1×1 maps). `—`: not measured (no train record yet, no "
        "ground truth on CelebA, or a run from before unmeasured layers were "
        "recorded). `stretch_mse`: the maps entering each level stretched about "
        "the level's derived centre ([below](#stretch-centre-interpolation-and-"
        "the-papers-level-names)).",
        "",
        *_array_centre_note(runs),
        summary_table(runs),
        "",
    ]


def _array_centre_note(runs: Sequence[Run]) -> list[str]:
    """A note naming the runs whose stretches were about the array centre."""
    old = [r.label for r in runs if _get(r.evals[-1], "stretch_centre") is None]
    if not old:
        return []
    return [
        f"Note: {', '.join(old)} recorded no derived stretch centres: "
        "their `stretch_mse` stretched every level about its array centre n/2.",
        "",
    ]


def _levels_section(runs: Sequence[Run]) -> list[str]:
    """The section of the stretch's centre and interpolation, and of the two
    readings of the paper's levels."""
    md = _section(
        "Stretch centre, interpolation and the paper's level names",
        "the output image is stretched about its centre; each level's maps "
        "are stretched about their derived centre, the point that the rest "
        "of the generator (its conv strides and paddings) maps to the image "
        "centre, which is up to half a map pixel off the maps' array centre "
        "n/2. The first table gives, from the last eval record, `stretch_mse` "
        "per level with that centre and linear interpolation, then with the "
        "centre moved half a map pixel either way, with nearest-pixel "
        "interpolation (of the maps and of the output), and about n/2: how "
        "much the number depends on these choices.",
    )
    md += [sensitivity_table(runs), ""]
    md += _paragraph(
        "How to read the paper's levels: the paper stretches \"all maps of a "
        'given hidden convolutional layer" (Sec. 4.1 of the paper) and names '
        "the four layers coarse, intermediate, fine and image. The harness's "
        "level k stretches the maps entering layer k (input reading); read as "
        "the maps the layer computes, it stretches the maps leaving layer k, "
        "which enter layer k + 1, and for the last layer the output image "
        "itself (output reading, whose error is then 0). We read the paper "
        "the second way: its activation maps of a layer are those the layer "
        "computes, and only the image layer's are not hidden. The second table "
        "gives both, from the last eval record; the paper's Fig. 4g stretches "
        "its fine level."
    )
    md += [readings_table(runs), ""]
    return md


def _difference_scales(
    runs: Sequence[Run], image_steps: dict[str, int]
) -> dict[str, float]:
    """One difference scale per dataset: 0 to the largest difference."""
    vmax: dict[str, float] = {}
    for run in runs:
        if run.name in image_steps:
            panels = load_images(run, image_steps[run.name])
            if "stretched_output" in panels:
                diffs = extrapolation_differences(panels, run.levels).values()
                vmax[run.dataset] = max(
                    [vmax.get(run.dataset, 1 / 255)] + [float(d.max()) for d in diffs]
                )
    return vmax


def _paragraph(text: str, figure: str | None = None) -> list[str]:
    """Markdown lines: a paragraph, then the figure `<figure>.png` if any."""
    md = [text, ""]
    if figure:
        md += [f"![{figure}]({figure}.png)", ""]
    return md


def _section(title: str, how_to_read: str, figure: str | None = None) -> list[str]:
    """Markdown lines: a section's heading, how to read it and its figure."""
    return [f"## {title}", "", *_paragraph(f"How to read: {how_to_read}", figure)]


def _image_section(
    runs: Sequence[Run], image_steps: dict[str, int], out: pathlib.Path
) -> list[str]:
    """The section of the image grids (Fig. 4a–f), one PNG per run."""
    md = _section(
        "Extrapolation samples (Fig. 4a–f)",
        "each column is one sample of the evaluation batch. Rows: "
        "the input; the original sample (the reconstruction); the stretched "
        "output (the reconstruction stretched 1.5× horizontally about the "
        "image centre); the extrapolation at each level (every map entering that "
        "decoder level stretched 1.5× about the level's derived centre, the "
        "rest of the decoder run on them); "
        "on faces, ground-truth renders of the intervention (eyes 1.5× further "
        "apart; face width and eye distance ×1.5). The lower block shows "
        "|extrapolation − stretched output| per pixel (mean over RGB, "
        "intensity 0–1) on one colour scale shared by all levels and by the "
        "runs on the same dataset, from 0 to the largest difference among "
        "them: dark where the "
        "extrapolation matches stretching the output, bright where it differs.",
    )
    vmax = _difference_scales(runs, image_steps)
    for i, run in enumerate(runs, 1):
        if run.name not in image_steps:
            md += [f"- {run.label}: no images in `{run.path / 'images'}`.", ""]
            continue
        png = f"images_{i}_{_slug(run.name)}.png"
        plot_images(run, image_steps[run.name], out / png, vmax=vmax.get(run.dataset))
        md += [f"![{run.label}: samples at step {image_steps[run.name]}]({png})", ""]
    return md


def _stretch_section(runs: Sequence[Run], out: pathlib.Path) -> list[str]:
    """The section of the errors during training: Fig. 4g and `truth_mse`."""
    fig4g = fig4g_levels(_levels(runs))
    where = (
        "The paper's Fig. 4g stretches its fine level. Read as the maps the "
        "fine layer computes (the output reading, our reading of the paper: "
        "see the section on the paper's level names), that is the panel "
        f"`{fig4g['output']}` (the maps leaving the fine layer); read as the "
        f"maps entering it (the input reading), the panel `{fig4g['input']}`."
        if fig4g["input"]
        else "The paper's Fig. 4g stretches its fine level, which these runs lack."
    )
    md = _section(
        "Stretching error during training (Fig. 4g)",
        "one panel per decoder level; the y axis is `stretch_mse`, "
        "the mean squared error between the extrapolation at that level (the "
        "maps entering it stretched) and the stretched output on the "
        "evaluation batch, against the training step; one line per run. 0 "
        "means stretching the maps entering that level gives exactly the "
        f"stretched output image. {where}",
        "stretch_mse",
    )
    plot_stretch_mse(runs, out / "stretch_mse.png")
    if plot_truth_mse(runs, out / "truth_mse.png"):
        md += _paragraph(
            "How to read the ground-truth errors: rows are the interventions "
            "rendered as ground truth (faces only); the y axis is the mean "
            "squared error against that truth of: the unedited reconstruction "
            "(`none`), the stretched output (`output`), and the extrapolation "
            "at each level. `none` and `output` are references for scale. Runs "
            "without ground truths (CelebA) are left out.",
            "truth_mse",
        )
    else:
        md += [
            "No run has ground-truth renders (CelebA runs): no `truth_mse` figure.",
            "",
        ]
    return md


def _training_section(runs: Sequence[Run], out: pathlib.Path) -> list[str]:
    """The section of the training terms."""
    md = _section(
        "Training",
        "the training objective and its terms on the training "
        "batch at each logged step (β-VAE: `loss` = `mse` + kl_weight · `kl`; "
        "DCGAN: `loss` = `g_loss` + `d_loss`, the generator's and the "
        "discriminator's cross-entropies), and the reconstruction error on "
        "the evaluation batch (`recon_mse`, β-VAE only); one line per run.",
        "training",
    )
    plot_training(runs, out / "training.png")
    return md


def _histograms(run: Run, record: dict, out: pathlib.Path, slug: str) -> list[str]:
    """One run's Fig. 5, and again with the aliases of zero left out."""
    step = record["step"]
    png = f"sdr_hist_{slug}.png"
    plot_sdr_histograms(run, record, out / png)
    md = [f"![{run.label}: SDR histograms at step {step}]({png})", ""]
    if record.get("sdr_without_aliases"):
        png = f"sdr_hist_no_aliases_{slug}.png"
        plot_sdr_histograms(run, record, out / png, aliases=False)
        md += [
            "The same with the aliases of the zero frequency on the transposed "
            "convs' dilated grids left out of the averages (`include_aliases="
            "False`; the theory page has both conventions):",
            "",
            f"![{run.label}: SDR histograms without the aliases, step {step}]({png})",
            "",
        ]
    return md


def _sdr_section(
    runs: Sequence[Run], records: dict[str, dict], out: pathlib.Path
) -> list[str]:
    """The section of the SDR: Fig. 5 per run, then the SDR during training."""
    md = _section(
        "SDR of the generative layers vs their inverse (Fig. 5, App. B.13)",
        "for each level, the distribution over all (filter, "
        "activation map) pairs of a layer of log2 of the pair SDR ρ, as a "
        "density over the 64 bins of `sdr_bins` (-2 to 2; pairs beyond are "
        "counted in the end bins), for the decoder's (or a DCGAN generator's) "
        "layer (blue) and for the encoder's (or discriminator's) layer working "
        "on the same grid, in mirror order (red): deconv1 (coarse) with the "
        "last conv, …, deconv4 (image) with conv1. The dashed line is "
        "log2 ρ = 0 (ρ = 1, spectral independence). The legend gives each "
        "layer's median ρ and the share of generic pairs (|log ρ| < log 1.25). "
        "A layer whose kernel is larger than its maps has no SDR: the legend "
        "says 'no SDR'.",
    )
    for i, run in enumerate(runs, 1):
        md += _histograms(run, records[run.name], out, f"{i}_{_slug(run.name)}")
    md += _paragraph(
        "How to read the SDR during training: columns are the levels (decoder "
        "layer / mirror encoder layer); top row the median pair SDR ρ (dotted "
        "line: ρ = 1), bottom row the share of generic pairs; solid lines with "
        "dots are decoder layers, dashed lines with open squares encoder "
        "layers, one colour per run.",
        "sdr_training",
    )
    plot_sdr_training(runs, out / "sdr_training.png")
    return md


def write_report(
    runs: Sequence[Run],
    out: pathlib.Path,
    *,
    step: int | None = None,
    command: str | None = None,
) -> pathlib.Path:
    """Writes `out/report.md` and its PNGs.

    Args:
      runs: the runs to compare.
      out: the report directory (created if needed).
      step: the step of the image grids and SDR histograms (default: each
        run's last image step and last eval).
      command: the command that made the report, quoted in it.

    Returns:
      The path of `report.md`.

    Raises:
      ValueError: a run has no images or no eval record at `step`.
    """
    image_steps, records = check_step(runs, step)
    out.mkdir(parents=True, exist_ok=True)

    md: list[str] = ["# Training runs compared", ""]
    if command:
        md += [f"Made with `{command}`.", ""]
    md += [*describe_runs(runs).splitlines(), ""]
    md += _final_numbers(runs)
    md += _levels_section(runs)
    md += _image_section(runs, image_steps, out)
    md += _stretch_section(runs, out)
    md += _training_section(runs, out)
    md += _sdr_section(runs, records, out)

    report = out / "report.md"
    report.write_text("\n".join(md))
    return report
