"""Procedural faces rendered in JAX from known causal factors.

The embedded default dataset of the benchmarks: faces drawn on the fly (jit-able,
on any device, no files) from seeded, independent causal factors. Because the
mechanism is known, it also gives ground truth for extrapolations that a dataset
like CelebA cannot: `render(extrapolate(f, eye_distance=1.5))` is the same face
with its eyes 1.5× further apart (each eye keeps its shape, brow and place in
height), well outside the training range of eye distances.

Each image is painted in layers, bottom to top: background; hair behind the
head (a cap above and around the head, down to the hair length); neck; face
(an ellipse tapering to the chin); the eyes (white sclera, iris, pupil) with
their brows; the mouth (a curved band); the fringe over the top of the face.
Every shape is a signed-distance field passed through a smoothstep (a sigmoid
that is exactly 0 or 1 beyond `EDGE_WIDTH / 2` = 0.75 px from the edge), so edges
are anti-aliased and a change to one shape changes no pixel far from it.

Coordinates are image-relative (x to the right, y down, both in [0, 1] across
the image), so the factors do not depend on the image size. `sample_factors`
draws every factor independently and uniformly:

| factor                        | training range                               |
|-------------------------------|----------------------------------------------|
| `center_x`, `center_y`        | [0.46, 0.54], [0.52, 0.56]                   |
| `face_width`, `face_height`   | half-axes, [0.31, 0.36], [0.36, 0.42]        |
| `eye_distance` (centres)      | `EYE_DISTANCE_RANGE` = [0.24, 0.31]          |
| `eye_width`, `eye_height`     | half-axes, [0.045, 0.060], [0.025, 0.038]    |
| `hair_volume`                 | [0.02, 0.08] beyond the head                 |
| `hair_length`                 | [0.00, 0.40] below the face centre           |
| `fringe`                      | [0.03, 0.15] below the top of the face       |
| `mouth_width` (half), `smile` | [0.07, 0.12], corner rise [-0.02, 0.04]      |
| `skin`, `hair` (RGB in [0, 1])| along `SKIN_PALETTE`, `HAIR_PALETTE` by      |
|                               | U(0, 1), plus U(±0.04), U(±0.05) per channel |
| `iris`, `background` (RGB)    | U(0.05, 0.45), U(0.1, 0.9) per channel       |

Eye distance ×1.5 lies well outside its range (1.5 × 0.24 = 0.36 > 0.31), yet
the eyes stay inside the face: an eye's outer corner is then at most
1.5 × 0.31 / 2 + 0.060 = 0.2925 from the face centre, while the face's
half-width at the eye row is at least 0.313 (≥ 1.3 px of skin between them at
64 × 64; the tests check it at the worst corner of the ranges). `extrapolate`
changes only the factors it is given (eye distance, face width); everything
else about each face stays the same.

The public functions are jit-compiled (sizes static), so they are fast eagerly too.

Example:
    >>> images, factors = batch(0, 17, 64, size=64)  # seed 0, training step 17
    >>> truth = render(extrapolate(factors, eye_distance=1.5), size=64)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from jaxtyping import Array, Float

EDGE_WIDTH = 1.5
"""The width of every edge's smoothstep, in pixels (10–90 % over ≈ 0.9 px)."""
EYE_ROW = 0.1
"""The eyes' height: `center_y - EYE_ROW * face_height`."""
MOUTH_ROW = 0.55
"""The mouth's height: `center_y + MOUTH_ROW * face_height`."""
CHIN_TAPER = 0.15
"""How much narrower the face is at the chin than at its widest (relative)."""
NECK_WIDTH = 0.5
"""The neck's half-width relative to the face's half-width."""
LIP_THICKNESS = 0.014
"""Half-thickness of the mouth at its centre (image-relative)."""
FRINGE_CURVE = 0.12
"""How much lower the fringe reaches at the face's sides than at its middle."""
BROW_GAP, BROW_THICKNESS, BROW_LENGTH = 0.035, 0.009, 1.15
"""A brow's centre line lies `eye_height + BROW_GAP` above its eye's centre; its
half-thickness (at its middle) and its half-length relative to `eye_width`."""
EYE_DISTANCE_RANGE = (0.24, 0.31)
"""The training range of the eye distance (centre to centre, image widths)."""
SKIN_PALETTE = ((0.32, 0.19, 0.13), (0.70, 0.49, 0.36), (0.96, 0.82, 0.72))
"""Skin tones, dark to light (RGB in [0, 1]); a face's tone is on the line through."""
HAIR_PALETTE = ((0.07, 0.05, 0.05), (0.40, 0.24, 0.13), (0.90, 0.76, 0.48))
"""Hair colours, black through brown to blond (RGB in [0, 1])."""
SCLERA, PUPIL = (0.96, 0.95, 0.92), (0.03, 0.03, 0.04)
"""The colours of the white of the eyes and of the pupils."""

