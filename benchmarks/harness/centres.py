"""Where to stretch a generative level: the point its maps put at the image centre.

A stretch of a level's maps (`sdr_flax.stretch_maps`) can only match the
stretched output image if both keep the same point in place: the output is
stretched about the image centre `N/2`, so a level's maps must be stretched
about the point that the rest of the generator maps to `N/2`. That point is
not the maps' array centre `n/2`: a stride-2 transposed conv with Flax's
`"SAME"` padding puts map position `x` at `2x + 1/2` of its output (pixel `i`
covers `[i, i + 1)`), so each level's centre is off from `n/2` by a fraction
of a pixel (`level_centres`; the β-VAE's tiny config: −0.4375, −0.375, −0.25
and 0 map pixels at coarse, intermediate, fine and image).

The geometry is read from the convolutions the generator actually runs
(`generator_convs`: the `conv_general_dilated` equations of its jaxpr, with
the padding, input dilation and strides that `lax.conv_transpose` and
`lax.conv_general_dilated` resolved), not assumed. A convolution whose
kernel is symmetric about its centre maps input position `x` (in pixels) to

    x' = (s·(x − 1/2) + p − (K − 1)/2) / w + 1/2

along each spatial axis, with `s` the input dilation (a transposed conv's
stride), `p` the padding before the maps, `K` the (dilated) kernel extent and
`w` the window stride: the dilated, padded input position `s·i + p` of pixel
`i` is the centre of the kernel window of output pixel `(s·i + p − (K−1)/2)/w`.
Composing these maps from a level's layer to the last one and inverting the
(affine) result gives the level's centre.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.extend import core as jcore

import sdr_flax
from benchmarks.nets import Architecture


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """How one convolution moves positions, per spatial axis (maps' order).

    Attributes:
      name: the layer's name (as `sdr_flax.capture_layers` names it).
      in_size: the input maps' spatial shape.
      out_size: the output maps' spatial shape.
      input_dilation: the input dilation (a transposed conv's stride).
      padding: `(before, after)` zero padding of the dilated input.
      extent: the kernel's spatial extent, dilation included.
      window_strides: the window strides.
    """

    name: str
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    input_dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    extent: tuple[int, ...]
    window_strides: tuple[int, ...]

    def position(self, x: float, dim: int) -> float:
        """Where a symmetric kernel puts input position `x` in the output.

        Args:
          x: a position in input pixels along spatial axis `dim` (pixel `i`
            covers `[i, i + 1)`).
          dim: the spatial axis.

        Returns:
          The output position, in output pixels.
        """
        s, w = self.input_dilation[dim], self.window_strides[dim]
        before, k = self.padding[dim][0], self.extent[dim]
        return (s * (x - 0.5) + before - (k - 1) / 2) / w + 0.5

    def scale(self, dim: int) -> float:
        """Output pixels per input pixel along spatial axis `dim`.

        Args:
          dim: the spatial axis.

        Returns:
          `input_dilation / window_strides`.
        """
        return self.input_dilation[dim] / self.window_strides[dim]


def _conv_equations(jaxpr: jcore.Jaxpr, found: list) -> list:
    """The `conv_general_dilated` equations of a jaxpr and its sub-jaxprs, in order."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jcore.ClosedJaxpr):
                    _conv_equations(sub.jaxpr, found)
                elif isinstance(sub, jcore.Jaxpr):
                    _conv_equations(sub, found)
    return found


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _geometry(name: str, eqn) -> ConvGeometry:
    """A conv equation's geometry along the input's spatial axes, in order."""
    dn = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    kernel = tuple(rhs[a] for a in dn.rhs_spec[2:])
    dilation = eqn.params["rhs_dilation"]
    return ConvGeometry(
        name=name,
        in_size=tuple(lhs[a] for a in dn.lhs_spec[2:]),
        out_size=tuple(out[a] for a in dn.out_spec[2:]),
        input_dilation=tuple(eqn.params["lhs_dilation"]),
        padding=tuple(tuple(p) for p in eqn.params["padding"]),
        extent=tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)),
        window_strides=tuple(eqn.params["window_strides"]),
    )


