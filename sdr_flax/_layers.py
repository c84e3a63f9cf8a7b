"""The SDR of every conv layer of a Flax (Linen or NNX) or raw JAX generator."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

import sdr


def _as_function(fn: Callable[..., Any] | nnx.Module, args):
    """A function of arrays for `fn`, its arguments, and the step after the call.

    An NNX module becomes a function of its state (parameter paths kept) that
    also returns the state after the call; `finish` writes that state back
    into the module (batch statistics, RNG counts, `sow`n values, any mutable
    Variable), as calling the module directly would, and returns the output.
    """
    if isinstance(fn, nnx.Module):
        graphdef, state = nnx.split(fn)

        def call(state, *a, **k):
            module = nnx.merge(graphdef, state)
            return module(*a, **k), nnx.state(module)

        def finish(result):
            output, new_state = result
            nnx.update(fn, new_state)
            return output

        return call, (state, *args), finish
    return fn, args, lambda output: output


def capture_layers(
    fn: Callable[..., Any] | nnx.Module, *args: Any, **kwargs: Any
) -> tuple[Any, list[sdr.ConvTap]]:
    """Runs `fn` once and returns its output and the taps of its convolutions.

    One forward pass gives both, so training does not run the model twice.

    Args:
      fn: a function (e.g. a Linen `model.apply`) or an NNX module. An NNX
        module is updated as a direct call would update it (batch
        statistics, RNG counts, `sow`n values).
      *args: positional arguments of `fn` (for Linen, the variables first).
      **kwargs: keyword arguments of `fn`.

    Returns:
      `(output, taps)`, the taps a list of `sdr.ConvTap` in execution order;
      the output and its derivatives are `fn`'s (see `sdr.capture_convs`).
    """
    call, args, finish = _as_function(fn, args)
    output, taps = sdr.capture_convs(call, *args, **kwargs)
    return finish(output), taps


def layer_sdr(
    fn: Callable[..., Any] | nnx.Module, *args: Any, **kwargs: Any
) -> dict[str, jax.Array]:
    """The pair SDR matrix of every convolution `fn` executes.

    No model edits: the convolutions are found by interpreting the function's
    jaxpr (see `sdr.capture_convs`). Names are the Flax module paths where
    there are some (`"decoder/deconv1"`), in execution order.

    Args:
      fn: a function (Linen `model.apply`, raw `lax` code in any layout) or an
        NNX module.
      *args: positional arguments of `fn`.
      **kwargs: keyword arguments of `fn`.

    Returns:
      A dict from each convolution's name to its `(c_in // groups, c_out)`
      pair SDR matrix (`sdr.conv_sdr`; a convolution with input dilation s is
      measured on the dilated grid).

    References:
      Eq. (8) and Sec. 4 (Fig. 5) of Besserve et al., 2021.
    """
    _, taps = capture_layers(fn, *args, **kwargs)
    return {tap.name: tap.pair_sdr() for tap in taps}


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """Summary of one layer's pair SDRs.

    Attributes:
      name: the layer.
      pairs: the number of pairs.
      median: the median pair SDR.
      generic_share: the share of pairs with |log ρ| < log 1.25.
      quartiles: the 25 % and 75 % quantiles.
    """

    name: str
    pairs: int
    median: float
    generic_share: float
    quartiles: tuple[float, float]


GENERIC_BAND = 1.25


def summarize(sdrs: Mapping[str, jax.Array]) -> list[LayerSummary]:
    """Per-layer medians, quartiles and share of generic pairs.

    A pair is generic when $|\\log \\rho| < \\log 1.25$.

    Args:
      sdrs: the output of `layer_sdr`.

    Returns:
      One `LayerSummary` per layer, in the order of `sdrs`.
    """
    out = []
    for name, r in sdrs.items():
        r = np.asarray(r, np.float64).ravel()
        finite = r[np.isfinite(r) & (r > 0)]
        q25, q50, q75 = (
            np.quantile(finite, [0.25, 0.5, 0.75]) if finite.size else (math.nan,) * 3
        )
        share = (
            float(np.mean(np.abs(np.log(finite)) < np.log(GENERIC_BAND)))
            if finite.size
            else math.nan
        )
        out.append(
            LayerSummary(name, r.size, float(q50), share, (float(q25), float(q75)))
        )
    return out


def format_table(summaries: list[LayerSummary]) -> str:
    """A plain-text table of layer summaries, one row per layer.

    Args:
      summaries: from `summarize`.

    Returns:
      The table as a string.
    """
    width = max([len("layer")] + [len(s.name) for s in summaries])
    lines = [
        f"{'layer':<{width}}  {'pairs':>7}  {'median':>7}  {'q25':>7}  "
        f"{'q75':>7}  generic"
    ]
    for s in summaries:
        lines.append(
            f"{s.name:<{width}}  {s.pairs:>7d}  {s.median:>7.3f}  "
            f"{s.quartiles[0]:>7.3f}  {s.quartiles[1]:>7.3f}  "
            f"{100 * s.generic_share:6.1f}%"
        )
    return "\n".join(lines)
