"""What the harness measures during training (the paper's Sec. 4.1–4.2, Fig. 4–5).

On a fixed evaluation batch `x`, with batch norm on its running averages, the
generative network (`Architecture.generate`) decodes the codes of the
evaluation (`Architecture.codes`: the β-VAE's encoding `mu(x)`, the DCGAN's
latent codes drawn from the evaluation key):

- `recon_mse` (networks that reconstruct their input): the reconstruction
  error of `decode(mu(x))`.
- `stretch_mse[level]` (Fig. 4g): stretch every map entering one generative
  level horizontally by 1.5 about the level's derived centre
  (`benchmarks.harness.centres`: the point the rest of the network maps to
  the image centre) with linear interpolation (`sdr_flax.stretch_maps`),
  run the rest of the network, and compare with stretching the output image
  itself about its centre: the mean squared error of the two images.
  Levels are `Architecture.levels`: coarse, intermediate, fine, image.
- `stretch_mse_sensitivity[level][variant]`: the same with the centre moved
  by half a map pixel (`centre-0.5`, `centre+0.5`), with nearest-pixel
  interpolation of the maps and of the output (`nearest`), and about the
  maps' array centre n/2 (`array_centre`), `SENSITIVITY`.
- `stretch_mse_output_maps[level]`: the paper's levels read as the maps
  leaving a level's layer: the maps entering the next layer stretched about
  their derived centre; 0 for the last layer, whose output is the image.
- `stretch_highpass`: the scale of what a stretch can get wrong, the
  mean squared high-pass content of the stretched output, `MSE(S(x̂),
  B(S(x̂)))` with `B` the 3×3 binomial blur (`highpass_energy`): a blurrier
  model has less of it. `stretch_mse[level] / stretch_highpass` is the
  normalised extrapolation error that the study reports beside the raw one.
- `stretch_centre[level]`, `stretch_centre_offset[level]`: the derived
  centre along the width, in map pixels (pixel i covers [i, i + 1)), and
  its offset from n/2.
- `truth_mse[target][level]` (procedural faces, reconstructing networks
  only): the same extrapolated images against a ground-truth render of the
  intervention (`target`, `face_truths`), for instance the faces with their
  eyes 1.5× further apart; `none` is the unedited reconstruction and
  `output` the stretched output image, against the same truth, for scale.
  A whole-image error hardly sees eyes a few pixels wide, and the unedited
  face is close to the eyes-apart truth (`landmarks` gives the figures).
- `truth_features[target][image][feature]` (faces, with their factors): the
  position and shape errors of each eye and the mouth of the same images
  against the truth's (`landmarks.feature_metrics`): a stretch that moves
  the eyes apart and keeps their shape scores a small `position` and a
  `width_ratio` near 1; an image stretch widens the eyes (≈ 1.5).
- `sdr_without_aliases[layer]`: the same statistics of the transposed
  convs (the layers with a dilated grid) with the aliases of the zero
  frequency left out of the averages (`include_aliases=False`); the other
  layers do not depend on it.
- `sdr[layer]` (Fig. 5): the pair SDRs of every conv layer of both networks
  (`Architecture.taps`), summarized by `sdr_flax.layer_stats` (as
  `sdr_flax.summarize`): pairs, undefined pairs (NaN: input channel without
  power), median, quartiles, share of generic pairs (`|log ρ| < log 1.25`),
  and a histogram of `log2 ρ` over `SDR_BINS`. A layer without an SDR
  (`sdr.ConvTap.unmeasurable`; the tiny config's last encoder conv: 5×5 on
  4×4) is recorded as unmeasured: no pairs, NaN statistics, empty histogram.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

import sdr_flax
from benchmarks.harness import centres, faces, landmarks
from benchmarks.nets import Architecture

# Histogram edges of log2 ρ (values outside are counted in the end bins).
SDR_BINS = np.linspace(-2.0, 2.0, 65)
STRETCH = 1.5
IMAGES_SHOWN = 8


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean((a - b) ** 2)


def binomial_blur(images: jax.Array) -> jax.Array:
    """`images` (n, H, W, C) blurred by the 3×3 binomial filter, edges repeated.

    The filter is `[1, 2, 1] / 4` along the height and then the width.

    Args:
      images: a batch of images or maps.

    Returns:
      The blurred batch, of the same shape.
    """
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4
    return (h[:, :, :-2] + 2 * h[:, :, 1:-1] + h[:, :, 2:]) / 4


def highpass_energy(images: jax.Array) -> jax.Array:
    """The mean squared high-pass content of `images`: `MSE(x, binomial_blur(x))`.

    Args:
      images: a batch of images (n, H, W, C).

    Returns:
      A scalar; 0 for constant images.
    """
    return _mse(images, binomial_blur(images))


def sdr_stats(taps, *, include_aliases: bool = True) -> dict[str, dict[str, jax.Array]]:
    """The `sdr_flax.layer_stats` of each tapped layer, histogram over `SDR_BINS`.

    Jit-compatible (the evaluators run it inside `jax.jit`).

    Args:
      taps: `sdr.ConvTap`s.
      include_aliases: as `sdr.ConvTap.pair_sdr`: whether the aliases of the
        zero frequency on a dilated (transposed conv) grid count.

    Returns:
      Layer name → `{"pairs", "undefined", "median", "q25", "q75",
      "generic_share", "counts"}`. A layer without an SDR
      (`sdr.ConvTap.unmeasurable`, e.g. a 5×5 kernel on 4×4 maps) is
      recorded as unmeasured: `pairs` 0, NaN statistics, zero counts.
    """
    stats = {}
    for tap in taps:
        if tap.unmeasurable:
            r = jnp.zeros((0,))
        else:
            r = tap.pair_sdr(include_aliases=include_aliases)
        stats[tap.name] = sdr_flax.layer_stats(r, edges=SDR_BINS)
    return stats


def alias_free_stats(taps) -> dict[str, dict[str, jax.Array]]:
    """`sdr_stats` of the layers on a dilated grid, aliases of zero left out.

    Args:
      taps: `sdr.ConvTap`s.

    Returns:
      As `sdr_stats(..., include_aliases=False)`, for the taps whose input is
      dilated (transposed convs) only: the others do not depend on it.
    """
    dilated = [t for t in taps if math.prod(t.geometry.input_dilation) > 1]
    return sdr_stats(dilated, include_aliases=False)


def face_truths(factors: faces.FaceFactors, size: int) -> dict[str, jax.Array]:
    """Ground-truth renders of the stretches the evaluation compares with.

    Args:
      factors: the evaluation faces' factors.
      size: image height and width.

    Returns:
      `eye_distance` (the eyes `STRETCH`× further apart) and `face_width`
      (the face and the eye distance `STRETCH`× wider): images by name.
    """
    changes = {
        "eye_distance": {"eye_distance": STRETCH},
        "face_width": {"face_width": STRETCH, "eye_distance": STRETCH},
    }
    return {
        name: faces.render(faces.extrapolate(factors, **change), size=size)
        for name, change in changes.items()
    }


# The variants of the stretch recorded beside `stretch_mse` (see the module
# docstring): the centre moved by half a map pixel either way, nearest-pixel
# interpolation (maps and output), and the maps' array centre `n / 2`.
SENSITIVITY = ("centre-0.5", "centre+0.5", "nearest", "array_centre")


def _variant(name: str, centre: float) -> tuple[float | None, str]:
    """The stretch centre and interpolation of a `SENSITIVITY` variant."""
    return {
        "default": (centre, "linear"),
        "centre-0.5": (centre - 0.5, "linear"),
        "centre+0.5": (centre + 0.5, "linear"),
        "nearest": (centre, "nearest"),
        "array_centre": (None, "linear"),
    }[name]


def _stretch(centre: float | None, interpolation: str) -> Callable:
    def edit(maps: jax.Array) -> jax.Array:
        return sdr_flax.stretch_maps(
            maps, STRETCH, centre=centre, interpolation=interpolation
        )

    return edit


def extrapolations(arch: Architecture, model, variables, codes) -> tuple:
    """Each level's extrapolation, its variants, and the output-maps reading.

    Args:
      arch: the network's architecture.
      model: the network.
      variables: its variables.
      codes: what its generative part decodes (`Architecture.codes`).

    Returns:
      `(ext, variants, output_maps, centres, offsets)`: level →
    images stretched at that level about its derived centre; level →
    variant → images; level → the images with the maps leaving the level's
    layer stretched (None: that layer outputs the image); level → centre and
    → centre − n/2, in map pixels along the stretched (horizontal) axis.
    """

    def generate(variables, z):
        return arch.generate(model, variables, z)

    convs = centres.generator_convs(generate, variables, codes)
    names = [c.name for c in convs]
    cache: dict[tuple, jax.Array] = {}

    def at(layer: str, variant: str) -> jax.Array:
        if (layer, variant) not in cache:
            centre = centres.chain_centres(convs, layer)[-1]
            edit = {layer: _stretch(*_variant(variant, centre))}
            cache[layer, variant] = sdr_flax.intervene(generate, edit)(variables, codes)
        return cache[layer, variant]

    ext, variants, output_maps, where, offsets = {}, {}, {}, {}, {}
    for level, layer in arch.levels.items():
        conv = convs[names.index(layer)]
        where[level] = centres.chain_centres(convs, layer)[-1]
        offsets[level] = where[level] - conv.in_size[-1] / 2
        ext[level] = at(layer, "default")
        variants[level] = {v: at(layer, v) for v in SENSITIVITY}
        after = names.index(layer) + 1
        output_maps[level] = at(names[after], "default") if after < len(names) else None
    return ext, variants, output_maps, where, offsets


def _stretch_metrics(
    arch: Architecture, model, variables, codes, recon: jax.Array
) -> tuple[dict, dict, jax.Array]:
    """The `stretch_*` metrics, the extrapolations and the stretched output."""
    ext, variants, output_maps, where, offsets = extrapolations(
        arch, model, variables, codes
    )
    output = sdr_flax.stretch_maps(recon, STRETCH)
    nearest = sdr_flax.stretch_maps(recon, STRETCH, interpolation="nearest")
    metrics = {
        "stretch_mse": {level: _mse(e, output) for level, e in ext.items()},
        "stretch_mse_sensitivity": {
            level: {
                v: _mse(e, nearest if v == "nearest" else output)
                for v, e in by_variant.items()
            }
            for level, by_variant in variants.items()
        },
        "stretch_mse_output_maps": {
            level: _mse(output if e is None else e, output)
            for level, e in output_maps.items()
        },
        "stretch_highpass": highpass_energy(output),
        "stretch_centre": where,
        "stretch_centre_offset": offsets,
    }
    return metrics, ext, output


def _feature_metrics(truths, factors, recon, output, ext) -> dict:
    """`landmarks.feature_metrics` of each image against each truth."""
    images = {"none": recon, "output": output, **ext}
    return {
        name: {
            key: landmarks.feature_metrics(e, t, factors, reference=recon)
            for key, e in images.items()
        }
        for name, t in truths.items()
    }


def make_evaluator(
    architecture: Architecture,
    model,
    truths: Mapping[str, jax.Array] | None = None,
    *,
    factors: faces.FaceFactors | None = None,
) -> Callable:
    """The jitted evaluation of a network.

    Args:
      architecture: the network's architecture (`benchmarks.nets`).
      model: the network.
      truths: ground-truth images of interventions on the evaluation batch,
        by name (faces, reconstructing networks only).
      factors: the evaluation faces' factors; with `truths`, the position and
        shape of the eyes and the mouth are also compared with each truth's
        (`truth_features`, see `landmarks.feature_metrics`).

    Returns:
      `evaluate(variables, x, key) -> (metrics, sdr_stats, images)`: two
      nested dicts of scalars / per-layer arrays, and the first
      `IMAGES_SHOWN` images of every panel (input and reconstruction, or the
      sample; the stretched output, each level's extrapolation, each truth).
    """
    truths = dict(truths or {})
    arch = architecture

    @jax.jit
    def evaluate(variables, x, key):
        codes = arch.codes(model, variables, x, key)
        recon = arch.generate(model, variables, codes)
        metrics = {"recon_mse": _mse(recon, x)} if arch.reconstructs else {}
        stretch, ext, output = _stretch_metrics(arch, model, variables, codes, recon)
        metrics.update(stretch)
        if truths:
            metrics["truth_mse"] = {
                name: {
                    "none": _mse(recon, t),
                    "output": _mse(output, t),
                    **{level: _mse(e, t) for level, e in ext.items()},
                }
                for name, t in truths.items()
            }
            if factors is not None:
                metrics["truth_features"] = _feature_metrics(
                    truths, factors, recon, output, ext
                )
        taps = arch.taps(model, variables, x, codes, key)
        stats = sdr_stats(taps)
        if without_aliases := alias_free_stats(taps):
            metrics["sdr_without_aliases"] = without_aliases
        k = IMAGES_SHOWN
        images = {"input": x[:k]} if arch.reconstructs else {}
        images["reconstruction"] = recon[:k]
        images["stretched_output"] = output[:k]
        images.update({f"stretch_{level}": e[:k] for level, e in ext.items()})
        images.update({f"truth_{name}": t[:k] for name, t in truths.items()})
        return metrics, stats, images

    return evaluate


def to_python(tree):
    """Arrays to floats / lists, for JSON.

    Args:
      tree: a pytree of arrays.

    Returns:
      The same structure with Python numbers and lists.
    """
    return jax.tree.map(lambda a: np.asarray(a).tolist(), tree)


def to_uint8(images: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
    """Images in [-1, 1] to uint8, for saving.

    Args:
      images: panels of images.

    Returns:
      The panels as uint8 arrays.
    """
    return {
        k: np.asarray(jnp.round((jnp.clip(v, -1, 1) + 1) * 127.5), np.uint8)
        for k, v in images.items()
    }
