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
      kernel_axes: transposition from the parameter's layout to Flax layout.
      strides: the input dilation (stride of a transposed conv), per axis.
      kernel_dilation: per axis.
      feature_group_count: the number of feature groups.
    """

    spectra: jax.Array
    param_path: str = dataclasses.field(metadata={"static": True})
    kernel_axes: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    strides: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    kernel_dilation: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    feature_group_count: int = dataclasses.field(metadata={"static": True})

    def penalty(self, kernel: jax.Array, *, include_dc: bool = False) -> jax.Array:
        """`sdr.conv_penalty` of a kernel given in the parameter's layout.

        Args:
          kernel: the kernel leaf.
          include_dc: average over all frequencies, the zero one included.

        Returns:
          The layer's penalty, summed over its pairs.
        """
        return sdr.conv_penalty(
            self.spectra,
            jnp.transpose(kernel, self.kernel_axes),
            strides=self.strides,
            transpose=True,
            kernel_dilation=self.kernel_dilation,
            feature_group_count=self.feature_group_count,
            include_dc=include_dc,
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
      A dict from layer name to `LayerSpectra`. A selected layer whose kernel
      is computed rather than a parameter leaf (e.g. a modulated conv) is left
      out with a warning: the transform cannot update it; use `penalty` as a
      loss term for it.
    """
    out = {}
    for tap in taps:
        if not _selected(tap.name, layers):
            continue
        if tap.param_path is None:
            warnings.warn(
                f"sdr_flax: the kernel of conv layer {tap.name!r} is computed inside "
                "the model, not a parameter leaf, so spectral_independence cannot "
                "update it. Add sdr_flax.penalty(taps) to the loss instead.",
                stacklevel=2,
            )
            continue
        out[tap.name] = LayerSpectra(
            spectra=sdr.channel_spectra(jax.lax.stop_gradient(tap.maps)),
            param_path=tap.param_path,
            kernel_axes=tap.kernel_axes,
            strides=tap.lhs_dilation,
            kernel_dilation=tap.kernel_dilation,
            feature_group_count=tap.feature_group_count,
        )
    return out


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
      The scalar penalty.

    References:
      Eq. (13) and Sec. 3.4 of Besserve et al., 2021.
    """
    total = jnp.zeros((), jnp.float32)
    for tap in taps:
        if _selected(tap.name, layers):
            total = total + sdr.conv_penalty(
                sdr.channel_spectra(tap.maps),
                tap.kernel,
                **tap.conv_geometry,
                include_dc=include_dc,
            )
    return total


class SpectralIndependenceState(NamedTuple):
    """The state of `spectral_independence`: empty.

    The cause spectra arrive with each update (the `spectra` extra argument),
    so the transform keeps nothing between steps.
    """


def _scale_free_rate(
    layer: LayerSpectra, kernel: jax.Array, include_dc: bool
) -> jax.Array:
    """1 / (mean pair energy · max (S/<S> - 1)^2), on the grid the kernel acts on.

    On the dilated grid of a transposed conv the input spectrum repeats
    (`strides` copies per axis), so the copies of its zero frequency count as
    ordinary frequencies there.
    """
    c = layer.spectra.shape[0]
    grid = jnp.tile(layer.spectra, (1, *layer.strides)).reshape(c, -1)
    if not include_dc:
        grid = grid[:, 1:]
    mean = jnp.mean(grid, axis=1, keepdims=True)
    weight = jnp.where(mean > 0, grid / jnp.where(mean > 0, mean, 1.0) - 1.0, 0.0)
    flax_kernel = jnp.transpose(kernel, layer.kernel_axes)
    pairs = flax_kernel.shape[-1] * flax_kernel.shape[-2]
    energy = jnp.sum(flax_kernel.astype(jnp.float32) ** 2) / pairs
    return 1.0 / jnp.maximum(energy * jnp.max(weight) ** 2, 1e-30)


def spectral_independence(
    learning_rate: float = 0.1,
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

    The penalty is quartic in the kernel, so a fixed rate depends on the
    kernels' scale. With `scale_free=True` (default) the step of each layer
    is `learning_rate / (mean pair energy · max(S/<S> - 1)^2)`, the maximum
    taken on the grid the kernel acts on; with `scale_free=False` it is
    `learning_rate` itself. Known limitation: on the paper's β-VAE decoder
    this scaling was measured to be off by orders of magnitude in both
    directions (the first transposed conv overshot at rate 0.5, the later
    ones barely moved), so the default rate is a conservative 0.1; check
    the penalty falls on your model (`LayerSpectra.penalty`) before
    raising it.

    Args:
      learning_rate: the penalty's step size (see above).
      steps: penalty steps per update.
      layers: the layer names to regularise, or a predicate; all by default.
      include_dc: average over all frequencies, the zero one included.
      scale_free: whether to scale the step per layer (see above).

    Returns:
      An `optax.GradientTransformationExtraArgs`.

    References:
      Eq. (13) and Sec. 3.4 of Besserve et al., 2021.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1; got {steps}.")

    def init_fn(params):
        del params
        return SpectralIndependenceState()

    def update_fn(updates, state, params=None, *, spectra=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "spectral_independence needs the parameters: call "
                "update(updates, state, params, spectra=...)."
            )
        if not spectra:
            return updates, state
        by_path = {
            s.param_path: s for name, s in spectra.items() if _selected(name, layers)
        }
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        flat_updates = treedef.flatten_up_to(updates)
        found = set()
        new_updates = []
        for (path, p), u in zip(leaves, flat_updates, strict=True):
            layer = by_path.get(path_name(path))
            if layer is None or u is None:
                new_updates.append(u)
                continue
            found.add(layer.param_path)
            start = (p + u).astype(jnp.float32)
            rate = (
                learning_rate * _scale_free_rate(layer, start, include_dc)
                if scale_free
                else learning_rate
            )
            grad = jax.grad(
                lambda k, layer=layer: layer.penalty(k, include_dc=include_dc)
            )
            k = jax.lax.fori_loop(
                0, steps, lambda _, k, grad=grad, rate=rate: k - rate * grad(k), start
            )
            new_updates.append((k - p.astype(jnp.float32)).astype(u.dtype))
        missing = set(by_path) - found
        if missing:
            raise ValueError(
                f"spectral_independence: no parameter at {sorted(missing)}; the "
                "parameters' paths are e.g. "
                f"{[path_name(path) for path, _ in leaves[:5]]}."
            )
        return jax.tree_util.tree_unflatten(treedef, new_updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
