"""A study's grid: the training runs it is made of, and their names.

A `RunSpec` is one training run of `benchmarks.harness.train`: the settings
that a study varies (seed, penalty, its rate and layers, config, steps, KL
weight) and the options that it holds fixed (`train_args`). `expand` makes
the product of the axes, with the runs without the penalty once per
setting, whatever the rates and layers: they do not depend on them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from benchmarks import nets

# The options that every run of a study gets unless the command line adds
# others (the main job's: `benchmarks.experiments.compare`'s quick preset).
TRAIN_ARGS = ("--batch", "32", "--eval-every", "100", "--checkpoint-every", "500")
DEFAULT_LAYERS = ("intermediate", "fine", "image")


@dataclasses.dataclass(frozen=True, order=True)
class RunSpec:
    """One training run of a study.

    Attributes:
      config: `--config` (tiny, small, paper).
      steps: `--steps`.
      seed: `--seed`; runs of the same seed share initialisation and data.
      penalty: `none` or `sdr`.
      rate: `--penalty-rate` (None without the penalty).
      layers: `--penalty-layers`, levels (empty without the penalty).
      kl_weight: `--kl-weight` (None: the config's).
    """

    config: str
    steps: int
    seed: int
    penalty: str
    rate: float | None = None
    layers: tuple[str, ...] = ()
    kl_weight: float | None = None

    def __post_init__(self):
        if self.penalty not in ("none", "sdr"):
            raise ValueError(f"penalty must be 'none' or 'sdr'; got {self.penalty!r}")
        if (self.penalty == "sdr") != (self.rate is not None and bool(self.layers)):
            raise ValueError(
                "a run with the penalty needs a rate and layers, one without "
                f"neither; got {self}"
            )
        unknown = set(self.layers) - set(nets.LEVEL_NAMES)
        if unknown:
            raise ValueError(f"unknown levels {sorted(unknown)}; {nets.LEVEL_NAMES}")
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1; got {self.steps}")

    @property
    def arm(self) -> str:
        """What the run's seed is paired over: the penalty, rate, layers, KL."""
        name = self.penalty
        if self.penalty == "sdr":
            name += f"-r{self.rate:g}-" + "+".join(self.layers)
        if self.kl_weight is not None:
            name += f"-kl{self.kl_weight:g}"
        return name

    @property
    def name(self) -> str:
        """The run directory's name, unique in a study."""
        return f"{self.config}-{self.steps}-s{self.seed}-{self.arm}"

    def argv(self, out: str, train_args: Sequence[str] = TRAIN_ARGS) -> list[str]:
        """The `benchmarks.harness.train` command line of this run.

        Args:
          out: the run directory.
          train_args: the options held fixed; the run's own come after them.

        Returns:
          The arguments.
        """
        args = [*train_args, "--config", self.config, "--steps", str(self.steps)]
        args += ["--seed", str(self.seed), "--penalty", self.penalty]
        if self.penalty == "sdr":
            args += ["--penalty-rate", f"{self.rate:g}", "--penalty-layers"]
            args += list(self.layers)
        if self.kl_weight is not None:
            args += ["--kl-weight", f"{self.kl_weight:g}"]
        return [*args, "--out", out]


def expand(
    *,
    seeds: Sequence[int],
    penalties: Sequence[str] = ("none", "sdr"),
    rates: Sequence[float] = (0.5,),
    layers: Sequence[Sequence[str]] = (DEFAULT_LAYERS,),
    configs: Sequence[str] = ("tiny",),
    steps: Sequence[int] = (1500,),
    kl_weights: Sequence[float | None] = (None,),
) -> list[RunSpec]:
    """The runs of the product of the axes, each once, sorted.

    Args:
      seeds: the seeds.
      penalties: `none` and/or `sdr`.
      rates: the penalty's rates (runs without the penalty ignore them).
      layers: the sets of penalised levels (likewise).
      configs: the model sizes.
      steps: the training lengths.
      kl_weights: the KL weights (None: the config's).

    Returns:
      The runs, without duplicates.

    Raises:
      ValueError: an axis is empty or holds an invalid value.
    """
    axes = dict(
        seeds=seeds, penalties=penalties, rates=rates, layers=layers,
        configs=configs, steps=steps, kl_weights=kl_weights,
    )  # fmt: skip
    for name, values in axes.items():
        if not values:
            raise ValueError(f"the study's {name} axis is empty")
    specs = set()
    for config, n, seed, penalty, kl in itertools.product(
        configs, steps, seeds, penalties, kl_weights
    ):
        if penalty == "none":
            specs.add(RunSpec(config, n, seed, "none", kl_weight=kl))
            continue
        for rate, levels in itertools.product(rates, layers):
            specs.add(RunSpec(config, n, seed, "sdr", rate, tuple(levels), kl))
    return sorted(specs, key=lambda s: (s.config, s.steps, s.arm, s.seed))


def parse_seeds(text: str) -> list[int]:
    """Seeds from `0-7` (a range, both ends included) or `0,3,5`.

    Args:
      text: the option's text.

    Returns:
      The seeds.

    Raises:
      ValueError: for anything else.
    """
    seeds: list[int] = []
    for part in text.split(","):
        first, sep, last = part.partition("-")
        lo, hi = int(first), int(last) if sep else int(first)
        if lo < 0 or hi < lo:
            raise ValueError(f"bad seed range {part!r}")
        seeds += range(lo, hi + 1)
    return sorted(set(seeds))
