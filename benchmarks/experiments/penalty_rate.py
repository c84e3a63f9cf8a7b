"""One penalty step of each kind on a tiny β-VAE: what its rate does.

    python -m benchmarks.experiments.penalty_rate [--run runs/aliases/none-seed0]

For the β-VAE of a run of `benchmarks.harness.train` (its last checkpoint)
and for a fresh initialisation of the same network, on one training batch
(`faces.batch(seed, 1, --batch)`), this takes the penalty's layers (the
harness's default levels: intermediate, fine, image) and prints, per layer:

- the penalty `P` of eq. (13) (`sdr.conv_penalty`, half spectra of the batch);
- for a plain gradient step `k - rate ∇P` (`--penalty-step gradient`,
  `scale_free=False`) at each rate of a half-decade grid, `P` after the step
  over `P` before; the best rate of the grid and the largest one that still
  lowers `P`;
- `P` after over before for the Gauss–Newton step at rate 0.5 (the default
  `--penalty-step gauss-newton`).

The plain step's rate is scale dependent (the penalty is quartic in the
kernel), so one rate suits the layers only as far as their kernels and
spectra are alike; this measures how far. `--penalty-aliases` selects the
convention (`include_aliases`).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import sdr
from benchmarks import environment, nets
from benchmarks.harness import checkpoint, faces, train

RATES = 10.0 ** np.arange(-5.0, 2.01, 0.5)


def _gauss_newton(penalty_gaps, kernel, rate=0.5, cap=0.5):
    """The transform's scale-free step on each pair (capped at `cap` of its norm)."""
    gaps, vjp = jax.vjp(penalty_gaps, kernel)
    (grad,) = vjp(jnp.ones_like(gaps))
    grad_sq = jnp.sum(grad**2, axis=(0, 1))
    step = rate * jnp.where(grad_sq > 0, gaps / jnp.maximum(grad_sq, 1e-30), 0) * grad
    norm = jnp.sqrt(jnp.sum(step**2, axis=(0, 1)))
    limit = cap * jnp.sqrt(jnp.sum(kernel**2, axis=(0, 1)))
    return kernel - jnp.where(norm > limit, limit / jnp.maximum(norm, 1e-30), 1) * step


def layer_rates(tap, include_aliases: bool) -> dict:
    """`P` and the effect of one step of each kind on one tapped layer."""
    spectra = sdr.channel_spectra(tap.maps, half=True)
    options = {
        "geometry": tap.geometry,
        "grid": tuple(tap.maps.shape[1:-1]),
        "include_aliases": include_aliases,
    }

    def gaps(k):
        return sdr.conv_pair_gaps(spectra, k, **options)

    def penalty(k):
        return jnp.sum(gaps(k) ** 2)

    k = jnp.asarray(tap.kernel, jnp.float32)
    p0 = float(penalty(k))
    grad = jax.grad(penalty)(k)
    ratios = [float(penalty(k - r * grad)) / p0 for r in RATES]
    lowering = [r for r, q in zip(RATES, ratios, strict=True) if q < 1]
    return {
        "penalty": p0,
        "kernel_norm": float(jnp.sqrt(jnp.sum(k**2))),
        "gradient_ratios": dict(zip(map(float, RATES), ratios, strict=True)),
        "best_rate": float(RATES[int(np.argmin(ratios))]),
        "best_ratio": float(np.min(ratios)),
        "largest_lowering_rate": float(max(lowering)) if lowering else None,
        "gauss_newton_ratio": float(penalty(_gauss_newton(gaps, k))) / p0,
    }


def measure(run: pathlib.Path, batch: int, include_aliases: bool) -> dict:
    """Per model (`trained`, `init`) and layer, `layer_rates`."""
    model, variables, config = checkpoint.load_model(run)
    a = config["args"]
    arch = nets.get(a.get("model", "vae"))
    x, _ = faces.batch(a["seed"], 1, batch, size=config["model"]["image_size"])
    init = arch.init_variables(model, jax.random.key(a["seed"]))
    layers = [arch.levels[level] for level in train.DEFAULT_PENALTY_LEVELS]
    key = jax.random.key(a["seed"])
    out = {}
    for name, v in (("trained", variables), ("init", init)):
        taps = arch.taps(model, v, x, arch.codes(model, v, x, key), key)
        out[name] = {
            t.name: layer_rates(t, include_aliases) for t in taps if t.name in layers
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    """Prints the table and writes `--json`.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      The measurements.
    """
    p = environment.parser(
        "benchmarks.experiments.penalty_rate",
        "One penalty step of each kind on a tiny beta-VAE, at a grid of rates.",
    )
    p.add_argument(
        "--run", type=pathlib.Path, default=pathlib.Path("runs/aliases/none-seed0")
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--penalty-aliases", choices=("include", "exclude"), default="include"
    )
    p.add_argument("--json", type=pathlib.Path, help="where to write the results")
    args = p.parse_args(argv)
    results = measure(args.run, args.batch, args.penalty_aliases == "include")
    print(
        "model    layer              P        |k|    best rate  P ratio  largest",
        end="",
    )
    print("  GN 0.5")
    for model, layers in results.items():
        for name, r in layers.items():
            print(
                f"{model:8} {name:16} {r['penalty']:9.3g} {r['kernel_norm']:7.3f} "
                f"{r['best_rate']:9.3g} {r['best_ratio']:8.3f} "
                f"{r['largest_lowering_rate'] or float('nan'):8.3g} "
                f"{r['gauss_newton_ratio']:7.3f}"
            )
    print("P after / before one gradient step, per rate:")
    for model, layers in results.items():
        for name, r in layers.items():
            row = " ".join(f"{q:.2g}" for q in r["gradient_ratios"].values())
            print(f"  {model} {name}: {row}")
    print("rates:", " ".join(f"{r:.3g}" for r in RATES))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
