"""Time a training step with and without the spectral independence penalty.

Two models (`--model`), in a `--config` of `tiny`, `small` (CPU) or `paper`:

- `vae` (default): the β-VAE of the public reference code
  (`benchmarks.nets.vae`) at batch 64 on random images in [-1, 1]
  (seeded), the reference's loss (pixel MSE + 0.005·KL) and Adam (1e-3,
  β1 = 0.5), batch norm in training mode. The
  penalty regularises the decoder's four transposed convs, not the encoder.
- `vqgan`: a decoder of the maskgit VQGAN / diffusers kind
  (`benchmarks.nets.vqgan`: GroupNorm, swish, residual blocks, nearest upsampling
  and conv) on pixel MSE from random latents to random images, Adam (1e-4,
  β = 0.5, 0.9), the config's batch. The penalty regularises every conv.

Three jitted steps, the model's own training step (`penalty_tasks`: the
β-VAE's is the one `benchmarks.harness.train` runs), compiled ahead of time
and run from the same state:

(a) plain    without the penalty: `model.apply` inside `jax.value_and_grad`,
             then `optax.adam(...).update`.
(c) capture  (a) with the forward pass run through `sdr_flax.capture_layers`
             and no layer regularised: what capture alone costs.
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
import math
import pathlib
import statistics
import sys
from typing import Any

import jax
import optax

import sdr_flax
from benchmarks import environment
from benchmarks.environment import fmt_time
from benchmarks.speed import penalty_tasks, penalty_timing
from benchmarks.speed.penalty_tasks import Task

TARGETS = {"step": 1.05, "memory": 1.05, "compile": 1.30}
TARGET_RATIO = TARGETS["step"]
DEFAULT_STEPS = {"paper": 3, "small": 20, "tiny": 3}
MODELS = tuple(penalty_tasks.TASKS)
LABELS = {
    "plain": "(a) plain Adam",
    "capture": "(c) (a) under capture",
    "sdr": "(b) Adam + penalty",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the defaults that depend on the config filled in.

    Args:
      argv: the arguments (default `sys.argv[1:]`).

    Returns:
      The parsed arguments; `steps` (default: `DEFAULT_STEPS` of the config)
      and `out` (default: `results/bench_penalty[_<model>].json`) resolved.
    """
    parser = environment.parser(
        "benchmarks.speed.bench_penalty",
        "Time a training step with plain Adam and with Adam + "
        "sdr_flax.spectral_independence on a generator's conv layers.",
    )
    add = parser.add_argument
    add("--model", choices=MODELS, default="vae")
    add("--config", choices=("paper", "small", "tiny"), default="paper")
    add(
        "--steps",
        type=int,
        default=None,
        help="timed steps of each variant (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
        + ")",
    )
    add("--warmup", type=int, default=1, help="untimed steps each")
    add("--batch", type=int, default=None, help="default: vae 64, vqgan the config's")
    add("--rate", type=float, default=0.5, help="penalty rate")
    add("--penalty-steps", type=int, default=1, help="penalty steps per update")
    add(
        "--compile-repeats",
        type=int,
        default=3,
        help="interleaved compiles of (a) and (b), each from cleared caches",
    )
    add(
        "--component-repeats",
        type=int,
        default=20,
        help="timed calls of each component (spectra, updates)",
    )
    add("--seed", type=int, default=0)
    add("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = DEFAULT_STEPS[args.config]
    if min(args.steps, args.warmup, args.compile_repeats, args.component_repeats) < 1:
        parser.error("--steps, --warmup and the --*-repeats must be ≥ 1")
    if args.out is None:
        stem = "bench_penalty" if args.model == "vae" else f"bench_penalty_{args.model}"
        args.out = pathlib.Path(f"results/{stem}.json")
    return args


def mib(n: int | None) -> str:
    """Bytes as MiB."""
    return "n/a" if n is None else f"{n / 2**20:9.1f} MiB"


def verdict(ratio: float, target: float) -> str:
    """`target ≤ 1.05x: MET` or `NOT MET`."""
    return f"target ≤ {target:.2f}x: {'MET' if ratio <= target else 'NOT MET'}"


def print_compile(comp: dict, repeats: int) -> None:
    """Prints the compile times of `compile_steps`.

    Args:
      comp: from `compile_steps`.
      repeats: the rounds.
    """
    print(
        f"compile time of the first jitted call (trace + lower, XLA compile; "
        f"median of {repeats} interleaved rounds, caches cleared):"
    )
    for name, label in LABELS.items():
        print(
            f"  {label:<22}{comp['seconds'][name]:7.2f} s  (trace + lower "
            f"{statistics.median(comp['lower_s'][name]):.2f} s, XLA "
            f"{statistics.median(comp['xla_s'][name]):.2f} s; all: "
            f"{', '.join(f'{t:.2f}' for t in comp['all_s'][name])})"
        )
    print(
        f"  ratio (b)/(a): {comp['ratio']:.3f}x   "
        f"{verdict(comp['ratio'], TARGETS['compile'])}"
    )
    print()


def print_steps(timing: dict, summary: dict, args) -> None:
    """Prints the step times of `time_steps` and `step_summary`.

    Args:
      timing: from `time_steps`.
      summary: from `step_summary`.
      args: from `parse_args`.
    """
    print(
        f"step time, median of {args.steps} interleaved steps (after {args.warmup} "
        "warm-up each); wall time, and the process's CPU time (all threads):"
    )
    for name, label in LABELS.items():
        spread = ", ".join(f"{t:.3f}" for t in timing["times"][name])
        cpu_spread = ", ".join(f"{t:.3f}" for t in timing["cpu_times"][name])
        print(
            f"  {label:<22}wall {fmt_time(summary['median'][name])}   "
            f"cpu {fmt_time(summary['cpu_median'][name])}"
        )
        print(f"  {'':<22}all wall, s: {spread}; all cpu, s: {cpu_spread}")
    ratio, flops = summary["ratio"], summary["flops"]
    print(
        f"  ratio (b)/(a): wall {ratio:.3f}x   {verdict(ratio, TARGET_RATIO)};   "
        f"cpu {summary['cpu_ratio']:.3f}x"
    )
    print(
        f"  ratio (c)/(a), capture alone: wall {summary['capture_ratio']:.3f}x   "
        f"cpu {summary['capture_cpu_ratio']:.3f}x   (same XLA program: "
        f"{summary['same_program']})"
    )
    print(
        f"  XLA's flop count per step: (a) {flops['plain']:.4g}, (b) "
        f"{flops['sdr']:.4g}, (b)/(a) {flops['sdr'] / flops['plain']:.4f}x "
        "(XLA's cost model charges an FFT ~10x its 2.5 N log2 N flops)"
    )
    print()


def print_components(comps: dict, spectra: dict, taps: list, params: Any, step_s: dict):
    """Prints `time_components`' times and the overhead they add to (a).

    Args:
      comps: from `penalty_timing.time_components`.
      spectra: the cause spectra, by layer.
      taps: the taps they come from.
      params: the initial parameters.
      step_s: the median step times, by variant.
    """
    plain_s, overhead = step_s["plain"], comps["overhead"]
    print(
        f"the extra work of (b), each timed alone (median of {comps['repeats']} calls):"
    )
    width = max(24, *(len(name) for name in spectra))
    rows = {
        f"layer_spectra of the {len(spectra)} layers": comps["layer_spectra"],
        "update: adam": comps["update_adam"],
        "update: adam + spectral_independence": comps["update_adam_penalty"],
    }
    for label, t in rows.items():
        print(f"  {label:<{width + 19}}{fmt_time(t)}")
    grids = {t.name: "x".join(map(str, t.maps.shape[1:-1])) for t in taps}
    for name, t in comps["penalty_gradient"].items():
        param = penalty_tasks.param_at(params, spectra[name].param_path)
        print(
            f"    penalty gradient {name:<{width}}{fmt_time(t)}   kernel "
            f"{tuple(param.shape)}, maps {grids[name]}"
        )
    print(
        f"  {'overhead = spectra + update difference':<{width + 19}}"
        f"{fmt_time(overhead)}  = {100 * overhead / plain_s:.2f}% of step "
        f"(a); estimated ratio {comps['estimated_ratio']:.4f}x"
    )
    print(
        "  (taps are taken while jit traces the step: no run-time cost; "
        "the measured (b)-(a) is "
        f"{fmt_time(step_s['sdr'] - plain_s).strip()})"
    )
    print()


def print_memory(mem: dict, peaks: dict) -> float | None:
    """Prints XLA's planned peaks of (a) and (b), and the device's peaks.

    Args:
      mem: `penalty_timing.memory` by variant.
      peaks: `penalty_timing.device_peak` after each variant's warm-up.

    Returns:
      The planned peaks' ratio (b)/(a), or None where XLA gives none.
    """
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
    ratio = None
    if mem["plain"] and mem["sdr"]:
        ratio = mem["sdr"]["peak"] / mem["plain"]["peak"]
        print(f"    ratio (b)/(a): {ratio:.3f}x   {verdict(ratio, TARGETS['memory'])}")
    if peaks["plain"] is None:
        print(f"  device allocator peak: not available on {jax.devices()[0].platform}")
    else:
        print(
            f"  device allocator peak (peak_bytes_in_use, never reset): after (a)'s "
            f"warm-up {mib(peaks['plain']).strip()}, after (b)'s "
            f"{mib(peaks['sdr']).strip()} (the max of both)"
        )
    print()
    return ratio


def print_penalty_check(check: dict) -> None:
    """Prints `penalty_tasks.penalty_check` per layer, and the sums.

    Args:
      check: from `penalty_tasks.penalty_check`.
    """
    print(
        "penalty check (eq. 13, summed over pairs; cause spectra of the first "
        "batch; median pair SDR in brackets):"
    )
    width = max(24, *(len(name) for name in check["layers"]))
    print(
        f"  {'layer':<{width}}{'before':>20}{'after 1 step (a)':>22}"
        f"{'after 1 step (b)':>22}"
    )
    for name, layer in check["layers"].items():
        cells = [
            (layer[k], layer[f"median_sdr_{k}"])
            for k in ("before", "after_plain", "after_sdr")
        ]
        text = "".join(f"{p:>12.4e} [{m:5.3f}]" for p, m in cells)
        print(f"  {name:<{width}}{text}")
    before, plain, sdr = (
        check[f"sum_{k}"] for k in ("before", "after_plain", "after_sdr")
    )
    print(f"  {'sum':<{width}}{before:>12.4e}{'':>8}{plain:>14.4e}{'':>8}{sdr:>14.4e}")
    lowered = check["lowered"]
    print(
        f"  -> the step with the penalty {'lowered' if lowered else 'DID NOT lower'} "
        f"the summed penalty ({sdr / before:.3f}x of "
        f"before; plain Adam: {plain / before:.3f}x)"
    )
    if not lowered:
        print(
            "  WARNING: the penalty step raised the summed penalty; see the layers "
            "above (a rate too large for some layer overshoots)."
        )


def print_losses(losses: dict, steps: int) -> None:
    """Prints the first and last timed losses, and warns of divergence.

    Args:
      losses: the timed steps' losses by variant.
      steps: the timed steps.
    """
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


def make_record(args, argv, task: Task, spectra: dict, parts: dict) -> dict:
    """The JSON record of a run.

    Args:
      args: from `parse_args`.
      argv: the command line given to `main` (None: `sys.argv`).
      task: the model.
      spectra: the regularised layers' cause spectra.
      parts: `comp` (`compile_steps`), `timing` (`time_steps`), `summary`
        (`step_summary`), `components` (`time_components`), `memory_ratio`
        and `penalty_check` (`penalty_tasks.penalty_check`).

    Returns:
      The JSON-ready dict.
    """
    comp, timing, summary = parts["comp"], parts["timing"], parts["summary"]
    mem, ratio = comp["memory"], parts["memory_ratio"]
    return {
        "command": environment.command("benchmarks.speed.bench_penalty", argv),
        "argv": sys.argv if argv is None else ["benchmarks.speed.bench_penalty", *argv],
        **environment.describe(),
        "model": args.model,
        "model_description": task.description,
        "config": {"name": args.config, **dataclasses.asdict(task.config)},
        "parameters": int(sum(p.size for p in jax.tree.leaves(task.params))),
        "batch": int(jax.tree.leaves(task.batch)[0].shape[0]),
        "seed": args.seed,
        "penalty": {
            "rate": args.rate,
            "steps": args.penalty_steps,
            "layers": list(spectra),
        },
        "targets": TARGETS,
        "steps_timed": args.steps,
        "warmup": args.warmup,
        "seconds": {
            **summary["median"],
            **{f"{name}_all": ts for name, ts in timing["times"].items()},
            "compile": comp["seconds"],
        },
        "cpu_seconds": {
            **summary["cpu_median"],
            **{f"{name}_all": ts for name, ts in timing["cpu_times"].items()},
        },
        **{k: summary[k] for k in ("cpu_ratio", "capture_ratio", "capture_cpu_ratio")},
        "xla_flops": summary["flops"],
        "ratio": summary["ratio"],
        "target_ratio": TARGET_RATIO,
        "target_met": summary["ratio"] <= TARGET_RATIO,
        "compile": {
            "repeats": args.compile_repeats,
            "seconds": comp["seconds"],
            "trace_lower_seconds_all": comp["lower_s"],
            "xla_compile_seconds_all": comp["xla_s"],
            "ratio": comp["ratio"],
            "target_met": comp["ratio"] <= TARGETS["compile"],
        },
        "components_seconds": parts["components"],
        "memory_bytes": {
            "xla_planned": mem,
            "xla_planned_note": "compiled.memory_analysis(): peak = temp + "
            "argument + output (XLA's plan; CPU has no allocator statistics)",
            "ratio": ratio,
            "target_met": None if ratio is None else ratio <= TARGETS["memory"],
            "device_peak_after_plain": timing["peaks"]["plain"],
            "device_peak_after_sdr": timing["peaks"]["sdr"],
        },
        "penalty_check": parts["penalty_check"],
        "losses": timing["losses"],
    }


def main(argv: list[str] | None = None) -> int:
    """Times the three steps, prints the figures and writes the JSON record.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      0.
    """
    args = parse_args(argv)
    print(f"command: {environment.command('benchmarks.speed.bench_penalty', argv)}")
    print(environment.headline())
    key = jax.random.key(args.seed)
    task = penalty_tasks.TASKS[args.model](args.config, args.batch, key)
    noise_key = jax.random.split(key, 3)[2]
    n_params = sum(p.size for p in jax.tree.leaves(task.params))
    penalty = sdr_flax.spectral_independence(args.rate, steps=args.penalty_steps)
    txs = {"plain": task.optimizer, "sdr": optax.chain(task.optimizer, penalty)}
    print(f"model: {task.description}; {n_params:,} parameters")
    print(
        f"(b): optax.chain(adam, spectral_independence({args.rate}, "
        f"steps={args.penalty_steps}))"
    )
    print()
    steps = penalty_tasks.make_steps(task, txs["plain"], txs["sdr"])
    states = {
        name: task.state(txs["sdr" if name == "sdr" else "plain"]) for name in steps
    }
    comp = penalty_timing.compile_steps(
        steps, states, task.batch, noise_key, args.compile_repeats
    )
    timing = penalty_timing.time_steps(
        comp["compiled"], states, task.batch, noise_key, args
    )
    summary = penalty_timing.step_summary(timing, comp["compiled"])
    print_compile(comp, args.compile_repeats)
    print_steps(timing, summary, args)

    # The taps of the first step of (b): same state, same batch, same key.
    taps = penalty_tasks.first_taps(task, jax.random.fold_in(noise_key, 0))
    spectra = jax.jit(lambda t: sdr_flax.layer_spectra(t, layers=task.layers))(taps)
    opt_states = {name: states[name].opt_state for name in ("plain", "sdr")}
    components = penalty_timing.time_components(
        task, txs, opt_states, spectra, taps, args.component_repeats
    )
    components = penalty_timing.with_overhead(components, summary["median"]["plain"])
    print_components(components, spectra, taps, task.params, summary["median"])
    memory_ratio = print_memory(comp["memory"], timing["peaks"])
    # Did the penalty do something? Kernels before and after the first step.
    stepped = {name: timing["first"][name].params for name in ("plain", "sdr")}
    checked = penalty_tasks.penalty_check(spectra, taps, task.params, stepped)
    print_penalty_check(checked)
    print_losses(timing["losses"], args.steps)
    parts = {
        "comp": comp,
        "timing": timing,
        "summary": summary,
        "components": components,
        "memory_ratio": memory_ratio,
        "penalty_check": checked,
    }
    record = make_record(args, argv, task, spectra, parts)
    environment.save_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
