"""Studies: grids of training runs, resumable, with paired statistics over seeds.

    python -m benchmarks.study --out runs/study --seeds 0-7

Modules by job: `grid` (the runs of a study and their names), `runner`
(training them, each once, resumably), `results` (one table of every run's
final numbers), `paired` (paired differences over seeds with 95 % intervals),
`tradeoff` (reconstruction against extrapolation, and the
reconstruction-matched comparison), `page` (the Markdown page) and `cli`.
"""
