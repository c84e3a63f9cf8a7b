"""The geometry of a conv layer: the grid its kernel acts on.

`ConvGeometry` is the public description of a layer (input dilation, kernel
dilation, feature groups); `resolve` turns the arguments of `conv_sdr`,
`conv_pair_gaps` and `conv_penalty` into one; `KernelGrid` is the static
description, checked against the shapes, of how a kernel meets its input
maps' grid, which the pair sums are computed on.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TypedDict

import jax
import numpy as np

from sdr import _checks


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvGeometry:
    r"""How a conv layer's kernel meets its input maps: the grid it is measured on.

    A frozen, hashable value (a pytree without leaves), so it can be a static
    argument of `jax.jit` or a field of a pytree. Each field is an int (the
    same on every spatial axis, resolved against the maps' rank when used) or
    a sequence of ints, one per spatial axis, stored as a tuple.

    The kernel of a layer with input dilation $s$ acts on the input maps
    dilated by $s$ (zeros inserted: `lhs_dilation` of
    `lax.conv_general_dilated`), so the layer is measured on the grid
    $s \cdot$ `spatial`, each map placed at the multiples of $s$:

    - a *transposed* conv with stride $s$ (`flax.linen.ConvTranspose`,
      `lax.conv_transpose`) has input dilation $s$;
    - a *strided* (downsampling) conv has input dilation 1: its kernel acts
      on the input grid and the stride only subsamples the output, so it is
      measured on its input grid and the stride does not enter.

    `ConvGeometry.of_layer` builds it from a layer's `strides` and
    `transpose`; `sdr.ConvTap.geometry` gives it for a captured convolution.

    Attributes:
      input_dilation: the input (lhs) dilation, the stride of a transposed
        conv; 1 for a plain or strided conv.
      kernel_dilation: the kernel (rhs) dilation, applied before the kernel
        is zero-padded to the grid.
      feature_group_count: the number of feature groups; only the pairs
        within a group are measured.

    Raises:
      ValueError: if a field is not a positive int or a sequence of
        positive ints, or the two per-axis fields differ in length.
    """

    input_dilation: int | tuple[int, ...] = 1
    kernel_dilation: int | tuple[int, ...] = 1
    feature_group_count: int = 1

    def __post_init__(self) -> None:
        for name in ("input_dilation", "kernel_dilation"):
            value = _checks.positive_ints(name, getattr(self, name))
            object.__setattr__(self, name, value)
        object.__setattr__(
            self,
            "feature_group_count",
            _checks.positive_int("feature_group_count", self.feature_group_count),
        )
        lengths = {
            len(v)
            for v in (self.input_dilation, self.kernel_dilation)
            if isinstance(v, tuple)
        }
        if len(lengths) > 1:
            raise ValueError(
                "`input_dilation` and `kernel_dilation` must have one entry per "
                f"spatial axis each (the same number); got {self.input_dilation} "
                f"and {self.kernel_dilation}."
            )

    @classmethod
    def of_layer(
        cls,
        *,
        strides: int | Sequence[int] = 1,
        transpose: bool = False,
        kernel_dilation: int | Sequence[int] = 1,
        feature_group_count: int = 1,
    ) -> ConvGeometry:
        """The geometry of a conv layer given by its Flax/`lax` arguments.

        Args:
          strides: the layer's stride, an int or one per spatial axis. It
            enters only with `transpose=True`: a strided (downsampling) conv
            is measured on its input grid.
          transpose: whether the layer is a transposed conv, whose stride is
            an input dilation.
          kernel_dilation: an int or one per spatial axis.
          feature_group_count: the number of feature groups.

        Returns:
          The geometry, with `input_dilation=strides` if `transpose`, else 1.

        Raises:
          ValueError: if an argument is not a positive int or a sequence of
            them.
        """
        strides = _checks.positive_ints("strides", strides)
        return cls(
            input_dilation=strides if transpose else 1,
            kernel_dilation=kernel_dilation,
            feature_group_count=feature_group_count,
        )

    def per_axis(self, rank: int) -> ConvGeometry:
        """This geometry with one entry per spatial axis for maps of `rank`.

        Args:
          rank: the spatial rank of the maps (2 for images).

        Returns:
          The geometry with `input_dilation` and `kernel_dilation` tuples of
          length `rank`.

        Raises:
          ValueError: if a per-axis field does not have `rank` entries.
        """
        return dataclasses.replace(
            self,
            input_dilation=_checks.per_axis(
                "input_dilation", self.input_dilation, rank
            ),
            kernel_dilation=_checks.per_axis(
                "kernel_dilation", self.kernel_dilation, rank
            ),
        )

    def grid(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The grid the kernel acts on, for input maps of spatial shape `spatial`.

        Args:
          spatial: the spatial shape of the input maps.

        Returns:
          `input_dilation * spatial`, per axis.

        Raises:
          ValueError: if `input_dilation` does not fit the rank of `spatial`.
        """
        dilation = _checks.per_axis("input_dilation", self.input_dilation, len(spatial))
        return tuple(int(h) * s for h, s in zip(spatial, dilation, strict=True))

    def kernel_extent(self, kernel_spatial: Sequence[int]) -> tuple[int, ...]:
        """The spatial extent of the dilated kernel.

        Args:
          kernel_spatial: the kernel's spatial shape.

        Returns:
          `(k - 1) * kernel_dilation + 1`, per axis.

        Raises:
          ValueError: if `kernel_dilation` does not fit the rank of
            `kernel_spatial`.
        """
        dilation = _checks.per_axis(
            "kernel_dilation", self.kernel_dilation, len(kernel_spatial)
        )
        return tuple(
            (int(k) - 1) * d + 1 for k, d in zip(kernel_spatial, dilation, strict=True)
        )


class LayerKeywords(TypedDict, total=False):
    """A layer's geometry as the keywords of `ConvGeometry.of_layer`.

    The functions that take them (`conv_sdr`, `conv_pair_gaps`,
    `conv_penalty`) take them instead of `geometry=`; None, or not given,
    means 1 (False for `transpose`).
    """

    strides: int | Sequence[int] | None
    transpose: bool | None
    kernel_dilation: int | Sequence[int] | None
    feature_group_count: int | None


_KEYWORDS = tuple(LayerKeywords.__annotations__)


def resolve(
    rank: int, geometry: ConvGeometry | None, layer: dict
) -> ConvGeometry | None:
    """The layer's geometry, one entry per axis, from `geometry=` or the keywords.

    Runs before `jax.jit`, so any sequence works and the static arguments are
    hashable and normalised (equal geometries share one compilation). Returns
    None when the maps' rank is invalid; the shape checks then say so.
    """
    unknown = [k for k in layer if k not in _KEYWORDS]
    if unknown:
        raise TypeError(
            f"Unexpected keyword argument(s) {', '.join(map(repr, unknown))}; the "
            f"layer's geometry is `geometry=` or the keywords "
            f"{', '.join(f'`{k}`' for k in _KEYWORDS)}."
        )
    given = {k: v for k, v in layer.items() if v is not None}
    if geometry is not None:
        if given:
            raise ValueError(
                "Give the layer's geometry either as `geometry=` or as the keywords "
                f"{', '.join(f'`{k}`' for k in _KEYWORDS)}, not both; got "
                f"geometry={geometry!r} and "
                f"{', '.join(f'{k}={v!r}' for k, v in given.items())}."
            )
        if not isinstance(geometry, ConvGeometry):
            raise TypeError(
                "`geometry` must be an sdr.ConvGeometry; got "
                f"{type(geometry).__name__}."
            )
        return geometry.per_axis(rank) if rank >= 1 else None
    if rank < 1:
        return None
    strides = _checks.per_axis("strides", given.get("strides", 1), rank)
    return ConvGeometry(
        input_dilation=strides if given.get("transpose", False) else (1,) * rank,
        kernel_dilation=_checks.per_axis(
            "kernel_dilation", given.get("kernel_dilation", 1), rank
        ),
        feature_group_count=_checks.positive_int(
            "feature_group_count", given.get("feature_group_count", 1)
        ),
    )


@dataclasses.dataclass(frozen=True)
class KernelGrid:
    """Static description of how a conv kernel meets its cause's grid."""

    map_grid: tuple[int, ...]  # spatial shape of the (undilated) maps
    kernel_spatial: tuple[int, ...]
    input_dilation: tuple[int, ...]  # >1 for transposed convs
    kernel_dilation: tuple[int, ...]
    groups: int
    half: bool = False  # spectra are rfftn halves along the last spatial axis

    @property
    def grid(self) -> tuple[int, ...]:
        """The grid the kernel acts on: the maps' grid times the input dilation."""
        return tuple(
            h * s for h, s in zip(self.map_grid, self.input_dilation, strict=True)
        )

    @functools.cached_property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Gather indices `(P, P)` of the tap lags into the map grid, and the mask
        of lags that fall on the map's lattice (all of them when undilated)."""
        taps = np.stack(
            np.meshgrid(*[np.arange(k) for k in self.kernel_spatial], indexing="ij"),
            axis=-1,
        ).reshape(-1, len(self.kernel_spatial))
        pos = taps * np.asarray(self.kernel_dilation)
        s = np.asarray(self.input_dilation)
        lag = pos[:, None, :] - pos[None, :, :]
        mask = np.all(lag % s == 0, axis=-1)
        index = np.ravel_multi_index(
            tuple(np.moveaxis((lag // s) % np.asarray(self.map_grid), -1, 0)),
            self.map_grid,
        )
        return index, mask.astype(np.float32)


def kernel_grid(
    spatial: Sequence[int],
    channels: int,
    kernel_shape: Sequence[int],
    layer: ConvGeometry,
    *,
    half: bool,
) -> KernelGrid:
    """The `KernelGrid` of a kernel on maps of `spatial` shape and `channels`.

    Raises:
      ValueError: if the kernel's rank, channels or groups do not fit the
        maps, or the (dilated) kernel is larger than the grid.
    """
    rank = len(spatial)
    if len(kernel_shape) != rank + 2:
        raise ValueError(
            f"`kernel` must have shape (*kernel_spatial, c_in // groups, c_out) "
            f"with spatial rank {rank} like the maps; got kernel shape "
            f"{tuple(kernel_shape)} for {rank}-D maps."
        )
    groups = layer.feature_group_count
    c_in_group, c_out = kernel_shape[-2], kernel_shape[-1]
    if c_in_group * groups != channels:
        raise ValueError(
            f"Channel mismatch: `maps` has {channels} channels but `kernel` of "
            f"shape {tuple(kernel_shape)} expects {c_in_group} per group × "
            f"{groups} group(s) = {c_in_group * groups}."
        )
    if c_out % groups:
        raise ValueError(
            f"`kernel` has {c_out} output channels, not divisible by "
            f"feature_group_count={groups}."
        )
    geometry = KernelGrid(
        map_grid=tuple(spatial),
        kernel_spatial=tuple(kernel_shape[:-2]),
        input_dilation=layer.input_dilation,
        kernel_dilation=layer.kernel_dilation,
        groups=groups,
        half=half,
    )
    extent = layer.kernel_extent(geometry.kernel_spatial)
    _checks.check_kernel_fits(extent, geometry.grid, kernel_shape)
    return geometry
