"""Taps: capture every convolution a JAX function runs, by interpreting its jaxpr.

No model edits are needed: the function is traced to a jaxpr and evaluated
equation by equation; each `conv_general_dilated` records its input map, its
kernel and its geometry. Calls are followed into nested `jit`, `remat`
(checkpoint) and custom-derivative functions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import numpy as np
from jax import lax

from sdr._conv import conv_sdr

# Primitives whose sub-jaxpr takes exactly the equation's inputs.
_CALL_PARAMS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}
# Primitives through which a kernel is still "the same parameter".
_PASS_THROUGH = {"convert_element_type", "copy", "copy_p", "reduce_precision"}


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["maps", "kernel"],
    meta_fields=[
        "name",
        "lhs_dilation",
        "kernel_dilation",
        "window_strides",
        "feature_group_count",
        "param_path",
        "kernel_axes",
        "param_ops",
    ],
)
@dataclasses.dataclass(frozen=True)
class ConvTap:
    """One convolution a function executed, in the layout `conv_sdr` takes.

    A pytree (its arrays are `maps` and `kernel`), so taps can leave `jit`,
    `grad(has_aux=True)` and other transformations.

    Attributes:
      name: readable unique name: the parameter's module path when the kernel
        is a parameter leaf of the inputs, else the Flax module path of the
        call (its name stack), else `conv<k>`; `#2`, `#3`… for repeats.
      maps: the input map, channels last, `(n, *spatial, c_in)`.
      kernel: the kernel in Flax layout, `(*k, c_in // groups, c_out)`.
      lhs_dilation: the input dilation (the stride of a transposed conv).
      kernel_dilation: the kernel (rhs) dilation.
      window_strides: the conv's strides (they do not change the grid).
      feature_group_count: the number of feature groups.
      param_path: the path of the kernel in the inputs (`"up1/kernel"`), or
        None when the kernel is computed (e.g. a modulated conv).
      kernel_axes: the transposition from the kernel as the convolution took
        it to `kernel`'s Flax layout.
      param_ops: the structural operations (flips, transpositions, reshapes,
        slices) that take the parameter at `param_path` to the kernel as the
        convolution took it, in order; empty when the convolution took the
        parameter as it is.
    """

    name: str
    maps: jax.Array
    kernel: jax.Array
    lhs_dilation: tuple[int, ...]
    kernel_dilation: tuple[int, ...]
    window_strides: tuple[int, ...]
    feature_group_count: int
    param_path: str | None
    kernel_axes: tuple[int, ...]
    param_ops: tuple = ()

    @property
    def unmeasurable(self) -> str | None:
        """Why this convolution has no SDR, or None when it has one.

        A convolution is measured on the grid its kernel acts on (the input
        grid, dilated for a transposed conv); it has no SDR when that grid
        has a single point or the (dilated) kernel is larger than it.
        """
        spatial = self.maps.shape[1:-1]
        grid = tuple(h * s for h, s in zip(spatial, self.lhs_dilation, strict=True))
        extent = tuple(
            (k - 1) * d + 1
            for k, d in zip(self.kernel.shape[:-2], self.kernel_dilation, strict=True)
        )
        if math.prod(grid) < 2:
            return f"its input maps are {'×'.join(map(str, spatial))}: one point"
        if any(k > g for k, g in zip(extent, grid, strict=True)):
            return (
                f"its kernel ({'×'.join(map(str, extent))}) is larger than the grid "
                f"it acts on ({'×'.join(map(str, grid))})"
            )
        return None

    def pair_sdr(self, *, include_dc: bool = False) -> jax.Array:
        """The pair SDR matrix of this convolution (`conv_sdr`).

        A convolution with input dilation s is measured on the dilated grid,
        as `conv_sdr(..., strides=s, transpose=True)`.

        Args:
          include_dc: average over all frequencies, the zero one included.

        Returns:
          `(c_in // groups, c_out)` pair SDRs.
        """
        return conv_sdr(
            self.maps, self.kernel, **self.conv_geometry, include_dc=include_dc
        )

    @property
    def conv_geometry(self) -> dict[str, Any]:
        """The keyword arguments of `conv_sdr` / `conv_penalty` for this conv.

        A convolution with input dilation s is measured on the dilated grid.
        """
        return {
            "strides": self.lhs_dilation,
            "transpose": True,
            "kernel_dilation": self.kernel_dilation,
            "feature_group_count": self.feature_group_count,
        }


def key_names(path) -> list[str]:
    """The key of each step of a pytree key path, as strings.

    Args:
      path: a key path from `jax.tree_util.tree_flatten_with_path`.

    Returns:
      One string per key (dict keys, attribute names, sequence indices).
    """
    keys = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            keys.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            keys.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            keys.append(str(k.idx))
        else:
            keys.append(str(k))
    return keys


def path_name(path, *, skip: int = 0) -> str | None:
    """A readable `/`-joined name for a pytree key path.

    Flax's leading `params` collection and NNX's trailing `.value` are dropped.

    Args:
      path: a key path from `jax.tree_util.tree_flatten_with_path`.
      skip: leading keys to drop first.

    Returns:
      The name (`"decoder/deconv1/kernel"`), or None for an empty path.
    """
    keys = key_names(path)[skip:]
    if keys and keys[0] in ("params", "kwargs"):
        keys = keys[1:]
    if keys and keys[-1] == "value":
        keys = keys[:-1]
    return "/".join(keys) or None


def _layer_name(param_path: str | None) -> str | None:
    if param_path is None:
        return None
    parts = param_path.split("/")
    if len(parts) > 1 and parts[-1] in ("kernel", "weight", "w"):
        parts = parts[:-1]
    return "/".join(parts)


class _Recorder:
    def __init__(self, edits=None):
        self.taps: list[ConvTap] = []
        self.edits: dict[str, Callable[[jax.Array], jax.Array]] = dict(edits or {})
        self.edited: set[str] = set()
        self._counts: dict[str, int] = {}

    def unique(self, name: str) -> str:
        count = self._counts.get(name, 0) + 1
        self._counts[name] = count
        return name if count == 1 else f"{name}#{count}"

    def name(self, eqn, origin: str | None, scope: str) -> str:
        stack = "/".join(filter(None, (scope, str(eqn.source_info.name_stack))))
        return self.unique(_layer_name(origin) or stack or f"conv{len(self.taps)}")

    def edit(self, name: str, eqn, lhs):
        """The conv's input after the edit registered for `name`, if any."""
        edit = self.edits.get(name)
        if edit is None:
            return lhs
        self.edited.add(name)
        spec = eqn.params["dimension_numbers"].lhs_spec
        to_last = (spec[0], *spec[2:], spec[1])
        maps = edit(lhs.transpose(to_last))
        if maps.shape != lhs.transpose(to_last).shape:
            raise ValueError(
                f"The edit of conv layer {name!r} changed the maps' shape from "
                f"{lhs.transpose(to_last).shape} to {maps.shape}."
            )
        return maps.astype(lhs.dtype).transpose(np.argsort(to_last))

    def record(self, eqn, name: str, lhs, rhs, origin: str | None) -> None:
        params = eqn.params
        if params["batch_group_count"] != 1:
            return  # a weight-gradient convolution, not a layer
        dn = params["dimension_numbers"]
        lhs_spec, rhs_spec = dn.lhs_spec, dn.rhs_spec
        maps = lhs.transpose(lhs_spec[0], *lhs_spec[2:], lhs_spec[1])
        kernel_axes = (*rhs_spec[2:], rhs_spec[1], rhs_spec[0])
        kernel = rhs.transpose(kernel_axes)
        self.taps.append(
            ConvTap(
                name=name,
                maps=maps,
                kernel=kernel,
                lhs_dilation=tuple(params["lhs_dilation"]),
                kernel_dilation=tuple(params["rhs_dilation"]),
                window_strides=tuple(params["window_strides"]),
                feature_group_count=params["feature_group_count"],
                param_path=origin,
                kernel_axes=tuple(kernel_axes),
            )
        )


