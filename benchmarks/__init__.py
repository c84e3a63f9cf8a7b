"""Benchmarks, experiments and figures of the `sdr` library.

Packages by role: `nets` (networks), `harness` (data, training, evaluation,
run directories), `report` (pages from run directories), `theory` (the
paper's theory figures), `experiments` (the main comparison, FluoHair, the
demo) and `speed` (timing benchmarks).
"""
