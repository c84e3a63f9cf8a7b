"""Where a value of a jaxpr comes from: a parameter, through structural ops.

A convolution's kernel is "a parameter" when it is an input leaf of the
captured function, possibly flipped, transposed, reshaped, sliced or cast on
its way to the convolution. Those operations are linear and move each entry
at most once, so an update of the kernel maps back to the parameter through
their transpose (`jax.vjp`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax import lax

# Linear primitives that move (or drop) entries of their first operand and
# take no other array operand: a kernel reached through them is still its
# parameter, rearranged.
_STRUCTURAL = frozenset(
    {
        "transpose",
        "rev",
        "reshape",
        "squeeze",
        "expand_dims",
        "slice",
        "convert_element_type",
        "copy",
        "copy_p",
        "reduce_precision",
        "broadcast_in_dim",
    }
)


@dataclasses.dataclass(frozen=True)
class ParamOp:
    """One structural operation between a parameter and a conv's kernel.

    Calling it applies the operation (`op(x)`); the `jax.vjp` of a chain of
    them maps a kernel update back onto the parameter.

    Attributes:
      primitive: the primitive's name, or `"index"` for the slice a `scan`
        iteration takes of its stacked inputs.
      params: the primitive's parameters as sorted `(name, value)` pairs; for
        `"index"`, `(("axis", a), ("i", i))`.
      n_indices: how many traced index operands the operation takes after
        the array (a `dynamic_slice` by a loop counter); their values travel
        with the tap (`sdr.ConvTap.param_indices`).
    """

    primitive: str
    params: tuple[tuple[str, Any], ...]
    n_indices: int = 0
    _bind: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __call__(self, x: jax.Array, *indices: jax.Array) -> jax.Array:
        params = dict(self.params)
        if self.primitive == "index":
            return lax.index_in_dim(x, params["i"], params["axis"], keepdims=False)
        return self._bind.bind(x, *indices, **params)


@dataclasses.dataclass(frozen=True)
class Param:
    """A value that is input leaf `path` after the structural `ops`.

    `values` are the traced index operands the ops take, in order.
    """

    path: str
    ops: tuple[ParamOp, ...] = ()
    values: tuple = dataclasses.field(default=(), compare=False)

    def then(self, op: ParamOp, values=()) -> Param:
        return Param(self.path, (*self.ops, op), (*self.values, *values))


# Origin of a value: a `Param`, `COMPUTED` (depends on the inputs otherwise)
# or None (a constant of the function: depends on no input).
COMPUTED = "computed"


def _frozen(params: dict) -> tuple[tuple[str, Any], ...] | None:
    items = tuple(sorted(params.items()))
    try:
        hash(items)
    except TypeError:
        return None
    return items


def propagate(eqn, in_origins: list, invals=None) -> list:
    """The origins of a first-order equation's outputs.

    With the input values `invals`, a `dynamic_slice` of a parameter by
    scalar indices (e.g. a loop counter) stays tied to the parameter.
    """
    first = in_origins[0] if in_origins else None
    others = in_origins[1:]
    name = eqn.primitive.name
    if (
        invals is not None
        and isinstance(first, Param)
        and name == "dynamic_slice"
        and all(v.aval.ndim == 0 for v in eqn.invars[1:])
    ):
        params = _frozen(eqn.params)
        if params is not None:
            op = ParamOp(name, params, n_indices=len(others), _bind=eqn.primitive)
            return [first.then(op, tuple(invals[1:]))]
    if (
        isinstance(first, Param)
        and name in _STRUCTURAL
        and not eqn.primitive.multiple_results
        and all(o is None for o in others)
        and _moves_entries(eqn)
    ):
        params = _frozen(eqn.params)
        if params is not None:
            return [first.then(ParamOp(name, params, _bind=eqn.primitive))]
    if any(o is not None for o in in_origins):
        return [COMPUTED] * len(eqn.outvars)
    return [None] * len(eqn.outvars)


def _moves_entries(eqn) -> bool:
    """Whether the equation only moves or drops entries (no copies)."""
    if eqn.primitive.name != "broadcast_in_dim":
        return True
    # A broadcast that only adds unit axes (expand_dims) copies nothing.
    return eqn.invars[0].aval.size == eqn.outvars[0].aval.size


def scan_slice(origin, level: object):
    """The origin of one iteration's slice of a scanned input."""
    if isinstance(origin, Param):
        return origin.then(ParamOp("index", (("axis", 0), ("i", level))))
    return origin


def at_iteration(origin, level: object, i: int):
    """Replaces the placeholder of scan `level` by iteration `i`."""
    if not isinstance(origin, Param):
        return origin
    ops = tuple(
        ParamOp("index", (("axis", 0), ("i", i)))
        if op.primitive == "index" and dict(op.params)["i"] is level
        else op
        for op in origin.ops
    )
    return Param(origin.path, ops, origin.values)
