"""Time `sdr.conv_sdr` on the paper's largest decoder layer against NumPy baselines.

The layer is the β-VAE decoder's first transposed conv: input maps of shape
(64, 8, 8, 256) into a 5×5, stride-2 transposed conv 256→256 (kernel
(5, 5, 256, 256), Flax layout). Its pair SDR matrix `R[i, j] = ρ(V_i, k_ij)`
(65,536 pairs) is measured on the dilated 16×16 grid the kernel acts on: each
map is placed at positions (2h, 2w), zeros elsewhere.

One run times, on the same random (seeded, float32) inputs:

(a) loop      a per-pair NumPy loop: the dilated maps' spectra S_i once per
              channel, then for every pair (i, j) the FFT of the zero-padded
              kernel k[:, :, i, j] and the ratio ⟨S·|k̂|²⟩ / (⟨S⟩⟨|k̂|²⟩), ⟨·⟩ the
              mean over the non-zero frequencies. With `--loop-pairs` below
              65,536 a random subset is timed and the time extrapolated
              linearly.
(b) numpy     vectorised NumPy: one FFT of all maps, one of all zero-padded
              kernels, einsums for all numerators and means; median of
              `--numpy-repeats` runs.

(c) conv_sdr  `sdr.conv_sdr(maps, kernel, strides=2, transpose=True)`, jitted,
              warmed up once, median of `--repeats` calls.
(d) floor     reading the kernel once: a jitted `sum(kernel * kernel)`,
              median of many calls.

The NumPy baselines run in float32 (NumPy ≥ 2 keeps float32 FFTs in
complex64), like `sdr`. Each NumPy time includes the maps' spectra.

It checks that (a), (b) and (c) agree (max abs and relative differences on
the compared pairs), prints a table with the speed-ups of (c) over (a) and (b)
and (c)/floor next to the targets (≥300× over the loop, ≥50× over NumPy), and
writes the figures as JSON to `--out`.

    python -m benchmarks.speed.bench_sdr [--repeats 50] [--loop-pairs 65536]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

import sdr
from benchmarks import environment
from benchmarks.environment import fmt_time, median_time

N, H, W, C_IN, C_OUT, KH, KW, STRIDE = 64, 8, 8, 256, 256, 5, 5, 2
GRID = (STRIDE * H, STRIDE * W)
PAIRS = C_IN * C_OUT
TARGET_OVER_LOOP = 300.0
TARGET_OVER_NUMPY = 50.0
RTOL = 1e-4


def make_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random normal maps (n, H, W, c_in) and kernel (kh, kw, c_in, c_out)."""
    rng = np.random.default_rng(seed)
    maps = rng.standard_normal((N, H, W, C_IN), dtype=np.float32)
    kernel = rng.standard_normal((KH, KW, C_IN, C_OUT), dtype=np.float32)
    return maps, kernel / np.sqrt(KH * KW * C_IN, dtype=np.float32)


def dilate(maps: np.ndarray) -> np.ndarray:
    """Maps (n, H, W, c) on the dilated grid: map at (s·h, s·w), zeros elsewhere."""
    out = np.zeros((maps.shape[0], *GRID, maps.shape[-1]), dtype=maps.dtype)
    out[:, ::STRIDE, ::STRIDE, :] = maps
    return out


def nz_mean(p: np.ndarray) -> np.ndarray:
    """Mean over the non-zero frequencies of the two leading (frequency) axes."""
    count = p.shape[0] * p.shape[1]
    return (p.sum(axis=(0, 1)) - p[0, 0]) / (count - 1)


