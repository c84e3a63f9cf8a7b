r"""The aliases of the zero frequency on dilated grids: two conventions measured.

    python -m benchmarks.experiments.aliases [--out runs/aliases] [--steps 1500]

A transposed conv's kernel is measured on the dilated grid (`sdr.conv_sdr`),
where the input maps' means land on the zero frequency and its $s^2 - 1$
aliases. `include_aliases=True` keeps those aliases in the averages of the
SDR and of the penalty; `include_aliases=False` leaves them out, as
`include_dc=False` leaves out the zero frequency. This script:

1. trains tiny β-VAEs on the procedural faces (`benchmarks.harness.train`,
   `--config tiny --batch 32`, `--steps` steps, each seed of `--seeds`):
   `none` (Adam alone), `include` (Adam and the penalty,
   `--penalty-aliases include`) and `exclude` (`--penalty-aliases
   exclude`), into `OUT/<condition>-seed<seed>`; finished runs are reused and
   interrupted ones resumed;
2. measures each final model on its evaluation batch (the harness's, never
   trained on): the Fig. 5 statistics (median ρ and generic share,
   `sdr_flax.layer_stats`) of every conv layer under both conventions,
   `recon_mse`, and the checkerboard energy: the share of the output images'
   power (centred images, summed over colours, mean over the batch) on the
   aliases of zero of the last transposed conv's upsampling (stride 2 on
   N×N: (N/2, 0), (0, N/2), (N/2, N/2)) and of the product of all the
   decoder's upsamplings, with the same shares of the input images for
   scale;
3. prints a table and writes `OUT/aliases.json` (measured runs are kept, so
   a rerun measures only what is new).
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import sdr_flax
from benchmarks import environment, nets
from benchmarks.harness import checkpoint, data, train

CONDITIONS = {
    "none": ["--penalty", "none"],
    "include": ["--penalty", "sdr", "--penalty-aliases", "include"],
    "exclude": ["--penalty", "sdr", "--penalty-aliases", "exclude"],
}
TRAIN = [
    "--config",
    "tiny",
    "--batch",
    "32",
    "--eval-every",
    "500",
    "--checkpoint-every",
    "500",
]
CONVENTIONS = {"include": True, "exclude": False}  # include_aliases


def _finished(out: pathlib.Path, steps: int) -> bool:
    """Whether the run in `out` has its final evaluation at `steps`."""
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        return False
    lines = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln]
    return any(ln["kind"] == "eval" and ln["step"] == steps for ln in lines)


def _checkerboard(images: jax.Array, factor: tuple[int, int]) -> float:
    """The share of the centred images' power on the aliases of zero of an
    upsampling by `factor`: the non-zero multiples of (H, W) / factor."""
    x = jnp.asarray(images, jnp.float32)
    x = x - jnp.mean(x, axis=(1, 2), keepdims=True)
    power = jnp.mean(jnp.sum(jnp.abs(jnp.fft.fft2(x, axes=(1, 2))) ** 2, -1), 0)
    h, w = power.shape
    mask = np.zeros((h, w), bool)
    mask[:: h // factor[0], :: w // factor[1]] = True
    mask[0, 0] = False
    return float(jnp.sum(jnp.where(mask, power, 0.0)) / jnp.sum(power))


def _upsamplings(taps, role: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The last transposed conv's stride and the product of all strides of
    the layers of `role` (the generative network)."""
    strides = [
        tuple(t.geometry.per_axis(2).input_dilation)
        for t in taps
        if t.name.startswith(f"{role}/")
    ]
    upsampling = [s for s in strides if math.prod(s) > 1]
    product = tuple(math.prod(s[a] for s in upsampling) for a in range(2))
    return upsampling[-1], product


