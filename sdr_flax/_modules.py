"""Channel modules: which hidden channels of a layer paint which part of the output.

Following Besserve et al. (2020, "Counterfactuals uncover the modular structure
of deep generative models"), each input channel of a conv layer gets an
influence map, the mean absolute change of the output when that channel alone
is intervened on (`channel_influence`), and the influence maps are clustered
into modules by non-negative matrix factorisation (`channel_modules`). In the
FluoHair experiment (App. B.1 of Besserve et al., 2021), the channels of the
module that paints the hair are then edited in the next kernel
(`sdr_flax.flip_input_channels`, `sdr_flax.permute_outputs`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import sdr
from sdr_flax._calls import Call

COUNTERFACTUALS = ("swap", "mean", "zero")
"""The counterfactual values `channel_influence` can give a channel."""


def _replacement(maps: jax.Array, counterfactual: str) -> jax.Array:
    """The counterfactual maps, channels last `(n, *spatial, c)`."""
    if counterfactual == "swap":
        return jnp.roll(maps, 1, axis=0)
    if counterfactual == "mean":
        spatial = tuple(range(1, maps.ndim - 1))
        return jnp.broadcast_to(jnp.mean(maps, axis=spatial, keepdims=True), maps.shape)
    return jnp.zeros_like(maps)


def channel_influence(
    fn: Callable[..., Any] | nnx.Module,
    layer: str,
    *args: Any,
    counterfactual: str = "swap",
    channels_per_step: int | None = None,
    **kwargs: Any,
) -> jax.Array:
    """The influence map of each input channel of a conv layer on the output.

    For each input channel `c` of the conv layer `layer`, that channel's maps
    alone are replaced by a counterfactual value, the rest of the function
    runs unchanged (`sdr_flax.intervene`), and the influence map is the mean
    absolute change of the output over the samples and the output channels:

    $$I_c(p) = \\frac{1}{n\\,K} \\sum_{s=1}^{n} \\sum_{k=1}^{K}
      \\bigl|f(V^{(c \\leftarrow \\tilde V)})_{s,p,k} - f(V)_{s,p,k}\\bigr|$$

    with `p` an output position. The counterfactual `Ṽ`:

    - `"swap"` (default), Besserve et al.'s (2020) counterfactual
      hybridisation: sample `s` gets channel `c` from sample `s − 1` of the
      same batch (cyclically), so the intervened values stay typical ones;
    - `"mean"`: each sample's channel is set to its spatial mean;
    - `"zero"`: the channel is set to zero.

    All channels are computed in one vectorised call (`jax.vmap` over the
    channels, under `jax.jit`; `channels_per_step` bounds the memory by
    running that many channels at a time with `jax.lax.map`), compiled once
    per function, argument structure, array shapes, non-array arguments and
    options, then cached: calling again with new values of the same shapes
    does not retrace. The
    unintervened output is computed in the same batch, so positions a
    channel cannot reach get exactly zero. `fn` should treat the samples
    independently (e.g. batch norm on running averages), or the change of
    one sample leaks into the others.

    Args:
      fn: the generator: a function (Linen `model.apply`, raw `lax` code) or
        an NNX module, whose output is one array `(n, *spatial, K)`, the
        samples first and the output channels last.
      layer: the conv layer whose input channels are measured, named as by
        `sdr_flax.layer_sdr` (e.g. `"decoder/deconv4"`).
      *args: positional arguments of `fn` (for Linen, the variables first);
        the batch must hold at least 2 samples for `"swap"`.
      counterfactual: `"swap"`, `"mean"` or `"zero"`, as above.
      channels_per_step: if set, the number of channels computed at once.
      **kwargs: keyword arguments of `fn` (e.g. `method=BetaVAE.decode`).

    Returns:
      The non-negative influence maps, `(c_in, *spatial)` float32, one per
      input channel of `layer`.

    Raises:
      ValueError: if `layer` is not one of the conv layers `fn` runs (the
        message lists them), `counterfactual` is unknown, `"swap"` gets a
        single sample, `channels_per_step` is not a positive int, or the
        output is not one array with a sample and a channel axis.

    References:
      App. B.1 (FluoHair) of Besserve et al., 2021; influence maps as in
      Besserve et al., 2020, "Counterfactuals uncover the modular structure
      of deep generative models" (ICLR).
    """
    _check_options(counterfactual, channels_per_step)
    call, values = Call.split(fn, args, kwargs)
    options = (layer, counterfactual, channels_per_step)
    try:
        hash((call, options))
    except TypeError:  # an unhashable argument: compiled for this call only
        return jax.jit(lambda values: _influence(call, values, *options))(values)
    return _influence_jitted(call, values, *options)


def _influence(call: Call, values, layer, counterfactual, channels_per_step):
    """The influence maps of `layer`'s input channels (`channel_influence`)."""
    f = call.output_function()
    args, kwargs = call.arguments(values)
    out, taps = sdr.capture_convs(f, *args, **kwargs)
    maps = _layer_maps(taps, layer)
    _check_output(out, maps.shape[0], layer, counterfactual)
    c_in = maps.shape[-1]

    def run(channel):
        edit = functools.partial(
            _intervened, channel=channel, counterfactual=counterfactual
        )
        return sdr.edit_convs(f, {layer: edit})(*args, **kwargs)

    # Channel c_in selects no channel: the unintervened reference output.
    index = jnp.arange(c_in + 1, dtype=jnp.int32)
    if channels_per_step is None:
        outputs = jax.vmap(run)(index)
    else:
        outputs = jax.lax.map(run, index, batch_size=channels_per_step)
    change = jnp.abs(outputs[:c_in] - outputs[c_in:])
    return jnp.mean(change, axis=(1, -1), dtype=jnp.float32)


