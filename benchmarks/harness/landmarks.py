"""Where the eyes and the mouth are, and what shape they keep, on face images.

The whole-image truths of `evaluate.face_truths` score an extrapolation by one
mean squared error over all pixels. On the procedural faces that does not
test the extrapolation the paper describes (Sec. 4.1: stretching an
intermediate level "mostly keeps the original dimensions of each eye, while
inter-eye distance stretches"), because the eyes are a few pixels wide. On the
evaluation batch of the tiny faces config (32 × 32, seed 0, 64 faces;
`python -m benchmarks.harness.landmarks --size 32`):

| whole-image MSE against the truth ...      | unedited face | 1.5× image stretch |
|--------------------------------------------|---------------|--------------------|
| `eye_distance` (eyes 1.5× apart)           | 0.0115        | 0.1079             |
| `face_width` (face and eye distance 1.5×)  | 0.1183        | 0.0051             |

so the `eye_distance` truth rewards doing nothing (the unedited render is
9× closer to it than a perfect stretch), and the `face_width` truth is
nearly the stretched output itself (it ranks levels as `stretch_mse` does).
Neither MSE can tell "each eye keeps its shape" from "each eye is stretched".
The same command measures the features: against the `eye_distance` truth
the unedited faces' eyes are 2.18 px off (width ratio 1.00), the stretched
faces' 0.30 px off (the stretch is about the image's centre, not the face's)
with width ratio 1.52.

This module measures the features instead. Each face's factors
(`faces.layout`) place a search window around each eye and the mouth, wide
enough to hold the feature before and after any of the interventions
(eyes up to 1.5× further apart; the 1.5× stretched image, clipped at the
face's edge); the window, not the answer, comes from the factors:

- eye windows: from the face's centre line out to 0.75 px inside the face's
  edge (row by row), and from 1 px above the brow (and 0.75 px below the
  fringe) to 1 px below the eye. An "eye" is measured with its brow (at
  32 px they are ~1 px apart and blur together; both move with the eye and
  keep its width under the truth).
- mouth window: the mouth's row ± (its thickness + its corners' rise + 1 px),
  out to 1.5 px inside the face's edge.
- references: each column's mean colour over the 2 rows just below the eye
  windows (for the eyes) or just above the mouth's (for the mouth): the skin,
  and the face's edge and the hair where a window reaches them (nearly
  vertical there, so they cancel).

A pixel's weight in its window is its colour distance from its column's
reference, less
`threshold` × the window's largest distance (a floor that removes blur and
colour noise), clipped at 0. The feature's centre is the weighted centroid
(sub-pixel) and its width and height are 4 standard deviations of the weights
along x and y: for a uniformly filled ellipse, its full axes.

Limits (measured by the tests and the command above): a width is a
contrast-weighted spread, 0.5–1.7× the feature's full width on renders (an
eye's is its iris's where the brow is faint, its brow's where that is dark),
so widths are only compared between images of the same faces; a
feature that spills out of its window is clipped (the stretched output's
outermost eye pixels in the narrowest faces), which underestimates its
width; blur widens every feature, so a blurry output has a larger width than
the crisp truth even where it keeps the shape: compare widths with the
unedited reconstruction too (`reference=` of `feature_metrics`); anything
unlike skin in a window (hair, artefacts) counts as feature. On a tiny
β-VAE trained 1500 steps on faces (`python -m benchmarks.harness.landmarks
--run RUN`), the reconstruction's eyes measure 1.46× the truth's width and
its 1.5× stretched output's eyes 1.28× the reconstruction's (blur and
clipping shrink the 1.5).

Example:
    >>> truth = faces.render(faces.extrapolate(factors, eye_distance=1.5))
    >>> feature_metrics(images, truth, factors)["eyes"]["position"]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from benchmarks.harness import faces

THRESHOLD = 0.2
"""The default weight floor, relative to the window's largest skin distance."""
NOISE = 0.02
"""Colour distances from the skin below this count as skin (1 % of the range)."""
MARGIN = 1.0
"""Rows beyond a feature's known extent in its window, in pixels."""
REFERENCE_ROWS = 2.0
"""How many pixel rows below the eyes' windows (above the mouth's) give each
column's reference colour."""
FACE_EDGE = 0.75
"""How far inside the face's edge the eye windows stop, in pixels (the edge's
smoothstep reaches `faces.EDGE_WIDTH / 2` inside)."""
MOUTH_EDGE = 1.5
"""How far inside the face's edge the mouth window stops, in pixels."""
MEASURES = ("x", "y", "width", "height")
"""What `measure` returns per feature, in pixels."""


