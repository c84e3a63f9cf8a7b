"""Interventions on a generator's hidden layers (Sec. 2.1 and 4.1).

`intervene` edits the input maps of named conv layers of any JAX function or
NNX module, without model edits (the convolutions are found as for
`layer_sdr`); `stretch_maps` is the paper's horizontal stretch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import sdr
from sdr_flax._calls import as_function


def intervene(
    fn: Callable[..., Any] | nnx.Module,
    edits: Mapping[str, Callable[[jax.Array], jax.Array]],
) -> Callable[..., Any]:
    """`fn` with the input maps of some conv layers edited.

    The convolutions are found and named as by `layer_sdr`; each edit receives
    its layer's input maps channels last, `(n, *spatial, c_in)`, whatever
    the layer's own layout, and returns maps of the same shape, which the
    layer then convolves. Everything downstream runs unchanged. Works under
    `jit` and `grad`. For a function, this is `sdr.edit_convs`; an NNX
    module is updated as a direct call would update it.

    Example: stretch the maps entering `decoder/deconv3` (the paper's fine
    level) and run the rest of the generator,

        stretched = intervene(model.apply, {"decoder/deconv3": stretch_maps})
        images = stretched(variables, z, method=Model.decode)

    Args:
      fn: a function (Linen `model.apply`, raw `lax` code) or an NNX module.
      edits: from layer name to a function of its input maps.

    Returns:
      A function with `fn`'s arguments (for an NNX module, the module's call
      arguments) returning `fn`'s output under the edits.

    Raises:
      ValueError (when called): if a name in `edits` is not one of the conv
        layers `fn` executes (the message lists them), or an edit changes the
        maps' shape.

    References:
      Sec. 2.1 and 4.1 of Besserve et al., 2021.
    """
    edits = dict(edits)

    def edited(*args: Any, **kwargs: Any) -> Any:
        call, a, finish = as_function(fn, args)
        return finish(sdr.edit_convs(call, edits)(*a, **kwargs))

    return edited


def stretch_maps(maps: jax.Array, factor: float = 1.5, *, axis: int = -2) -> jax.Array:
    """Stretches maps by `factor` along one spatial axis about their centre.

    The output has the input's shape: it shows the central `1/factor` of the
    axis magnified (linear interpolation; `factor < 1` shrinks, with the
    edges' values repeated beyond the input). With channels-last maps or
    images `(n, H, W, C)` the default axis, -2, is the horizontal one.

    Args:
      maps: maps or images, any shape.
      factor: the stretch, > 0 (the paper: 1.5).
      axis: the stretched axis.

    Returns:
      The stretched maps, same shape and dtype.

    Raises:
      ValueError: if `factor` is not positive.

    References:
      Sec. 4.1 of Besserve et al., 2021: a 1.5-fold horizontal stretch.
    """
    if not factor > 0:
        raise ValueError(f"`factor` must be positive; got {factor}.")
    maps = jnp.asarray(maps)
    axis = axis % maps.ndim
    n = maps.shape[axis]
    # Output pixel x (centre x + 1/2) samples the input at c + (x + 1/2 - c)/f - 1/2.
    centre = n / 2
    pos = centre + (jnp.arange(n, dtype=jnp.float32) + 0.5 - centre) / factor - 0.5
    pos = jnp.clip(pos, 0.0, float(n - 1))
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, n - 1)
    w = (pos - lo.astype(jnp.float32)).astype(maps.dtype)
    shape = [1] * maps.ndim
    shape[axis] = n
    w = w.reshape(shape)
    return (
        jnp.take(maps, lo, axis=axis) * (1.0 - w) + jnp.take(maps, hi, axis=axis) * w
    ).astype(maps.dtype)