def generator_convs(fn: Callable[..., jax.Array], *args: Any) -> list[ConvGeometry]:
    """The convolutions `fn(*args)` runs, in order, with their geometry.

    Args:
      fn: the generative network, returning images `(n, *spatial, c)`.
      *args: its arguments (arrays or `jax.ShapeDtypeStruct`s; only shapes
        are used).

    Returns:
      One `ConvGeometry` per convolution, named as by
      `sdr_flax.capture_layers`.

    Raises:
      ValueError: if the convolutions do not form a chain on matching grids
        ending at the image (each one's output grid the next one's input
        grid, the last one's the image's), so that positions cannot be
        followed from a layer to the image.
    """
    args = _abstract(args)
    closed, image = jax.make_jaxpr(fn, return_shape=True)(*args)
    eqns = _conv_equations(closed.jaxpr, [])
    taps = jax.eval_shape(lambda *a: sdr_flax.capture_layers(fn, *a)[1], *args)
    if len(taps) != len(eqns):
        raise ValueError(
            f"found {len(eqns)} convolutions in the jaxpr, {len(taps)} taps"
        )
    convs = [_geometry(tap.name, eqn) for tap, eqn in zip(taps, eqns, strict=True)]
    for tap, conv in zip(taps, convs, strict=True):
        if tuple(tap.maps.shape[1:-1]) != conv.in_size:
            raise ValueError(f"{tap.name}: tap and equation grids differ")
    grids = [c.in_size for c in convs[1:]] + [tuple(image.shape[1:-1])]
    for conv, grid in zip(convs, grids, strict=True):
        if conv.out_size != grid:
            raise ValueError(
                f"{conv.name} outputs a {conv.out_size} grid, but the next layer "
                f"(or the image) is on {grid}: the convolutions are not a chain "
                "whose positions can be followed to the image"
            )
    return convs


def image_position(convs: Sequence[ConvGeometry], x: float, dim: int) -> float:
    """Where position `x` of the first conv's input lands in the image.

    Args:
      convs: a chain of convolutions, the last one's output the image.
      x: a position in the first conv's input pixels along spatial axis `dim`.
      dim: the spatial axis.

    Returns:
      The image position (image pixels), for symmetric kernels.
    """
    for conv in convs:
        x = conv.position(x, dim)
    return x


def chain_centres(convs: Sequence[ConvGeometry], layer: str) -> tuple[float, ...]:
    """The point of `layer`'s input maps that the chain puts at the image centre.

    Args:
      convs: the generator's convolutions (`generator_convs`).
      layer: the name of one of them.

    Returns:
      One centre per spatial axis, in input pixels of `layer`.

    Raises:
      ValueError: if `layer` is not one of `convs`.
    """
    names = [c.name for c in convs]
    if layer not in names:
        raise ValueError(f"{layer!r} is not one of the generator's layers {names}")
    chain = convs[names.index(layer) :]
    centres = []
    for dim, image in enumerate(chain[-1].out_size):
        b = image_position(chain, 0.0, dim)
        a = 1.0
        for conv in chain:
            a *= conv.scale(dim)
        centres.append((image / 2 - b) / a)
    return tuple(centres)


def level_centres(
    architecture: Architecture, model, variables, codes
) -> dict[str, tuple[float, ...]]:
    """Each level's stretch centre: the point the generator maps to the image centre.

    Args:
      architecture: the network's architecture (its `generate` and `levels`).
      model: the network.
      variables: its variables (arrays or `jax.ShapeDtypeStruct`s).
      codes: codes to generate from (only their shape is used).

    Returns:
      Level name → one centre per spatial axis of the level's maps (height,
      width for channels-last images), in map pixels (pixel `i` covers
      `[i, i + 1)`).

    Raises:
      ValueError: as `generator_convs`, or if a level's layer is not one of
        the generator's convolutions.
    """

    def generate(variables, codes):
        return architecture.generate(model, variables, codes)

    convs = generator_convs(generate, variables, codes)
    return {
        level: chain_centres(convs, layer)
        for level, layer in architecture.levels.items()
    }
