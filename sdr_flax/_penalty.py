"""The spectral independence penalty for training: an Optax transform for the
alternating scheme, and a loss term."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import sdr
from sdr._taps import path_name


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerSpectra:
    """The cause spectra of one conv layer, and how its kernel meets them.

    Attributes:
      spectra: `(c_in, *spatial)` mean power spectra of the layer's input
        channels (`sdr.channel_spectra`), a batch's or a moving average.
      param_path: where the kernel sits in the parameters (`"up1/kernel"`).
      kernel_axes: transposition from the kernel as the convolution took it
        to Flax layout.
      strides: the input dilation (stride of a transposed conv), per axis.
      kernel_dilation: per axis.
      feature_group_count: the number of feature groups.
      param_ops: the structural operations (`sdr.ConvTap.param_ops`) from the
        parameter to the kernel as the convolution took it: a flip, a
        transposition, one slice of a stacked (scanned) parameter…
      param_indices: their traced index operands (`sdr.ConvTap.param_indices`).
    """

    spectra: jax.Array
    param_path: str = dataclasses.field(metadata={"static": True})
    kernel_axes: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    strides: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    kernel_dilation: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    feature_group_count: int = dataclasses.field(metadata={"static": True})
    param_ops: tuple = dataclasses.field(default=(), metadata={"static": True})
    param_indices: tuple = ()

    def kernel(self, param: jax.Array) -> jax.Array:
        """This layer's kernel in Flax layout, from its parameter leaf."""
        indices = list(self.param_indices)
        for op in self.param_ops:
            param = op(param, *indices[: op.n_indices])
            del indices[: op.n_indices]
        return jnp.transpose(param, self.kernel_axes)

    def penalty(self, kernel: jax.Array, *, include_dc: bool = False) -> jax.Array:
        """`sdr.conv_penalty` of the kernel, given as its parameter leaf.

        Args:
          kernel: the parameter leaf (see `kernel`).
          include_dc: average over all frequencies, the zero one included.

        Returns:
          The layer's penalty, summed over its pairs.
        """
        return sdr.conv_penalty(
            self.spectra,
            self.kernel(kernel),
            **self.conv_geometry,
            include_dc=include_dc,
        )

    @property
    def conv_geometry(self) -> dict:
        """The keyword arguments of `sdr.conv_penalty` for this layer."""
        return {
            "strides": self.strides,
            "transpose": True,
            "kernel_dilation": self.kernel_dilation,
            "feature_group_count": self.feature_group_count,
        }

    def gaps(self, kernel: jax.Array, *, include_dc: bool = False) -> jax.Array:
        """`sdr.conv_pair_gaps` of a kernel given in Flax layout.

        Args:
          kernel: the kernel, `(*kernel_spatial, c_in // groups, c_out)`.
          include_dc: average over all frequencies, the zero one included.

        Returns:
          The per-pair gaps, `(c_in // groups, c_out)`.
        """
        return sdr.conv_pair_gaps(
            self.spectra, kernel, **self.conv_geometry, include_dc=include_dc
        )


def _selected(name: str, layers: Iterable[str] | Callable[[str], bool] | None) -> bool:
    if layers is None:
        return True
    if callable(layers):
        return bool(layers(name))
    return name in set(layers)


