"""Interventions on a generator's hidden layers (Sec. 2.1 and 4.1).

`intervene` edits the input maps of named conv layers of any JAX function or
NNX module, without model edits (the convolutions are found as for
`layer_sdr`); `stretch_maps` is the paper's horizontal stretch, about a chosen
centre, with linear or nearest interpolation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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

    Example: stretch the maps entering `decoder/deconv3` and run the rest of
    the generator,

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


_INTERPOLATIONS = ("linear", "nearest")


def _centre(centre: Any, n: int) -> Any:
    """The stretch's centre: `n / 2` for None, else a checked real scalar."""
    if centre is None:
        return n / 2
    if isinstance(centre, bool) or not (
        isinstance(centre, int | float | np.number)
        or (isinstance(centre, jax.Array | np.ndarray) and np.ndim(centre) == 0)
    ):
        raise TypeError(f"`centre` must be a real scalar or None; got {centre!r}.")
    if isinstance(centre, jax.Array | np.ndarray) and np.issubdtype(
        centre.dtype, np.complexfloating
    ):
        raise TypeError(f"`centre` must be real; got dtype {centre.dtype}.")
    if isinstance(centre, jax.core.Tracer):
        return centre
    if not np.isfinite(centre):
        raise ValueError(f"`centre` must be finite; got {centre}.")
    return float(centre)


def stretch_maps(
    maps: jax.Array,
    factor: float = 1.5,
    *,
    axis: int = -2,
    centre: float | None = None,
    interpolation: str = "linear",
) -> jax.Array:
    """Stretches maps by `factor` along one spatial axis about a centre.

    Coordinates are in map pixels: pixel `i` covers `[i, i + 1)`, so its
    centre is `i + 1/2` and the array's centre is `n / 2`. Output pixel `x`
    shows the input at `centre + (x + 1/2 - centre) / factor`: the stretch
    keeps the point `centre` in place and magnifies the `1/factor` of the
    axis around it (`factor < 1` shrinks). Samples beyond the input repeat
    its edge values. The output has the input's shape. With channels-last
    maps or images `(n, H, W, C)` the default axis, -2, is the horizontal one.

    Interpolation:

    - `"linear"`: the two pixels whose centres bracket the sample point,
      weighted by distance (the sample at a pixel's centre is that pixel).
    - `"nearest"`: the pixel that contains the sample point (a point on a
      pixel border takes the pixel to its right).

    Args:
      maps: maps or images, any shape.
      factor: the stretch, > 0 (the paper: 1.5).
      axis: the stretched axis.
      centre: the fixed point, in map pixels along `axis`; None (default)
        is the array's centre `n / 2`. A real scalar; a traced one is
        allowed (then it is not checked).
      interpolation: `"linear"` (default) or `"nearest"`.

    Returns:
      The stretched maps, same shape and dtype.

    Raises:
      ValueError: if `factor` is not positive, `centre` is not finite, or
        `interpolation` is not `"linear"` or `"nearest"`.
      TypeError: if `centre` is not a real scalar or None.

    References:
      Sec. 4.1 of Besserve et al., 2021: a 1.5-fold horizontal stretch.
    """
    if not factor > 0:
        raise ValueError(f"`factor` must be positive; got {factor}.")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"`interpolation` must be one of {_INTERPOLATIONS}; got {interpolation!r}."
        )
    maps = jnp.asarray(maps)
    axis = axis % maps.ndim
    n = maps.shape[axis]
    centre = _centre(centre, n)
    # Output pixel x (centre x + 1/2) samples the input at c + (x + 1/2 - c)/f,
    # i.e. at index position `pos` (pixel i's centre is at position i).
    pos = centre + (jnp.arange(n, dtype=jnp.float32) + 0.5 - centre) / factor - 0.5
    if interpolation == "nearest":
        index = jnp.clip(jnp.floor(pos + 0.5), 0, n - 1).astype(jnp.int32)
        return jnp.take(maps, index, axis=axis)
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
