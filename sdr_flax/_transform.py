"""The alternating scheme of Sec. 3.4 as an Optax transform."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import sdr
from sdr_flax._layer_spectra import LayerSpectra
from sdr_flax._selection import Layers


class SpectralIndependenceState(NamedTuple):
    """The state of `spectral_independence`.

    The cause spectra arrive with each update (the `spectra` extra argument),
    so the transform keeps only counts.

    Attributes:
      count: the number of updates made (a schedule's step).
      skipped: the number of (layer, update) pairs skipped because the
        layer's spectra were not finite (e.g. a NaN in its input maps); the
        layer's kernel then gets the main update only.
    """

    count: jax.Array
    skipped: jax.Array


_MAX_RELATIVE_STEP = 0.5


def _pair_newton_step(
    layer: LayerSpectra, kernel: jax.Array, rate, options: _Options
) -> jax.Array:
    """One Gauss–Newton step on each pair's gap, in Flax layout.

    Each pair's gap g is quadratic in its kernel k, so the step
    `-rate · g ∇g / |∇g|²` would close a linear gap at `rate=1`. It is
    invariant to the kernel's scale and to the spectra's peakedness, and it
    is capped at `_MAX_RELATIVE_STEP` of the pair's norm. The gap is
    homogeneous of degree 2 in the pair (`k · ∇g = 2g`), so
    `|g| ≤ |k| |∇g| / 2` and the uncapped step is at most `rate / 2` of the
    pair's norm: the cap binds only at rates above 1.
    """
    gaps, vjp = jax.vjp(lambda k: _layer_gaps(layer, k, options), kernel)
    # Pairs are disjoint kernel slices, so one pullback of ones gives every
    # pair's ∇g in its own slice.
    (grad,) = vjp(jnp.ones_like(gaps))
    spatial = tuple(range(kernel.ndim - 2))
    grad_sq = jnp.sum(grad**2, axis=spatial)
    scale = jnp.where(grad_sq > 0, gaps / jnp.where(grad_sq > 0, grad_sq, 1.0), 0.0)
    step = rate * scale[(None,) * len(spatial)] * grad
    norm_step = jnp.sqrt(jnp.sum(step**2, axis=spatial, keepdims=True))
    cap = _MAX_RELATIVE_STEP * jnp.sqrt(jnp.sum(kernel**2, axis=spatial, keepdims=True))
    shrink = jnp.where(norm_step > cap, cap / jnp.where(norm_step > 0, norm_step, 1), 1)
    return kernel - shrink * step


def _concrete(value) -> float | None:
    """`value` as a float, or None while it is traced (`inject_hyperparams`)."""
    try:
        return float(value)
    except TypeError:  # jax's ConcretizationTypeError is a TypeError
        return None


def _check_hyperparameters(learning_rate, steps) -> None:
    if not callable(learning_rate):
        rate = _concrete(learning_rate)
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ValueError(
                "`learning_rate` must be a positive, finite number or an "
                f"optax schedule; got {learning_rate!r}."
            )
    n = _concrete(steps)
    if n is not None and not (n >= 1 and n == int(n)):
        raise ValueError(f"`steps` must be an int ≥ 1; got {steps!r}.")


def _check_spectra(spectra) -> None:
    if not isinstance(spectra, Mapping) or not all(
        isinstance(s, LayerSpectra) for s in spectra.values()
    ):
        raise TypeError(
            "`spectra` must be the dict that sdr_flax.layer_spectra(taps) returns "
            f"(layer name -> LayerSpectra); got {type(spectra).__name__}. Pass "
            "the taps through sdr_flax.layer_spectra first."
        )


def _is_masked(x) -> bool:
    return isinstance(x, optax.MaskedNode)


def _masked_paths(params) -> set[str]:
    """The paths `optax.masked` hid from the transform (`MaskedNode`s)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_masked)
    return {sdr.path_name(path) for path, x in leaves if _is_masked(x)}