def layer_spectra(
    taps: Iterable[sdr.ConvTap],
    *,
    layers: Iterable[str] | Callable[[str], bool] | None = None,
) -> dict[str, LayerSpectra]:
    """The cause spectra of the tapped layers whose kernel is a parameter.

    Pass the result to `spectral_independence` as `spectra=` (its extra
    argument). The spectra are computed from the batch the taps saw, so the
    model runs once per step (see `capture_layers`).

    Args:
      taps: from `capture_layers` (or `sdr.capture_convs`).
      layers: the layer names to keep, or a predicate on names; all by default.

    Returns:
      A dict from layer name to `LayerSpectra`. A kernel reached from its
      parameter through flips, transpositions, reshapes or slices (one
      iteration of a scanned stack) is tied back to it. A selected layer is
      left out, with a warning naming it, when it has no SDR
      (`sdr.ConvTap.unmeasurable`), or when its kernel is not a parameter
      leaf: computed inside the model (use `penalty` as a loss term) or
      closed over (pass the model as an argument).
    """
    out = {}
    for tap in taps:
        if not _selected(tap.name, layers) or not _measurable(tap):
            continue
        if tap.param_path is None:
            warnings.warn(_not_a_parameter(tap), stacklevel=2)
            continue
        out[tap.name] = LayerSpectra(
            spectra=sdr.channel_spectra(jax.lax.stop_gradient(tap.maps)),
            param_path=tap.param_path,
            kernel_axes=tap.kernel_axes,
            strides=tap.lhs_dilation,
            kernel_dilation=tap.kernel_dilation,
            feature_group_count=tap.feature_group_count,
            param_ops=tap.param_ops,
            param_indices=tuple(jax.lax.stop_gradient(i) for i in tap.param_indices),
        )
    return out


def _measurable(tap: sdr.ConvTap) -> bool:
    """False, with a warning naming the layer, when it has no SDR."""
    reason = tap.unmeasurable
    if reason is not None:
        warnings.warn(
            f"sdr_flax: conv layer {tap.name!r} has no SDR ({reason}); it is left "
            "out of the penalty.",
            stacklevel=3,
        )
    return reason is None


def _not_a_parameter(tap: sdr.ConvTap) -> str:
    if tap.kernel_source == "constant":
        why = (
            "is not an input of the function (it is closed over, e.g. a model "
            "captured in a lambda): pass the model as an argument"
        )
    else:
        why = (
            "is computed inside the model from the inputs, not a parameter leaf "
            "(e.g. a modulated conv): add sdr_flax.penalty(taps) to the loss instead"
        )
    return (
        f"sdr_flax: the kernel of conv layer {tap.name!r} {why}, so "
        "spectral_independence cannot update it."
    )


def penalty(
    taps: Iterable[sdr.ConvTap],
    *,
    layers: Iterable[str] | Callable[[str], bool] | None = None,
    include_dc: bool = False,
) -> jax.Array:
    r"""The spectral independence penalty of the tapped layers, as a loss term.

    $$\sum_{\text{layers}} \sum_{i,j} L(k_{ij}; S_i),$$

    eq. (13) with the cause spectra $S_i$ of the batch held constant. Take
    the taps inside the loss function (`capture_layers`), so the gradient
    reaches whatever the kernels are computed from, parameters or not.

    Args:
      taps: from `capture_layers`, taken inside the differentiated function.
      layers: the layer names to include, or a predicate; all by default.
      include_dc: average over all frequencies, the zero one included.

    Returns:
      The scalar penalty. A layer without an SDR is left out with a
      warning; one whose maps are not finite adds 0.

    References:
      Eq. (13) and Sec. 3.4 of Besserve et al., 2021.
    """
    total = jnp.zeros((), jnp.float32)
    for tap in taps:
        if _selected(tap.name, layers) and _measurable(tap):
            spectra = sdr.channel_spectra(tap.maps)
            # Non-finite maps: the layer adds nothing this step.
            spectra = jnp.where(jnp.all(jnp.isfinite(spectra)), spectra, 0.0)
            total = total + sdr.conv_penalty(
                spectra,
                tap.kernel,
                **tap.conv_geometry,
                include_dc=include_dc,
            )
    return total


class SpectralIndependenceState(NamedTuple):
    """The state of `spectral_independence`.

    The cause spectra arrive with each update (the `spectra` extra argument),
    so the transform keeps only counts.

    Attributes:
      count: the number of updates made.
      skipped: the number of (layer, update) pairs skipped because the
        layer's spectra were not finite (e.g. a NaN in its input maps); the
        layer's kernel then gets the main update only.
    """

    count: jax.Array
    skipped: jax.Array


_MAX_RELATIVE_STEP = 0.5


