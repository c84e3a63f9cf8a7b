"""FluoHair (Fig. 1 and App. B.1 of the paper) on the procedural faces.

    python -m benchmarks.experiments.fluohair [--run DIR] [--out DIR] [--steps N]

1. The VAE: `--run DIR` loads a faces run of `benchmarks.harness.train`; without it, a
   tiny β-VAE (32×32 faces, `--config tiny`) is trained for `--steps` steps
   (default 2000, ≈ 5 minutes on a 2-core CPU) into `OUT/vae`; rerunning
   resumes or reuses that run.
2. Modules: the influence of each hidden channel entering the last conv layer
   (`decoder/deconv4`, the paper's "last hidden layer") on `--module-faces`
   (1024) decoded faces (`sdr_flax.channel_influence`, counterfactual
   hybridisation: each channel taken from another face of the batch),
   clustered into 3 modules by NMF (`sdr_flax.channel_modules`). With 64
   faces the clustering of the tiny model's 8 channels changed from batch
   to batch; with 1024 it did not (on three batches).
3. The hair module: of the modules that hold channels, the one whose region
   overlaps most with the mean hair mask of the faces (its region's share
   on hair pixels). This uses the generator's ground truth, which the
   paper did not have (its App. B.1 does not say how it identified the
   hair cluster); the overlaps of all modules are printed and saved.
4. The edits, on that module's coefficients in `decoder/deconv4/kernel`: sign
   flip (pink), sign flip then RGB permutation (1, 0, 2) (red and green
   swapped: green) and (2, 1, 0) (red and blue swapped: blue).
5. Evidence, on `--faces` (256) other faces, never trained on:
   for each edit, the mean |Δimage| inside the hair mask divided by the mean
   |Δimage| on the rest of the face (`face_mask` minus hair; masks of the
   faces encoded, so they fit the reconstructions only as well as the VAE
   reconstructs), with the same ratio for flipping each other module and all
   channels, and each channel alone, as references.

Writes into `--out` (default `runs/fluohair`): `fluohair.png` (rows: the
input, its reconstruction, pink, green, blue; columns: faces), `modules.png` (each
module's region beside the mean hair and face masks) and `fluohair.json`
(assignment, overlaps, ratios, mean hair colours, settings).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import shlex
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import environment
from benchmarks.harness import checkpoint, data, faces, train
from benchmarks.nets import vae
from sdr_flax import (
    channel_influence,
    channel_modules,
    flip_input_channels,
    permute_outputs,
)

LAYER = "decoder/deconv4"
KERNEL = f"{LAYER}/kernel"
EDITS = {"pink": None, "green": (1, 0, 2), "blue": (2, 1, 0)}
"""The edits, by the paper's names (App. B.1): a sign flip, then this
permutation of the RGB outputs (or none). The hues they give depend on the
model."""
LABELS = {
    "pink": 'sign flip\n("pink")',
    "green": 'flip, R↔G\n("green")',
    "blue": 'flip, R↔B\n("blue")',
}
MODULE_STEP = data.EVAL_STEP - 1
"""The batch index of the faces the modules are computed on (never trained on)."""
GROUND_TRUTH_NOTE = (
    "The hair module is chosen with the faces generator's ground-truth hair "
    "masks (of the modules holding channels, the largest overlap of its NMF "
    "region with the mean hair mask); the paper had no such masks, and its "
    "App. B.1 does not say how it identified the hair cluster."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line `argv` (default `sys.argv[1:]`), parsed."""
    p = environment.parser(
        "benchmarks.experiments.fluohair",
        "FluoHair: find a faces VAE's hair channels and recolour them.",
    )
    p.add_argument(
        "--run", type=pathlib.Path, help="a faces run of benchmarks.harness.train"
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/fluohair"))
    p.add_argument(
        "--steps", type=int, default=2000, help="training steps without --run"
    )
    p.add_argument("--config", choices=vae.CONFIGS, default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modules", type=int, default=3, help="NMF modules")
    p.add_argument(
        "--module-faces", type=int, default=1024, help="faces for the influence"
    )
    p.add_argument("--faces", type=int, default=256, help="faces for the ratios")
    p.add_argument("--show", type=int, default=8, help="faces in the grid")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if min(args.steps, args.show, args.modules, args.faces) < 1:
        p.error("--steps, --show, --modules and --faces must be ≥ 1")
    if args.module_faces < 2:
        p.error("--module-faces must be ≥ 2")
    return args


def _log(message: str) -> None:
    print(message, flush=True)


def train_or_load(args: argparse.Namespace) -> tuple[Any, dict, dict, pathlib.Path]:
    """The VAE of `--run`, or one trained (or resumed) into `OUT/vae`.

    Args:
      args: from `parse_args`.

    Returns:
      `(model, variables, config, run_dir)`.

    Raises:
      SystemExit: if the run was not trained on the faces.
    """
    run = args.run
    if run is None:
        run = args.out / "vae"
        if _latest_checkpoint(run) >= args.steps:
            _log(f"reusing {run} (a checkpoint at step ≥ {args.steps})")
        else:
            argv = [
                *("--dataset", "faces", "--config", args.config),
                *("--steps", str(args.steps), "--seed", str(args.seed)),
                *("--out", str(run), "--eval-every", "500"),
                *("--checkpoint-every", "500"),
                *([] if args.progress else ["--no-progress"]),
            ]
            _log(f"training: python -m benchmarks.harness.train {shlex.join(argv)}")
            train.main(argv)
    model, variables, config = checkpoint.load_model(run)
    if (
        config["args"]["dataset"] != "faces"
        or config["args"].get("model", "vae") != "vae"
    ):
        raise SystemExit(
            f"{run} is not a β-VAE trained on the faces; FluoHair's evidence needs "
            "the faces' hair masks (--dataset faces --model vae)."
        )
    return model, variables, config, run


def _latest_checkpoint(run: pathlib.Path) -> int:
    """The latest checkpoint step of a run directory, or -1."""
    steps = [
        int(d.name)
        for d in (run / "checkpoints").glob("*")
        if d.is_dir() and d.name.isdigit()
    ]
    return max(steps, default=-1) if (run / "config.json").exists() else -1


def region_changes(
    original: jax.Array, edited: jax.Array, inside: jax.Array, rest: jax.Array
) -> tuple[float, float]:
    """Mean |Δimage| weighted by `inside`, and weighted by `rest`.

    Args:
      original: images `(n, H, W, 3)` in [-1, 1].
      edited: images, same shape.
      inside: weights `(n, H, W)` in [0, 1] (the hair mask).
      rest: weights `(n, H, W)` (the rest of the face).

    Returns:
      The two weighted means of |Δ| (averaged over RGB), in image units.
    """
    change = jnp.mean(jnp.abs(edited - original), axis=-1)
    a = jnp.sum(change * inside) / jnp.sum(inside)
    b = jnp.sum(change * rest) / jnp.sum(rest)
    return float(a), float(b)


def region_ratio(
    original: jax.Array, edited: jax.Array, inside: jax.Array, rest: jax.Array
) -> float:
    """Mean |Δimage| weighted by `inside` over the same weighted by `rest`.

    The arguments are those of `region_changes`.

    Returns:
      The ratio of the two weighted means of `region_changes` (`ratio_of`):
      `inf` when the edit changes the images inside only, `nan` when it
      changes them nowhere.
    """
    return ratio_of(*region_changes(original, edited, inside, rest))


def ratio_of(inside: float, rest: float) -> float:
    """The change inside over the change in the rest, defined when `rest` is 0.

    Args:
      inside: the mean change inside the region (≥ 0).
      rest: the mean change in the rest (≥ 0).

    Returns:
      `inside / rest`; with `rest` 0, `inf` if `inside` > 0 (an edit confined
      to the region) and `nan` if `inside` is 0 too (an edit that changes
      nothing).
    """
    if rest == 0:
        return float("inf") if inside > 0 else float("nan")
    return inside / rest


def _mean_colour(images: jax.Array, mask: jax.Array) -> list[float]:
    """The mask-weighted mean RGB in [0, 1]."""
    rgb = (images + 1.0) / 2.0
    w = mask[..., None]
    return [round(float(v), 4) for v in jnp.sum(rgb * w, (0, 1, 2)) / jnp.sum(w)]


def _grid_figure(rows: dict[str, np.ndarray], show: int):
    from matplotlib.figure import Figure

    n_rows = len(rows)
    fig = Figure(figsize=(1.3 * show + 1.2, 1.3 * n_rows), dpi=100)
    axes = fig.subplots(n_rows, show, squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(show):
            ax = axes[r, c]
            ax.imshow(np.clip((images[c] + 1.0) / 2.0, 0.0, 1.0), interpolation="none")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=11)
    fig.subplots_adjust(
        left=0.08, right=0.99, top=0.99, bottom=0.01, wspace=0.04, hspace=0.04
    )
    return fig


def _modules_figure(regions, hair, face, overlaps, hair_module, assignment):
    from matplotlib.figure import Figure

    k = regions.shape[0]
    fig = Figure(figsize=(2.2 * (k + 2), 3.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, k + 2, squeeze=False)[0]
    for m in range(k):
        channels = np.flatnonzero(assignment == m).tolist()
        mark = " (hair)" if m == hair_module else ""
        axes[m].imshow(regions[m], cmap="magma", interpolation="none")
        axes[m].set_title(
            f"module {m}{mark}\nchannels {channels}\nhair overlap {overlaps[m]:.2f}",
            fontsize=8,
        )
    axes[k].imshow(hair, cmap="gray", vmin=0, vmax=1, interpolation="none")
    axes[k].set_title("mean hair mask\n(ground truth)", fontsize=8)
    axes[k + 1].imshow(face, cmap="gray", vmin=0, vmax=1, interpolation="none")
    axes[k + 1].set_title("mean face mask\n(ground truth)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def hair_module(
    model, variables, fit_z: jax.Array, fit_factors: faces.FaceFactors, args
) -> dict[str, Any]:
    """The NMF modules of the channels entering `LAYER`, and the hair module.

    Args:
      model: the β-VAE.
      variables: its variables.
      fit_z: the codes of the faces the modules are computed on.
      fit_factors: those faces' factors (for the ground-truth masks).
      args: from `parse_args`.

    Returns:
      `influence`, `modules` (`sdr_flax.Modules`), the mean `hair_mask` and
      `face_mask`, each module's `overlaps` with them (`face_overlaps`),
      `hair_module` and its `hair_channels`.
    """
    size = model.config.image_size
    tick = time.perf_counter()
    influence = channel_influence(
        model.apply,
        LAYER,
        variables,
        fit_z,
        method=vae.BetaVAE.decode,
        channels_per_step=1,  # one decode of the batch in memory at a time
    )
    _log(
        f"[2/5] influence of the {influence.shape[0]} channels entering {LAYER} "
        f"on {args.module_faces} faces: {time.perf_counter() - tick:.1f} s"
    )
    mods = channel_modules(influence, n_modules=args.modules, seed=args.seed)
    hair_mean = np.asarray(jnp.mean(faces.hair_mask(fit_factors, size=size), 0))
    face_mean = np.asarray(jnp.mean(faces.face_mask(fit_factors, size=size), 0))
    # Each region sums to 1: its overlap is the hair share of its mass.
    overlaps = [float(np.sum(r * hair_mean)) for r in mods.regions]
    face_overlaps = [float(np.sum(r * face_mean)) for r in mods.regions]
    # Among the modules that hold channels (NMF can leave a component unused).
    held = [m for m in range(mods.n_modules) if mods.channels(m).size]
    hair = max(held, key=lambda m: overlaps[m])
    _log(f"[3/5] {args.modules} modules (NMF); {GROUND_TRUTH_NOTE}")
    for m in range(mods.n_modules):
        _log(
            f"      module {m}: channels {mods.channels(m).tolist()}, hair overlap "
            f"{overlaps[m]:.3f}, face overlap {face_overlaps[m]:.3f}"
            + ("  <- hair" if m == hair else "")
        )
    return {
        "influence": influence,
        "modules": mods,
        "hair_mask": hair_mean,
        "face_mask": face_mean,
        "overlaps": overlaps,
        "face_overlaps": face_overlaps,
        "hair_module": hair,
        "hair_channels": mods.channels(hair).tolist(),
    }


def edit_evidence(
    decode, variables, test_z: jax.Array, test_factors, size: int, found: dict
) -> dict[str, Any]:
    """The edits of the hair module, and the changes they make, on held-out faces.

    Args:
      decode: `decode(variables, z) -> images`.
      variables: the β-VAE's variables.
      test_z: the codes of the held-out faces.
      test_factors: their factors (for the ground-truth masks).
      size: image height and width.
      found: from `hair_module`.

    Returns:
      `images` (by edit, and the `reconstruction`), `ratios` and `changes`
      (`region_changes`) by edit, `colours` (mean hair RGB), `references`
      (the ratios of flipping each other module and all channels),
      `per_channel` (each channel flipped alone) and `hair_share` (each
      channel's share of influence on hair).
    """

    def edited(channels, permutation):
        v = flip_input_channels(variables, KERNEL, channels)
        if permutation is not None:
            v = permute_outputs(v, KERNEL, channels, permutation)
        return decode(v, test_z)

    original = decode(variables, test_z)
    hair = faces.hair_mask(test_factors, size=size)
    rest = jnp.clip(faces.face_mask(test_factors, size=size) - hair, 0.0, 1.0)
    out = {"images": {"reconstruction": original}, "ratios": {}, "changes": {}}
    out["colours"] = {"reconstruction": _mean_colour(original, hair)}
    for name, permutation in EDITS.items():
        image = out["images"][name] = edited(found["hair_channels"], permutation)
        a, b = out["changes"][name] = region_changes(original, image, hair, rest)
        out["ratios"][name] = ratio_of(a, b)
        out["colours"][name] = _mean_colour(image, hair)
    mods, references = found["modules"], {}
    for m in range(mods.n_modules):
        channels = mods.channels(m).tolist()
        if channels:
            flipped = edited(channels, None)
            references[f"flip module {m}"] = region_ratio(original, flipped, hair, rest)
    every = list(range(found["influence"].shape[0]))
    flipped = edited(every, None)
    references["flip all channels"] = region_ratio(original, flipped, hair, rest)
    out["references"] = references
    # Diagnostics: each channel flipped alone, and its influence's hair share.
    out["per_channel"] = [
        region_ratio(original, edited([c], None), hair, rest) for c in every
    ]
    influence = np.asarray(found["influence"])
    out["hair_share"] = np.sum(influence * found["hair_mask"], axis=(1, 2))
    out["hair_share"] /= np.maximum(np.sum(influence, axis=(1, 2)), 1e-12)
    return out


def _log_evidence(evidence: dict, faces_count: int) -> None:
    _log(
        "[4/5] hair change / rest-of-face change (mean |Δimage| in the hair mask "
        f"over the rest of the face, {faces_count} held-out faces):"
    )
    colours = evidence["colours"]
    for name, value in evidence["ratios"].items():
        a, b = evidence["changes"][name]
        _log(
            f"      {LABELS[name].replace(chr(10), ' '):<22} {value:5.2f}   "
            f"(|Δ| hair {a:.3f}, rest of face {b:.3f}; "
            f"mean hair RGB {colours[name]})"
        )
    _log(f"      (original mean hair RGB {colours['reconstruction']})")
    for name, value in evidence["references"].items():
        _log(f"      reference, {name:<18} {value:7.2f}")
    _log("      each channel flipped alone (channel: ratio, hair share of influence):")
    pairs = zip(evidence["per_channel"], evidence["hair_share"], strict=True)
    _log(
        "      "
        + ", ".join(f"{c}: {r:.2f} ({h:.2f})" for c, (r, h) in enumerate(pairs))
    )


def _result(args, run, config, size: int, found: dict, evidence: dict) -> dict:
    """The contents of `fluohair.json` (without `command` and `seconds`)."""
    mods = found["modules"]
    return {
        "run": str(run),
        "config": config["args"]["config"],
        "image_size": size,
        "layer": LAYER,
        "kernel": KERNEL,
        "counterfactual": "swap",
        "module_faces": args.module_faces,
        "faces": args.faces,
        "n_modules": mods.n_modules,
        "assignment": mods.assignment.tolist(),
        "module_channels": [mods.channels(m).tolist() for m in range(mods.n_modules)],
        "hair_overlaps": found["overlaps"],
        "face_overlaps": found["face_overlaps"],
        "hair_module": found["hair_module"],
        "hair_channels": found["hair_channels"],
        "hair_module_note": GROUND_TRUTH_NOTE,
        "permutations": {k: v for k, v in EDITS.items()},
        "ratio": evidence["ratios"],
        "ratio_definition": (
            "mean |edited - original| (RGB-averaged) weighted by the hair mask, "
            "over the same weighted by clip(face_mask - hair_mask, 0, 1), on the "
            "held-out faces (data.eval_faces)"
        ),
        "mean_abs_change_hair_rest": evidence["changes"],
        "reference_ratios": evidence["references"],
        "per_channel_flip_ratio": evidence["per_channel"],
        "per_channel_hair_share": [float(h) for h in evidence["hair_share"]],
        "mean_hair_rgb": evidence["colours"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the FluoHair demo and writes its figures and JSON.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      The contents of `fluohair.json`.
    """
    args = parse_args(argv)
    command = environment.command("benchmarks.experiments.fluohair", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, variables, config, run = train_or_load(args)
    size = model.config.image_size
    _log(f"[1/5] loaded {run} (config {config['args']['config']}, {size}×{size})")
    encode = jax.jit(lambda v, x: model.apply(v, x, method=vae.BetaVAE.encode)[0])
    decode = jax.jit(functools.partial(model.apply, method=vae.BetaVAE.decode))
    # Modules from one batch of faces; evidence on another.
    fit_x, fit_factors = faces.batch(
        args.seed, MODULE_STEP, args.module_faces, size=size
    )
    test_x, test_factors = data.eval_faces(args.seed, args.faces, size)
    fit_z, test_z = encode(variables, fit_x), encode(variables, test_x)
    found = hair_module(model, variables, fit_z, fit_factors, args)
    evidence = edit_evidence(decode, variables, test_z, test_factors, size, found)
    _log_evidence(evidence, args.faces)
    show = min(args.show, args.faces)
    rows = {
        LABELS.get(k, k): np.asarray(v[:show]) for k, v in evidence["images"].items()
    }
    rows = {"input": np.asarray(test_x[:show]), **rows}
    grid = args.out / "fluohair.png"
    _grid_figure(rows, show).savefig(grid)
    figure = args.out / "modules.png"
    _modules_figure(
        found["modules"].regions,
        found["hair_mask"],
        found["face_mask"],
        found["overlaps"],
        found["hair_module"],
        found["modules"].assignment,
    ).savefig(figure)
    result = {
        "command": command,
        **_result(args, run, config, size, found, evidence),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (args.out / "fluohair.json").write_text(json.dumps(result, indent=2) + "\n")
    _log(f"[5/5] wrote {grid}, {figure} and {args.out / 'fluohair.json'}")
    return result


if __name__ == "__main__":
    main()
