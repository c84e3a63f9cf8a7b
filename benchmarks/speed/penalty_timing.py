"""The measurements of `benchmarks.speed.bench_penalty`: compile times, step
times, XLA's memory plans and flop counts, and the penalty's parts alone.

Wall and CPU times come from `benchmarks.environment.timed` and
`median_time`, as in every benchmark.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import sdr_flax
from benchmarks import environment
from benchmarks.speed import penalty_tasks
from benchmarks.speed.penalty_tasks import Task


def compile_timed(fn: Callable, args: tuple) -> tuple[Any, float, float]:
    """`jax.jit(fn)` compiled for `args` from cleared caches, as a first call.

    Args:
      fn: the function.
      args: its arguments.

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
    """XLA's planned memory of a compiled function, in bytes.

    Args:
      compiled: the compiled function.

    Returns:
      `temp`, `argument`, `output`, `alias`, `generated_code` and `peak`
      (temp + argument + output), or None where XLA gives no analysis.
    """
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
    """The device allocator's peak bytes in use so far (None on CPU).

    Args:
      device: a JAX device.

    Returns:
      `memory_stats()["peak_bytes_in_use"]`, or None.
    """
    stats = device.memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def compile_steps(steps: dict, states: dict, batch, key, repeats: int) -> dict:
    """Compiles the steps as first jitted calls from cleared caches.

    (a) and (b) are interleaved over `repeats` rounds, (c) compiled once.

    Args:
      steps: the steps by variant (`penalty_tasks.make_steps`).
      states: their initial states.
      batch: the batch.
      key: a key of the step keys' type.
      repeats: the rounds.

    Returns:
      `compiled`; by variant, all times `lower_s` (trace + lower), `xla_s`
      (XLA compile) and `all_s` (their sums), and `seconds` (the median
      sums); `ratio` ((b)/(a)) and `memory` (`memory` by
      variant).
    """
    lower_s = {name: [] for name in steps}
    xla_s = {name: [] for name in steps}
    compiled = {}
    for i in range(repeats):
        for name, fn in steps.items():
            if name == "capture" and i:
                continue
            compiled[name], t_lower, t_xla = compile_timed(
                fn, (states[name], batch, key)
            )
            lower_s[name].append(t_lower)
            xla_s[name].append(t_xla)
    all_s = {
        name: [a + b for a, b in zip(lower_s[name], xla_s[name], strict=True)]
        for name in steps
    }
    seconds = {name: statistics.median(ts) for name, ts in all_s.items()}
    return {
        "compiled": compiled,
        "lower_s": lower_s,
        "xla_s": xla_s,
        "all_s": all_s,
        "seconds": seconds,
        "ratio": seconds["sdr"] / seconds["plain"],
        "memory": {name: memory(c) for name, c in compiled.items()},
    }


def time_steps(compiled: dict, states: dict, batch, noise_key, args) -> dict:
    """Runs the compiled steps: warm-up, then timed steps, interleaved.

    The first step of each runs from the same initial state (kept for the
    penalty check); device peaks (GPU only) are read after each variant's
    warm-up. The timed steps are interleaved so that drifts of the machine
    hit all alike.

    Args:
      compiled: the compiled steps by variant.
      states: their initial states.
      batch: the batch.
      noise_key: folded with the step index for each step's key.
      args: from `parse_args` (`warmup`, `steps`).

    Returns:
      `first` (the state after each variant's first step), `peaks`, and by
      variant the wall `times`, `cpu_times` and `losses` of the timed steps.
    """
    device = jax.devices()[0]

    def run(name: str, state, step: int):
        key = jax.random.fold_in(noise_key, step)
        return environment.timed(lambda: compiled[name](state, batch, key))

    state = dict(states)
    first, peaks = {}, {}
    for name in state:
        for i in range(args.warmup):
            *_, (state[name], _) = run(name, state[name], i)
            if i == 0:
                first[name] = state[name]
        peaks[name] = device_peak(device)
    times = {name: [] for name in state}
    cpu_times = {name: [] for name in state}
    losses = {name: [] for name in state}
    for i in range(args.steps):
        for name in state:
            t, cpu, (state[name], metrics) = run(name, state[name], args.warmup + i)
            times[name].append(t)
            cpu_times[name].append(cpu)
            losses[name].append(float(metrics["loss"]))
    return {
        "first": first,
        "peaks": peaks,
        "times": times,
        "cpu_times": cpu_times,
        "losses": losses,
    }


