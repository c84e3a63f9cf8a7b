"""Train a β-VAE with or without the spectral independence penalty.

    python -m benchmarks.harness.train --dataset faces --penalty sdr --out runs/sdr

The run directory `--out` holds everything, and a second call with the same
`--out` resumes it:

- `config.json`: the arguments, the model's sizes, the devices, the command;
- `metrics.jsonl`: one JSON object per line, `{"step", "kind": "train", ...}`
  every `--log-every` steps (loss terms, step time) and `{"step", "kind":
  "eval", ...}` every `--eval-every` steps (`benchmarks.harness.evaluate`);
- `images/step_<step>.npz`: the evaluation panels (uint8);
- `checkpoints/`: orbax checkpoints every `--checkpoint-every` steps, at the
  end, and when the run is interrupted (Ctrl-C, SIGTERM).

Resuming restores the latest checkpoint, drops the metric lines and images
written after it, and continues: batches and noise are functions of
`(seed, step)`, so the resumed run writes the lines an uninterrupted run
would have written. A kill -9 loses at most the steps since the last
checkpoint, which are then recomputed.

Training is data parallel over all devices (`benchmarks.harness.data`): the batch is
split over a one-axis mesh, the state replicated; on several hosts start one
process per host with `jax.distributed.initialize()` first (`--distributed`).

The penalty (`--penalty sdr`) is `sdr_flax.spectral_independence` chained
after Adam, on the decoder layers named by `--penalty-layers` (default: the
paper's intermediate, fine and image levels), with the cause spectra of the
current batch from the same forward pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shlex
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

import sdr_flax
from benchmarks.harness import data, evaluate, faces, rundir
from benchmarks.nets import dcgan, vae

DEFAULT_PENALTY_LEVELS = ("intermediate", "fine", "image")
# Arguments that may differ between a run and its resumption.
_RESUMABLE = {"steps", "out", "distributed", "progress"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line.

    Args:
      argv: the arguments (default `sys.argv[1:]`).

    Returns:
      The parsed arguments.
    """
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.harness.train",
        description="Train a beta-VAE or a DCGAN with or without the SDR penalty.",
    )
    p.add_argument("--dataset", choices=data.DATASETS, default="faces")
    p.add_argument("--model", choices=("vae", "dcgan"), default="vae")
    p.add_argument("--penalty", choices=("none", "sdr"), default="none")
    p.add_argument("--config", choices=vae.CONFIGS, default="small")
    p.add_argument("--image-size", type=int, help="faces only (default: config's)")
    p.add_argument("--steps", type=int, default=2000, help="total training steps")
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, required=True, help="run directory")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--penalty-rate", type=float, default=0.5)
    p.add_argument("--penalty-steps", type=int, default=1)
    p.add_argument(
        "--penalty-layers",
        nargs="+",
        choices=tuple(vae.LEVELS),
        default=DEFAULT_PENALTY_LEVELS,
        help="decoder levels regularised",
    )
    p.add_argument("--data-dir", help="tensorflow-datasets directory (CelebA)")
    p.add_argument("--distributed", action="store_true", help="multi-host start")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    for name in ("steps", "log_every", "eval_every", "checkpoint_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if args.image_size is not None and args.dataset != "faces":
        p.error("--image-size applies to the faces dataset only")
    return args


def model_config(args: argparse.Namespace):
    """The model's sizes for these arguments.

    Args:
      args: from `parse_args`.

    Returns:
      A `vae.VAEConfig` or a `dcgan.DCGANConfig`, with `--image-size`
      applied.
    """
    if getattr(args, "model", "vae") == "dcgan":
        config = dcgan.config(args.config)
    else:
        config = vae.config(args.config)
    if args.image_size is not None:
        config = dataclasses.replace(config, image_size=args.image_size)
    return config


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything a checkpoint holds.

    Attributes:
      step: the number of steps taken.
      params: the model's parameters.
      batch_stats: batch norm's running averages.
      opt_state: the optimiser's state.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def make_train_step(
    model: vae.BetaVAE, tx: optax.GradientTransformation, *, penalty_layers
):
    """One training step: `(state, x, key) -> (state, metrics)`.

    With `penalty_layers`, the forward pass runs under `capture_layers` and
    the optimiser (which ends with `spectral_independence`) gets the cause
    spectra of those layers.

    Args:
      model: the β-VAE.
      tx: the optimiser.
      penalty_layers: layer names for the penalty, or None.

    Returns:
      The step function (not jitted).
    """
    kl_weight = model.config.kl_weight

    def loss_fn(params, batch_stats, x, key):
        variables = {"params": params, "batch_stats": batch_stats}
        args = (variables, x, key)
        kwargs = {"train": True, "mutable": ["batch_stats"]}
        if penalty_layers is None:
            out, taps = model.apply(*args, **kwargs), []
        else:
            out, taps = sdr_flax.capture_layers(model.apply, *args, **kwargs)
        (recon, mu, logvar), updates = out
        loss, terms = vae.vae_loss(recon, x, mu, logvar, kl_weight=kl_weight)
        return loss, (terms, updates["batch_stats"], taps)

    def step(state: TrainState, x: jax.Array, key: jax.Array):
        (loss, (terms, batch_stats, taps)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params, state.batch_stats, x, key)
        extra = {}
        if penalty_layers is not None:
            extra["spectra"] = sdr_flax.layer_spectra(taps, layers=penalty_layers)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
        new = TrainState(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        return new, {"loss": loss, **terms}

    return step


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise _Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Runs (or resumes) one training run.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      The run directory.
    """
    import orbax.checkpoint as ocp
    from tqdm import tqdm

    args = parse_args(argv)
    if args.distributed:
        jax.distributed.initialize()
    command = shlex.join(
        [
            "python",
            "-m",
            "benchmarks.harness.train",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    run = rundir.RunDir(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    recorded = {k: v for k, v in vars(args).items() if k not in _RESUMABLE}
    recorded["penalty_layers"] = list(args.penalty_layers)
    if run.config.exists():
        previous = json.loads(run.config.read_text())["args"]
        if previous != json.loads(json.dumps(recorded)):
            raise SystemExit(
                f"{args.out} holds a run with other settings ({previous}); pass "
                "another --out, or the same settings to resume it."
            )

    config = model_config(args)
    is_gan = args.model == "dcgan"
    model = dcgan.DCGAN(config) if is_gan else vae.BetaVAE(config)
    levels = dcgan.LEVELS if is_gan else vae.LEVELS
    mesh = data.data_mesh()
    data.check_batch_size(args.batch, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    size = config.image_size

    penalty_layers = None
    tx = dcgan.optimizer(config) if is_gan else vae.optimizer(config)
    if args.penalty == "sdr":
        penalty_layers = [levels[level] for level in args.penalty_layers]
        tx = optax.chain(
            tx,
            sdr_flax.spectral_independence(
                args.penalty_rate,
                steps=args.penalty_steps,
                layers=penalty_layers,
            ),
        )

    init_key, noise_key, eval_key = jax.random.split(jax.random.key(args.seed), 3)

    def init_state():
        if is_gan:
            variables = dcgan.init_variables(model, init_key)
            params = variables["params"]
            opt_state = {
                "generator": tx.init(params["generator"]),
                "discriminator": dcgan.optimizer(config).init(params["discriminator"]),
            }
        else:
            x = jnp.zeros((1, size, size, config.image_channels))
            variables = model.init(init_key, x, noise_key, train=False)
            opt_state = tx.init(variables["params"])
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            opt_state=opt_state,
        )

    state = jax.jit(init_state, out_shardings=replicated)()
    manager = rundir.checkpoints(args.out / "checkpoints")
    start = 0
    if manager.latest_step() is not None:
        start = manager.latest_step()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = manager.restore(start, args=ocp.args.StandardRestore(abstract))
        run.truncate(start)
        print(f"resuming {args.out} at step {start}")
    else:
        run.truncate(-1)
    run.write_config(
        json.dumps(
            {
                "args": recorded,
                "command": command,
                "architecture": args.model,
                "model": dataclasses.asdict(config),
                "levels": levels,
                "mirror": dcgan.MIRROR if is_gan else vae.MIRROR,
                "roles": ["generator", "discriminator"]
                if is_gan
                else ["decoder", "encoder"],
                "penalty_layers": penalty_layers,
                "sdr_bins": evaluate.SDR_BINS.tolist(),
                "devices": [str(d) for d in jax.devices()],
                "jax_version": jax.__version__,
            },
            indent=2,
        )
    )

    # Evaluation batch (never trained on), and ground truths on faces.
    truths = {}
    if args.dataset == "faces" and not is_gan:
        eval_x, factors = data.eval_faces(args.seed, args.eval_batch, size)
        for name, change in {
            "eye_distance": {"eye_distance": evaluate.STRETCH},
            "face_width": {
                "face_width": evaluate.STRETCH,
                "eye_distance": evaluate.STRETCH,
            },
        }.items():
            truths[name] = faces.render(faces.extrapolate(factors, **change), size=size)
    elif args.dataset == "faces":
        eval_x, _ = data.eval_faces(args.seed, args.eval_batch, size)
    else:
        eval_x = data.eval_celeb_a(args.seed, args.eval_batch, size, args.data_dir)
    if is_gan:
        z = jax.random.normal(eval_key, (args.eval_batch, config.latent_dim))
        evaluator = dcgan.make_evaluator(model, z)
    else:
        evaluator = evaluate.make_evaluator(model, truths)

    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    x_shape = (args.batch, size, size, config.image_channels)
    tick = time.perf_counter()
    train_step = (
        jax.jit(
            dcgan.make_train_step(
                model, tx, dcgan.optimizer(config), penalty_layers=penalty_layers
            )
            if is_gan
            else make_train_step(model, tx, penalty_layers=penalty_layers),
            in_shardings=(replicated, batch_sharding, replicated),
            out_shardings=(replicated, replicated),
        )
        .lower(state, jax.ShapeDtypeStruct(x_shape, jnp.float32), noise_key)
        .compile()
    )
    print(f"compiled the training step in {time.perf_counter() - tick:.1f} s")
    batches = data.Batches(
        args.dataset,
        args.batch,
        size,
        args.seed,
        start,
        mesh,
        data_dir=args.data_dir,
    )

    def run_eval(step: int) -> None:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        metrics, stats, images = evaluator(variables, eval_x, eval_key)
        run.log(
            {
                "step": step,
                "kind": "eval",
                **evaluate.to_python(metrics),
                "sdr": evaluate.to_python(stats),
            }
        )
        run.save_images(step, evaluate.to_uint8(images))

    def save(step: int) -> None:
        if manager.latest_step() != step:
            manager.save(step, args=ocp.args.StandardSave(state))

    previous = {
        sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM,)
    }
    bar = tqdm(
        total=args.steps,
        initial=start,
        disable=not args.progress,
        unit="step",
        dynamic_ncols=True,
    )
    if start == 0:
        run_eval(0)
    last, tick = start, time.perf_counter()
    try:
        for step in range(start + 1, args.steps + 1):
            state, terms = train_step(
                state, next(batches), jax.random.fold_in(noise_key, step)
            )
            bar.update(1)
            if step % args.log_every == 0 or step == args.steps:
                terms = {k: float(v) for k, v in terms.items()}  # waits for the step
                seconds = (time.perf_counter() - tick) / (step - last)
                run.log(
                    {"step": step, "kind": "train", **terms, "step_time_s": seconds}
                )
                bar.set_postfix(
                    loss=f"{terms['loss']:.4f}", s_per_step=f"{seconds:.3f}"
                )
                last, tick = step, time.perf_counter()
            if step % args.eval_every == 0 or step == args.steps:
                run_eval(step)
            if step % args.checkpoint_every == 0 or step == args.steps:
                save(step)
            if step % args.log_every == 0:
                tick = time.perf_counter()  # evaluations and saves are not steps
    except (KeyboardInterrupt, _Interrupted) as e:
        bar.close()
        completed = int(state.step)
        save(completed)
        manager.wait_until_finished()
        print(
            f"interrupted ({type(e).__name__}); saved step {completed}; "
            "rerun the same command to resume"
        )
        raise SystemExit(130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bar.close()
    manager.wait_until_finished()
    return args.out


def load_run(
    out: str | pathlib.Path, *, step: int | None = None
) -> tuple[vae.BetaVAE | dcgan.DCGAN, dict, dict]:
    """A trained model from a run directory.

    Args:
      out: the run directory (`--out` of the training).
      step: the checkpoint to load; the latest by default.

    Returns:
      `(model, variables, config)`: the β-VAE (or DCGAN), its
      `{"params", "batch_stats"}` and the run's `config.json`.

    Raises:
      FileNotFoundError: if the directory holds no run or no checkpoint.
    """
    import orbax.checkpoint as ocp

    out = pathlib.Path(out)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out} holds no run (no config.json).")
    recorded = json.loads((out / "config.json").read_text())
    args = argparse.Namespace(**recorded["args"])  # model, config, image_size
    config = model_config(args)
    if getattr(args, "model", "vae") == "dcgan":
        model = dcgan.DCGAN(config)
    else:
        model = vae.BetaVAE(config)
    manager = rundir.checkpoints(out / "checkpoints")
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{out} holds no checkpoint yet.")
    restored = manager.restore(step, args=ocp.args.StandardRestore())
    variables = {"params": restored["params"], "batch_stats": restored["batch_stats"]}
    return model, variables, recorded


if __name__ == "__main__":
    main()