def windows(factors: faces.FaceFactors, size: int) -> dict[str, jax.Array]:
    """The search windows of the features and the rows of their references.

    Args:
      factors: the unedited faces' factors.
      size: image height and width (static).

    Returns:
      `faces.FEATURES`, `"eye_reference"` and `"mouth_reference"` (the rows
      just below the eyes' windows and just above the mouth's, every column)
      → boolean masks `(n, size, size)`.
    """
    u = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    x, y = u[None, None, :], u[None, :, None]
    px = 1.0 / size

    def col(v):
        return v[:, None, None]

    lay = faces.layout(factors)
    cx, eye, mouth = col(factors.center_x), lay["left_eye"], lay["mouth"]
    ey, eh = col(eye["y"]), col(eye["half_height"])
    top = ey - eh - faces.BROW_GAP - faces.BROW_THICKNESS - MARGIN * px
    bottom = ey + eh + MARGIN * px
    fringe = jax.vmap(faces.fringe_line, (None, 0), 1)(factors, u)  # (n, size)
    below_fringe = y >= fringe[:, None, :] + FACE_EDGE * px
    eye_rows = (y >= top) & (y <= bottom) & below_fringe
    half = jax.vmap(faces.face_half_width, (None, 0), 1)(factors, u)  # (n, size)
    reach = half[:, :, None] - FACE_EDGE * px  # per row: the face's edge
    my = col(mouth["y"])
    rise = jnp.abs(col(factors.smile))
    mouth_top = my - faces.LIP_THICKNESS - rise - MARGIN * px
    mouth_rows = jnp.abs(y - my) <= faces.LIP_THICKNESS + rise + MARGIN * px
    mouth_reach = half[:, :, None] - MOUTH_EDGE * px
    below_eyes = (y > bottom) & (y <= bottom + REFERENCE_ROWS * px)
    above_mouth = (y < mouth_top) & (y >= mouth_top - REFERENCE_ROWS * px)
    every = jnp.ones_like(x, dtype=bool)
    return {
        "left_eye": eye_rows & (x < cx) & (x > cx - reach),
        "right_eye": eye_rows & (x >= cx) & (x < cx + reach),
        "mouth": mouth_rows & (jnp.abs(x - cx) < mouth_reach),
        "eye_reference": below_eyes & every,
        "mouth_reference": above_mouth & every,
    }


def measure(
    images: jax.Array,
    factors: faces.FaceFactors,
    *,
    threshold: float = THRESHOLD,
) -> dict[str, dict[str, jax.Array]]:
    """Each feature's centre and size in images of the faces `factors` describe.

    Jit-compatible (the image size is static through the images' shape).

    Args:
      images: `(n, size, size, 3)` in [-1, 1], channels last: renders or
        network outputs of the faces, unedited or extrapolated.
      factors: the unedited faces' factors (they place the windows).
      threshold: the weight floor relative to each window's largest
        distance from the skin colour, in [0, 1).

    Returns:
      `faces.FEATURES` → `{"x", "y", "width", "height"}`, arrays `(n,)` in
      pixels (x to the right, y down, pixel i's centre at i + 0.5). NaN where
      a window holds no weight.
    """
    size = images.shape[1]
    masks = windows(factors, size)
    coords = jnp.arange(size, dtype=jnp.float32) + 0.5
    references = {}
    for part in ("eye", "mouth"):  # each column's colour in the reference rows
        rows = masks[f"{part}_reference"][..., None].astype(images.dtype)
        ref = (images * rows).sum(1, keepdims=True)
        references[part] = ref / jnp.maximum(rows.sum(1, keepdims=True), 1.0)
    out = {}
    for name in faces.FEATURES:
        ref = references["mouth" if name == "mouth" else "eye"]
        distance = jnp.linalg.norm(images - ref, axis=-1)
        d = jnp.where(masks[name], distance, 0.0)
        floor = jnp.maximum(threshold * d.max(axis=(1, 2), keepdims=True), NOISE)
        w = jnp.where(masks[name], jax.nn.relu(d - floor), 0.0)
        total = w.sum((1, 2))
        safe = jnp.where(total > 0, total, jnp.nan)
        wx, wy = w.sum(1) / safe[:, None], w.sum(2) / safe[:, None]  # marginals
        mx, my = wx @ coords, wy @ coords
        vx = (wx * (coords[None, :] - mx[:, None]) ** 2).sum(1)
        vy = (wy * (coords[None, :] - my[:, None]) ** 2).sum(1)
        out[name] = {
            "x": mx,
            "y": my,
            "width": 4.0 * jnp.sqrt(vx),
            "height": 4.0 * jnp.sqrt(vy),
        }
    return out


