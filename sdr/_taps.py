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
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from sdr import _equations, _interpret, _origins
from sdr._conv import conv_sdr
from sdr._geometry import ConvGeometry
from sdr._paths import path_name


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["maps", "kernel", "param_indices"],
    meta_fields=[
        "name",
        "geometry",
        "window_strides",
        "param_path",
        "kernel_axes",
        "param_ops",
        "kernel_source",
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
      geometry: how the kernel meets the maps (`ConvGeometry`): the input
        dilation (the stride of a transposed conv), the kernel dilation and
        the feature groups. Pass it as `geometry=` to `conv_sdr`,
        `conv_penalty` or `conv_pair_gaps`.
      window_strides: the conv's strides (they do not change the grid: a
        strided conv is measured on its input grid).
      param_path: the path of the kernel in the inputs (`"up1/kernel"`), or
        None when the kernel is computed (e.g. a modulated conv).
      kernel_axes: the transposition from the kernel as the convolution took
        it to `kernel`'s Flax layout.
      param_ops: the structural operations (flips, transpositions, reshapes,
        slices) that take the parameter at `param_path` to the kernel as the
        convolution took it, in order; empty when the convolution took the
        parameter as it is. Calling each op in turn on the parameter (an op
        with `n_indices` takes that many of `param_indices` after it) gives
        the kernel in the convolution's layout.
      param_indices: the traced index operands of `param_ops` (e.g. the loop
        counter of a `fori_loop` that slices a stacked kernel), in order.
      kernel_source: `"parameter"` (the kernel is an input leaf, possibly
        rearranged: see `param_path`), `"computed"` (computed from the
        inputs, e.g. a modulated conv) or `"constant"` (depends on no input:
        closed over by the function rather than passed to it).
    """

    name: str
    maps: jax.Array
    kernel: jax.Array
    geometry: ConvGeometry
    window_strides: tuple[int, ...]
    param_path: str | None
    kernel_axes: tuple[int, ...]
    param_ops: tuple = dataclasses.field(default=(), kw_only=True)
    param_indices: tuple = dataclasses.field(default=(), kw_only=True)
    kernel_source: str = dataclasses.field(default="parameter", kw_only=True)

    @property
    def unmeasurable(self) -> str | None:
        """Why this convolution has no SDR, or None when it has one.

        A convolution is measured on the grid its kernel acts on (the input
        grid, dilated for a transposed conv); it has no SDR when that grid
        has a single point or the (dilated) kernel is larger than it.
        """
        spatial = self.maps.shape[1:-1]
        grid = self.geometry.grid(spatial)
        extent = self.geometry.kernel_extent(self.kernel.shape[:-2])
        if math.prod(grid) < 2:
            return f"its input maps are {'×'.join(map(str, spatial))}: one point"
        if any(k > g for k, g in zip(extent, grid, strict=True)):
            return (
                f"its kernel ({'×'.join(map(str, extent))}) is larger than the grid "
                f"it acts on ({'×'.join(map(str, grid))})"
            )
        return None

    def pair_sdr(
        self, *, include_dc: bool = False, include_aliases: bool = True
    ) -> jax.Array:
        """The pair SDR matrix of this convolution (`conv_sdr`).

        A convolution with input dilation s is measured on the dilated grid,
        as `conv_sdr(maps, kernel, geometry=self.geometry)`.

        Args:
          include_dc: average over all frequencies, the zero one included.
          include_aliases: on a dilated grid, keep the aliases of the zero
            frequency in the averages (see `conv_sdr`).

        Returns:
          `(c_in // groups, c_out)` pair SDRs.
        """
        return conv_sdr(
            self.maps,
            self.kernel,
            geometry=self.geometry,
            include_dc=include_dc,
            include_aliases=include_aliases,
        )


def capture_convs(fn: Callable[..., Any], *args: Any, **kwargs: Any):
    """Runs `fn(*args, **kwargs)` and captures every convolution it executes.

    Works for any JAX function: Flax Linen (`model.apply`), Flax NNX (through
    `sdr_flax.capture_layers`), Equinox modules passed as arguments, and raw
    `lax.conv_general_dilated` or `lax.conv_transpose` code in any layout,
    including kernels computed inside the function (modulated convs,
    per-sample kernels through feature groups). Only the arrays among the
    inputs are traced; other leaves (flags, strings) are static.

    Capture changes nothing: the output is `fn`'s, and differentiating
    through `capture_convs` gives `fn`'s derivatives, with its custom
    derivative rules, remat policies and shardings, because every primitive
    is bound again as it is (the bodies of `jit`, `checkpoint`, `scan`,
    `cond` and `while` are rewritten to also return their convolutions'
    inputs). Convolutions are found everywhere the function runs them:

    - inside `scan` (and `fori_loop` with static bounds): one tap per
      iteration, named `<layer>[i]`;
    - inside `cond`/`switch`: one tap per branch's convolution; those of the
      branches not taken have all-zero maps;
    - inside `while_loop`: the last iteration's, named `<layer>[last]`, with a
      warning;
    - inside `custom_jvp`/`custom_vjp` functions: from a second evaluation
      of their primal body.

    A higher-order primitive that sdr cannot look into (e.g. `shard_map`) is
    run unchanged, with a warning naming the convolutions it hides.

    Args:
      fn: the function.
      *args: its positional arguments.
      **kwargs: its keyword arguments.

    Returns:
      `(output, taps)`: `fn`'s output and a list of `ConvTap` in execution
      order.
    """
    return _run(fn, args, kwargs, None)


def edit_convs(
    fn: Callable[..., Any], edits: Mapping[str, Callable[[jax.Array], jax.Array]]
) -> Callable[..., Any]:
    """`fn` with the input maps of some of its convolutions edited.

    The convolutions are found and named as by `capture_convs`
    (`ConvTap.name`). Each edit receives its convolution's input maps
    channels last, `(n, *spatial, c_in)`, whatever the convolution's own
    layout, and returns maps of the same shape, which the convolution then
    takes; everything else runs unchanged. Works under `jit` and `grad`.
    `sdr_flax.intervene` does the same for NNX modules too.

    Args:
      fn: any JAX function, as for `capture_convs`.
      edits: from convolution name to a function of its input maps.

    Returns:
      A function with `fn`'s arguments that returns `fn`'s output under the
      edits.

    Raises:
      ValueError (when called): if a name in `edits` is not one of the
        convolutions `fn` runs (the message lists them), or an edit changes
        the maps' shape.
    """
    edits = dict(edits)

    def edited(*args: Any, **kwargs: Any) -> Any:
        output, _ = _run(fn, args, kwargs, edits)
        return output

    return edited


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
    origins = []
    for i in dynamic:
        path = path_name(leaves[i][0], skip=2)
        origins.append(_origins.Param(path) if path else _origins.COMPUTED)
    recorder = _equations.Recorder(edits)
    entries: list[_equations.Entry] = []
    out, _ = _interpret.interpret(
        closed.jaxpr, closed.consts, dyn_values, origins, recorder, "", entries
    )
    caller = "sdr.capture_convs" if edits is None else "sdr.edit_convs"
    _equations.emit_warnings(recorder, caller)
    taps = [_tap(e) for e in entries]
    missing = set(recorder.edits) - recorder.edited
    if missing:
        raise ValueError(
            f"No conv layer named {sorted(missing)}; the function's conv layers "
            f"are {[tap.name for tap in taps]}."
        )
    output = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), out)
    return output, taps


def _tap(e: _equations.Entry) -> ConvTap:
    param = e.origin if isinstance(e.origin, _origins.Param) else None
    if param is not None:
        source = "parameter"
    elif e.origin is None:
        source = "constant"
    else:
        source = "computed"
    return ConvTap(
        name=e.name,
        maps=e.maps,
        kernel=e.kernel,
        geometry=e.geometry,
        window_strides=e.window_strides,
        param_path=None if param is None else param.path,
        kernel_axes=e.kernel_axes,
        param_ops=() if param is None else param.ops,
        param_indices=() if param is None else param.values,
        kernel_source=source,
    )