# Compiled once per call (function, argument structure, non-array arguments),
# array shapes and options, then cached.
_influence_jitted = jax.jit(_influence, static_argnums=(0, 2, 3, 4))


def _check_options(counterfactual: str, channels_per_step: int | None) -> None:
    """Raises `ValueError` for an unknown counterfactual or a bad step size."""
    if counterfactual not in COUNTERFACTUALS:
        raise ValueError(
            f"`counterfactual` must be one of {COUNTERFACTUALS}; "
            f"got {counterfactual!r}."
        )
    if channels_per_step is not None and (
        not isinstance(channels_per_step, int) or channels_per_step < 1
    ):
        raise ValueError(
            f"`channels_per_step` must be a positive int or None; got "
            f"{channels_per_step!r}."
        )


def _layer_maps(taps, layer: str) -> jax.Array:
    """The input maps of the conv layer named `layer`."""
    found = [tap for tap in taps if tap.name == layer]
    if not found:
        raise ValueError(
            f"No conv layer named {layer!r}; the function's conv layers are "
            f"{[tap.name for tap in taps]}."
        )
    return found[0].maps


def _check_output(out, n: int, layer: str, counterfactual: str) -> None:
    """Raises `ValueError` unless `out` is one array of the layer's `n` samples."""
    if not isinstance(out, jax.Array) or out.ndim < 2 or out.shape[0] != n:
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"`fn`'s output must be one array `(n, *spatial, channels)` with "
            f"the {n} samples of layer {layer!r} first; got {shape}."
        )
    if counterfactual == "swap" and n < 2:
        raise ValueError(
            "counterfactual='swap' takes each channel from another sample of "
            f"the batch; layer {layer!r} got {n} sample."
        )


def _intervened(maps: jax.Array, channel, counterfactual: str) -> jax.Array:
    """`maps` with input channel `channel` replaced by its counterfactual."""
    c_in = maps.shape[-1]
    shape = (1,) * (maps.ndim - 1) + (c_in,)
    selected = (jnp.arange(c_in, dtype=jnp.int32) == channel).reshape(shape)
    return jnp.where(selected, _replacement(maps, counterfactual), maps)


