"""A Markdown report of training runs: the paper's Fig. 4 and Fig. 5, and a table.

    python -m benchmarks.report RUN [RUN ...] [--out DIR] [--step N]

Each `RUN` is a run directory written by `benchmarks.harness.train` (`config.json`,
`metrics.jsonl`, `images/step_<step>.npz`). The report compares the runs:

- one image grid per run (Fig. 4a–f): the reconstruction, the stretched
  output, the extrapolation at each decoder level, the ground truths (faces),
  and the pixel differences of each extrapolation from the stretched output;
- `stretch_mse` per level against the training step (Fig. 4g), `truth_mse`
  (faces), and the training loss;
- per run, the SDR histograms of each decoder layer against the encoder layer
  of the same grid (Fig. 5), and the median SDR and share of generic pairs
  of every layer against the step;
- a table of the final numbers of each run, also printed to stdout;
- `stretch_mse` per level with the stretch's centre moved by half a map
  pixel either way, with nearest interpolation and about the array centre
  (`sensitivity_table`), and each of the paper's levels under both readings
  of "the maps of a layer": those entering it and those leaving it
  (`readings_table`).

`DIR/report.md` is written with its PNGs beside it. `DIR` defaults to
`reports/<run>` (the first run's directory name, then `_vs_<run>` for each
further run), relative to the working directory. `--step N` picks the step
of the image grids and of the SDR histograms (default: each run's last);
the table always holds the last logged values.

Modules by job: `records` (what is read from the runs' records: levels,
layers, loss terms, the step shown), `tables` (the summary table), `levels`
(the stretch's sensitivity and the readings of the paper's levels),
`plotting` (what the figures share), `images` (the image grids), `curves`
(the figures against the step), `histograms` (the SDR histograms),
`markdown` (the page) and `cli` (the command line). The run directories are
read by `benchmarks.harness.rundir`.

Only NumPy is needed to import this package; matplotlib is imported when the
figures are drawn (its `Figure` objects are saved directly: no pyplot, no
global backend).
"""

from benchmarks.harness.rundir import Run as Run
from benchmarks.harness.rundir import load_runs as load_runs
from benchmarks.report.cli import main as main
from benchmarks.report.cli import parse_args as parse_args
from benchmarks.report.curves import plot_sdr_training as plot_sdr_training
from benchmarks.report.curves import plot_stretch_mse as plot_stretch_mse
from benchmarks.report.curves import plot_training as plot_training
from benchmarks.report.curves import plot_truth_mse as plot_truth_mse
from benchmarks.report.histograms import plot_sdr_histograms as plot_sdr_histograms
from benchmarks.report.images import (
    extrapolation_differences as extrapolation_differences,
)
from benchmarks.report.images import load_images as load_images
from benchmarks.report.images import plot_images as plot_images
from benchmarks.report.levels import fig4g_levels as fig4g_levels
from benchmarks.report.levels import output_reading as output_reading
from benchmarks.report.levels import readings_table as readings_table
from benchmarks.report.levels import sensitivity_table as sensitivity_table
from benchmarks.report.markdown import describe_runs as describe_runs
from benchmarks.report.markdown import write_report as write_report
from benchmarks.report.plotting import _DPI as _DPI
from benchmarks.report.records import STRETCH_NOTE as STRETCH_NOTE
from benchmarks.report.records import _get as _get
from benchmarks.report.records import check_step as check_step
from benchmarks.report.records import mirror_pairs as mirror_pairs
from benchmarks.report.tables import summary_rows as summary_rows
from benchmarks.report.tables import summary_table as summary_table
