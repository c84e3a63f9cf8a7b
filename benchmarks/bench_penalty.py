"""Time a β-VAE training step with and without the spectral independence penalty.

The model is the paper's β-VAE (`benchmarks.models`, `--config paper`, or the
CPU-sized `small`), trained at batch 64 on random images in [-1, 1] (seeded)
with the reference's loss (pixel MSE + 0.005·KL) and Adam (1e-3, β1 = 0.5).
Batch norm runs in training mode (`batch_stats` mutable). Two jitted steps,
each compiled once ahead of time and run from the same initial state:

(a) plain  the step a user writes today: `model.apply` inside
           `jax.value_and_grad`, then `optax.adam(...).update`.
(b) sdr    the step with the penalty: the forward pass runs once through
           `sdr_flax.capture_layers`, the taps leave the loss as aux, and
           `optax.chain(adam, sdr_flax.spectral_independence(0.5))` is updated
           with `spectra=sdr_flax.layer_spectra(taps, layers=<decoder>)`: the
           four transposed convs of the decoder are regularised, the encoder
           is not.

After one warm-up step each, the steps run interleaved (a, b, a, b, …) and
the median wall time of `--steps` calls of each is reported with the ratio
(b)/(a) against the target ≤ 1.10×. The process's CPU time per step (all
threads) is reported too: on a shared machine it varies much less than the
wall time, which depends on how many cores XLA actually gets. XLA's flop
count of each compiled step (`cost_analysis()`) shows the work added (its
cost model charges FFTs about ten times their n log n flops).

Because a whole step is long and noisy on a CPU, the extra work of (b) is
also timed on its own, precisely (median of many calls): the cause spectra of
the decoder layers (`layer_spectra` from the taps) and the transform's
update beside Adam's. Taps are taken at trace time (the jaxpr is interpreted
equation by equation while jit traces), so they cost nothing at run time; the
run-time overhead is the spectra and the penalty's gradient steps.

Memory: XLA's planned peak of each compiled step
(`compiled.memory_analysis()`: temp + argument + output bytes), since the
CPU client keeps no allocator statistics; on a GPU the device's
`memory_stats()["peak_bytes_in_use"]` is reported as well.

Also checked: the summed penalty of the decoder layers (and their median pair
SDR), with the cause spectra of the first batch, before and after the first
step of (a) and of (b): (b) should lower it (a warning is printed if not).

    python -m benchmarks.bench_penalty [--config paper|small] [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import sdr
import sdr_flax
from benchmarks import models

TARGET_RATIO = 1.10
DEFAULT_STEPS = {"paper": 3, "small": 20}


def _get(tree: Any, path: str) -> jax.Array:
    """The leaf of a nested dict at a `/`-joined path (`"decoder/deconv1/kernel"`)."""
    for key in path.split("/"):
        tree = tree[key]
    return tree


def make_steps(
    model: models.BetaVAE, tx_plain, tx_sdr
) -> tuple[Callable, Callable, Callable]:
    """The three training steps (not yet jitted).

    Args:
      model: the β-VAE.
      tx_plain: the optimiser of step (a).
      tx_sdr: the optimiser of step (b), taking `spectra=` in its update.

    Returns:
      `(plain, captured, with_penalty)`: each takes `(params, batch_stats,
      opt_state, x, key)` and returns `(params, batch_stats, opt_state,
      loss)`. `captured` is `plain` with its forward pass run through
      `sdr_flax.capture_layers` and the taps unused: what capture alone costs.
    """
    kl_weight = model.config.kl_weight

    def make_plain(apply):
        def plain(params, batch_stats, opt_state, x, key):
            def loss_fn(params):
                (recon, mu, logvar), updates = apply(
                    {"params": params, "batch_stats": batch_stats},
                    x,
                    key,
                    train=True,
                    mutable=["batch_stats"],
                )
                loss, _ = models.vae_loss(recon, x, mu, logvar, kl_weight=kl_weight)
                return loss, updates["batch_stats"]

            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params
            )
            updates, opt_state = tx_plain.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), batch_stats, opt_state, loss

        return plain

    def captured_apply(*args, **kwargs):
        return sdr_flax.capture_layers(model.apply, *args, **kwargs)[0]

    def with_penalty(params, batch_stats, opt_state, x, key):
        def loss_fn(params):
            ((recon, mu, logvar), updates), taps = sdr_flax.capture_layers(
                model.apply,
                {"params": params, "batch_stats": batch_stats},
                x,
                key,
                train=True,
                mutable=["batch_stats"],
            )
            loss, _ = models.vae_loss(recon, x, mu, logvar, kl_weight=kl_weight)
            return loss, (updates["batch_stats"], taps)

        (loss, (batch_stats, taps)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params
        )
        spectra = sdr_flax.layer_spectra(taps, layers=models.is_decoder_layer)
        updates, opt_state = tx_sdr.update(grads, opt_state, params, spectra=spectra)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    return make_plain(model.apply), make_plain(captured_apply), with_penalty


def memory(compiled: jax.stages.Compiled) -> dict[str, int] | None:
    """XLA's planned memory of a compiled function, in bytes."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    out = {
        "temp": int(stats.temp_size_in_bytes),
        "argument": int(stats.argument_size_in_bytes),
        "output": int(stats.output_size_in_bytes),
        "alias": int(stats.alias_size_in_bytes),
        "generated_code": int(stats.generated_code_size_in_bytes),
    }
    out["peak"] = out["temp"] + out["argument"] + out["output"]
    return out


