"""Paired differences over seeds, with 95 % intervals and a verdict.

Two arms of a study are compared seed by seed: the runs of a seed share
their initialisation and their data order, so the difference `b − a` of a
seed is what the arm changed. `paired` gives the mean of each arm, the
mean difference, its 95 % t-interval (`scipy.stats.ttest_rel`) and a
verdict: `lower` or `higher` when the interval excludes 0, otherwise
`no difference at 95 %`. Each interval is for its metric alone: with many
metrics, some intervals exclude 0 by chance (about 1 in 20 when nothing
changes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Paired:
    """One metric compared between two arms over the seeds both have.

    Attributes:
      n: the number of seeds.
      mean_a: the mean of arm `a`.
      mean_b: the mean of arm `b`.
      diff: the mean of `b − a`.
      low: the interval's lower end (NaN with fewer than 2 seeds).
      high: its upper end.
      lower: in how many seeds `b < a`.
    """

    n: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    lower: int

    @property
    def relative(self) -> float:
        """The mean difference relative to arm `a`'s mean (NaN unless that is > 0:
        a share of a negative slope, say, reads backwards)."""
        return self.diff / self.mean_a if self.mean_a > 0 else math.nan

    @property
    def verdict(self) -> str:
        """`lower`, `higher`, `no difference at 95 %`, or `too few seeds`."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "too few seeds"
        if self.high < 0:
            return "lower"
        if self.low > 0:
            return "higher"
        return "no difference at 95 %"


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Compares `b` with `a`, seed by seed.

    Args:
      a: one value per seed of the first arm.
      b: the values of the same seeds, in the same order, of the second.

    Returns:
      The comparison. Seeds where either value is not finite are left out;
      with fewer than 2 left, the interval is NaN (verdict `too few
      seeds`). When every difference is the same, the interval is
      that value.

    Raises:
      ValueError: `a` and `b` differ in length.
    """
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = b - a
    n = int(d.size)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    low = high = math.nan
    if n >= 2:
        if np.ptp(d) == 0:
            low = high = float(d[0])
        else:
            ci = stats.ttest_rel(b, a).confidence_interval(CONFIDENCE)
            low, high = float(ci.low), float(ci.high)
    return Paired(
        n=n,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        diff=float(d.mean()),
        low=low,
        high=high,
        lower=int((d < 0).sum()),
    )


def by_seed(rows: Sequence[dict[str, Any]], metric: str) -> dict[int, float]:
    """Seed → `final[metric]` of the rows (one arm of one base)."""
    return {r["seed"]: r["final"].get(metric, math.nan) for r in rows}


def compare_arms(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], metric: str
) -> Paired:
    """Compares one metric between two arms' rows over their common seeds.

    Args:
      a: the rows of the first arm (one per seed).
      b: the rows of the second arm.
      metric: a name of the rows' `final`.

    Returns:
      The comparison over the seeds both arms have.
    """
    va, vb = by_seed(a, metric), by_seed(b, metric)
    seeds = sorted(set(va) & set(vb))
    return paired([va[s] for s in seeds], [vb[s] for s in seeds])


def arms(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict]]:
    """The rows grouped by `(base, arm)`, each group sorted by seed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["base"], r["arm"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in sorted(groups.items())}


def band(
    curves: Sequence[Sequence[float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of per-seed curves and its pointwise 95 % t-interval.

    Args:
      curves: one curve per seed, all at the same steps.

    Returns:
      `(mean, low, high)`; with one curve, `low` and `high` are the mean.
    """
    from scipy import stats

    c = np.asarray(curves, float)
    mean = np.nanmean(c, axis=0)
    n = np.sum(np.isfinite(c), axis=0)
    if c.shape[0] < 2:
        return mean, mean, mean
    sem = np.nanstd(c, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1))
    t = stats.t.ppf((1 + CONFIDENCE) / 2, np.maximum(n - 1, 1))
    return mean, mean - t * sem, mean + t * sem
