"""Kernel edits for extrapolation: the FluoHair interventions (App. B.1).

Pure functions of a parameter pytree (a Linen `variables` or `params` dict, an
NNX `nnx.State`, any nested dict): each returns a new pytree of the same
structure in which one kernel leaf is edited for some of its input channels;
every other leaf, and every coefficient of the other input channels, is the
same object or value as before. The kernel is named by its "/"-joined path, as
`sdr.path_name` and `sdr.ConvTap.param_path` print it
(`"decoder/deconv4/kernel"`; Flax's leading `params` and NNX's trailing
`value` are optional).

The kernel's layout is given by the axes of its input and output channels,
`in_axis` and `out_axis`: the defaults, -2 and -1, are Flax's
`(*spatial, c_in, c_out)`; a raw `lax` kernel in OIHW layout takes
`in_axis=1, out_axis=0`. For a kernel found by `sdr_flax.capture_layers`,
`in_axis=tap.kernel_axes[-2], out_axis=tap.kernel_axes[-1]`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

import sdr

PyTree = TypeVar("PyTree")


def _leaf_names(keypath) -> set[str]:
    """The names a leaf answers to: `sdr.path_name`'s and the full joined path."""
    names = {"/".join(sdr.key_names(keypath))}
    short = sdr.path_name(keypath)
    if short is not None:
        names.add(short)
    return names


def _edit_leaf(params: PyTree, path: str, edit) -> PyTree:
    """`params` with `edit` applied to the one leaf named `path`."""
    if not isinstance(path, str):
        raise TypeError(
            f"`path` must be a str like 'decoder/deconv4/kernel'; got {path!r}."
        )
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    hits = [i for i, (kp, _) in enumerate(flat) if path in _leaf_names(kp)]
    if not hits:
        known = [sdr.path_name(kp) for kp, leaf in flat if np.ndim(leaf) >= 2]
        shown = ", ".join(repr(k) for k in known[:12])
        more = f" and {len(known) - 12} more" if len(known) > 12 else ""
        raise ValueError(
            f"No parameter at path {path!r}; kernels (leaves with 2+ axes) are at "
            f"{shown}{more}."
        )
    if len(hits) > 1:
        full = ["/".join(sdr.key_names(flat[i][0])) for i in hits]
        raise ValueError(
            f"Path {path!r} names {len(hits)} leaves: {full}; give the full path."
        )

    def visit(keypath, leaf):
        return edit(jnp.asarray(leaf)) if path in _leaf_names(keypath) else leaf

    return jax.tree_util.tree_map_with_path(visit, params)


def _axis(axis: int, ndim: int, name: str) -> int:
    if not isinstance(axis, int | np.integer) or not -ndim <= axis < ndim:
        raise ValueError(
            f"`{name}` must be an axis of the kernel (rank {ndim}); got {axis!r}."
        )
    return int(axis) % ndim


def _channel_mask(
    kernel: jax.Array, channels: Sequence[int], in_axis: int, path: str
) -> jax.Array:
    """A boolean mask broadcastable to `kernel`, True on the selected inputs."""
    c_in = kernel.shape[in_axis]
    index = np.asarray(channels)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise ValueError(
            f"`channels` must be a sequence of ints; got {channels!r} for {path!r}."
        )
    bad = index[(index < 0) | (index >= c_in)]
    if bad.size:
        raise ValueError(
            f"Channel index {bad.tolist()} out of range for kernel {path!r} of shape "
            f"{tuple(kernel.shape)}: it has {c_in} input channels (axis {in_axis})."
        )
    mask = np.zeros(c_in, bool)
    mask[index] = True
    shape = [1] * kernel.ndim
    shape[in_axis] = c_in
    return jnp.asarray(mask.reshape(shape))


