"""The cause spectra of a model's conv layers, and the penalty as a loss term."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp

import sdr
from sdr_flax._selection import Layers


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerSpectra:
    """The cause spectra of one conv layer, and how its kernel meets them.

    Made by `layer_spectra`; passed to `spectral_independence` as
    `spectra=`. A pytree: `spectra` (and the index operands) are its arrays,
    so a moving average can replace `spectra` (`dataclasses.replace`).

    Attributes:
      spectra: the mean power spectra of the layer's input channels, the
        half (real-FFT) spectra `(c_in, *grid[:-1], grid[-1] // 2 + 1)` of
        `sdr.channel_spectra(maps, half=True)`, a batch's or a moving
        average.
      param_path: where the kernel sits in the parameters (`"up1/kernel"`).
      kernel_axes: transposition from the kernel as the convolution took it
        to Flax layout.
      geometry: how the kernel meets the maps (`sdr.ConvGeometry`).
      grid: the maps' spatial shape.
      param_ops: the structural operations (`sdr.ConvTap.param_ops`) from the
        parameter to the kernel as the convolution took it: a flip, a
        transposition, one slice of a stacked (scanned) parameter…
      param_indices: their traced index operands (`sdr.ConvTap.param_indices`).
    """

    spectra: jax.Array
    param_path: str = dataclasses.field(metadata={"static": True})
    kernel_axes: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    geometry: sdr.ConvGeometry = dataclasses.field(metadata={"static": True})
    grid: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    param_ops: tuple = dataclasses.field(default=(), metadata={"static": True})
    param_indices: tuple = ()

    def kernel(self, param: jax.Array) -> jax.Array:
        """This layer's kernel in Flax layout, from its parameter leaf.

        Args:
          param: the parameter leaf at `param_path`.

        Returns:
          The kernel as `sdr.conv_penalty` takes it,
          `(*kernel_spatial, c_in // groups, c_out)`.
        """
        indices = list(self.param_indices)
        for op in self.param_ops:
            param = op(param, *indices[: op.n_indices])
            del indices[: op.n_indices]
        return jnp.transpose(param, self.kernel_axes)

    def _gaps(
        self, kernel: jax.Array, include_dc: bool, include_aliases: bool = True
    ) -> jax.Array:
        """`sdr.conv_pair_gaps` of a kernel in Flax layout."""
        return sdr.conv_pair_gaps(
            self.spectra,
            kernel,
            geometry=self.geometry,
            grid=self.grid,
            include_dc=include_dc,
            include_aliases=include_aliases,
        )


def _check_taps(taps, function: str) -> list[sdr.ConvTap]:
    taps = list(taps)
    wrong = [t for t in taps if not isinstance(t, sdr.ConvTap)]
    if wrong:
        raise TypeError(
            f"`{function}` takes the taps from `sdr_flax.capture_layers` (a list "
            f"of sdr.ConvTap); got {type(wrong[0]).__name__}."
        )
    return taps


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
      layers: the layer names to keep (any collection; a name without a
        suffix also selects its repeats and scan iterations), or a predicate
        on names; all by default.

    Returns:
      A dict from layer name to `LayerSpectra`. A kernel reached from its
      parameter through flips, transpositions, reshapes or slices (one
      iteration of a scanned stack) is tied back to it. A selected layer is
      left out, with a warning naming it, when it has no SDR
      (`sdr.ConvTap.unmeasurable`), or when its kernel is not a parameter
      leaf: computed inside the model (use `penalty` as a loss term) or
      closed over (pass the model as an argument).

    Raises:
      TypeError: if `taps` are not `sdr.ConvTap`s, or `layers` is a string.
      ValueError: if a name in `layers` matches no tapped layer.
    """
    taps = _check_taps(taps, "layer_spectra")
    selection = Layers(layers)
    selection.check_known([t.name for t in taps], "the taps")
    out = {}
    for tap in taps:
        if not selection(tap.name) or not _measurable(tap):
            continue
        if tap.param_path is None:
            warnings.warn(_not_a_parameter(tap), stacklevel=2)
            continue
        out[tap.name] = LayerSpectra(
            spectra=sdr.channel_spectra(jax.lax.stop_gradient(tap.maps), half=True),
            param_path=tap.param_path,
            kernel_axes=tap.kernel_axes,
            geometry=tap.geometry,
            grid=tuple(tap.maps.shape[1:-1]),
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
            "captured in a lambda)"
        )
        fix = "pass the model as an argument"
    else:
        why = (
            "is computed inside the model from the inputs, not a parameter leaf "
            "(e.g. a modulated conv)"
        )
        fix = "add sdr_flax.penalty(taps) to the loss instead"
    return (
        f"sdr_flax: the kernel of conv layer {tap.name!r} {why}, so "
        f"spectral_independence cannot update it; {fix}."
    )


def penalty(
    taps: Iterable[sdr.ConvTap],
    *,
    layers: Iterable[str] | Callable[[str], bool] | None = None,
    include_dc: bool = False,
    include_aliases: bool = True,
) -> jax.Array:
    r"""The spectral independence penalty of the tapped layers, as a loss term.

    $$\sum_{\text{layers}} \sum_{i,j} L(k_{ij}; S_i),$$

    eq. (13) with the cause spectra $S_i$ of the batch held constant
    (`sdr.conv_penalty` of each layer, its kernel in Flax layout as the tap
    holds it). Take the taps inside the loss function (`capture_layers`),
    so the gradient reaches whatever the kernels are computed from,
    parameters or not.

    Args:
      taps: from `capture_layers`, taken inside the differentiated function.
      layers: the layer names to include, or a predicate (as in
        `layer_spectra`); all by default.
      include_dc: average over all frequencies, the zero one included.
      include_aliases: on a transposed conv's dilated grid, keep the aliases
        of the zero frequency in the averages (see `sdr.conv_sdr`).

    Returns:
      The scalar penalty. A layer without an SDR is left out with a
      warning; one whose maps are not finite adds 0.

    Raises:
      TypeError: as `layer_spectra`.
      ValueError: as `layer_spectra`.

    References:
      Eq. (13) and Sec. 3.4 of Besserve et al., 2021.
    """
    taps = _check_taps(taps, "penalty")
    selection = Layers(layers)
    selection.check_known([t.name for t in taps], "the taps")
    total = jnp.zeros((), jnp.float32)
    for tap in taps:
        if selection(tap.name) and _measurable(tap):
            spectra = sdr.channel_spectra(tap.maps, half=True)
            # Non-finite maps: the layer adds nothing this step.
            spectra = jnp.where(jnp.all(jnp.isfinite(spectra)), spectra, 0.0)
            total = total + sdr.conv_penalty(
                spectra,
                tap.kernel,
                geometry=tap.geometry,
                grid=tuple(tap.maps.shape[1:-1]),
                include_dc=include_dc,
                include_aliases=include_aliases,
            )
    return total