def _evaluate(jaxpr, consts, args, origins, recorder: _Recorder, scope: str):
    env: dict[Any, Any] = {}
    origin: dict[Any, str | None] = {}

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
        name = eqn.primitive.name
        sub = eqn.params.get(_CALL_PARAMS.get(name, ""), None)
        if sub is not None:
            inner_scope = "/".join(
                filter(None, (scope, str(eqn.source_info.name_stack)))
            )
            if isinstance(sub, jex.ClosedJaxpr):
                sub_jaxpr, sub_consts = sub.jaxpr, sub.consts
            else:
                sub_jaxpr, sub_consts = sub, ()
            n_extra = len(invals) - len(sub_jaxpr.invars)
            outvals = _evaluate(
                sub_jaxpr,
                sub_consts,
                invals[n_extra:],
                inorigins[n_extra:],
                recorder,
                inner_scope,
            )
        else:
            conv = (
                eqn.primitive is lax.conv_general_dilated_p
                and eqn.params["batch_group_count"] == 1
            )
            if conv:
                conv_name = recorder.name(eqn, inorigins[1], scope)
                invals[0] = recorder.edit(conv_name, eqn, invals[0])
            outvals = eqn.primitive.bind(*invals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
            if conv:
                recorder.record(eqn, conv_name, invals[0], invals[1], inorigins[1])
        for v, x in zip(eqn.outvars, outvals, strict=True):
            env[v] = x
            if name in _PASS_THROUGH:
                origin[v] = inorigins[0]
    return [read(v) for v in jaxpr.outvars]


def capture_convs(fn: Callable[..., Any], *args: Any, **kwargs: Any):
    """Runs `fn(*args, **kwargs)` and captures every convolution it executes.

    Works for any JAX function: Flax Linen (`model.apply`), Flax NNX (pass a
    module call through `sdr_flax`), and raw `lax.conv_general_dilated` or
    `lax.conv_transpose` code in any layout, including kernels computed inside
    the function (modulated convs, per-sample kernels through feature
    groups), inside nested `jit`, `remat` and custom derivatives. Only the
    arrays among the inputs are traced; other leaves (flags, strings) are
    static. Convolutions inside `scan`, `while` or `cond` bodies are run but
    not captured.

    Args:
      fn: the function.
      *args: its positional arguments.
      **kwargs: its keyword arguments.

    Returns:
      `(output, taps)`: `fn`'s output and a list of `ConvTap` in execution
      order.
    """
    return _run(fn, args, kwargs, None)


def _run(fn, args, kwargs, edits):
    """Evaluates `fn`'s jaxpr, editing the inputs of the convs named in `edits`."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path((args, kwargs))
    dynamic = [
        i for i, (_, x) in enumerate(leaves) if isinstance(x, jax.Array | np.ndarray)
    ]
    values = [x for _, x in leaves]

    def flat_fn(*dyn):
        full = list(values)
        for i, x in zip(dynamic, dyn, strict=True):
            full[i] = x
        a, k = jax.tree_util.tree_unflatten(treedef, full)
        return fn(*a, **k)

    dyn_values = [values[i] for i in dynamic]
    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*dyn_values)
    # Skip (args, kwargs) and the argument's position or keyword.
    origins = [path_name(leaves[i][0], skip=2) for i in dynamic]
    recorder = _Recorder(edits)
    out = _evaluate(closed.jaxpr, closed.consts, dyn_values, origins, recorder, "")
    missing = set(recorder.edits) - recorder.edited
    if missing:
        raise ValueError(
            f"No conv layer named {sorted(missing)}; the function's conv layers "
            f"are {[tap.name for tap in recorder.taps]}."
        )
    output = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), out)
    return output, recorder.taps