def spectral_independence(
    learning_rate: optax.ScalarOrSchedule = 0.5,
    *,
    steps: int = 1,
    layers: Iterable[str] | Callable[[str], bool] | None = None,
    include_dc: bool = False,
    include_aliases: bool = True,
    scale_free: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""The alternating scheme of Sec. 3.4 as an Optax transform.

    Chain it **after** the optimiser (or use `with_spectral_independence`,
    which cannot get the order wrong). Each update applies the main update,
    then `steps` steps of the eq. (13) penalty on the selected kernels, with
    the cause spectra passed as the extra argument `spectra` (from
    `layer_spectra`); it returns the combined update. Unknown extra
    arguments are accepted and ignored; without `spectra` it passes the
    updates through unchanged.

    The penalty is quartic in the kernel, so a fixed gradient step depends
    on the kernels' scale and on how peaked the spectra are. With
    `scale_free=True` (default) each pair takes a Gauss–Newton step on its
    own gap (`sdr.conv_pair_gaps`): `-learning_rate · g ∇g / |∇g|²`, which
    at `learning_rate=1` would close a linear gap in one step, whatever the
    kernel's scale; each pair's step is capped at half its norm. With
    `scale_free=False` it is a plain gradient step of the summed penalty
    with step `learning_rate`.

    A kernel reached from its parameter through flips, transpositions or
    slices (`sdr.ConvTap.param_ops`) is stepped in its own layout and the
    change is mapped back onto the parameter; a parameter used by several
    convolutions (tied weights, the slices of a scanned stack) gets the sum
    of the changes of all its uses. A layer whose spectra are not finite is
    skipped for that update and counted in the state's `skipped`.

    Optax composition: the rate may be a schedule (of the state's `count`);
    the transform works under `optax.inject_hyperparams` (pass
    `static_args=("layers",)` when `layers` is a predicate, which it would
    otherwise take for a schedule), `optax.masked` and
    `optax.multi_transform` (masked-out leaves are not regularised),
    `optax.MultiSteps` (the penalty sees the spectra passed with the
    micro-step that completes each accumulation) and
    `optax.apply_if_finite`. To run it every k steps, wrap it in
    `optax.transforms.conditionally_transform(..., lambda step: step % k == 0)`.

    Args:
      learning_rate: the penalty's step size (see above), a positive number
        or an `optax` schedule; for the scale-free step, the fraction of
        each pair's gap to close per step.
      steps: penalty steps per update.
      layers: the layer names to regularise (any collection; a name without
        a suffix also selects its repeats and scan iterations), or a
        predicate on names; all layers in `spectra` by default.
      include_dc: average over all frequencies, the zero one included.
      include_aliases: keep a dilated grid's aliases of zero (`sdr.conv_sdr`).
      scale_free: per-pair Gauss–Newton steps, or plain gradient steps
        (see above).

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    Raises:
      ValueError: for a non-positive or non-finite rate or `steps` < 1; at
        update time, for names in `layers` that are not in `spectra`, or a
        layer whose parameter is not in `params`.
      TypeError: for `layers` given as a string; at update time, for
        `spectra` that is not `layer_spectra`'s output.

    References:
      Eq. (13) and Sec. 3.4 of Besserve et al., 2021.
    """
    options = _Options(
        learning_rate, steps, Layers(layers), include_dc, scale_free, include_aliases
    )

    def update_fn(updates, state, params=None, *, spectra=None, **extra_args):
        del extra_args
        return _update(options, updates, state, params, spectra)

    return optax.GradientTransformationExtraArgs(_init, update_fn)


@dataclasses.dataclass(frozen=True)
class _Options:
    """The arguments of `spectral_independence`, checked."""

    learning_rate: optax.ScalarOrSchedule
    steps: int
    selection: Layers
    include_dc: bool
    scale_free: bool
    include_aliases: bool

    def __post_init__(self) -> None:
        _check_hyperparameters(self.learning_rate, self.steps)


def _layer_gaps(layer: LayerSpectra, kernel: jax.Array, options: _Options):
    """The layer's pair gaps under the options' frequency conventions."""
    return layer._gaps(kernel, options.include_dc, options.include_aliases)


def _init(params) -> SpectralIndependenceState:
    del params
    zero = jnp.zeros((), jnp.int32)
    return SpectralIndependenceState(count=zero, skipped=zero)


def _update(options: _Options, updates, state, params, spectra):
    """The transform's update: the main update plus the penalty's steps."""
    if params is None:
        raise ValueError(
            "spectral_independence needs the parameters: call "
            "update(updates, state, params, spectra=...)."
        )
    count = optax.safe_increment(state.count)
    if spectra is None:
        return updates, state._replace(count=count)
    _check_spectra(spectra)
    options.selection.check_known(spectra, "`spectra`")
    lr = options.learning_rate
    rate = lr(state.count) if callable(lr) else lr
    uses: dict[str, list[LayerSpectra]] = {}
    for name, s in spectra.items():
        if options.selection(name):
            uses.setdefault(s.param_path, []).append(s)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    flat_updates = treedef.flatten_up_to(updates)
    skipped = state.skipped
    new_updates = []
    for (path, p), u in zip(leaves, flat_updates, strict=True):
        layers_here = uses.pop(sdr.path_name(path), None)
        if layers_here is not None and u is not None:
            u, skipped = _regularised(options, layers_here, p, u, rate, skipped)
        new_updates.append(u)
    missing = sorted(set(uses) - _masked_paths(params)) if uses else []
    if missing:
        raise ValueError(
            f"spectral_independence: no parameter at {missing}; the "
            "parameters' paths are e.g. "
            f"{[sdr.path_name(path) for path, _ in leaves[:5]]}. Pass the "
            "parameters the model was called with."
        )
    state = SpectralIndependenceState(count=count, skipped=skipped)
    return jax.tree_util.tree_unflatten(treedef, new_updates), state


def _regularised(options: _Options, layers, param, update, rate, skipped):
    """A parameter's update with the penalty's change through each of its uses.

    Tied kernels and the slices of a stacked kernel: every use takes its step
    from the same start (the parameter after the main update); the changes
    add up. Returns the new update and the new count of skipped layers.
    """
    start = (param + update).astype(jnp.float32)
    total = jnp.zeros_like(start)
    for layer in layers:
        delta, skip = _param_delta(options, layer, start, rate)
        total, skipped = total + delta, skipped + skip
    return (update.astype(jnp.float32) + total).astype(update.dtype), skipped


def _param_delta(options: _Options, layer: LayerSpectra, param: jax.Array, rate):
    """The penalty's change of a parameter through one of its uses.

    Returns the change (zero when the layer's spectra are not finite) and 1
    when the layer was skipped, else 0.
    """

    def step(_, k):
        if options.scale_free:
            return _pair_newton_step(layer, k, rate, options)
        grad = jax.grad(lambda k: jnp.sum(_layer_gaps(layer, k, options) ** 2))
        return k - rate * grad(k)

    kernel, pull_back = jax.vjp(layer.kernel, param)
    k = jax.lax.fori_loop(0, options.steps, step, kernel)
    # The structural ops are linear and move each entry at most once, so
    # their transpose maps the kernel's change back onto the parameter.
    (delta,) = pull_back(k - kernel)
    finite = jnp.all(jnp.isfinite(layer.spectra))
    return jnp.where(finite, delta, 0.0), 1 - finite.astype(jnp.int32)


def with_spectral_independence(
    optimizer: optax.GradientTransformation,
    *,
    learning_rate: optax.ScalarOrSchedule = 0.5,
    **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """`optimizer` followed by `spectral_independence`, in the one right order.

    The penalty steps from the parameters after the optimiser's update, so
    it must come last in the chain; this builds that chain. Call its
    `update(grads, state, params, spectra=...)` as usual.

    Args:
      optimizer: the model's own optimiser (e.g. `optax.adam(1e-3)`).
      learning_rate: the penalty's rate, as in `spectral_independence`.
      **kwargs: the other keyword arguments of `spectral_independence`.

    Returns:
      `optax.chain(optimizer, spectral_independence(learning_rate, **kwargs))`.

    Raises:
      TypeError: if `optimizer` is not an Optax transformation.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "`optimizer` must be an optax.GradientTransformation (e.g. "
            f"optax.adam(1e-3)); got {type(optimizer).__name__}."
        )
    return optax.chain(optimizer, spectral_independence(learning_rate, **kwargs))
