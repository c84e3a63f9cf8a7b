"""An interpreter that runs a jaxpr as it is and returns its convolutions' inputs.

Every equation is bound again with its own parameters, so the function's
outputs, derivatives (custom rules included), remat and shardings are the
ones it has uncaptured. A higher-order primitive whose body runs a
convolution is bound again around its body rewritten to also return the
convolution's input map and kernel:

- `jit`/`pjit`, `closed_call`, `checkpoint`/`remat`: extra outputs;
- `scan`: extra stacked outputs, one tap per iteration;
- `cond`/`switch`: every branch returns every branch's taps, zeros for the
  branches not taken;
- `while`: extra carries, so the last iteration's taps;
- `custom_jvp_call`/`custom_vjp_call`: bound unchanged; the taps come from a
  second evaluation of the primal body (its derivatives are the standard
  ones; the function's own are unchanged).

Any other higher-order primitive is bound unchanged, with a warning naming
the convolutions it hides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from sdr import _origins
from sdr._conv import ConvGeometry
from sdr._origins import COMPUTED, Param

_JIT = ("jit", "pjit")
_CALLS = ("closed_call", "core_call")
_REMAT = ("remat2", "checkpoint")
_CUSTOM = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")
_CUSTOM_BODY = {"custom_vjp_call_jaxpr": "fun_jaxpr"}


def _bind(primitive, params: dict, *args, ctx=None) -> list:
    """Binds a primitive as `jax.core.eval_jaxpr` does, always returning a list."""
    bind_params = primitive.get_bind_params(params)
    subfuns = ()
    if isinstance(bind_params, tuple):  # older JAX: (subfuns, params)
        subfuns, bind_params = bind_params
    with contextlib.nullcontext() if ctx is None else ctx.manager:
        out = primitive.bind(*subfuns, *args, **bind_params)
    return list(out) if primitive.multiple_results else [out]


def _is_conv(eqn) -> bool:
    return (
        eqn.primitive is lax.conv_general_dilated_p
        and eqn.params["batch_group_count"] == 1
    )


def _has_conv(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if _is_conv(eqn):
            return True
        if any(_has_conv(sub) for sub in jex.jaxprs_in_params(eqn.params)):
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
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        return name if count == 1 else f"{name}#{count}"

    def edit(self, name: str, lhs, spec):
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
    (out,) = _bind(eqn.primitive, params, lhs, invals[1])
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
        if _is_conv(eqn):
            outvals = [_conv(eqn, invals, inorigins, rec, scope, entries)]
            outorigins = [COMPUTED if any(inorigins) else None]
        elif any(_has_conv(sub) for sub in jex.jaxprs_in_params(eqn.params)):
            outvals, outorigins = _higher_order(
                eqn, invals, inorigins, rec, _scope(scope, eqn), entries
            )
        else:
            outvals = _bind(eqn.primitive, eqn.params, *invals, ctx=eqn.ctx)
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
    if name in _JIT or name in _CALLS:
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


# --- Rewriting bodies ------------------------------------------------------


def _spec(aval) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


@dataclasses.dataclass
class _Traced:
    """A body rewritten to also return its taps' arrays."""

    jaxpr: jex.ClosedJaxpr  # no consts: they are the leading `consts` inputs
    consts: list
    entries: list[Entry]  # arrays are placeholders; see `tap_avals`
    out_origins: list
    n_out: int  # the body's own outputs, before the taps'

    @property
    def tap_avals(self) -> list:
        return [v.aval for v in self.jaxpr.jaxpr.outvars[self.n_out :]]


def _retrace(closed, in_avals, in_origins, rec, scope) -> _Traced:
    """Traces `closed` through the interpreter with the taps as extra outputs."""
    entries: list[Entry] = []
    info: dict[str, Any] = {}

    def body(*args):
        outs, origins = interpret(
            closed.jaxpr, closed.consts, args, in_origins, rec, scope, entries
        )
        info["out_origins"], info["n_out"] = origins, len(outs)
        taps = [x for e in entries for x in e.arrays]
        return [*outs, *taps]

    traced = jax.make_jaxpr(body)(*map(_spec, in_avals))
    jaxpr, consts = _hoist(traced)
    return _Traced(jaxpr, consts, entries, info["out_origins"], info["n_out"])


def _hoist(closed: jex.ClosedJaxpr) -> tuple[jex.ClosedJaxpr, list]:
    """Turns a closed jaxpr's constants into leading inputs."""
    j = closed.jaxpr
    if not j.constvars:
        return closed, []
    opened = j.replace(constvars=[], invars=[*j.constvars, *j.invars], debug_info=None)
    return jex.ClosedJaxpr(opened, []), list(closed.consts)


def _unflatten(entries: list[Entry], values) -> list[Entry]:
    """`entries` with their arrays taken in turn from `values`."""
    out, i = [], 0
    for e in entries:
        n = len(e.arrays)
        out.append(e.with_arrays(values[i : i + n]))
        i += n
    return out


