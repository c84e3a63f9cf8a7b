"""An interpreter that runs a jaxpr as it is and returns its convolutions' inputs.

Every equation is bound again with its own parameters, so the function's
outputs, derivatives (custom rules included), remat and shardings are the
ones it has uncaptured. A higher-order primitive whose body runs a
convolution is bound again around its body rewritten to also return the
convolution's input map and kernel (`sdr._higher_order`).
"""

from __future__ import annotations

from typing import Any

import jax.extend.core as jex

from sdr import _higher_order, _origins
from sdr._equations import CALLS, JIT, Entry, Recorder, bind, has_conv, is_conv
from sdr._geometry import ConvGeometry
from sdr._origins import COMPUTED, Param


def _layer_name(origin) -> str | None:
    if not isinstance(origin, Param):
        return None
    parts = origin.path.split("/")
    if len(parts) > 1 and parts[-1] in ("kernel", "weight", "w"):
        parts = parts[:-1]
    return "/".join(parts)


def _scope(scope: str, eqn) -> str:
    return "/".join(filter(None, (scope, str(eqn.source_info.name_stack))))


def _conv(eqn, invals, inorigins, rec: Recorder, scope: str, entries: list):
    params = eqn.params
    dn = params["dimension_numbers"]
    name = rec.unique(
        _layer_name(inorigins[1]) or _scope(scope, eqn) or f"conv{len(entries)}"
    )
    lhs = rec.edit(name, invals[0], dn.lhs_spec)
    (out,) = bind(eqn.primitive, params, lhs, invals[1])
    lhs_spec, rhs_spec = dn.lhs_spec, dn.rhs_spec
    kernel_axes = (*rhs_spec[2:], rhs_spec[1], rhs_spec[0])
    entries.append(
        Entry(
            name=name,
            maps=lhs.transpose(lhs_spec[0], *lhs_spec[2:], lhs_spec[1]),
            kernel=invals[1].transpose(kernel_axes),
            geometry=ConvGeometry(
                input_dilation=tuple(params["lhs_dilation"]),
                kernel_dilation=tuple(params["rhs_dilation"]),
                feature_group_count=params["feature_group_count"],
            ),
            window_strides=tuple(params["window_strides"]),
            origin=inorigins[1],
            kernel_axes=tuple(kernel_axes),
        )
    )
    return out


def interpret(jaxpr, consts, args, origins, rec: Recorder, scope: str, entries):
    """Evaluates `jaxpr`, appending an `Entry` per convolution to `entries`.

    Returns the outputs and their origins.
    """
    env: dict[Any, Any] = {}
    origin: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    def read_origin(v):
        return None if isinstance(v, jex.Literal) else origin.get(v)

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x, o in zip(jaxpr.invars, args, origins, strict=True):
        env[v], origin[v] = x, o

    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inorigins = [read_origin(v) for v in eqn.invars]
        if is_conv(eqn):
            outvals = [_conv(eqn, invals, inorigins, rec, scope, entries)]
            outorigins = [COMPUTED if any(inorigins) else None]
        elif any(has_conv(sub) for sub in jex.jaxprs_in_params(eqn.params)):
            outvals, outorigins = _higher_order.run(
                eqn, invals, inorigins, rec, _scope(scope, eqn), entries, interpret
            )
        else:
            outvals = bind(eqn.primitive, eqn.params, *invals, ctx=eqn.ctx)
            outorigins = _static_origins(eqn, inorigins, invals)
        for v, x, o in zip(eqn.outvars, outvals, outorigins, strict=True):
            env[v], origin[v] = x, o
    return [read(v) for v in jaxpr.outvars], [read_origin(v) for v in jaxpr.outvars]


def _static_origins(eqn, inorigins, invals=None):
    """Origins through an equation that runs no convolution.

    With the input values, a first-order equation may also tie a kernel to
    its parameter through traced indices (see `_origins.propagate`).
    """
    name = eqn.primitive.name
    if name in JIT or name in CALLS:
        sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        sub = sub.jaxpr if isinstance(sub, jex.ClosedJaxpr) else sub
        return _walk_origins(sub, inorigins[len(inorigins) - len(sub.invars) :])
    if list(jex.jaxprs_in_params(eqn.params)) and any(o is not None for o in inorigins):
        return [COMPUTED] * len(eqn.outvars)
    return _origins.propagate(eqn, inorigins, invals)


def _walk_origins(jaxpr, origins):
    origin = dict(zip(jaxpr.invars, origins, strict=True))

    def read(v):
        return None if isinstance(v, jex.Literal) else origin.get(v)

    for eqn in jaxpr.eqns:
        outs = _static_origins(eqn, [read(v) for v in eqn.invars])
        origin.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]