_SCALARS = {
    "center_x": (0.46, 0.54),
    "center_y": (0.52, 0.56),
    "face_width": (0.31, 0.36),
    "face_height": (0.36, 0.42),
    "eye_distance": EYE_DISTANCE_RANGE,
    "eye_width": (0.045, 0.060),
    "eye_height": (0.025, 0.038),
    "hair_volume": (0.02, 0.08),
    "hair_length": (0.0, 0.40),
    "fringe": (0.03, 0.15),
    "mouth_width": (0.07, 0.12),
    "smile": (-0.02, 0.04),
}
_SKIN_JITTER, _HAIR_JITTER, _IRIS, _BACKGROUND = 0.04, 0.05, (0.05, 0.45), (0.1, 0.9)


def _box(palette, jitter):
    lo = tuple(min(channel) - jitter for channel in zip(*palette, strict=True))
    return lo, tuple(max(channel) + jitter for channel in zip(*palette, strict=True))


FACTOR_RANGES: dict[str, tuple] = {
    **_SCALARS,
    "skin": _box(SKIN_PALETTE, _SKIN_JITTER),
    "hair": _box(HAIR_PALETTE, _HAIR_JITTER),
    "iris": ((_IRIS[0],) * 3, (_IRIS[1],) * 3),
    "background": ((_BACKGROUND[0],) * 3, (_BACKGROUND[1],) * 3),
}
"""Bounds (low, high) of every factor as drawn by `sample_factors`: scalars for
the scalar factors, per-channel triples (a bounding box) for the colours."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FaceFactors:
    """The causal factors of a batch of faces (a pytree of float32 arrays).

    Lengths are image-relative (fractions of the image side); colours are RGB
    in [0, 1]. Every field has a leading batch axis: `(n,)`, or `(n, 3)` for
    colours. See the module docstring for the training ranges.

    Attributes:
      center_x: horizontal centre of the face.
      center_y: vertical centre of the face (y points down).
      face_width: half-width of the face at its widest.
      face_height: half-height of the face.
      skin: skin tone.
      eye_distance: distance between the eye centres.
      eye_width: half-width of each eye.
      eye_height: half-height of each eye.
      iris: iris colour.
      hair: hair colour (the brows are a darker shade of it).
      hair_volume: how far the hair reaches beyond the head.
      hair_length: how far below the face centre the hair ends.
      fringe: how far the fringe reaches below the top of the face.
      mouth_width: half-width of the mouth.
      smile: rise of the mouth corners above its centre (negative: a frown).
      background: background colour.
    """

    center_x: Float[Array, " n"]
    center_y: Float[Array, " n"]
    face_width: Float[Array, " n"]
    face_height: Float[Array, " n"]
    skin: Float[Array, "n 3"]
    eye_distance: Float[Array, " n"]
    eye_width: Float[Array, " n"]
    eye_height: Float[Array, " n"]
    iris: Float[Array, "n 3"]
    hair: Float[Array, "n 3"]
    hair_volume: Float[Array, " n"]
    hair_length: Float[Array, " n"]
    fringe: Float[Array, " n"]
    mouth_width: Float[Array, " n"]
    smile: Float[Array, " n"]
    background: Float[Array, "n 3"]


@functools.partial(jax.jit, static_argnames="n")
def sample_factors(key: jax.Array, n: int) -> FaceFactors:
    """Draws `n` faces' factors independently and uniformly from the training ranges.

    Args:
      key: a JAX PRNG key.
      n: the number of faces (static).

    Returns:
      The factors, each of shape `(n,)` or `(n, 3)`, float32.
    """
    # One draw for all (a threefry per factor would be slow to compile).
    draws = jax.random.uniform(key, (len(_SCALARS) + 14, n), jnp.float32)
    columns = iter(range(draws.shape[0]))

    def uniform(lo, hi, shape=(n,)):
        if len(shape) == 2:
            return jnp.stack([uniform(lo, hi) for _ in range(shape[1])], axis=1)
        return lo + (hi - lo) * draws[next(columns)]

    def palette(colours, jitter):
        colours = jnp.asarray(colours, jnp.float32)
        t = uniform(0.0, colours.shape[0] - 1.0)
        start = jnp.minimum(jnp.floor(t), colours.shape[0] - 2.0)
        i = start.astype(jnp.int32)
        mix = colours[i] + (t - start)[:, None] * (colours[i + 1] - colours[i])
        return mix + uniform(-jitter, jitter, (n, 3))

    scalars = {name: uniform(lo, hi) for name, (lo, hi) in _SCALARS.items()}
    return FaceFactors(
        **scalars,
        skin=palette(SKIN_PALETTE, _SKIN_JITTER),
        hair=palette(HAIR_PALETTE, _HAIR_JITTER),
        iris=uniform(*_IRIS, (n, 3)),
        background=uniform(*_BACKGROUND, (n, 3)),
    )


def extrapolate(
    factors: FaceFactors, *, eye_distance: float = 1.0, face_width: float = 1.0
) -> FaceFactors:
    """Multiplies the eye distance and the face width (an intervention).

    The result may lie outside the training ranges; that is the point: its
    render is the ground truth of the extrapolation. The eyes keep their
    shape and height; a wider face also widens the hair and the neck.

    Args:
      factors: the faces to change.
      eye_distance: the factor on the distance between the eye centres.
      face_width: the factor on the face's half-width.

    Returns:
      The factors with those two fields multiplied.

    Raises:
      ValueError: if a factor is a Python number that is not positive.
    """
    for name, value in (("eye_distance", eye_distance), ("face_width", face_width)):
        if isinstance(value, int | float) and not value > 0:
            raise ValueError(f"{name} must be a positive factor; got {value}.")
    return dataclasses.replace(
        factors,
        eye_distance=factors.eye_distance * eye_distance,
        face_width=factors.face_width * face_width,
    )


FEATURES = ("left_eye", "right_eye", "mouth")
"""The features `layout` places: the eyes (image-left first) and the mouth."""


def layout(factors: FaceFactors) -> dict[str, dict[str, jax.Array]]:
    """Where `render` paints each eye and the mouth, image-relative.

    Args:
      factors: the faces' factors, with a leading batch axis.

    Returns:
      Feature name (`FEATURES`) → `{"x", "y", "half_width", "half_height"}`,
      arrays `(n,)`: the centre of each eye's ellipse and its half-axes; the
      centre of the mouth's band at its middle, its half-length and
      `LIP_THICKNESS`. The mouth's corners lie `smile` above its middle.
      Each eye's brow lies above it (`BROW_GAP`).
    """
    eye_y = factors.center_y - EYE_ROW * factors.face_height
    eyes = {
        name: {
            "x": factors.center_x + side * 0.5 * factors.eye_distance,
            "y": eye_y,
            "half_width": factors.eye_width,
            "half_height": factors.eye_height,
        }
        for name, side in (("left_eye", -1.0), ("right_eye", 1.0))
    }
    mouth = {
        "x": factors.center_x,
        "y": factors.center_y + MOUTH_ROW * factors.face_height,
        "half_width": factors.mouth_width,
        "half_height": jnp.full_like(factors.mouth_width, LIP_THICKNESS),
    }
    return {**eyes, "mouth": mouth}


def face_half_width(factors: FaceFactors, y: jax.Array) -> jax.Array:
    """The face's half-width at height `y` (its tapered ellipse; 0 off the face).

    Args:
      factors: the faces' factors.
      y: heights, image-relative, broadcastable to the batch `(n,)`.

    Returns:
      The half-widths, image-relative, shape of the broadcast.
    """
    dy = jnp.clip((y - factors.center_y) / factors.face_height, -1.0, 1.0)
    taper = 1.0 - CHIN_TAPER * dy
    return factors.face_width * taper * jnp.sqrt(1.0 - dy**2)


def fringe_line(factors: FaceFactors, x: jax.Array) -> jax.Array:
    """How far down the fringe reaches at `x` (it covers the face above).

    Args:
      factors: the faces' factors.
      x: horizontal positions, image-relative, broadcastable to the batch.

    Returns:
      The fringe's lower edge, image-relative (y down), shape of the broadcast.
    """
    relative = (x - factors.center_x) / factors.face_width
    top = factors.center_y - factors.face_height
    return top + factors.fringe + FRINGE_CURVE * relative**2


def _ellipse(x, y, cx, cy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (exact on its axes)."""
    px, py = x - cx, y - cy
    k0 = jnp.sqrt((px / rx) ** 2 + (py / ry) ** 2)
    k1 = jnp.sqrt((px / rx**2) ** 2 + (py / ry**2) ** 2)
    return jnp.where(
        k1 > 1e-9, k0 * (k0 - 1.0) / jnp.maximum(k1, 1e-9), -jnp.minimum(rx, ry)
    )


