"""Training runs compared across device and process counts: reading a run's
lines and the tolerances of float32 runs that differ only in the order of
their reductions (shared by `test_train.py` and `test_multiprocess.py`)."""

import json
import pathlib

import jax
import numpy as np

from benchmarks.nets import vae


def run_lines(run: pathlib.Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for ln in lines:
        ln.pop("step_time_s", None)  # wall time differs
    return lines


def close(a, b, rtol=1e-5, atol=0.0):
    np.testing.assert_equal(len(a), len(b))

    def check(u, v):
        if isinstance(u, str):
            assert u == v
        else:
            np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)

    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys(), (x.keys(), y.keys())
        jax.tree.map(check, x, y)


# How far float32 runs that differ only in the order of their reductions may
# part (the 4-device run sums the batch in 4 partial sums, then all-reduces).
#
# Before any update, both runs evaluate the same parameters on the same data:
# only the reductions over the batch (8·32·32·3 = 24576 pixel terms for the
# MSE) are reassociated, with a typical relative error of √24576·2⁻²⁴ ≈ 1e-5.
_REASSOCIATION_RTOL = 1e-5
# Each Adam update then amplifies: it divides each gradient component by its
# RMS, so a component that is zero up to rounding (cancelling sums, nearly
# dead units) gets a full step of ±lr in whichever direction rounding chose.
# After k updates two correct runs' parameters may thus part by up to
# 2·lr·k; that, not 2⁻²⁴, sets the scale of every later difference. The
# tolerances below are in that unit (with the tiny config's lr = 1e-3):
# - a logged number may differ relatively by 1e-5 + 5·(2·lr·k), i.e. 1e-2
#   per update;
# - a layer's pair SDRs may move by (2·lr·k) on average in log2 ρ (the mean
#   shift D of the distance below), plus M = 2 log2 units in all, per layer,
#   for binning (a pair that moves by δ < one bin moves a whole bin when it
#   crosses an edge) and for the few ill-conditioned pairs whose input
#   channel is nearly dead (their ρ is a ratio of near-zero spectra).
# Measured on this test (seeds 0-8, 1 device against 2, 4 or 8; a 2-CPU
# x86 host), the largest differences were: 2.2e-7 relative at step 1 (0
# updates), 1.6e-6 at step 2, 3.3e-4 at step 3, 2.1e-3 at step 4 (the KL of
# seed 0, its most sensitive number), 2.1e-4 in the step 4 evaluation; a mean
# shift of 1.3e-3 per pair and at most 1.4 log2 units in one layer. Bugs
# simulated on 4 devices (the last shard replaced by the first, one device's
# examples left out of the loss, one device's gradient only, batch norm
# statistics per device) instead part the runs by 1.8e-3 (loss) to 0.17
# (KL) relative at step 1, or by 4.7e-2 at step 2 (the gradient bug, the
# only one invisible at step 1), and move the SDRs by 2.7e-2 to 4.2e-2 per
# pair (at least 35 log2 units in one layer). Correct runs used at most 0.07
# of a metric tolerance after an update and 0.32 of an SDR bound; each
# simulated bug exceeds a metric tolerance (by at least 4.7 times) and
# the SDR bound of several layers (up to 8 times).
ADAM_SPREAD = 2 * vae.config("tiny").learning_rate  # per update
_METRIC_GROWTH = 5.0
_SDR_SLACK = 2.0  # M, log2 units per layer
# The share of generic pairs (|log ρ| < log 1.25) changes only through pairs
# that cross the band's two edges: those within about D of an edge (the
# density of log2 ρ there was at most 1.8 per log2 unit; we take 2), and a
# few ill-conditioned ones (3 pairs). Measured: at most 0.36 of this bound;
# the simulated bugs exceed it 2.3 to 3.9 times.
_EDGE_DENSITY, _SHARE_SLACK_PAIRS = 2.0, 3