def _pair_newton_step(
    layer: LayerSpectra, kernel: jax.Array, rate: float, include_dc: bool
) -> jax.Array:
    """One Gauss–Newton step on each pair's gap, in Flax layout.

    Each pair's gap g is quadratic in its kernel k, so the step
    `-rate · g ∇g / |∇g|²` would close a linear gap at `rate=1`. It is
    invariant to the kernel's scale and to the spectra's peakedness, and it
    is capped at `_MAX_RELATIVE_STEP` of the pair's norm (near a critical
    point of g, where ∇g is small).
    """
    gaps, vjp = jax.vjp(lambda k: layer.gaps(k, include_dc=include_dc), kernel)
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


def spectral_independence(
    learning_rate: float = 0.5,
    *,
    steps: int = 1,
    layers: Iterable[str] | Callable[[str], bool] | None = None,
    include_dc: bool = False,
    scale_free: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""The alternating scheme of Sec. 3.4 as an Optax transform.

    Chain it after any optimiser. Each update applies the main update, then
    `steps` gradient steps of the eq. (13) penalty on the selected kernels,
    with the cause spectra passed as the extra argument `spectra` (from
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

    Args:
      learning_rate: the penalty's step size (see above); for the
        scale-free step, the fraction of each pair's gap to close per step.
      steps: penalty steps per update.
      layers: the layer names to regularise, or a predicate; all by default.
      include_dc: average over all frequencies, the zero one included.
      scale_free: per-pair Gauss–Newton steps, or plain gradient steps
        (see above).

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    References:
      Eq. (13) and Sec. 3.4 of Besserve et al., 2021.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1; got {steps}.")

    def init_fn(params):
        del params
        zero = jnp.zeros((), jnp.int32)
        return SpectralIndependenceState(count=zero, skipped=zero)

    def layer_step(layer: LayerSpectra, k: jax.Array) -> jax.Array:
        if scale_free:
            return _pair_newton_step(layer, k, learning_rate, include_dc)
        grad = jax.grad(lambda k: jnp.sum(layer.gaps(k, include_dc=include_dc) ** 2))
        return k - learning_rate * grad(k)

    def param_delta(layer: LayerSpectra, param: jax.Array):
        """The penalty's change of a parameter through one of its uses."""
        kernel, pull_back = jax.vjp(layer.kernel, param)
        k = jax.lax.fori_loop(0, steps, lambda _, k: layer_step(layer, k), kernel)
        # The structural ops are linear and move each entry at most once, so
        # their transpose maps the kernel's change back onto the parameter.
        (delta,) = pull_back(k - kernel)
        finite = jnp.all(jnp.isfinite(layer.spectra))
        return jnp.where(finite, delta, 0.0), 1 - finite.astype(jnp.int32)

    def update_fn(updates, state, params=None, *, spectra=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "spectral_independence needs the parameters: call "
                "update(updates, state, params, spectra=...)."
            )
        count = optax.safe_increment(state.count)
        if not spectra:
            return updates, state._replace(count=count)
        uses: dict[str, list[LayerSpectra]] = {}
        for name, s in spectra.items():
            if _selected(name, layers):
                uses.setdefault(s.param_path, []).append(s)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        flat_updates = treedef.flatten_up_to(updates)
        found = set()
        skipped = state.skipped
        new_updates = []
        for (path, p), u in zip(leaves, flat_updates, strict=True):
            layers_here = uses.get(path_name(path))
            if layers_here is None or u is None:
                new_updates.append(u)
                continue
            found.add(path_name(path))
            start = (p + u).astype(jnp.float32)
            # Tied kernels and the slices of a stacked kernel: every use
            # takes its step from the same start; the changes add up.
            total = jnp.zeros_like(start)
            for layer in layers_here:
                delta, skip = param_delta(layer, start)
                total, skipped = total + delta, skipped + skip
            new_updates.append((u.astype(jnp.float32) + total).astype(u.dtype))
        missing = set(uses) - found
        if missing:
            raise ValueError(
                f"spectral_independence: no parameter at {sorted(missing)}; the "
                "parameters' paths are e.g. "
                f"{[path_name(path) for path, _ in leaves[:5]]}."
            )
        state = SpectralIndependenceState(count=count, skipped=skipped)
        return jax.tree_util.tree_unflatten(treedef, new_updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