def compare(
    measured: Mapping[str, Mapping[str, jax.Array]],
    truth: Mapping[str, Mapping[str, jax.Array]],
) -> dict[str, dict[str, jax.Array]]:
    """Position and shape errors of measured features against the truth's.

    Args:
      measured: `measure` of the images.
      truth: `measure` of the ground truth, same faces.

    Returns:
      Feature (`faces.FEATURES` and `"eyes"`, the mean of both eyes) →
      batch means of `position` (distance between the centres, pixels),
      `width` and `height` (absolute differences, pixels) and `width_ratio`
      (geometric mean of width / truth's width; 1.5 for a feature stretched
      1.5×, 1 for one that keeps its width).
    """
    out = {}
    for name in faces.FEATURES:
        m, t = measured[name], truth[name]
        out[name] = {
            "position": jnp.mean(jnp.hypot(m["x"] - t["x"], m["y"] - t["y"])),
            "width": jnp.mean(jnp.abs(m["width"] - t["width"])),
            "height": jnp.mean(jnp.abs(m["height"] - t["height"])),
            "width_ratio": jnp.exp(jnp.mean(jnp.log(m["width"] / t["width"]))),
        }
    eyes = (out["left_eye"], out["right_eye"])
    out["eyes"] = jax.tree.map(lambda a, b: (a + b) / 2, *eyes)
    return out


def feature_metrics(
    images: jax.Array,
    truth: jax.Array,
    factors: faces.FaceFactors,
    *,
    reference: jax.Array | None = None,
    threshold: float = THRESHOLD,
) -> dict[str, dict[str, jax.Array]]:
    """Position and shape errors of an extrapolation against its ground truth.

    Jit-compatible. Under "eyes 1.5× further apart" the truth's eye centres
    move apart and each eye keeps its shape: an extrapolation that does the
    same scores a small `position` and `width` error; the unedited face a
    large `position` error; a 1.5× image stretch a small `position` error but
    a large `width` error (`width_ratio` ≈ 1.5).

    Args:
      images: `(n, size, size, 3)` in [-1, 1]: the extrapolated images.
      truth: the ground-truth render of the intervention, same shape.
      factors: the unedited faces' factors (they place the search windows).
      reference: optional images whose feature widths `width_ratio` is also
        taken against (`reference_width_ratio`), e.g. the network's unedited
        reconstruction, which is as blurry as its extrapolations.
      threshold: as `measure`.

    Returns:
      `compare`'s dict: feature → `{"position", "width", "height",
      "width_ratio"}` (and `"reference_width_ratio"` with `reference`).
    """
    measured = measure(images, factors, threshold=threshold)
    out = compare(measured, measure(truth, factors, threshold=threshold))
    if reference is not None:
        own = compare(measured, measure(reference, factors, threshold=threshold))
        for name in out:
            out[name]["reference_width_ratio"] = own[name]["width_ratio"]
    return out