def sdr_loop(maps: np.ndarray, kernel: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(a) Per-pair loop. Map spectra once per channel, then per pair: kernel FFT
    and ratio. Returns ρ for each row (i, j) of `pairs`."""
    dilated = dilate(maps)
    spectra = []
    for i in range(C_IN):
        s = np.mean(np.abs(np.fft.fft2(dilated[..., i])) ** 2, axis=0)
        spectra.append((s, nz_mean(s)))
    out = np.empty(len(pairs))
    count = GRID[0] * GRID[1] - 1
    for m, (i, j) in enumerate(pairs):
        s, s_mean = spectra[i]
        padded = np.zeros(GRID, dtype=kernel.dtype)
        padded[:KH, :KW] = kernel[:, :, i, j]
        k2 = np.abs(np.fft.fft2(padded)) ** 2
        num = (np.sum(s * k2) - s[0, 0] * k2[0, 0]) / count
        k_mean = (np.sum(k2) - k2[0, 0]) / count
        out[m] = num / (s_mean * k_mean)
    return out


def sdr_numpy(maps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(b) Vectorised NumPy: all FFTs at once, then einsums. Returns (c_in, c_out)."""
    dilated = dilate(maps)
    s = np.mean(np.abs(np.fft.fft2(dilated, axes=(1, 2))) ** 2, axis=0)  # (u,v,i)
    padded = np.zeros((*GRID, C_IN, C_OUT), dtype=kernel.dtype)
    padded[:KH, :KW] = kernel
    k2 = np.abs(np.fft.fft2(padded, axes=(0, 1))) ** 2  # (u, v, i, j)
    count = GRID[0] * GRID[1] - 1
    num = (np.einsum("uvi,uvij->ij", s, k2) - s[0, 0][:, None] * k2[0, 0]) / count
    return num / (nz_mean(s)[:, None] * nz_mean(k2))


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The largest absolute and relative differences of `a` from `b` (float64)."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    rel = diff / np.abs(np.asarray(b, np.float64))
    return {"max_abs": float(diff.max()), "max_rel": float(rel.max())}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line `argv` (default `sys.argv[1:]`), parsed."""
    parser = environment.parser(
        "benchmarks.speed.bench_sdr",
        "Time sdr.conv_sdr against NumPy baselines on a 5x5 s2 "
        "transposed conv 256->256 with (64, 8, 8, 256) input maps.",
    )
    add = parser.add_argument
    add("--repeats", type=int, default=50, help="timed calls of conv_sdr (≥20)")
    add("--numpy-repeats", type=int, default=5, help="timed runs of (b)")
    add("--floor-repeats", type=int, default=500, help="timed calls of the floor")
    add(
        "--loop-pairs",
        type=int,
        default=PAIRS,
        help=f"pairs timed in the loop (≥4096; < {PAIRS} extrapolates linearly)",
    )
    add("--seed", type=int, default=0)
    add("--out", type=pathlib.Path, default=pathlib.Path("results/bench_sdr.json"))
    args = parser.parse_args(argv)
    if args.repeats < 20:
        parser.error("--repeats must be at least 20")
    if not 4096 <= args.loop_pairs <= PAIRS:
        parser.error(f"--loop-pairs must be in [4096, {PAIRS}]")
    return args


def time_numpy(maps: np.ndarray, kernel: np.ndarray, args) -> dict:
    """Times the NumPy baselines: (a) the loop, (b) vectorised.

    The loop runs over all pairs, or over a random subset of `--loop-pairs`
    and its time is extrapolated linearly.

    Args:
      maps: the input maps.
      kernel: the kernel.
      args: from `parse_args`.

    Returns:
      `pairs` (the `(i, j)` the loop computed), `loop_r`, `loop_measured`,
      `loop` (seconds for all pairs), `extrapolated`, `numpy_r`,
      `numpy_all` and `numpy` (their median).
    """
    rng = np.random.default_rng(args.seed + 1)
    flat = np.arange(PAIRS)
    if args.loop_pairs < PAIRS:
        flat = np.sort(rng.choice(PAIRS, size=args.loop_pairs, replace=False))
    pairs = np.stack(np.unravel_index(flat, (C_IN, C_OUT)), axis=-1)
    loop_measured, _, loop_r = environment.timed(lambda: sdr_loop(maps, kernel, pairs))
    extrapolated = args.loop_pairs < PAIRS
    if extrapolated:
        print(
            f"(a) loop: timed a random subset of {args.loop_pairs} pairs "
            f"({loop_measured:.3f} s) and extrapolated linearly to {PAIRS} pairs."
        )
    numpy_all, numpy_r = [], None
    for _ in range(args.numpy_repeats):
        t, _, numpy_r = environment.timed(lambda: sdr_numpy(maps, kernel))
        numpy_all.append(t)
    return {
        "pairs": pairs,
        "loop_r": loop_r,
        "loop_measured": loop_measured,
        "loop": loop_measured * PAIRS / args.loop_pairs,
        "extrapolated": extrapolated,
        "numpy_r": numpy_r,
        "numpy_all": numpy_all,
        "numpy": statistics.median(numpy_all),
    }


def check_agreement(base: dict, conv_r: np.ndarray) -> dict:
    """Compares the loop, NumPy and `conv_sdr`, and prints the differences.

    Args:
      base: from `time_numpy`.
      conv_r: `conv_sdr`'s pair SDRs.

    Returns:
      The largest differences of each comparison, `rtol` and `ok`.
    """
    pairs, loop_r, numpy_r = base["pairs"], base["loop_r"], base["numpy_r"]
    agree = {
        "loop_vs_conv_sdr": compare(loop_r, conv_r[pairs[:, 0], pairs[:, 1]]),
        "numpy_vs_conv_sdr": compare(numpy_r, conv_r),
        "loop_vs_numpy": compare(loop_r, numpy_r[pairs[:, 0], pairs[:, 1]]),
    }
    ok = all(v["max_rel"] <= RTOL for v in agree.values())
    print(f"agreement (pairs compared: loop {len(pairs)}, numpy {PAIRS}):")
    for name, v in agree.items():
        print(
            f"  {name:<18} max abs diff {v['max_abs']:.2e}   "
            f"max rel diff {v['max_rel']:.2e}"
        )
    print(
        f"  -> {'OK' if ok else 'MISMATCH'} (tolerance {RTOL:.0e} relative); "
        f"R: median {np.median(conv_r):.4f}, range [{conv_r.min():.4f}, "
        f"{conv_r.max():.4f}]"
    )
    print()
    return {**agree, "rtol": RTOL, "ok": ok}


def print_speedups(seconds: dict, extrapolated: bool) -> dict:
    """Prints the table of times and speed-ups against the targets.

    Args:
      seconds: `loop`, `numpy`, `conv_sdr` and `floor`.
      extrapolated: whether the loop's time is extrapolated.

    Returns:
      `speedup` and `targets`, for the record.
    """
    conv_time = seconds["conv_sdr"]
    over_loop = seconds["loop"] / conv_time
    over_numpy = seconds["numpy"] / conv_time
    over_floor = conv_time / seconds["floor"]
    loop_label = "(a) per-pair NumPy loop" + (" (extrap.)" if extrapolated else "")
    print(f"{'method':<34}{'time':>12}   {'conv_sdr speed-up':>18}   target")
    print(f"{loop_label:<34}{fmt_time(seconds['loop'])}   {over_loop:>17.0f}x   ≥300x")
    print(
        f"{'(b) vectorised NumPy FFT + einsum':<34}{fmt_time(seconds['numpy'])}   "
        f"{over_numpy:>17.0f}x   ≥50x"
    )
    print(f"{'(c) sdr.conv_sdr (median)':<34}{fmt_time(conv_time)}")
    print(f"{'(d) floor: read the kernel once':<34}{fmt_time(seconds['floor'])}")
    print(f"(c)/floor: {over_floor:.1f}x")
    met_loop = over_loop >= TARGET_OVER_LOOP
    met_numpy = over_numpy >= TARGET_OVER_NUMPY
    print(
        f"targets: over loop {'MET' if met_loop else 'NOT MET'}, "
        f"over NumPy {'MET' if met_numpy else 'NOT MET'}"
    )
    return {
        "speedup": {
            "conv_sdr_over_loop": over_loop,
            "conv_sdr_over_numpy": over_numpy,
            "conv_sdr_over_floor": over_floor,
        },
        "targets": {
            "over_loop": TARGET_OVER_LOOP,
            "over_numpy": TARGET_OVER_NUMPY,
            "over_loop_met": met_loop,
            "over_numpy_met": met_numpy,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Times the four methods, checks their agreement, writes the JSON record.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      0 when the methods agree, 1 otherwise.
    """
    args = parse_args(argv)
    command = environment.command("benchmarks.speed.bench_sdr", argv)
    print(f"command: {command}")
    print(environment.headline())
    print(
        f"layer: maps {(N, H, W, C_IN)} -> {KH}x{KW} stride-{STRIDE} transposed "
        f"conv {C_IN}->{C_OUT}, measured on the dilated {GRID[0]}x{GRID[1]} grid, "
        f"{PAIRS} pairs"
    )
    print()
    maps, kernel = make_inputs(args.seed)
    base = time_numpy(maps, kernel, args)

    # (c) sdr.conv_sdr, (d) the floor.
    maps_j, kernel_j = jnp.asarray(maps), jnp.asarray(kernel)

    def conv_sdr():
        return sdr.conv_sdr(maps_j, kernel_j, strides=STRIDE, transpose=True)

    conv_r = np.asarray(conv_sdr())
    read_kernel = jax.jit(lambda k: jnp.sum(k * k))
    seconds = {
        **{k: base[k] for k in ("loop", "loop_measured", "numpy", "numpy_all")},
        "conv_sdr": median_time(conv_sdr, args.repeats),
        "floor": median_time(lambda: read_kernel(kernel_j), args.floor_repeats),
    }
    agreement = check_agreement(base, conv_r)
    figures = print_speedups(seconds, base["extrapolated"])
    record = {
        "command": command,
        "argv": sys.argv if argv is None else ["benchmarks.speed.bench_sdr", *argv],
        **environment.describe(),
        "layer": {
            "maps_shape": [N, H, W, C_IN],
            "kernel_shape": [KH, KW, C_IN, C_OUT],
            "strides": STRIDE,
            "transpose": True,
            "grid": list(GRID),
            "pairs": PAIRS,
        },
        "seed": args.seed,
        "repeats": {
            "conv_sdr": args.repeats,
            "numpy": args.numpy_repeats,
            "floor": args.floor_repeats,
        },
        "seconds": seconds,
        "loop_pairs_timed": int(args.loop_pairs),
        "loop_extrapolated": base["extrapolated"],
        **figures,
        "agreement": agreement,
    }
    environment.save_record(record, args.out)
    return 0 if agreement["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
