"""Per-device memory of the penalised training step, parameters sharded or not.

A generator of `--width` channels (default 512): z (128) → dense → 4×4×W →
5×5 stride-2 transposed convs to 8×8×W, 16×16×W/2 and 32×32×W/2 → a 3×3
conv to a 32×32×4 image, trained on the MSE to fixed random images (batch
`--batch`, default 32) with the step of the training page: the forward pass
under `sdr_flax.capture_layers`, then `optax.chain(optax.adam(1e-3),
sdr_flax.spectral_independence())` updated with
`spectra=sdr_flax.layer_spectra(taps)` (every conv regularised).

The step is compiled for `--devices` CPU devices (default 4, forced with
`jax_num_cpu_devices`, so run it in a fresh process) under three layouts:

- `replicated (data)`: every parameter on every device, the batch split over
  all devices (plain data parallelism);
- `replicated (data x model)`: every parameter on every device on a
  (devices / 2) × 2 mesh, the batch split over "data" only (each device
  holds as many samples as in the sharded layout);
- `sharded (data x model)`: the same mesh, every conv kernel and bias split
  along its output channels over "model" (the dense projection replicated).

For each, XLA's plan of the compiled step (`compiled.memory_analysis()`,
which is per device for a sharded program): temp, argument and output
bytes, and their sum, the planned peak. Also the same step with plain Adam
(no capture, no penalty), for what the penalty adds in each layout. Nothing
is run: the figures are the compiler's.

    python -m benchmarks.speed.bench_sharded [--width 512] [--batch 32]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import sdr_flax
from benchmarks import environment
from benchmarks.speed import penalty_timing

MODULE = "benchmarks.speed.bench_sharded"
LAYOUTS = ("replicated (data)", "replicated (data x model)", "sharded (data x model)")
LATENT = 128


class Generator(nn.Module):
    """z → 4×4×W → 8×8×W → 16×16×W/2 → 32×32×W/2 → 32×32×4."""

    width: int

    @nn.compact
    def __call__(self, z):
        w = self.width
        h = nn.relu(nn.Dense(4 * 4 * w, name="project")(z).reshape(-1, 4, 4, w))
        for name, c in (("up1", w), ("up2", w // 2), ("up3", w // 2)):
            h = nn.relu(nn.ConvTranspose(c, (5, 5), strides=(2, 2), name=name)(h))
        return jnp.tanh(nn.Conv(4, (3, 3), name="image")(h))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line.

    Args:
      argv: the arguments (default `sys.argv[1:]`).

    Returns:
      The parsed arguments.
    """
    parser = environment.parser(
        MODULE,
        "Per-device memory (XLA's plan) of the penalised training step with "
        "sharded against replicated parameters, on forced CPU devices.",
    )
    add = parser.add_argument
    add("--width", type=int, default=512, help="channels of the widest convs")
    add("--batch", type=int, default=32)
    add("--devices", type=int, default=4, help="CPU devices (an even number)")
    add("--out", type=pathlib.Path, default=pathlib.Path("results/bench_sharded.json"))
    args = parser.parse_args(argv)
    if args.devices < 2 or args.devices % 2:
        parser.error("--devices must be an even number ≥ 2")
    if args.width < 4 or args.width % 4:
        parser.error("--width must be a multiple of 4")
    if args.batch % args.devices:
        parser.error("--batch must be a multiple of --devices")
    return args


def use_cpu_devices(n: int) -> None:
    """Runs JAX on `n` CPU devices.

    Args:
      n: the number of devices.

    Raises:
      SystemExit: if JAX already started with another count (call this before
        any JAX operation, in a fresh process).
    """
    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass  # already started: checked below
    if jax.device_count() != n or jax.devices()[0].platform != "cpu":
        raise SystemExit(
            f"{MODULE} needs {n} CPU devices; JAX started with "
            f"{jax.devices()}. Run it in a fresh process."
        )


def partition(path, leaf) -> P:
    """The partition spec of a parameter in the sharded layout.

    Args:
      path: the parameter's key path.
      leaf: the parameter (or its shape).

    Returns:
      Conv kernels and biases split along their output channels over
      "model"; the dense projection whole.
    """
    if path[0].key == "project":
        return P()
    return P(*[None] * (leaf.ndim - 1), "model")