def _tap_values(traced: _Traced, outvals) -> list[Entry]:
    """The traced body's entries with the equation's extra outputs as arrays."""
    return _unflatten(traced.entries, outvals[traced.n_out :])


_UNSPECIFIED = []


def _unspecified_sharding():
    """The `jit` parameter value meaning "no sharding given", read off JAX."""
    if not _UNSPECIFIED:
        eqn = jax.make_jaxpr(jax.jit(lambda x: x))(0.0).eqns[0]
        _UNSPECIFIED.append(eqn.params["out_shardings"][0])
    return _UNSPECIFIED[0]


def _higher_order(eqn, invals, inorigins, rec: Recorder, scope: str, entries):
    name = eqn.primitive.name
    if name in _JIT or name in _CALLS or name in _REMAT:
        return _call(eqn, invals, inorigins, rec, scope, entries)
    if name == "scan":
        return _scan(eqn, invals, inorigins, rec, scope, entries)
    if name == "cond":
        return _cond(eqn, invals, inorigins, rec, scope, entries)
    if name == "while":
        return _while(eqn, invals, inorigins, rec, scope, entries)
    outvals = _bind(eqn.primitive, eqn.params, *invals)
    outorigins = [COMPUTED if any(inorigins) else None] * len(outvals)
    if name in _CUSTOM:
        # The function's own outputs and derivative rules stay as they are;
        # the taps come from evaluating the primal body a second time.
        body = eqn.params[_CUSTOM_BODY.get(name, "call_jaxpr")]
        n = len(body.jaxpr.invars)
        interpret(
            body.jaxpr, body.consts, invals[-n:], inorigins[-n:], rec, scope, entries
        )
        return outvals, outorigins
    convs = _conv_names(eqn)
    rec.warnings.append(
        f"{len(convs)} convolution(s) inside `{name}` (at {scope or 'top level'}) "
        f"are run but not captured: sdr cannot look inside `{name}`. Call the "
        "layers outside it to measure or regularise them."
    )
    return outvals, outorigins


def _conv_names(eqn) -> list[str]:
    out = []
    for sub in jex.jaxprs_in_params(eqn.params):
        for e in sub.eqns:
            if _is_conv(e):
                out.append(str(e.source_info.name_stack) or "conv")
            out.extend(_conv_names(e))
    return out


def _call(eqn, invals, inorigins, rec, scope, entries):
    """`jit`, `closed_call` and `checkpoint`: the body with extra outputs."""
    name = eqn.primitive.name
    params = dict(eqn.params)
    key = "call_jaxpr" if name in _CALLS else "jaxpr"
    sub = params[key]
    closed = sub if isinstance(sub, jex.ClosedJaxpr) else jex.ClosedJaxpr(sub, [])
    avals = [v.aval for v in closed.jaxpr.invars]
    traced = _retrace(closed, avals, inorigins, rec, scope)
    k, n_tap = len(traced.consts), len(traced.tap_avals)
    new = traced.jaxpr
    params[key] = new if isinstance(sub, jex.ClosedJaxpr) else new.jaxpr
    if name in _JIT:
        unspecified = _unspecified_sharding()
        params["in_shardings"] = (unspecified,) * k + params["in_shardings"]
        params["out_shardings"] = params["out_shardings"] + (unspecified,) * n_tap
        params["in_layouts"] = (None,) * k + params["in_layouts"]
        params["out_layouts"] = params["out_layouts"] + (None,) * n_tap
        params["donated_invars"] = (False,) * k + params["donated_invars"]
    outvals = _bind(eqn.primitive, params, *traced.consts, *invals)
    entries.extend(_tap_values(traced, outvals))
    return list(outvals[: traced.n_out]), traced.out_origins


def _scan(eqn, invals, inorigins, rec, scope, entries):
    """`scan`: the taps of each iteration as extra stacked outputs."""
    params = dict(eqn.params)
    closed = params["jaxpr"]
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    level = object()
    body_origins = [
        *inorigins[: n_consts + n_carry],
        *(_origins.scan_slice(o, level) for o in inorigins[n_consts + n_carry :]),
    ]
    avals = [v.aval for v in closed.jaxpr.invars]
    traced = _retrace(closed, avals, body_origins, rec, scope)
    k = len(traced.consts)
    params["jaxpr"] = traced.jaxpr
    params["num_consts"] = n_consts + k
    if "linear" in params:
        params["linear"] = (False,) * k + tuple(params["linear"])
    outvals = _bind(eqn.primitive, params, *traced.consts, *invals)
    stacked = _tap_values(traced, outvals)
    for i in range(params["length"]):  # execution order: iteration by iteration
        for e in stacked:
            entries.append(
                e.with_arrays(
                    [a[i] for a in e.arrays],
                    name=f"{e.name}[{i}]",
                    origin=_origins.at_iteration(e.origin, level, i),
                )
            )
    out_origins = [COMPUTED if o is not None else None for o in traced.out_origins]
    return list(outvals[: traced.n_out]), out_origins


