"""What every level of the interpreter shares: binding an equation, finding
convolutions, the entries they record and the recorder of one capture."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax.extend.core as jex
import numpy as np
from jax import lax

from sdr._geometry import ConvGeometry
from sdr._origins import Param

JIT = ("jit", "pjit")
CALLS = ("closed_call", "core_call")
REMAT = ("remat2", "checkpoint")
CUSTOM = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")
CUSTOM_BODY = {"custom_vjp_call_jaxpr": "fun_jaxpr"}


def bind(primitive, params: dict, *args, ctx=None) -> list:
    """Binds a primitive as `jax.core.eval_jaxpr` does, always returning a list."""
    bind_params = primitive.get_bind_params(params)
    subfuns = ()
    if isinstance(bind_params, tuple):  # older JAX: (subfuns, params)
        subfuns, bind_params = bind_params
    with contextlib.nullcontext() if ctx is None else ctx.manager:
        out = primitive.bind(*subfuns, *args, **bind_params)
    return list(out) if primitive.multiple_results else [out]


def is_conv(eqn) -> bool:
    """Whether the equation is a convolution sdr measures (no batch groups)."""
    return (
        eqn.primitive is lax.conv_general_dilated_p
        and eqn.params["batch_group_count"] == 1
    )


def has_conv(jaxpr) -> bool:
    """Whether `jaxpr`, or a jaxpr nested in it, runs a convolution."""
    for eqn in jaxpr.eqns:
        if is_conv(eqn):
            return True
        if any(has_conv(sub) for sub in jex.jaxprs_in_params(eqn.params)):
            return True
    return False


@dataclasses.dataclass
class Entry:
    """A convolution seen while interpreting: static facts and its arrays."""

    name: str
    maps: Any
    kernel: Any
    geometry: ConvGeometry
    window_strides: tuple[int, ...]
    origin: Any
    kernel_axes: tuple[int, ...]

    @property
    def arrays(self) -> list:
        """The entry's arrays: maps, kernel, then the kernel's index operands."""
        values = self.origin.values if isinstance(self.origin, Param) else ()
        return [self.maps, self.kernel, *values]

    def with_arrays(self, arrays, **changes) -> Entry:
        """This entry with new arrays (in the order of `arrays`) and `changes`."""
        maps, kernel, *values = arrays
        origin = changes.pop("origin", self.origin)
        if isinstance(origin, Param):
            origin = dataclasses.replace(origin, values=tuple(values))
        return dataclasses.replace(
            self, maps=maps, kernel=kernel, origin=origin, **changes
        )


class Recorder:
    """Names, edits and warnings shared by every level of one capture."""

    def __init__(self, edits=None):
        self.edits: dict[str, Callable] = dict(edits or {})
        self.edited: set[str] = set()
        self.counts: dict[str, int] = {}
        self.warnings: list[str] = []

    def unique(self, name: str) -> str:
        """`name`, with `#2`, `#3`… when it was seen before in this capture."""
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        return name if count == 1 else f"{name}#{count}"

    def edit(self, name: str, lhs, spec):
        """The input maps `lhs` (in the layout `spec`) after the edit of `name`."""
        edit = self.edits.get(name)
        if edit is None:
            return lhs
        self.edited.add(name)
        to_last = (spec[0], *spec[2:], spec[1])
        before = lhs.transpose(to_last)
        maps = edit(before)
        if maps.shape != before.shape:
            raise ValueError(
                f"The edit of conv layer {name!r} changed the maps' shape from "
                f"{before.shape} to {maps.shape}."
            )
        return maps.astype(lhs.dtype).transpose(np.argsort(to_last))


def conv_names(eqn) -> list[str]:
    """The names of the convolutions inside a higher-order equation's bodies."""
    out = []
    for sub in jex.jaxprs_in_params(eqn.params):
        for e in sub.eqns:
            if is_conv(e):
                out.append(str(e.source_info.name_stack) or "conv")
            out.extend(conv_names(e))
    return out


def emit_warnings(rec: Recorder, caller: str) -> None:
    """Issues each of the capture's warnings once, prefixed with `caller`.

    Called by `_taps._run` under `capture_convs` or an edited function: the
    warnings point at the line that called those (four frames up).
    """
    for message in dict.fromkeys(rec.warnings):
        warnings.warn(f"{caller}: {message}", stacklevel=4)
