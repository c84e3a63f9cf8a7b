"""The SDR of every conv layer of a Flax (Linen or NNX) or raw JAX generator."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import sdr
from sdr_flax._calls import Call, as_function


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
    call, args, finish = as_function(fn, args)
    output, taps = sdr.capture_convs(call, *args, **kwargs)
    return finish(output), taps


def layer_sdr(
    fn: Callable[..., Any] | nnx.Module,
    *args: Any,
    jit: bool = True,
    include_dc: bool = False,
    include_aliases: bool = True,
    **kwargs: Any,
) -> dict[str, jax.Array]:
    """The pair SDR matrix of every convolution `fn` executes.

    No model edits: the convolutions are found by interpreting the function's
    jaxpr (see `sdr.capture_convs`). Names are the Flax module paths where
    there are some (`"decoder/deconv1"`), in execution order.

    The capture and every layer's `sdr.conv_sdr` run in one `jax.jit`,
    compiled once per function, argument structure, array shapes and dtypes,
    and value of the non-array arguments (flags, strings), then cached:
    calling again with new values of the same shapes does not retrace. An NNX
    module is updated as a direct call would update it (see
    `capture_layers`).

    A convolution without an SDR (`sdr.ConvTap.unmeasurable`: a single-point
    grid, or a kernel larger than the grid it acts on) is left out, with one
    `UserWarning` per call naming it and saying why; list it with
    `summarize(..., unmeasured=...)`.

    Args:
      fn: a function (Linen `model.apply`, raw `lax` code in any layout) or an
        NNX module.
      *args: positional arguments of `fn`.
      jit: run under the cached `jax.jit` (the default); False captures and
        measures eagerly, op by op.
      include_dc: average over all frequencies, the zero one included
        (`sdr.conv_sdr`).
      include_aliases: on a transposed conv's dilated grid, keep the aliases
        of the zero frequency in the averages (`sdr.conv_sdr`).
      **kwargs: keyword arguments of `fn`; `jit`, `include_dc` and
        `include_aliases` are this function's.

    Returns:
      A dict from each measured convolution's name to its
      `(c_in // groups, c_out)` pair SDR matrix (`sdr.conv_sdr`; a
      convolution with input dilation s is measured on the dilated grid; a
      pair whose input channel has no power is NaN).

    Raises:
      ValueError: with `jit=True`, if a non-array leaf of the arguments is
        not hashable (pass it as an array, or use `jit=False`).

    References:
      Eq. (8) and Sec. 4 (Fig. 5) of Besserve et al., 2021.
    """
    options = (bool(include_dc), bool(include_aliases))
    if jit:
        sdrs, unmeasured, caught = _layer_sdr_jitted(fn, args, kwargs, options)
        for w in caught:  # the capture's own warnings, from the (cached) trace
            warnings.warn(w.message, w.category, stacklevel=2)
    else:
        _, taps = capture_layers(fn, *args, **kwargs)
        sdrs = {
            t.name: t.pair_sdr(include_dc=options[0], include_aliases=options[1])
            for t in taps
            if t.unmeasurable is None
        }
        unmeasured = {t.name: t.unmeasurable for t in taps if t.unmeasurable}
    for name, reason in unmeasured.items():
        warnings.warn(_unmeasured_message(name, reason), UserWarning, stacklevel=2)
    return sdrs


def _unmeasured_message(name: str, reason: str) -> str:
    return (
        f"sdr_flax: conv layer {name!r} has no SDR ({reason}); it is left out of "
        "the layer SDRs."
    )


@dataclasses.dataclass(frozen=True)
class _Trace:
    """What a trace of `_measure` learns that its compiled output cannot carry."""

    names: tuple[str, ...]  # the measured layers, in execution order
    unmeasured: dict[str, str]  # the others, with the reason
    caught: tuple[warnings.WarningMessage, ...]  # warnings raised while tracing


# Per (call, shapes): the trace's static findings. Bounded; an entry evicted
# while jit's own cache still holds the program is rebuilt by `jax.eval_shape`.
_TRACES: collections.OrderedDict[Any, _Trace] = collections.OrderedDict()
_TRACES_SIZE = 512


def _layer_sdr_jitted(fn, args, kwargs, options=(False, True)):
    """`layer_sdr` under the module-level jit: `(sdrs, unmeasured, warnings)`."""
    module = fn if isinstance(fn, nnx.Module) else None
    call, values = Call.split(fn, args, kwargs)
    try:
        hash(call)
    except TypeError as e:
        raise ValueError(
            "layer_sdr(jit=True) compiles once per function and non-array "
            f"argument, which must be hashable: {e}. Pass such an argument as "
            "an array, or call layer_sdr with jit=False."
        ) from None
    matrices, new_state = _measure(call, values, options)
    key = _trace_key(call, values)
    if key not in _TRACES:
        jax.eval_shape(functools.partial(_measure_impl, call), values, options)
    _TRACES.move_to_end(key)
    trace = _TRACES[key]
    if module is not None:
        nnx.update(module, new_state)
    return dict(zip(trace.names, matrices, strict=True)), trace.unmeasured, trace.caught


def _trace_key(call: Call, values) -> tuple:
    # Shapes decide which layers are measured; dtypes and weak types do not.
    return call, tuple(tuple(np.shape(v)) for v in values)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _measure(call: Call, values, options=(False, True)):
    return _measure_impl(call, values, options)


def _measure_impl(call: Call, values, options=(False, True)):
    """Captures and measures; records the trace's static findings in `_TRACES`.

    `options` are `(include_dc, include_aliases)` of `sdr.conv_sdr`.
    """
    args, kwargs = call.arguments(values)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if call.is_nnx:
            state, *args = args
            module = nnx.merge(call.fn, state)
            _, taps = capture_layers(module, *args, **kwargs)
            new_state = nnx.state(module)
        else:
            _, taps = capture_layers(call.fn, *args, **kwargs)
            new_state = None
    measured = [t for t in taps if t.unmeasurable is None]
    _TRACES[_trace_key(call, values)] = _Trace(
        names=tuple(t.name for t in measured),
        unmeasured={t.name: t.unmeasurable for t in taps if t.unmeasurable},
        caught=tuple(caught),
    )
    while len(_TRACES) > _TRACES_SIZE:
        _TRACES.popitem(last=False)
    include_dc, include_aliases = options
    sdrs = [
        t.pair_sdr(include_dc=include_dc, include_aliases=include_aliases)
        for t in measured
    ]
    return sdrs, new_state


GENERIC_BAND = 1.25
"""A pair is generic when its SDR is within this factor of 1: |log ρ| < log 1.25."""


def layer_stats(
    r: jax.Array | np.ndarray, *, edges: jax.Array | np.ndarray | None = None
) -> dict[str, jax.Array]:
    r"""Summary statistics of one layer's pair SDRs, as arrays (jit-friendly).

    The one implementation behind `summarize`, its table and the benchmark
    harness. A pair whose SDR is NaN (its input channel has no power: see
    `sdr.conv_sdr`) is undefined: it is counted in `undefined` and left out
    of every other statistic. A pair is generic when
    $|\log \rho| < \log 1.25$.

    Args:
      r: the layer's pair SDRs, any shape (e.g. a matrix from `layer_sdr`);
        an empty array stands for a layer without an SDR.
      edges: increasing histogram edges of $\log_2 \rho$; the defined pairs
        outside are counted in the end bins. None: no histogram.

    Returns:
      A dict of arrays: `pairs` (int, all pairs), `undefined` (int, the NaN
      pairs), `median`, `q25`, `q75` (the quantiles of the defined pairs,
      linearly interpolated), `generic_share` (the share of the defined pairs
      that are generic), and with `edges` the int `counts` of each bin. The
      quantiles and the share are NaN when no pair is defined.

    Raises:
      ValueError: if `edges` is not an increasing 1-D array of at least two
        edges.
    """
    r = jnp.ravel(jnp.asarray(r))
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(jnp.float32)
    defined = ~jnp.isnan(r)
    count = jnp.sum(defined)
    if r.size:
        q25, q50, q75 = jnp.nanquantile(r, jnp.asarray([0.25, 0.5, 0.75], r.dtype))
    else:
        q25 = q50 = q75 = jnp.full((), jnp.nan, r.dtype)
    generic = defined & (jnp.abs(jnp.log(jnp.where(defined, r, 1.0))) < _LOG_BAND)
    stats = {
        "pairs": jnp.asarray(r.size, jnp.int32),
        "undefined": (r.size - count).astype(jnp.int32),
        "median": q50,
        "q25": q25,
        "q75": q75,
        "generic_share": jnp.where(
            count > 0, jnp.sum(generic) / jnp.maximum(count, 1), jnp.nan
        ).astype(r.dtype),
    }
    if edges is not None:
        edges = _check_edges(edges)
        e = jnp.asarray(edges, r.dtype)
        log2 = jnp.clip(jnp.log2(jnp.where(defined, r, 1.0)), e[0], e[-1])
        counts, _ = jnp.histogram(log2, bins=e, weights=defined.astype(r.dtype))
        stats["counts"] = counts.astype(jnp.int32)
    return stats


_LOG_BAND = math.log(GENERIC_BAND)
_stacked_layer_stats = jax.jit(jax.vmap(layer_stats))


def _check_edges(edges):
    try:
        e = np.asarray(edges)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return edges  # traced: its shape is all there is to check
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
        raise ValueError(
            "`edges` must be an increasing 1-D array of at least two histogram "
            f"edges of log2 ρ; got {e.tolist() if e.size <= 8 else e.shape}."
        )
    return e


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """Summary of one layer's pair SDRs (see `layer_stats`).

    Attributes:
      name: the layer.
      pairs: the number of pairs (0 for a layer without an SDR).
      median: the median pair SDR of the defined pairs.
      generic_share: the share of defined pairs with |log ρ| < log 1.25.
      quartiles: the 25 % and 75 % quantiles of the defined pairs.
      undefined: the number of pairs without an SDR (NaN: their input channel
        has no power); they are left out of the median, quartiles and share.
      reason: why the layer has no SDR at all (`sdr.ConvTap.unmeasurable`),
        or None for a measured layer.
    """

    name: str
    pairs: int
    median: float
    generic_share: float
    quartiles: tuple[float, float]
    undefined: int = 0
    reason: str | None = None

    @property
    def measured(self) -> bool:
        """Whether the layer has an SDR (False for an unmeasured one)."""
        return self.reason is None


def summarize(
    sdrs: Mapping[str, jax.Array],
    *,
    unmeasured: Mapping[str, str] | None = None,
) -> list[LayerSummary]:
    """Per-layer medians, quartiles, share of generic pairs and undefined pairs.

    Built on `layer_stats`: NaN pairs are counted as undefined and left out
    of the statistics; a pair is generic when $|\\log \\rho| < \\log 1.25$.

    Args:
      sdrs: the output of `layer_sdr`.
      unmeasured: layers without an SDR, name → reason (from
        `sdr.ConvTap.unmeasurable`, e.g. of the taps of `capture_layers`);
        listed after the measured ones, with no pairs and NaN statistics.

    Returns:
      One `LayerSummary` per layer, in the order of `sdrs`, then of
      `unmeasured`.

    Raises:
      ValueError: if a layer is both in `sdrs` and in `unmeasured`.
    """
    unmeasured = dict(unmeasured or {})
    both = sorted(set(sdrs) & set(unmeasured))
    if both:
        raise ValueError(
            f"Layers {both} are both measured (in `sdrs`) and unmeasured; a "
            "layer is one or the other."
        )
    out = []
    flat = [np.ravel(np.asarray(r, np.float64)) for r in sdrs.values()]
    if flat:
        # One compiled `layer_stats` for all layers: rows padded with NaN to a
        # power-of-two length (the padding is taken off `undefined` below).
        size = max(16, 1 << (max(r.size for r in flat) - 1).bit_length())
        padded = np.full((len(flat), size), np.nan)
        for row, r in zip(padded, flat, strict=True):
            row[: r.size] = r
        stats = jax.device_get(_stacked_layer_stats(padded))
    for i, (name, r) in enumerate(zip(sdrs, flat, strict=True)):
        out.append(
            LayerSummary(
                name=name,
                pairs=r.size,
                median=float(stats["median"][i]),
                generic_share=float(stats["generic_share"][i]),
                quartiles=(float(stats["q25"][i]), float(stats["q75"][i])),
                undefined=int(stats["undefined"][i]) - (size - r.size),
            )
        )
    for name, reason in unmeasured.items():
        out.append(
            LayerSummary(
                name=name,
                pairs=0,
                median=math.nan,
                generic_share=math.nan,
                quartiles=(math.nan, math.nan),
                reason=str(reason),
            )
        )
    return out


def format_table(summaries: list[LayerSummary]) -> str:
    """A plain-text table of layer summaries, one row per layer.

    Columns: pairs, undefined pairs, median, quartiles, generic share; a
    layer without an SDR gets `no SDR:` and the reason instead.

    Args:
      summaries: from `summarize`.

    Returns:
      The table as a string.
    """
    width = max([len("layer")] + [len(s.name) for s in summaries])
    lines = [
        f"{'layer':<{width}}  {'pairs':>7}  {'undef':>6}  {'median':>7}  "
        f"{'q25':>7}  {'q75':>7}  generic"
    ]
    for s in summaries:
        if s.reason is not None:
            lines.append(f"{s.name:<{width}}  {'—':>7}  no SDR: {s.reason}")
            continue
        lines.append(
            f"{s.name:<{width}}  {s.pairs:>7d}  {s.undefined:>6d}  {s.median:>7.3f}  "
            f"{s.quartiles[0]:>7.3f}  {s.quartiles[1]:>7.3f}  "
            f"{100 * s.generic_share:6.1f}%"
        )
    return "\n".join(lines)
