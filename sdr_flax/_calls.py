"""A call of a function or NNX module, as a function of arrays.

`as_function` turns an NNX module into a function of its state; `Call` is
the static part of a call (the function, the argument structure, the
non-array arguments), hashable, so that a module-level `jax.jit` taking it as
a static argument compiles once per function, structure, shapes and static
values and is cached across calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx


def as_function(fn: Callable[..., Any] | nnx.Module, args):
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


@dataclasses.dataclass(frozen=True)
class Call:
    """The static part of a call: the static argument of a module-level jit."""

    fn: Any  # the function, or an NNX module's GraphDef
    is_nnx: bool
    treedef: Any  # of `(args, kwargs)`; for NNX, the state is the first arg
    static: tuple[tuple[int, type, Any], ...]  # (leaf index, type, value)
    dynamic: tuple[int, ...]  # the indices of the array leaves

    @classmethod
    def split(
        cls, fn: Callable[..., Any] | nnx.Module, args: tuple, kwargs: dict
    ) -> tuple[Call, list]:
        """The static part of `fn(*args, **kwargs)` and its array arguments.

        An NNX module is split into its GraphDef (static) and its state,
        passed as the first argument.
        """
        is_nnx = isinstance(fn, nnx.Module)
        if is_nnx:
            graphdef, state = nnx.split(fn)
            fn, args = graphdef, (state, *args)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        dynamic = [
            i for i, x in enumerate(leaves) if isinstance(x, jax.Array | np.ndarray)
        ]
        dynamic_set = set(dynamic)
        call = cls(
            fn=fn,
            is_nnx=is_nnx,
            treedef=treedef,
            static=tuple(
                (i, type(x), x) for i, x in enumerate(leaves) if i not in dynamic_set
            ),
            dynamic=tuple(dynamic),
        )
        return call, [leaves[i] for i in dynamic]

    def arguments(self, values) -> tuple[tuple, dict]:
        """`(args, kwargs)` with `values` for the array arguments."""
        leaves: list[Any] = [None] * (len(self.static) + len(self.dynamic))
        for i, _, x in self.static:
            leaves[i] = x
        for i, x in zip(self.dynamic, values, strict=True):
            leaves[i] = x
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def output_function(self) -> Callable[..., Any]:
        """The function of `arguments`' `(args, kwargs)` that returns the output.

        For an NNX module, a function of its state first; the state after the
        call is dropped (a measurement leaves the module as it was).
        """
        if not self.is_nnx:
            return self.fn
        graphdef = self.fn

        def call(state, *args, **kwargs):
            return nnx.merge(graphdef, state)(*args, **kwargs)

        return call