def _arc(x, y, x0, y0, half_length, bend, thickness):
    """Signed distance to a band along `y = y0 + bend·((x - x0)/half_length)²`,
    thinning towards its ends."""
    xr = (x - x0) / half_length
    slope = 2.0 * bend * xr / half_length
    across = jnp.abs(y - y0 - bend * xr**2) / jnp.sqrt(1.0 + slope**2)
    return jnp.maximum(
        across - thickness * (1.0 - 0.5 * xr**2), jnp.abs(x - x0) - half_length
    )


def _layers(factors: FaceFactors, size: int) -> list[tuple[str, jax.Array, jax.Array]]:
    """The painted layers, bottom to top: (name, coverage (n, H, W), colour (n, 3))."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int of at least 8; got {size!r}.")
    if factors.center_x.ndim != 1:
        raise ValueError(
            f"factors need one batch axis; center_x has shape {factors.center_x.shape}."
        )
    f = {k: v[:, None, None] for k, v in vars(factors).items() if v.ndim == 1}
    u = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    x, y = u[None, None, :], u[None, :, None]
    cx, cy, a, b = f["center_x"], f["center_y"], f["face_width"], f["face_height"]

    def cover(d):  # a smoothstep: a sigmoid exactly 0 or 1 beyond EDGE_WIDTH / 2
        t = jnp.clip(0.5 - d * (size / EDGE_WIDTH), 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    def const(rgb):
        return jnp.broadcast_to(jnp.asarray(rgb, jnp.float32), factors.skin.shape)

    dy = y - cy
    taper = 1.0 - CHIN_TAPER * jnp.clip(dy / b, -1.0, 1.0)
    face = _ellipse(cx + (x - cx) / taper, y, cx, cy, a, b)
    vol = f["hair_volume"]
    crown = cx + (x - cx) / jnp.maximum(taper, 1.0)  # as wide as the face above
    hair = jnp.maximum(
        jnp.minimum(
            _ellipse(crown, y, cx, cy, a + vol, b + vol),
            jnp.maximum(jnp.abs(x - cx) - a - vol, -dy),
        ),
        dy - f["hair_length"],
    )
    neck = jnp.maximum(jnp.abs(x - cx) - NECK_WIDTH * a, -dy)
    fringe_line = cy - b + f["fringe"] + FRINGE_CURVE * ((x - cx) / a) ** 2
    fringe = jnp.maximum(hair, y - fringe_line)

    ey, ew, eh = cy - EYE_ROW * b, f["eye_width"], f["eye_height"]
    sclera, iris, pupil, brows = [], [], [], []
    for side in (-1.0, 1.0):
        ex = cx + side * 0.5 * f["eye_distance"]
        white = _ellipse(x, y, ex, ey, ew, eh)
        ring = jnp.sqrt((x - ex) ** 2 + (y - ey) ** 2)
        sclera.append(white)
        iris.append(jnp.maximum(ring - 1.1 * eh, white))
        pupil.append(jnp.maximum(ring - 0.5 * eh, white))
        brows.append(
            _arc(x, y, ex, ey - eh - BROW_GAP, BROW_LENGTH * ew, 0.012, BROW_THICKNESS)
        )
    mouth = _arc(
        x, y, cx, cy + MOUTH_ROW * b, f["mouth_width"], -f["smile"], LIP_THICKNESS
    )
    skin = factors.skin
    return [
        ("background", jnp.ones_like(face), factors.background),
        ("hair", cover(hair), factors.hair),
        ("neck", cover(neck), 0.82 * skin),
        ("face", cover(face), skin),
        ("sclera", cover(jnp.minimum(*sclera)), const(SCLERA)),
        ("iris", cover(jnp.minimum(*iris)), factors.iris),
        ("pupil", cover(jnp.minimum(*pupil)), const(PUPIL)),
        ("brows", cover(jnp.minimum(*brows)), 0.75 * factors.hair),
        ("mouth", cover(mouth), skin * jnp.asarray([[0.72, 0.42, 0.42]], jnp.float32)),
        ("fringe", cover(fringe), factors.hair),
    ]


_FACE_LAYERS = ("face", "sclera", "iris", "pupil", "brows", "mouth")


@functools.partial(jax.jit, static_argnames="size")
def render(factors: FaceFactors, *, size: int = 64) -> Float[Array, "n size size 3"]:
    """Renders faces from their factors.

    Args:
      factors: the faces' factors, with a leading batch axis.
      size: height and width of the images in pixels (static under `jax.jit`).

    Returns:
      float32 RGB images of shape `(n, size, size, 3)` in [-1, 1].

    Raises:
      ValueError: if `size` is not an int of at least 8 or the factors have no
        single batch axis.
    """
    layers = _layers(factors, size)[1:]  # over the opaque background
    # Each coverage is computed once; fused into the loops over colour channels
    # below, XLA would compute it again for each channel (3× slower).
    alphas = jax.lax.optimization_barrier([alpha for _, alpha, _ in layers])
    planes = []
    for c in range(3):
        ground = jnp.clip(factors.background[:, c, None, None], 0.0, 1.0)
        plane = jnp.broadcast_to(ground, alphas[0].shape)
        for alpha, (_, _, colour) in zip(alphas, layers, strict=True):
            plane = plane + alpha * (
                jnp.clip(colour[:, c, None, None], 0.0, 1.0) - plane
            )
        planes.append(plane)
    return 2.0 * jnp.stack(planes, axis=-1) - 1.0


def _visible(factors: FaceFactors, size: int, names) -> Float[Array, "n size size"]:
    """How much of each pixel shows the named layers (the rest is covered)."""
    total, shown = 0.0, 1.0
    for name, alpha, _ in reversed(_layers(factors, size)):
        if name in names:
            total = total + alpha * shown
        shown = shown * (1.0 - alpha)
    return total


@functools.partial(jax.jit, static_argnames="size")
def hair_mask(factors: FaceFactors, *, size: int = 64) -> Float[Array, "n size size"]:
    """Where the hair is visible in `render(factors, size=size)`: fringe and back.

    Args:
      factors: the faces' factors.
      size: height and width of the images in pixels.

    Returns:
      float32 masks of shape `(n, size, size)` in [0, 1]; 1 where a pixel shows
      only hair. The brows count as face, not hair.

    Raises:
      ValueError: as `render`.
    """
    return _visible(factors, size, ("hair", "fringe"))


@functools.partial(jax.jit, static_argnames="size")
def face_mask(factors: FaceFactors, *, size: int = 64) -> Float[Array, "n size size"]:
    """Where the face is visible: skin, eyes, brows and mouth, not neck or hair.

    Takes the arguments of `hair_mask` and raises as it does.

    Returns:
      float32 masks of shape `(n, size, size)` in [0, 1].
    """
    return _visible(factors, size, _FACE_LAYERS)


@functools.partial(jax.jit, static_argnames=("batch_size", "size"))
def batch(
    seed: int | jax.Array, step: int | jax.Array, batch_size: int, *, size: int = 64
) -> tuple[Float[Array, "batch_size size size 3"], FaceFactors]:
    """A training batch, fully determined by `(seed, step)`.

    The key is `jax.random.fold_in(jax.random.key(seed), step)`, so a run
    resumed at `step` sees the same batches. Jit-compiled, with `batch_size`
    and `size` static; `seed` and `step` may be traced.

    Args:
      seed: the run's seed.
      step: the training step.
      batch_size: the number of faces (static).
      size: height and width of the images in pixels (static).

    Returns:
      `(images, factors)`: images `(batch_size, size, size, 3)` in [-1, 1] and
      their factors.

    Raises:
      ValueError: as `render`.
    """
    key = jax.random.fold_in(jax.random.key(seed), step)
    factors = sample_factors(key, batch_size)
    return render(factors, size=size), factors