def measure(out: pathlib.Path) -> dict:
    """The measurements of the final model of the run in `out`.

    Args:
      out: a run directory of `benchmarks.harness.train`.

    Returns:
      A JSON-ready dict: `recon_mse`, `checkerboard` (`last`, `all`: the
      reconstructions' shares; `input_last`, `input_all`: the inputs'),
      `upsampling` (the two factors) and `layers`: per layer, `dilated`
      and per convention (`include`, `exclude`) the `median` and the
      `generic_share`.
    """
    model, variables, config = checkpoint.load_model(out)
    a = config["args"]
    arch = nets.get(a.get("model", "vae"))
    size = config["model"]["image_size"]
    x, _ = data.eval_faces(a["seed"], a["eval_batch"], size)
    _, _, eval_key = jax.random.split(jax.random.key(a["seed"]), 3)
    codes = arch.codes(model, variables, x, eval_key)
    recon = arch.generate(model, variables, codes)
    taps = arch.taps(model, variables, x, codes, eval_key)
    last, product = _upsamplings(taps, arch.roles[0])
    layers = {}
    for tap in taps:
        if tap.unmeasurable:
            continue
        entry = {"dilated": math.prod(tap.geometry.per_axis(2).input_dilation) > 1}
        for name, include in CONVENTIONS.items():
            stats = sdr_flax.layer_stats(tap.pair_sdr(include_aliases=include))
            entry[name] = {
                k: float(stats[k]) for k in ("median", "generic_share", "undefined")
            }
        layers[tap.name] = entry
    return {
        "recon_mse": float(jnp.mean((recon - x) ** 2)),
        "checkerboard": {
            "last": _checkerboard(recon, last),
            "all": _checkerboard(recon, product),
            "input_last": _checkerboard(x, last),
            "input_all": _checkerboard(x, product),
        },
        "upsampling": {"last": list(last), "all": list(product)},
        "layers": layers,
    }


def _role_share(layers: dict, role: str, convention: str) -> float:
    """The mean generic share over the layers of `role`."""
    shares = [
        v[convention]["generic_share"]
        for k, v in layers.items()
        if k.startswith(f"{role}/")
    ]
    return float(np.mean(shares))


def table(results: dict) -> str:
    """The measurements as a Markdown table, one row per run.

    Args:
      results: run name → `measure`'s dict.

    Returns:
      The table: recon_mse, the checkerboard shares (×10⁻³), and the mean
      generic share of the decoder's and the encoder's layers under each
      convention (incl / excl).
    """
    lines = [
        "| run | recon_mse | checker last (‰) | checker all (‰) "
        "| decoder generic incl / excl | encoder generic incl / excl |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        c, lay = r["checkerboard"], r["layers"]
        roles = [
            f"{_role_share(lay, role, 'include'):.2f} / "
            f"{_role_share(lay, role, 'exclude'):.2f}"
            for role in ("decoder", "encoder")
        ]
        lines.append(
            f"| {name} | {r['recon_mse']:.5f} | {1e3 * c['last']:.2f} "
            f"| {1e3 * c['all']:.2f} | {roles[0]} | {roles[1]} |"
        )
    return "\n".join(lines)


def layer_table(results: dict) -> str:
    """Median ρ and generic share per layer and convention, one row per run
    and layer, as a Markdown table.

    Args:
      results: run name → `measure`'s dict.

    Returns:
      The table.
    """
    lines = [
        "| run | layer | dilated | median incl / excl | generic incl / excl |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for layer, v in r["layers"].items():
            i, e = v["include"], v["exclude"]
            lines.append(
                f"| {name} | {layer} | {'yes' if v['dilated'] else 'no'} "
                f"| {i['median']:.3f} / {e['median']:.3f} "
                f"| {i['generic_share']:.2f} / {e['generic_share']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Trains (or reuses) the runs, measures them, prints and writes the table.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      The JSON written to `OUT/aliases.json`.
    """
    p = environment.parser(
        "benchmarks.experiments.aliases",
        "The aliases of the zero frequency on dilated grids: both conventions "
        "measured on tiny beta-VAEs without and with the penalty.",
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/aliases"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument(
        "--conditions", nargs="+", choices=tuple(CONDITIONS), default=list(CONDITIONS)
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    path = args.out / "aliases.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results = saved.get("runs", {})
    start = time.perf_counter()
    todo = [(s, c) for s in args.seeds for c in args.conditions]
    for k, (seed, condition) in enumerate(todo, 1):
        name = f"{condition}-seed{seed}"
        out = args.out / name
        elapsed = (time.perf_counter() - start) / 60
        print(f"== [{k}/{len(todo)}] {name} ({elapsed:.1f} min so far)", flush=True)
        if not _finished(out, args.steps):
            flags = [*TRAIN, *CONDITIONS[condition], "--seed", str(seed)]
            flags += ["--steps", str(args.steps), "--out", str(out)]
            train.main(flags + ([] if args.progress else ["--no-progress"]))
        if results.get(name, {}).get("steps") != args.steps:
            results[name] = {"steps": args.steps, **measure(out)}
            saved = {
                "command": environment.command("benchmarks.experiments.aliases", argv),
                "environment": environment.describe(),
                "runs": results,
            }
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(saved, indent=2))
    shown = {f"{c}-seed{s}": results[f"{c}-seed{s}"] for s, c in todo}
    print(table(shown))
    print()
    print(layer_table(shown))
    print(f"== wrote {path}")
    return saved


if __name__ == "__main__":
    main()