def make_step(model: nn.Module, tx, penalised: bool):
    """The jitted training step, with the penalty or plain Adam.

    Args:
      model: the generator.
      tx: the optimiser (with `spectral_independence` chained when
        `penalised`).
      penalised: run the forward pass under `capture_layers` and pass the
        taps' spectra to `tx`.

    Returns:
      `step(params, opt_state, z, target) -> (params, opt_state, loss)`.
    """

    def step(params, opt_state, z, target):
        def loss_fn(params):
            if penalised:
                out, taps = sdr_flax.capture_layers(model.apply, {"params": params}, z)
            else:
                out, taps = model.apply({"params": params}, z), []
            return jnp.mean((out - target) ** 2), taps

        (loss, taps), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        extra = {"spectra": sdr_flax.layer_spectra(taps)} if penalised else {}
        updates, opt_state = tx.update(grads, opt_state, params, **extra)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def placed(layout: str, params, z, target, devices: int):
    """The step's arguments placed on the devices as `layout` says.

    Args:
      layout: one of `LAYOUTS`.
      params: the parameters.
      z: the latents.
      target: the images to fit.
      devices: the number of devices.

    Returns:
      `(params, z, target)` on the layout's mesh.
    """
    if layout == "replicated (data)":
        mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))
    else:
        shape = (devices // 2, 2)
        mesh = jax.make_mesh(shape, ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    if layout.startswith("sharded"):
        specs = jax.tree_util.tree_map_with_path(partition, params)
    else:
        specs = jax.tree.map(lambda _: P(), params)
    params = jax.device_put(
        params, jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    )
    batch = NamedSharding(mesh, P("data"))
    return params, jax.device_put(z, batch), jax.device_put(target, batch)


def measure(args) -> dict:
    """XLA's planned memory of each layout's step, with and without penalty.

    Args:
      args: from `parse_args`.

    Returns:
      `{layout: {"penalised": memory, "plain": memory}}`, each memory as
      `penalty_timing.memory` gives it (bytes per device).
    """
    model = Generator(args.width)
    rng = np.random.default_rng(0)
    z = np.asarray(rng.normal(size=(args.batch, LATENT)), np.float32)
    target = np.asarray(rng.uniform(-1, 1, (args.batch, 32, 32, 4)), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), z)["params"]
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    txs = {
        "penalised": optax.chain(optax.adam(1e-3), sdr_flax.spectral_independence()),
        "plain": optax.adam(1e-3),
    }
    out = {}
    with jax.numpy_dtype_promotion("standard"):
        for layout in LAYOUTS:
            p, zz, tt = placed(layout, params, z, target, args.devices)
            out[layout] = {}
            for kind, tx in txs.items():
                step = make_step(model, tx, kind == "penalised")
                compiled = step.lower(p, tx.init(p), zz, tt).compile()
                out[layout][kind] = penalty_timing.memory(compiled)
    return out


def mib(n: int) -> str:
    """Bytes as MiB, right-aligned.

    Args:
      n: bytes.

    Returns:
      The figure in MiB, eight characters wide.
    """
    return f"{n / 2**20:8.1f}"


def print_table(memory: dict, args) -> None:
    """Prints the planned memory of each layout.

    Args:
      memory: from `measure`.
      args: from `parse_args`.
    """
    print(
        f"XLA's planned memory per device, MiB (width {args.width}, batch "
        f"{args.batch}, {args.devices} CPU devices):"
    )
    print(
        f"  {'layout':<28}{'step':<11}{'argument':>9}{'temp':>9}{'output':>9}"
        f"{'peak':>9}"
    )
    for layout, kinds in memory.items():
        for kind, m in kinds.items():
            cells = "".join(f"{mib(m[k]):>9}" for k in ("argument", "temp", "output"))
            print(f"  {layout:<28}{kind:<11}{cells}{mib(m['peak']):>9}")
    penalised = {layout: kinds["penalised"]["peak"] for layout, kinds in memory.items()}
    sharded = penalised["sharded (data x model)"]
    for layout in LAYOUTS[:2]:
        print(
            f"  penalised peak, sharded / {layout}: {sharded / penalised[layout]:.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Measures, prints and writes the JSON record.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      0.
    """
    args = parse_args(argv)
    use_cpu_devices(args.devices)
    print(f"command: {environment.command(MODULE, argv)}")
    print(environment.headline())
    memory = measure(args)
    print_table(memory, args)
    model = Generator(args.width)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, LATENT)))
    record = {
        "command": environment.command(MODULE, argv),
        **environment.describe(),
        "devices": args.devices,
        "width": args.width,
        "batch": args.batch,
        "parameters": int(sum(s.size for s in jax.tree.leaves(shapes))),
        "memory_bytes_per_device": memory,
        "note": "compiled.memory_analysis() of each step: XLA's plan, per device; "
        "peak = temp + argument + output",
    }
    environment.save_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