def step_summary(timing: dict, compiled: dict) -> dict:
    """Medians and ratios of `time_steps`' times, and XLA's flop counts.

    Args:
      timing: from `time_steps`.
      compiled: the compiled steps by variant.

    Returns:
      `median`, `cpu_median` (by variant), `ratio`, `cpu_ratio`,
      `capture_ratio`, `capture_cpu_ratio`, `flops` (by variant) and
      `same_program` ((c) and (a) compile to the same XLA program).
    """
    median = {n: statistics.median(ts) for n, ts in timing["times"].items()}
    cpu = {n: statistics.median(ts) for n, ts in timing["cpu_times"].items()}
    return {
        "median": median,
        "cpu_median": cpu,
        "ratio": median["sdr"] / median["plain"],
        "cpu_ratio": cpu["sdr"] / cpu["plain"],
        "capture_ratio": median["capture"] / median["plain"],
        "capture_cpu_ratio": cpu["capture"] / cpu["plain"],
        "flops": {
            name: float((c.cost_analysis() or {}).get("flops", float("nan")))
            for name, c in compiled.items()
        },
        "same_program": compiled["capture"].as_text() == compiled["plain"].as_text(),
    }


def time_components(
    task: Task, txs: dict, opt_states: dict, spectra: dict, taps: list, repeats: int
) -> dict:
    """The extra work of (b), each part timed alone (median of `repeats` calls).

    Args:
      task: the model, at its initial parameters.
      txs: the optimisers of (a) and (b), `{"plain", "sdr"}`.
      opt_states: their initial states.
      spectra: the cause spectra of the first batch.
      taps: the taps they come from (`penalty_tasks.first_taps`).
      repeats: the timed calls of each.

    Returns:
      `repeats`, and seconds: `layer_spectra`, `update_adam`,
      `update_adam_penalty`, and `penalty_gradient` by layer.
    """
    params = task.params
    spectra_fn = jax.jit(lambda taps: sdr_flax.layer_spectra(taps, layers=task.layers))
    grads = jax.jit(lambda p: jax.tree.map(lambda q: 1e-3 * jnp.ones_like(q), p))(
        params
    )
    update_plain = jax.jit(txs["plain"].update)
    update_sdr = jax.jit(
        lambda grads, state, params, spectra: txs["sdr"].update(
            grads, state, params, spectra=spectra
        )
    )
    per_layer = {}
    for name, layer in spectra.items():
        kernel = penalty_tasks.param_at(params, layer.param_path)
        step_fn = jax.jit(
            jax.grad(lambda k, layer=layer: penalty_tasks.layer_penalty(layer, k))
        )
        per_layer[name] = environment.median_time(
            lambda f=step_fn, k=kernel: f(k), repeats
        )
    return {
        "repeats": repeats,
        "layer_spectra": environment.median_time(lambda: spectra_fn(taps), repeats),
        "update_adam": environment.median_time(
            lambda: update_plain(grads, opt_states["plain"], params), repeats
        ),
        "update_adam_penalty": environment.median_time(
            lambda: update_sdr(grads, opt_states["sdr"], params, spectra), repeats
        ),
        "penalty_gradient": per_layer,
    }


def with_overhead(components: dict, plain_s: float) -> dict:
    """`time_components`' times with the overhead they add to step (a).

    Args:
      components: from `time_components`.
      plain_s: the median time of step (a).

    Returns:
      `components` with `overhead` (spectra + the update's difference) and
      `estimated_ratio` (1 + overhead / (a)) added.
    """
    overhead = components["layer_spectra"] + components["update_adam_penalty"]
    overhead -= components["update_adam"]
    return {
        **components,
        "overhead": overhead,
        "estimated_ratio": 1 + overhead / plain_s,
    }