def _updates(line: dict) -> int:
    """Adam updates before the line's numbers were computed."""
    return line["step"] if line["kind"] == "eval" else line["step"] - 1


def _sdr_distance(a: dict, b: dict, edges: np.ndarray, shift: float, where: str):
    """Checks two runs' SDR summaries of one layer, whose pairs may have moved
    by `shift` on average; returns the histograms' earth mover's distance
    (log2 units) and the number of defined pairs."""
    assert a.keys() == b.keys(), (where, a.keys(), b.keys())
    p, q = np.asarray(a["counts"], float), np.asarray(b["counts"], float)
    n = p.sum()
    # Undefined pairs (NaN: an input channel without power, dead units) are
    # left out of the histogram: the same channels must be dead in both runs
    # (a ReLU channel dies by a margin far above rounding).
    assert n == q.sum(), (where, "defined pairs", n, q.sum())
    for key in ("pairs", "undefined"):  # counts, where recorded
        if key in a:
            assert a[key] == b[key], (where, key, a[key], b[key])
    if n == 0:  # a layer without an SDR
        return 0.0, 0
    # The 1-D earth mover's (Wasserstein-1) distance between the normalised
    # histograms: the mean distance, in log2 ρ, the pairs must be moved to
    # turn one histogram into the other (bins at their centres).
    centres = (edges[1:] + edges[:-1]) / 2
    cdf = np.cumsum(p / n - q / n)[:-1]
    emd = float(np.sum(np.abs(cdf) * np.diff(centres)))
    if "generic_share" in a and np.isfinite(a["generic_share"]):
        share = abs(a["generic_share"] - b["generic_share"])
        bound = 2 * _EDGE_DENSITY * shift + _SHARE_SLACK_PAIRS / n
        assert share <= bound, (where, "generic share", share, bound)
    # The medians and quartiles are not compared: on a few pairs they jump
    # between order statistics, and the histogram holds them.
    return emd, int(n)


def compare_runs(four: list[dict], one: list[dict], edges: np.ndarray) -> list:
    """Asserts that two runs' metric lines agree within the reassociation
    tolerances above; returns (line, layer, distance, bound) of each layer."""
    assert [(ln["step"], ln["kind"]) for ln in four] == [
        (ln["step"], ln["kind"]) for ln in one
    ]
    distances = []
    for a, b in zip(four, one, strict=True):
        k = _updates(a)
        where = f"{a['kind']} line of step {a['step']} ({k} updates)"
        a, b = dict(a), dict(b)
        # Both SDR records (the aliases of zero counted, and left out) are
        # histograms: compared by their distance, below.
        sdr_a, sdr_b = a.pop("sdr", {}), b.pop("sdr", {})
        for layer, stats in a.pop("sdr_without_aliases", {}).items():
            sdr_a[f"{layer} (without aliases)"] = stats
        for layer, stats in b.pop("sdr_without_aliases", {}).items():
            sdr_b[f"{layer} (without aliases)"] = stats
        rtol = _REASSOCIATION_RTOL + _METRIC_GROWTH * ADAM_SPREAD * k
        # atol: the stretch errors are ~1e-16 before training (rounding
        # only); an MSE of 1e-6 of images in [-1, 1] is a 1e-3 RMS difference,
        # a quarter of one 8-bit grey level.
        try:
            close([a], [b], rtol=rtol, atol=1e-6)
        except AssertionError as e:
            raise AssertionError(f"{where}, rtol {rtol:.1e}: {e}") from None
        assert sdr_a.keys() == sdr_b.keys(), (where, sdr_a.keys(), sdr_b.keys())
        shift = ADAM_SPREAD * k  # D
        for layer in sdr_a:
            emd, n = _sdr_distance(sdr_a[layer], sdr_b[layer], edges, shift, where)
            if n:
                bound = shift + _SDR_SLACK / n
                distances.append((where, layer, emd, bound))
                assert emd <= bound, (where, layer, f"EMD {emd:.2e} > {bound:.2e}")
    return distances