def _cond(eqn, invals, inorigins, rec, scope, entries):
    """`cond`: each branch returns all branches' taps, zeros where not taken."""
    params = dict(eqn.params)
    branches = params["branches"]
    avals = [v.aval for v in branches[0].jaxpr.invars]
    traced = [
        _retrace(b, avals, inorigins[1:], rec, f"{scope}/branch{i}")
        for i, b in enumerate(branches)
    ]
    all_consts = [c for t in traced for c in t.consts]
    tap_avals = [a for t in traced for a in t.tap_avals]
    const_avals = [jax.ShapeDtypeStruct(np.shape(c), c.dtype) for c in all_consts]

    def branch(b: int):
        t = traced[b]
        start = sum(len(u.consts) for u in traced[:b])
        before = sum(len(u.tap_avals) for u in traced[:b])
        after = len(tap_avals) - before - len(t.tap_avals)
        run = jex.jaxpr_as_fun(t.jaxpr)

        def fn(*args):
            consts, ops = args[: len(all_consts)], args[len(all_consts) :]
            outs = run(*consts[start : start + len(t.consts)], *ops)
            zeros = [jnp.zeros(a.shape, a.dtype) for a in tap_avals]
            return [
                *outs[: t.n_out],
                *zeros[:before],
                *outs[t.n_out :],
                *zeros[len(zeros) - after :],
            ]

        closed = jax.make_jaxpr(fn)(*const_avals, *map(_spec, avals))
        opened, consts = _hoist(closed)
        if consts:  # zeros of non-scalar shapes are computed, not constants
            raise NotImplementedError("sdr: a cond branch captured a constant.")
        return opened

    params["branches"] = tuple(branch(b) for b in range(len(branches)))
    outvals = _bind(eqn.primitive, params, invals[0], *all_consts, *invals[1:])
    n_out = traced[0].n_out
    entries.extend(_unflatten([e for t in traced for e in t.entries], outvals[n_out:]))
    out_origins = [
        COMPUTED if any(t.out_origins[j] is not None for t in traced) else None
        for j in range(n_out)
    ]
    return list(outvals[:n_out]), out_origins


def _while(eqn, invals, inorigins, rec, scope, entries):
    """`while`: the last iteration's taps, carried."""
    params = dict(eqn.params)
    body, cond = params["body_jaxpr"], params["cond_jaxpr"]
    nb, nc = params["body_nconsts"], params["cond_nconsts"]
    carry = invals[nc + nb :]
    avals = [v.aval for v in body.jaxpr.invars]
    n_carry = len(carry)
    body_origins = [*inorigins[nc : nc + nb], *[COMPUTED] * n_carry]
    counts = dict(rec.counts)
    probe = _retrace(body, avals, body_origins, Recorder(rec.edits), scope)
    rec.counts = counts
    tap_avals = probe.tap_avals
    entries_out: list[Entry] = []

    def new_body(*args):
        outs, _ = interpret(
            body.jaxpr,
            body.consts,
            args[: nb + n_carry],
            body_origins,
            rec,
            scope,
            entries_out,
        )
        return [*outs, *(x for e in entries_out for x in e.arrays)]

    body_avals = [*map(_spec, avals), *map(_spec, tap_avals)]
    new_body_jaxpr, body_consts = _hoist(jax.make_jaxpr(new_body)(*body_avals))
    run_cond = jex.jaxpr_as_fun(cond)

    def new_cond(*args):
        return run_cond(*args[: nc + n_carry])

    cond_avals = [*(_spec(v.aval) for v in cond.jaxpr.invars), *map(_spec, tap_avals)]
    new_cond_jaxpr, cond_consts = _hoist(jax.make_jaxpr(new_cond)(*cond_avals))
    params["body_jaxpr"] = new_body_jaxpr
    params["body_nconsts"] = nb + len(body_consts)
    params["cond_jaxpr"] = new_cond_jaxpr
    params["cond_nconsts"] = nc + len(cond_consts)
    init = [jnp.zeros(a.shape, a.dtype) for a in tap_avals]
    outvals = _bind(
        eqn.primitive,
        params,
        *cond_consts,
        *invals[:nc],
        *body_consts,
        *invals[nc : nc + nb],
        *carry,
        *init,
    )
    for e in _unflatten(entries_out, outvals[n_carry:]):
        entries.append(dataclasses.replace(e, name=f"{e.name}[last]"))
    if entries_out:
        rec.warnings.append(
            f"conv layer(s) {[e.name for e in entries_out]} run inside a "
            "`while_loop`: only the last iteration's maps are captured. Use "
            "`lax.fori_loop` with static bounds or `lax.scan` to capture every "
            "iteration."
        )
    return list(outvals[:n_carry]), [COMPUTED if any(inorigins) else None] * n_carry


def emit_warnings(rec: Recorder) -> None:
    for message in dict.fromkeys(rec.warnings):
        warnings.warn(f"sdr.capture_convs: {message}", stacklevel=3)
