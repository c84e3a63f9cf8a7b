"""Time a training step with and without the spectral independence penalty.

Two models (`--model`), in a `--config` of `tiny`, `small` (CPU) or `paper`:

- `vae` (default): the paper's β-VAE (`benchmarks.nets.vae`) at batch 64 on
  random images in [-1, 1] (seeded), the reference's loss (pixel MSE +
  0.005·KL) and Adam (1e-3, β1 = 0.5), batch norm in training mode. The
  penalty regularises the decoder's four transposed convs, not the encoder.
- `vqgan`: a decoder of the maskgit VQGAN / diffusers kind
  (`benchmarks.nets.vqgan`: GroupNorm, swish, residual blocks, nearest upsampling
  and conv) on pixel MSE from random latents to random images, Adam (1e-4,
  β = 0.5, 0.9), the config's batch. The penalty regularises every conv.

Three jitted steps, compiled ahead of time and run from the same state:

(a) plain    the step a user writes today: `model.apply` inside
             `jax.value_and_grad`, then `optax.adam(...).update`.
(c) capture  (a) with the forward pass run through `sdr_flax.capture_layers`
             and the taps unused: what capture alone costs.
(b) sdr      the forward pass runs once through `capture_layers`, the taps
             leave the loss as aux, and `optax.chain(adam,
             sdr_flax.spectral_independence(0.5))` is updated with
             `spectra=sdr_flax.layer_spectra(taps, layers=...)`.

Compile time: trace + lower and XLA compile of each step as a first jitted
call (caches cleared before each), (a) and (b) interleaved over
`--compile-repeats` rounds; median ratio (b)/(a), target ≤ 1.30×.

Step time: after a warm-up step each, the steps run interleaved (a, c, b, a,
…); the median wall time of `--steps` calls of each gives the ratio (b)/(a),
target ≤ 1.05×. The process's CPU time per step (all threads) varies much
less than the wall time on a shared machine. XLA's flop count of each step
(`cost_analysis()`) shows the work added (it charges FFTs ~10× n log n).
The extra work of (b) is also timed alone (median of many calls): the cause
spectra (`layer_spectra`) and the transform's update beside Adam's. Taps are
taken at trace time: no run-time cost.

Memory: XLA's planned peak of each compiled step (`memory_analysis()`: temp
+ argument + output bytes), ratio (b)/(a), target ≤ 1.05×; on a GPU also the
device's `memory_stats()["peak_bytes_in_use"]`.

Also checked: the summed penalty of the regularised layers (and their median
pair SDR) before and after the first step of (a) and of (b), with the cause
spectra of the first batch: (b) should lower it.

    python -m benchmarks.speed.bench_penalty [--model vae|vqgan]
        [--config paper|small|tiny] [--steps N] [--batch N]
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
from benchmarks.nets import vae, vqgan

TARGETS = {"step": 1.05, "memory": 1.05, "compile": 1.30}
TARGET_RATIO = TARGETS["step"]
DEFAULT_STEPS = {"paper": 3, "small": 20, "tiny": 3}
MODELS = ("vae", "vqgan")


@dataclasses.dataclass(frozen=True)
class Task:
    """A model to time: its variables, data, objective and optimiser.

    Attributes:
      description: one line for the printout.
      config: the model's config dataclass (recorded in the JSON).
      apply: the Linen `model.apply`.
      params: the initial parameters.
      state: the other variable collections (`{"batch_stats": ...}` or `{}`).
      batch: the fixed batch, a tuple of arrays.
      loss: `loss(apply, params, state, batch, key) -> (loss, new_state)`,
        calling the model through `apply` (`model.apply`, or a capture of it).
      layers: the layers the penalty regularises (a predicate on names).
      optimizer: the plain optimiser.
    """

    description: str
    config: Any
    apply: Callable
    params: Any
    state: dict
    batch: tuple
    loss: Callable
    layers: Callable[[str], bool]
    optimizer: optax.GradientTransformation


def vae_task(name: str, batch: int | None, key: jax.Array) -> Task:
    """The β-VAE (`benchmarks.nets.vae`) on random images, batch 64 by default."""
    config = vae.config(name)
    model = vae.BetaVAE(config)
    init_key, data_key, noise_key = jax.random.split(key, 3)
    size, channels, batch = config.image_size, config.image_channels, batch or 64
    x = jax.random.uniform(
        data_key, (batch, size, size, channels), minval=-1.0, maxval=1.0
    )
    variables = jax.jit(model.init, static_argnames="train")(
        init_key, x[:1], noise_key, train=False
    )

    def loss(apply, params, state, batch, key):
        (x,) = batch
        (recon, mu, logvar), updates = apply(
            {"params": params, **state}, x, key, train=True, mutable=["batch_stats"]
        )
        loss, _ = vae.vae_loss(recon, x, mu, logvar, kl_weight=config.kl_weight)
        return loss, updates

    return Task(
        description=f"beta-VAE ({name}): encoder {config.encoder_widths}, decoder "
        f"{config.decoder_widths}, z = {config.latent_dim}; batch {batch} of "
        f"{size}x{size}x{channels}; penalty on the decoder's transposed convs",
        config=config,
        apply=model.apply,
        params=variables["params"],
        state={"batch_stats": variables["batch_stats"]},
        batch=(x,),
        loss=loss,
        layers=vae.is_decoder_layer,
        optimizer=vae.optimizer(config),
    )


TASKS = {
    "vae": vae_task,
    "vqgan": lambda name, batch, key: Task(**vqgan.bench_setup(name, batch, key)),
}


def _get(tree: Any, path: str) -> jax.Array:
    """The leaf of a nested dict at a `/`-joined path (`"decoder/deconv1/kernel"`)."""
    for key in path.split("/"):
        tree = tree[key]
    return tree


def layer_penalty(layer: sdr_flax.LayerSpectra, param: jax.Array) -> jax.Array:
    """The eq. (13) penalty of a layer, its kernel given as the parameter leaf."""
    return sdr.conv_penalty(
        layer.spectra, layer.kernel(param), geometry=layer.geometry, grid=layer.grid
    )


def capturing(apply: Callable, sink: list | None = None) -> Callable:
    """`apply` run through `sdr_flax.capture_layers`, its taps added to `sink`."""

    def call(*args, **kwargs):
        output, taps = sdr_flax.capture_layers(apply, *args, **kwargs)
        if sink is not None:
            sink.extend(taps)
        return output

    return call


def make_steps(task: Task, tx_plain, tx_sdr) -> tuple[Callable, Callable, Callable]:
    """The three training steps (not yet jitted).

    Args:
      task: the model.
      tx_plain: the optimiser of step (a).
      tx_sdr: the optimiser of step (b), taking `spectra=` in its update.

    Returns:
      `(plain, captured, with_penalty)`: each takes `(params, state,
      opt_state, batch, key)` and returns `(params, state, opt_state, loss)`.
      `captured` is `plain` with its forward pass run through
      `sdr_flax.capture_layers` and the taps unused: what capture alone costs.
    """

    def make_plain(apply):
        def plain(params, state, opt_state, batch, key):
            (loss, state), grads = jax.value_and_grad(
                lambda p: task.loss(apply, p, state, batch, key), has_aux=True
            )(params)
            updates, opt_state = tx_plain.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), state, opt_state, loss

        return plain

    def with_penalty(params, state, opt_state, batch, key):
        def loss_fn(params):
            taps = []
            loss, new_state = task.loss(
                capturing(task.apply, taps), params, state, batch, key
            )
            return loss, (new_state, taps)

        (loss, (state, taps)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        spectra = sdr_flax.layer_spectra(taps, layers=task.layers)
        updates, opt_state = tx_sdr.update(grads, opt_state, params, spectra=spectra)
        return optax.apply_updates(params, updates), state, opt_state, loss

    return make_plain(task.apply), make_plain(capturing(task.apply)), with_penalty


def compile_timed(fn: Callable, args: tuple) -> tuple[Any, float, float]:
    """`jax.jit(fn)` compiled for `args` from cleared caches, as a first call.

    Returns:
      `(compiled, trace + lower seconds, XLA compile seconds)`.
    """
    jax.clear_caches()
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    mid = time.perf_counter()
    compiled = lowered.compile()
    return compiled, mid - start, time.perf_counter() - mid


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


def verdict(ratio: float, target: float) -> str:
    """`target ≤ 1.05x: MET` or `NOT MET`."""
    return f"target ≤ {target:.2f}x: {'MET' if ratio <= target else 'NOT MET'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.bench_penalty",
        description="Time a training step with plain Adam and with Adam + "
        "sdr_flax.spectral_independence on a generator's conv layers.",
    )
    parser.add_argument("--model", choices=MODELS, default="vae")
    parser.add_argument("--config", choices=("paper", "small", "tiny"), default="paper")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps of each variant (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
        + ")",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps each")
    parser.add_argument(
        "--batch", type=int, default=None, help="default: vae 64, vqgan the config's"
    )
    parser.add_argument("--rate", type=float, default=0.5, help="penalty rate")
    parser.add_argument(
        "--penalty-steps", type=int, default=1, help="penalty steps per update"
    )
    parser.add_argument(
        "--compile-repeats",
        type=int,
        default=3,
        help="interleaved compiles of (a) and (b), each from cleared caches",
    )
    parser.add_argument(
        "--component-repeats",
        type=int,
        default=20,
        help="timed calls of each component (spectra, updates)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    steps = DEFAULT_STEPS[args.config] if args.steps is None else args.steps
    if min(steps, args.warmup, args.compile_repeats, args.component_repeats) < 1:
        parser.error("--steps, --warmup and the --*-repeats must be ≥ 1")
    if args.out is None:
        stem = "bench_penalty" if args.model == "vae" else f"bench_penalty_{args.model}"
        args.out = pathlib.Path(f"results/{stem}.json")

    command = shlex.join(
        [
            "python",
            "-m",
            "benchmarks.speed.bench_penalty",
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
    key = jax.random.key(args.seed)
    task = TASKS[args.model](args.config, args.batch, key)
    noise_key = jax.random.split(key, 3)[2]
    params, x = task.params, task.batch
    n_params = sum(p.size for p in jax.tree.leaves(params))
    tx_plain = task.optimizer
    tx_sdr = optax.chain(
        task.optimizer,
        sdr_flax.spectral_independence(args.rate, steps=args.penalty_steps),
    )
    opt_plain, opt_sdr = tx_plain.init(params), tx_sdr.init(params)
    print(f"model: {task.description}; {n_params:,} parameters")
    print(
        f"(b): optax.chain(adam, spectral_independence({args.rate}, "
        f"steps={args.penalty_steps}))"
    )
    print()

    # Compile the steps ahead of time (same arguments), as first jitted calls
    # from cleared caches: (a) and (b) interleaved over the rounds, (c) once.
    plain, captured, with_penalty = make_steps(task, tx_plain, tx_sdr)
    state_plain = (params, task.state, opt_plain)
    state_sdr = (params, task.state, opt_sdr)
    variants = {
        "plain": (plain, state_plain),
        "capture": (captured, state_plain),
        "sdr": (with_penalty, state_sdr),
    }
    lower_s = {name: [] for name in variants}
    xla_s = {name: [] for name in variants}
    compiled = {}
    for i in range(args.compile_repeats):
        for name, (fn, state) in variants.items():
            if name == "capture" and i:
                continue
            compiled[name], t_lower, t_xla = compile_timed(fn, (*state, x, noise_key))
            lower_s[name].append(t_lower)
            xla_s[name].append(t_xla)
    compile_all = {
        name: [a + b for a, b in zip(lower_s[name], xla_s[name], strict=True)]
        for name in variants
    }
    compile_s = {name: statistics.median(ts) for name, ts in compile_all.items()}
    compile_ratio = compile_s["sdr"] / compile_s["plain"]
    mem = {name: memory(c) for name, c in compiled.items()}

    def run(name: str, state: tuple, step: int) -> tuple[float, float, tuple]:
        key = jax.random.fold_in(noise_key, step)
        return timed(lambda: compiled[name](*state[:3], x, key))

    # Warm-up: the first step of each from the same initial state (kept for
    # the penalty check); device peaks (GPU only) after each variant's warm-up.
    state = {name: s for name, (_, s) in variants.items()}
    first, peaks = {}, {}
    for name in state:
        for i in range(args.warmup):
            *_, state[name] = run(name, state[name], i)
            if i == 0:
                first[name] = state[name]
        peaks[name] = device_peak(device)

    # Timed steps, interleaved so that drifts of the machine hit all alike.
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
        f"compile time of the first jitted call (trace + lower, XLA compile; "
        f"median of {args.compile_repeats} interleaved rounds, caches cleared):"
    )
    labels = {
        "plain": "(a) plain Adam",
        "capture": "(c) (a) under capture",
        "sdr": "(b) Adam + penalty",
    }
    for name, label in labels.items():
        print(
            f"  {label:<22}{compile_s[name]:7.2f} s  (trace + lower "
            f"{statistics.median(lower_s[name]):.2f} s, XLA "
            f"{statistics.median(xla_s[name]):.2f} s; all: "
            f"{', '.join(f'{t:.2f}' for t in compile_all[name])})"
        )
    print(
        f"  ratio (b)/(a): {compile_ratio:.3f}x   "
        f"{verdict(compile_ratio, TARGETS['compile'])}"
    )
    print()
    print(
        f"step time, median of {steps} interleaved steps (after {args.warmup} "
        "warm-up each); wall time, and the process's CPU time (all threads):"
    )
    for name, label in labels.items():
        spread = ", ".join(f"{t:.3f}" for t in times[name])
        cpu_spread = ", ".join(f"{t:.3f}" for t in cpu_times[name])
        print(
            f"  {label:<22}wall {fmt_time(median[name])}   "
            f"cpu {fmt_time(cpu_median[name])}"
        )
        print(f"  {'':<22}all wall, s: {spread}; all cpu, s: {cpu_spread}")
    met = ratio <= TARGET_RATIO
    print(
        f"  ratio (b)/(a): wall {ratio:.3f}x   {verdict(ratio, TARGET_RATIO)};   "
        f"cpu {cpu_ratio:.3f}x"
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
    def taps_of(params, state, batch, key):
        taps = []
        task.loss(capturing(task.apply, taps), params, state, batch, key)
        return [t for t in taps if task.layers(t.name)]

    # The taps of the first step of (b): same state, same batch, same key.
    taps = jax.jit(taps_of)(params, task.state, x, jax.random.fold_in(noise_key, 0))
    spectra_fn = jax.jit(lambda taps: sdr_flax.layer_spectra(taps, layers=task.layers))
    spectra = spectra_fn(taps)
    grads = jax.jit(lambda p: jax.tree.map(lambda q: 1e-3 * jnp.ones_like(q), p))(
        params
    )
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
        step_fn = jax.jit(jax.grad(lambda k, layer=layer: layer_penalty(layer, k)))
        per_layer[name] = median_time(
            lambda f=step_fn, k=kernel: f(k), args.component_repeats
        )
    overhead = t_spectra + t_update_sdr - t_update_plain
    print(
        f"the extra work of (b), each timed alone (median of "
        f"{args.component_repeats} calls):"
    )
    width = max(24, *(len(name) for name in spectra))
    rows = {
        f"layer_spectra of the {len(spectra)} layers": t_spectra,
        "update: adam": t_update_plain,
        "update: adam + spectral_independence": t_update_sdr,
    }
    for label, t in rows.items():
        print(f"  {label:<{width + 19}}{fmt_time(t)}")
    grids = {t.name: "x".join(map(str, t.maps.shape[1:-1])) for t in taps}
    for name, t in per_layer.items():
        kernel_shape = tuple(_get(params, spectra[name].param_path).shape)
        print(
            f"    penalty gradient {name:<{width}}{fmt_time(t)}   kernel "
            f"{kernel_shape}, maps {grids[name]}"
        )
    print(
        f"  {'overhead = spectra + update difference':<{width + 19}}"
        f"{fmt_time(overhead)}  = {100 * overhead / median['plain']:.2f}% of step "
        f"(a); estimated ratio {1 + overhead / median['plain']:.4f}x"
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
    memory_ratio = None
    if mem["plain"] and mem["sdr"]:
        memory_ratio = mem["sdr"]["peak"] / mem["plain"]["peak"]
        print(
            f"    ratio (b)/(a): {memory_ratio:.3f}x   "
            f"{verdict(memory_ratio, TARGETS['memory'])}"
        )
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
            param = _get(params, layer.param_path)
            tap = next(t for t in taps if t.name == name)
            r = sdr.conv_sdr(tap.maps, layer.kernel(param), geometry=tap.geometry)
            out[name] = (layer_penalty(layer, param), jnp.median(r))
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
        f"  {'layer':<{width}}{'before':>20}{'after 1 step (a)':>22}"
        f"{'after 1 step (b)':>22}"
    )
    for name in spectra:
        cells = [before[name], after["plain"][name], after["sdr"][name]]
        text = "".join(f"{float(p):>12.4e} [{float(m):5.3f}]" for p, m in cells)
        print(f"  {name:<{width}}{text}")
    penalty_before = total(before)
    penalty_after = {name: total(c) for name, c in after.items()}
    print(
        f"  {'sum':<{width}}{penalty_before:>12.4e}{'':>8}"
        f"{penalty_after['plain']:>14.4e}{'':>8}{penalty_after['sdr']:>14.4e}"
    )
    lowered = penalty_after["sdr"] < penalty_before
    print(
        f"  -> the step with the penalty {'lowered' if lowered else 'DID NOT lower'} "
        f"the summed penalty ({penalty_after['sdr'] / penalty_before:.3f}x of "
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
        "argv": sys.argv if argv is None else ["benchmarks.speed.bench_penalty", *argv],
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
        "model": args.model,
        "model_description": task.description,
        "config": {"name": args.config, **dataclasses.asdict(task.config)},
        "parameters": int(n_params),
        "batch": int(jax.tree.leaves(x)[0].shape[0]),
        "seed": args.seed,
        "penalty": {
            "rate": args.rate,
            "steps": args.penalty_steps,
            "layers": list(spectra),
        },
        "targets": TARGETS,
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
        "compile": {
            "repeats": args.compile_repeats,
            "seconds": compile_s,
            "trace_lower_seconds_all": lower_s,
            "xla_compile_seconds_all": xla_s,
            "ratio": compile_ratio,
            "target_met": compile_ratio <= TARGETS["compile"],
        },
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
            "ratio": memory_ratio,
            "target_met": None
            if memory_ratio is None
            else memory_ratio <= TARGETS["memory"],
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
