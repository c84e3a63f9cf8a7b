"""Higher-order primitives whose bodies run a convolution, bound again around
their bodies rewritten to also return the convolutions' input maps and kernels.

- `jit`/`pjit`, `closed_call`, `checkpoint`/`remat`: extra outputs;
- `scan`: extra stacked outputs, one tap per iteration;
- `cond`/`switch`: every branch returns every branch's taps, zeros for the
  branches not taken;
- `while`: extra carries, so the last iteration's taps;
- `custom_jvp_call`/`custom_vjp_call`: bound unchanged; the taps come from a
  second evaluation of the primal body (its derivatives are the standard
  ones; the function's own are unchanged).

Any other higher-order primitive is bound unchanged, with a warning naming
the convolutions it hides. A body is evaluated by the interpreter that meets
the primitive (`sdr._interpret.interpret`), passed in as `interpret`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from sdr import _origins
from sdr._equations import (
    CALLS,
    CUSTOM,
    CUSTOM_BODY,
    JIT,
    REMAT,
    Entry,
    Recorder,
    bind,
    conv_names,
)
from sdr._origins import COMPUTED

# `interpret(jaxpr, consts, args, origins, rec, scope, entries)`: the
# outputs and their origins, with an entry appended per convolution.
Interpret = Callable[..., tuple[list, list]]


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


def _retrace(closed, in_avals, in_origins, rec, scope, interpret: Interpret) -> _Traced:
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
    # The debug info names one argument per input: unnamed ones for the
    # constants (as JAX's own `convert_constvars_jaxpr`). Dropping it instead
    # makes JAX warn that the jaxpr is missing a DebugInfo.
    info = j.debug_info
    if getattr(info, "arg_names", None) is not None:
        info = info._replace(arg_names=("",) * len(j.constvars) + (*info.arg_names,))
    opened = j.replace(constvars=[], invars=[*j.constvars, *j.invars], debug_info=info)
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


def run(
    eqn, invals, inorigins, rec: Recorder, scope: str, entries, interpret: Interpret
):
    """Binds a higher-order equation whose body runs a convolution.

    Returns its outputs and their origins; appends an `Entry` per captured
    convolution to `entries`.
    """
    name = eqn.primitive.name
    if name in JIT or name in CALLS or name in REMAT:
        return _call(eqn, invals, inorigins, rec, scope, entries, interpret)
    if name == "scan":
        return _scan(eqn, invals, inorigins, rec, scope, entries, interpret)
    if name == "cond":
        return _cond(eqn, invals, inorigins, rec, scope, entries, interpret)
    if name == "while":
        return _while(eqn, invals, inorigins, rec, scope, entries, interpret)
    outvals = bind(eqn.primitive, eqn.params, *invals)
    outorigins = [COMPUTED if any(inorigins) else None] * len(outvals)
    if name in CUSTOM:
        # The function's own outputs and derivative rules stay as they are;
        # the taps come from evaluating the primal body a second time.
        body = eqn.params[CUSTOM_BODY.get(name, "call_jaxpr")]
        n = len(body.jaxpr.invars)
        interpret(
            body.jaxpr, body.consts, invals[-n:], inorigins[-n:], rec, scope, entries
        )
        return outvals, outorigins
    convs = conv_names(eqn)
    rec.warnings.append(
        f"{len(convs)} convolution(s) {convs} inside `{name}` (at "
        f"{scope or 'top level'}) "
        f"are run but not captured: sdr cannot look inside `{name}`. Call the "
        "layers outside it to measure or regularise them."
    )
    return outvals, outorigins


def _call(eqn, invals, inorigins, rec, scope, entries, interpret):
    """`jit`, `closed_call` and `checkpoint`: the body with extra outputs."""
    name = eqn.primitive.name
    params = dict(eqn.params)
    key = "call_jaxpr" if name in CALLS else "jaxpr"
    sub = params[key]
    closed = sub if isinstance(sub, jex.ClosedJaxpr) else jex.ClosedJaxpr(sub, [])
    avals = [v.aval for v in closed.jaxpr.invars]
    traced = _retrace(closed, avals, inorigins, rec, scope, interpret)
    k, n_tap = len(traced.consts), len(traced.tap_avals)
    new = traced.jaxpr
    params[key] = new if isinstance(sub, jex.ClosedJaxpr) else new.jaxpr
    if name in JIT:
        unspecified = _unspecified_sharding()
        params["in_shardings"] = (unspecified,) * k + params["in_shardings"]
        params["out_shardings"] = params["out_shardings"] + (unspecified,) * n_tap
        params["in_layouts"] = (None,) * k + params["in_layouts"]
        params["out_layouts"] = params["out_layouts"] + (None,) * n_tap
        params["donated_invars"] = (False,) * k + params["donated_invars"]
    outvals = bind(eqn.primitive, params, *traced.consts, *invals)
    entries.extend(_tap_values(traced, outvals))
    return list(outvals[: traced.n_out]), traced.out_origins


def _scan(eqn, invals, inorigins, rec, scope, entries, interpret):
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
    traced = _retrace(closed, avals, body_origins, rec, scope, interpret)
    k = len(traced.consts)
    params["jaxpr"] = traced.jaxpr
    params["num_consts"] = n_consts + k
    if "linear" in params:
        params["linear"] = (False,) * k + tuple(params["linear"])
    outvals = bind(eqn.primitive, params, *traced.consts, *invals)
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


def _cond(eqn, invals, inorigins, rec, scope, entries, interpret):
    """`cond`: each branch returns all branches' taps, zeros where not taken."""
    params = dict(eqn.params)
    branches = params["branches"]
    avals = [v.aval for v in branches[0].jaxpr.invars]
    traced = [
        _retrace(b, avals, inorigins[1:], rec, f"{scope}/branch{i}", interpret)
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
    outvals = bind(eqn.primitive, params, invals[0], *all_consts, *invals[1:])
    n_out = traced[0].n_out
    entries.extend(_unflatten([e for t in traced for e in t.entries], outvals[n_out:]))
    out_origins = [
        COMPUTED if any(t.out_origins[j] is not None for t in traced) else None
        for j in range(n_out)
    ]
    return list(outvals[:n_out]), out_origins


def _while(eqn, invals, inorigins, rec, scope, entries, interpret):
    """`while`: the last iteration's taps, carried."""
    params = dict(eqn.params)
    body, cond = params["body_jaxpr"], params["cond_jaxpr"]
    nb, nc = params["body_nconsts"], params["cond_nconsts"]
    carry = invals[nc + nb :]
    avals = [v.aval for v in body.jaxpr.invars]
    n_carry = len(carry)
    body_origins = [*inorigins[nc : nc + nb], *[COMPUTED] * n_carry]
    counts = dict(rec.counts)
    probe = _retrace(body, avals, body_origins, Recorder(rec.edits), scope, interpret)
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
    outvals = bind(
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
