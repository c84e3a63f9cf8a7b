"""What the training harness needs to know of a network: `Architecture`.

Each trainable network module (`benchmarks.nets.vae`, `benchmarks.nets.dcgan`)
defines one `ARCHITECTURE`; `benchmarks.nets.ARCHITECTURES` lists them by
`--model` name. The harness builds, initialises, trains and evaluates a
network through these fields only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

# The generative network's levels (the paper's Sec. 4), coarse to image.
LEVEL_NAMES = ("coarse", "intermediate", "fine", "image")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How the harness builds, trains and evaluates one kind of network.

    A network has a generative part (the β-VAE's decoder, the DCGAN's
    generator), whose layers the penalty regularises and whose levels the
    evaluation stretches, and an inverse part on the same grids (encoder,
    discriminator).

    Attributes:
      name: the `--model` name.
      config: preset name (`tiny`, `small`, `paper`) → the config dataclass.
      build: config → the Linen module.
      levels: level name (`LEVEL_NAMES`) → the generative layer whose input
        maps form that level.
      mirror: level name → the inverse network's layer on the same grid.
      roles: the generative network and its inverse, as named in the
        parameters (`("decoder", "encoder")`).
      reconstructs: whether the network reconstructs its input (then the
        evaluation compares with the input and with ground truths).
      optimizer: config → the generative network's optimiser (the penalty is
        chained after it).
      init_variables: `(model, key) -> {"params", "batch_stats"}`.
      init_opt_state: `(model, tx, params) -> opt_state`, `tx` the
        generative network's optimiser (with the penalty, if any).
      make_train_step: `(model, tx, *, penalty_layers) -> step`, `step(state,
        x, key) -> (state, metrics)` on a state with `step`, `params`,
        `batch_stats` and `opt_state` (`penalty_layers`: layer names or
        None).
      generate: `(model, variables, codes) -> images`, the generative network
        alone.
      codes: `(model, variables, x, key) -> codes`, what the evaluation
        generates from: the encoding of the evaluation images `x`, or
        latent codes drawn with `key`.
      taps: `(model, variables, x, codes, key) -> taps`, the `sdr.ConvTap`s of
        every conv layer of both networks in the evaluation.
    """

    name: str
    config: Callable[[str], Any]
    build: Callable[[Any], Any]
    levels: Mapping[str, str]
    mirror: Mapping[str, str]
    roles: tuple[str, str]
    reconstructs: bool
    optimizer: Callable[[Any], Any]
    init_variables: Callable[..., dict]
    init_opt_state: Callable[..., Any]
    make_train_step: Callable[..., Callable]
    generate: Callable[..., Any]
    codes: Callable[..., Any]
    taps: Callable[..., list]