@dataclasses.dataclass(frozen=True, eq=False)
class Modules:
    """Channels of a layer clustered into modules (`channel_modules`).

    The influence maps factorise as `influence ≈ weights @ regions` (flattened
    over space); each region is scaled to sum to 1, so `weights[c, m]` is the
    part of channel `c`'s total influence that module `m` explains.

    Attributes:
      assignment: `(c_in,)` int, the module of each channel: the one with
        the largest weight.
      regions: `(n_modules, *spatial)`, the modules' spatial regions (the NMF
        components), non-negative, each summing to 1.
      weights: `(c_in, n_modules)`, non-negative.
    """

    assignment: np.ndarray
    regions: np.ndarray
    weights: np.ndarray

    @property
    def n_modules(self) -> int:
        """The number of modules."""
        return self.regions.shape[0]

    def channels(self, module: int) -> np.ndarray:
        """The channels assigned to one module.

        Args:
          module: the module's index.

        Returns:
          The sorted channel indices (possibly empty).
        """
        return np.flatnonzero(self.assignment == module)


def channel_modules(
    influence: jax.Array | np.ndarray,
    *,
    n_modules: int = 3,
    seed: int = 0,
    max_iter: int = 2000,
) -> Modules:
    """Clusters channels into modules by NMF of their influence maps.

    The `(c_in, *spatial)` influence maps are flattened to a `c_in × P`
    matrix `V ≥ 0` and factorised by scikit-learn's `NMF` (Frobenius loss,
    `init="nndsvda"`, `random_state=seed`) as `V ≈ W H` with `n_modules`
    components; each row of `H` (a module's region) is scaled to sum to 1
    and the column of `W` by the same factor, and each channel goes to the
    module with the largest weight.

    Args:
      influence: non-negative influence maps `(c_in, *spatial)`, e.g. from
        `channel_influence`.
      n_modules: the number of modules (the paper: 3).
      seed: NMF's `random_state` (the `nndsvda` initialisation is
        deterministic, so results depend on it little if at all).
      max_iter: NMF's iteration limit.

    Returns:
      The `Modules`: assignment, regions and weights.

    Raises:
      ValueError: if `influence` has fewer than 2 axes, negative or
        non-finite entries, or `n_modules` is not between 1 and
        `min(c_in, P)`.
      ImportError: if scikit-learn is not installed
        (`pip install scikit-learn`, or the `bench` extra).

    References:
      App. B.1 (FluoHair) of Besserve et al., 2021; Besserve et al., 2020,
      "Counterfactuals uncover the modular structure of deep generative
      models" (ICLR).
    """
    from sklearn.decomposition import NMF

    v = np.asarray(influence, np.float64)
    if v.ndim < 2:
        raise ValueError(
            f"`influence` must be `(c_in, *spatial)` with at least one spatial "
            f"axis; got shape {v.shape}."
        )
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(
            "`influence` must be finite and non-negative; its minimum is "
            f"{np.nanmin(v):g} and it has {int(np.sum(~np.isfinite(v)))} "
            "non-finite entries."
        )
    c_in, spatial = v.shape[0], v.shape[1:]
    flat = v.reshape(c_in, -1)
    if not isinstance(n_modules, int) or not 1 <= n_modules <= min(flat.shape):
        raise ValueError(
            f"`n_modules` must be an int between 1 and min(c_in, positions) = "
            f"{min(flat.shape)} for influence of shape {v.shape}; got {n_modules!r}."
        )
    nmf = NMF(
        n_components=n_modules, init="nndsvda", random_state=seed, max_iter=max_iter
    )
    w = nmf.fit_transform(flat)
    h = nmf.components_
    scale = h.sum(axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    h = h / scale[:, None]
    w = w * scale[None, :]
    return Modules(
        assignment=np.argmax(w, axis=1),
        regions=h.reshape(n_modules, *spatial),
        weights=w,
    )