def whole_image_mse(size: int, *, seed: int = 0, n: int = 64) -> dict:
    """The whole-image MSEs of the unedited and the stretched evaluation faces.

    Args:
      size: image height and width.
      seed: the data seed (`data.eval_faces`).
      n: the number of faces.

    Returns:
      Truth name (`evaluate.face_truths`) → `{"none", "output"}` MSEs.
    """
    import sdr_flax
    from benchmarks.harness import data, evaluate

    x, factors = data.eval_faces(seed, n, size)
    output = sdr_flax.stretch_maps(x, evaluate.STRETCH)
    return {
        name: {
            "none": float(jnp.mean((x - t) ** 2)),
            "output": float(jnp.mean((output - t) ** 2)),
        }
        for name, t in evaluate.face_truths(factors, size).items()
    }


def model_table(out: str, *, step: int | None = None) -> list[dict]:
    """Feature errors of a trained network's extrapolations on its evaluation faces.

    Loads the run (`checkpoint.load_model`), reconstructs its evaluation batch
    (`data.eval_faces`), stretches the maps entering each generative level by
    `evaluate.STRETCH` about its derived centre, as the evaluator does, and
    scores each against the `eye_distance` truth.

    Args:
      out: the run directory of a reconstructing network trained on faces.
      step: the checkpoint; the latest by default.

    Returns:
      One row per image (`none`: the reconstruction, `output`: it stretched,
      then each level): the name, the whole-image `mse` against the truth,
      and `feature_metrics` (with the reconstruction as `reference`).
    """
    import sdr_flax
    from benchmarks import nets
    from benchmarks.harness import checkpoint, data, evaluate

    model, variables, config = checkpoint.load_model(out, step=step)
    args = config["args"]
    arch = nets.get(args.get("model", "vae"))
    size = model.config.image_size
    x, factors = data.eval_faces(args["seed"], args["eval_batch"], size)
    truth = evaluate.face_truths(factors, size)["eye_distance"]

    codes = arch.codes(model, variables, x, jax.random.key(0))
    recon = arch.generate(model, variables, codes)
    ext = evaluate.extrapolations(arch, model, variables, codes)[0]
    images = {"none": recon, "output": sdr_flax.stretch_maps(recon, evaluate.STRETCH)}
    images.update(ext)
    score = jax.jit(feature_metrics)
    return [
        {
            "image": name,
            "mse": float(jnp.mean((image - truth) ** 2)),
            **jax.tree.map(float, score(image, truth, factors, reference=recon)),
        }
        for name, image in images.items()
    ]


def _markdown(rows: list[dict]) -> str:
    head = (
        "| image | whole-image MSE | eyes: position (px) | width error (px) "
        "| width / truth's | width / recon's | height error (px) "
        "| mouth: position (px) | width / truth's |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        e, m = r["eyes"], r["mouth"]
        cells = (
            r["mse"],
            e["position"],
            e["width"],
            e["width_ratio"],
            e["reference_width_ratio"],
            e["height"],
            m["position"],
            m["width_ratio"],
        )
        lines.append(f"| {r['image']} | " + " | ".join(f"{c:.3f}" for c in cells))
    return "\n".join(line + " |" if line[-1] != "|" else line for line in lines)


def main(argv: list[str] | None = None) -> None:
    """Prints the whole-image MSEs and the feature errors of the rendered faces,
    or with `--run`, the table of `model_table`.

    Args:
      argv: command-line arguments (`--size`, `--seed`, `--n`, `--run`).
    """
    import sdr_flax
    from benchmarks.harness import data, evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--run", help="a run directory: tabulate its extrapolations")
    args = p.parse_args(argv)
    if args.run:
        print(_markdown(model_table(args.run)))
        return
    print("whole-image MSE:", whole_image_mse(args.size, seed=args.seed, n=args.n))
    x, factors = data.eval_faces(args.seed, args.n, args.size)
    truths = evaluate.face_truths(factors, args.size)
    output = sdr_flax.stretch_maps(x, evaluate.STRETCH)
    for name, image in (("none", x), ("output", output)):
        for target, truth in truths.items():
            eyes = feature_metrics(image, truth, factors)["eyes"]
            print(name, target, {k: round(float(v), 3) for k, v in eyes.items()})


if __name__ == "__main__":
    main()