def device_peak(device) -> int | None:
    """The device allocator's peak bytes in use so far (None on CPU)."""
    stats = device.memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and process CPU time of one call, waiting for its results."""
    start, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, time.process_time() - cpu, out


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls, after one warm-up call."""
    jax.block_until_ready(fn())
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def mib(n: int | None) -> str:
    """Bytes as MiB."""
    return "n/a" if n is None else f"{n / 2**20:9.1f} MiB"


def fmt_time(t: float) -> str:
    """Seconds as ms below one second."""
    return f"{t * 1e3:9.2f} ms" if t < 1 else f"{t:9.3f} s "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_penalty",
        description="Time a beta-VAE training step with plain Adam and with "
        "Adam + sdr_flax.spectral_independence on the decoder.",
    )
    parser.add_argument("--config", choices=("paper", "small"), default="paper")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps of each variant (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
        + ")",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps each")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.5, help="penalty rate")
    parser.add_argument(
        "--penalty-steps", type=int, default=1, help="penalty steps per update"
    )
    parser.add_argument(
        "--component-repeats",
        type=int,
        default=20,
        help="timed calls of each component (spectra, updates)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("results/bench_penalty.json")
    )
    args = parser.parse_args(argv)
    steps = DEFAULT_STEPS[args.config] if args.steps is None else args.steps
    if steps < 1 or args.warmup < 1 or args.component_repeats < 1:
        parser.error("--steps, --warmup and --component-repeats must be ≥ 1")

    command = shlex.join(
        [
            "python",
            "-m",
            "benchmarks.bench_penalty",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    device = jax.devices()[0]
    print(f"command: {command}")
    print(
        f"jax {jax.__version__}, device {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} CPU cores"
    )

    # Model, data, optimisers.
    config = getattr(models.VAEConfig, args.config)()
    model = models.BetaVAE(config)
    init_key, data_key, noise_key = jax.random.split(jax.random.key(args.seed), 3)
    size, channels = config.image_size, config.image_channels
    x = jax.random.uniform(
        data_key, (args.batch, size, size, channels), minval=-1.0, maxval=1.0
    )
    variables = model.init(init_key, x[:1], noise_key, train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    n_params = sum(p.size for p in jax.tree.leaves(params))
    tx_plain = models.optimizer(config)
    tx_sdr = optax.chain(
        models.optimizer(config),
        sdr_flax.spectral_independence(args.rate, steps=args.penalty_steps),
    )
    opt_plain, opt_sdr = tx_plain.init(params), tx_sdr.init(params)
    print(
        f"model: beta-VAE ({args.config}): encoder {config.encoder_widths}, decoder "
        f"{config.decoder_widths}, z = {config.latent_dim}, {n_params:,} parameters; "
        f"batch {args.batch} of {size}x{size}x{channels}"
    )
    print(
        f"(b): optax.chain(adam, spectral_independence({args.rate}, "
        f"steps={args.penalty_steps})) on the decoder's conv layers"
    )
    print()

    # Compile both steps ahead of time (same arguments), and XLA's memory plan.
    plain, captured, with_penalty = make_steps(model, tx_plain, tx_sdr)
    state_plain = (params, batch_stats, opt_plain)
    state_sdr = (params, batch_stats, opt_sdr)
    compile_s, compiled = {}, {}
    for name, fn, state in (
        ("plain", plain, state_plain),
        ("capture", captured, state_plain),
        ("sdr", with_penalty, state_sdr),
    ):
        start = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*state, x, noise_key).compile()
        compile_s[name] = time.perf_counter() - start
    mem = {name: memory(c) for name, c in compiled.items()}

    def run(name: str, state: tuple, step: int) -> tuple[float, float, tuple]:
        key = jax.random.fold_in(noise_key, step)
        return timed(lambda: compiled[name](*state[:3], x, key))

    # Warm-up: the first step of each from the same initial state (kept for
    # the penalty check); device peaks (GPU only) after each variant's warm-up.
    state = {"plain": state_plain, "capture": state_plain, "sdr": state_sdr}
    first, peaks = {}, {}
    for name in state:
        for i in range(args.warmup):
            *_, state[name] = run(name, state[name], i)
            if i == 0:
                first[name] = state[name]
        peaks[name] = device_peak(device)

    # Timed steps, interleaved so that drifts of the machine hit both alike.
    times = {name: [] for name in state}
    cpu_times = {name: [] for name in state}
    losses = {name: [] for name in state}
    for i in range(steps):
        for name in state:
            t, cpu, state[name] = run(name, state[name], args.warmup + i)
            times[name].append(t)
            cpu_times[name].append(cpu)
            losses[name].append(float(state[name][3]))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    cpu_median = {name: statistics.median(ts) for name, ts in cpu_times.items()}
    ratio = median["sdr"] / median["plain"]
    cpu_ratio = cpu_median["sdr"] / cpu_median["plain"]
    capture_ratio = median["capture"] / median["plain"]
    capture_cpu_ratio = cpu_median["capture"] / cpu_median["plain"]
    flops = {
        name: float((c.cost_analysis() or {}).get("flops", float("nan")))
        for name, c in compiled.items()
    }

    print(
        f"step time, median of {steps} interleaved steps (after {args.warmup} "
        "warm-up each); wall time, and the process's CPU time (all threads):"
    )
    for name, label in (
        ("plain", "(a) plain Adam"),
        ("capture", "(c) (a) under capture"),
        ("sdr", "(b) Adam + penalty"),
    ):
        spread = ", ".join(f"{t:.3f}" for t in times[name])
        cpu_spread = ", ".join(f"{t:.3f}" for t in cpu_times[name])
        print(
            f"  {label:<20}wall {fmt_time(median[name])}   "
            f"cpu {fmt_time(cpu_median[name])}   compile {compile_s[name]:.1f} s"
        )
        print(f"  {'':<20}all wall, s: {spread}; all cpu, s: {cpu_spread}")
    met = ratio <= TARGET_RATIO
    print(
        f"  ratio (b)/(a): wall {ratio:.3f}x   target ≤ {TARGET_RATIO:.2f}x: "
        f"{'MET' if met else 'NOT MET'};   cpu {cpu_ratio:.3f}x"
    )
    print(
        f"  ratio (c)/(a), capture alone: wall {capture_ratio:.3f}x   "
        f"cpu {capture_cpu_ratio:.3f}x   (same XLA program: "
        f"{compiled['capture'].as_text() == compiled['plain'].as_text()})"
    )
    print(
        f"  XLA's flop count per step: (a) {flops['plain']:.4g}, (b) "
        f"{flops['sdr']:.4g}, (b)/(a) {flops['sdr'] / flops['plain']:.4f}x "
        "(XLA's cost model charges an FFT ~10x its 2.5 N log2 N flops)"
    )
    print()

    # The extra work of (b), timed alone: spectra and the transform's update.
    probe = jax.jit(
        lambda params, batch_stats, x, key: sdr_flax.capture_layers(
            model.apply,
            {"params": params, "batch_stats": batch_stats},
            x,
            key,
            train=True,
            mutable=["batch_stats"],
        )[1]
    )
    # The taps of the first step of (b): same state, same batch, same key.
    taps = [
        t
        for t in probe(params, batch_stats, x, jax.random.fold_in(noise_key, 0))
        if models.is_decoder_layer(t.name)
    ]
    spectra_fn = jax.jit(
        lambda taps: sdr_flax.layer_spectra(taps, layers=models.is_decoder_layer)
    )
    spectra = spectra_fn(taps)
    grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
    update_plain = jax.jit(tx_plain.update)
    update_sdr = jax.jit(
        lambda grads, state, params, spectra: tx_sdr.update(
            grads, state, params, spectra=spectra
        )
    )
    t_spectra = median_time(lambda: spectra_fn(taps), args.component_repeats)
    t_update_plain = median_time(
        lambda: update_plain(grads, opt_plain, params), args.component_repeats
    )
    t_update_sdr = median_time(
        lambda: update_sdr(grads, opt_sdr, params, spectra), args.component_repeats
    )
    per_layer = {}
    for name, layer in spectra.items():
        kernel = _get(params, layer.param_path)
        step_fn = jax.jit(jax.grad(layer.penalty))
        per_layer[name] = median_time(
            lambda f=step_fn, k=kernel: f(k), args.component_repeats
        )
    overhead = t_spectra + t_update_sdr - t_update_plain
    print(
        f"the extra work of (b), each timed alone (median of "
        f"{args.component_repeats} calls):"
    )
    print(f"  layer_spectra of the decoder taps       {fmt_time(t_spectra)}")
    print(f"  update: adam                            {fmt_time(t_update_plain)}")
    print(f"  update: adam + spectral_independence    {fmt_time(t_update_sdr)}")
    for name, t in per_layer.items():
        kernel_shape = tuple(_get(params, spectra[name].param_path).shape)
        print(f"    penalty gradient {name:<17} {fmt_time(t)}   kernel {kernel_shape}")
    print(
        f"  overhead = spectra + update difference  {fmt_time(overhead)}"
        f"  = {100 * overhead / median['plain']:.2f}% of step (a); estimated ratio "
        f"{1 + overhead / median['plain']:.4f}x"
    )
    print(
        "  (taps are taken while jit traces the step: no run-time cost; "
        "the measured (b)-(a) is "
        f"{fmt_time(median['sdr'] - median['plain']).strip()})"
    )
    print()

    # Memory.
    print("peak memory:")
    print(
        "  XLA's planned peak of each compiled step (temp + argument + output; "
        "the CPU client keeps no allocator statistics):"
    )
    for name, label in (("plain", "(a)"), ("sdr", "(b)")):
        m = mem[name]
        if m is None:
            print(f"    {label} not available")
            continue
        print(
            f"    {label} {mib(m['peak'])}  (temp {mib(m['temp']).strip()}, "
            f"argument {mib(m['argument']).strip()}, "
            f"output {mib(m['output']).strip()})"
        )
    if mem["plain"] and mem["sdr"]:
        print(f"    ratio (b)/(a): {mem['sdr']['peak'] / mem['plain']['peak']:.3f}x")
    if peaks["plain"] is None:
        print(f"  device allocator peak: not available on {device.platform}")
    else:
        print(
            f"  device allocator peak (peak_bytes_in_use, never reset): after (a)'s "
            f"warm-up {mib(peaks['plain']).strip()}, after (b)'s "
            f"{mib(peaks['sdr']).strip()} (the max of both)"
        )
    print()

    # Did the penalty do something? Spectra of the first batch, kernels before
    # and after the first step of each variant.
    def check(params):
        out = {}
        for name, layer in spectra.items():
            kernel = _get(params, layer.param_path)
            tap = next(t for t in taps if t.name == name)
            r = sdr.conv_sdr(tap.maps, kernel, geometry=tap.geometry)
            out[name] = (layer.penalty(kernel), jnp.median(r))
        return out

    check = jax.jit(check)
    before = check(params)
    after = {name: check(first[name][0]) for name in ("plain", "sdr")}

    def total(c):
        return float(sum(p for p, _ in c.values()))

    print(
        "penalty check (eq. 13, summed over pairs; cause spectra of the first "
        "batch; median pair SDR in brackets):"
    )
    print(
        f"  {'layer':<17}{'before':>20}{'after 1 step (a)':>22}{'after 1 step (b)':>22}"
    )
    for name in spectra:
        cells = [before[name], after["plain"][name], after["sdr"][name]]
        text = "".join(f"{float(p):>12.4e} [{float(m):5.3f}]" for p, m in cells)
        print(f"  {name:<17}{text}")
    penalty_before = total(before)
    penalty_after = {name: total(c) for name, c in after.items()}
    print(
        f"  {'sum':<17}{penalty_before:>12.4e}{'':>8}"
        f"{penalty_after['plain']:>14.4e}{'':>8}{penalty_after['sdr']:>14.4e}"
    )
    lowered = penalty_after["sdr"] < penalty_before
    print(
        f"  -> the step with the penalty {'lowered' if lowered else 'DID NOT lower'} "
        f"the decoder penalty ({penalty_after['sdr'] / penalty_before:.3f}x of "
        f"before; plain Adam: {penalty_after['plain'] / penalty_before:.3f}x)"
    )
    if not lowered:
        print(
            "  WARNING: the penalty step raised the summed penalty; see the layers "
            "above (a rate too large for some layer overshoots)."
        )
    print(
        f"  losses over the timed steps: (a) {losses['plain'][0]:.4f} -> "
        f"{losses['plain'][-1]:.4f}, (b) {losses['sdr'][0]:.4f} -> "
        f"{losses['sdr'][-1]:.4f}"
    )
    for name, label in (("plain", "(a)"), ("sdr", "(b)")):
        bad = [i for i, v in enumerate(losses[name]) if not math.isfinite(v)]
        if bad:
            print(
                f"  WARNING: the loss of {label} is not finite from timed step "
                f"{bad[0] + 1} of {steps} on (training diverged); its later steps "
                "ran on NaNs."
            )

    record = {
        "command": command,
        "argv": sys.argv if argv is None else ["benchmarks.bench_penalty", *argv],
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "repr": str(device),
        },
        "cpu_count": os.cpu_count(),
        "config": {"name": args.config, **dataclasses.asdict(config)},
        "parameters": int(n_params),
        "batch": args.batch,
        "seed": args.seed,
        "penalty": {
            "rate": args.rate,
            "steps": args.penalty_steps,
            "layers": list(spectra),
        },
        "steps_timed": steps,
        "warmup": args.warmup,
        "seconds": {
            **median,
            **{f"{name}_all": ts for name, ts in times.items()},
            "compile": compile_s,
        },
        "cpu_seconds": {
            **cpu_median,
            **{f"{name}_all": ts for name, ts in cpu_times.items()},
        },
        "cpu_ratio": cpu_ratio,
        "capture_ratio": capture_ratio,
        "capture_cpu_ratio": capture_cpu_ratio,
        "xla_flops": flops,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": met,
        "components_seconds": {
            "repeats": args.component_repeats,
            "layer_spectra": t_spectra,
            "update_adam": t_update_plain,
            "update_adam_penalty": t_update_sdr,
            "penalty_gradient": per_layer,
            "overhead": overhead,
            "estimated_ratio": 1 + overhead / median["plain"],
        },
        "memory_bytes": {
            "xla_planned": mem,
            "xla_planned_note": "compiled.memory_analysis(): peak = temp + "
            "argument + output (XLA's plan; CPU has no allocator statistics)",
            "device_peak_after_plain": peaks["plain"],
            "device_peak_after_sdr": peaks["sdr"],
        },
        "penalty_check": {
            "layers": {
                name: {
                    "before": float(before[name][0]),
                    "after_plain": float(after["plain"][name][0]),
                    "after_sdr": float(after["sdr"][name][0]),
                    "median_sdr_before": float(before[name][1]),
                    "median_sdr_after_plain": float(after["plain"][name][1]),
                    "median_sdr_after_sdr": float(after["sdr"][name][1]),
                }
                for name in spectra
            },
            "sum_before": penalty_before,
            "sum_after_plain": penalty_after["plain"],
            "sum_after_sdr": penalty_after["sdr"],
            "lowered": lowered,
        },
        "losses": losses,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