def flip_input_channels(
    params: PyTree,
    path: str,
    channels: Sequence[int],
    *,
    in_axis: int = -2,
) -> PyTree:
    """Negates a kernel's coefficients for some input channels: pink hair.

    With `k` the kernel at `path` and `C` the selected input channels,

    $$k'[\\dots, i, j] = -k[\\dots, i, j] \\text{ if } i \\in C, \\quad
      k'[\\dots, i, j] = k[\\dots, i, j] \\text{ otherwise}$$

    (in Flax layout; other layouts through `in_axis`). Every other
    coefficient and every other leaf is returned unchanged (bit for bit).
    Applied to the channels of the hair module in the last conv layer, this
    is the paper's FluoHair edit that turns hair pink.

    Args:
      params: a parameter pytree (Linen `variables` or `variables["params"]`,
        an NNX `nnx.State`, nested dicts); not modified.
      path: the kernel's "/"-joined path, e.g. `"decoder/deconv4/kernel"`.
      channels: indices of the input channels to flip, each in
        `[0, c_in)`.
      in_axis: the kernel's input-channel axis (-2 in Flax layout, 1 in
        OIHW).

    Returns:
      A new pytree of the same structure with the edited kernel.

    Raises:
      ValueError: if no leaf (or more than one) is at `path` (the message
        lists some kernel paths), `in_axis` is not an axis of the kernel, or a
        channel index is out of range.
      TypeError: if `path` is not a string.

    References:
      App. B.1 (FluoHair) of Besserve et al., 2021.
    """
    edit = functools.partial(
        _negated_inputs, path=path, channels=channels, in_axis=in_axis
    )
    return _edit_leaf(params, path, edit)


def _negated_inputs(kernel: jax.Array, *, path, channels, in_axis) -> jax.Array:
    """`kernel` with the coefficients of the selected input channels negated."""
    axis = _axis(in_axis, kernel.ndim, "in_axis")
    mask = _channel_mask(kernel, channels, axis, path)
    return jnp.where(mask, -kernel, kernel)


def permute_outputs(
    params: PyTree,
    path: str,
    channels: Sequence[int],
    permutation: Sequence[int],
    *,
    in_axis: int = -2,
    out_axis: int = -1,
) -> PyTree:
    """Permutes a kernel's output channels for some input channels only.

    With `k` the kernel at `path`, `C` the selected input channels and `π`
    the permutation,

    $$k'[\\dots, i, j] = k[\\dots, i, \\pi(j)] \\text{ if } i \\in C, \\quad
      k'[\\dots, i, j] = k[\\dots, i, j] \\text{ otherwise}:$$

    output channel `j` now receives from the selected inputs what output
    channel `π(j)` received. For an RGB output, `permutation=(1, 0, 2)`
    swaps what those channels paint in red and green (pink hair turns
    green after `flip_input_channels`), `(2, 1, 0)` red and blue.

    Args:
      params: a parameter pytree, as in `flip_input_channels`; not modified.
      path: the kernel's "/"-joined path.
      channels: indices of the input channels whose coefficients move.
      permutation: a permutation of `range(c_out)`.
      in_axis: the kernel's input-channel axis (-2 in Flax layout, 1 in
        OIHW).
      out_axis: the kernel's output-channel axis (-1 in Flax layout, 0 in
        OIHW).

    Returns:
      A new pytree of the same structure with the edited kernel.

    Raises:
      ValueError: as `flip_input_channels`; also if `out_axis` is not an axis
        of the kernel or equals `in_axis`, or `permutation` is not a
        permutation of the output channels.
      TypeError: if `path` is not a string.

    References:
      App. B.1 (FluoHair) of Besserve et al., 2021.
    """
    edit = functools.partial(
        _permuted_outputs,
        path=path,
        channels=channels,
        permutation=permutation,
        in_axis=in_axis,
        out_axis=out_axis,
    )
    return _edit_leaf(params, path, edit)


def _permuted_outputs(
    kernel: jax.Array, *, path, channels, permutation, in_axis, out_axis
) -> jax.Array:
    """`kernel` with the output channels permuted for the selected inputs."""
    i_ax = _axis(in_axis, kernel.ndim, "in_axis")
    o_ax = _axis(out_axis, kernel.ndim, "out_axis")
    if i_ax == o_ax:
        raise ValueError(
            f"`in_axis` and `out_axis` name the same axis ({i_ax}) of kernel "
            f"{path!r} of shape {tuple(kernel.shape)}."
        )
    c_out = kernel.shape[o_ax]
    perm = np.asarray(permutation)
    if (
        perm.ndim != 1
        or not (perm.size == 0 or np.issubdtype(perm.dtype, np.integer))
        or sorted(perm.tolist()) != list(range(c_out))
    ):
        raise ValueError(
            f"`permutation` must be a permutation of the {c_out} output "
            f"channels of kernel {path!r} (axis {o_ax} of shape "
            f"{tuple(kernel.shape)}); got {list(np.ravel(permutation))}."
        )
    mask = _channel_mask(kernel, channels, i_ax, path)
    return jnp.where(mask, jnp.take(kernel, jnp.asarray(perm), axis=o_ax), kernel)
