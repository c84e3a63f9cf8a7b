"""Train a β-VAE or a DCGAN with or without the spectral independence penalty.

    python -m benchmarks.harness.train --dataset faces --penalty sdr --out runs/sdr

The run directory `--out` holds everything, and a second call with the same
`--out` resumes it:

- `config.json`: the arguments, the model's sizes, the devices, the command;
- `metrics.jsonl`: one JSON object per line, `{"step", "kind": "train", ...}`
  every `--log-every` steps (loss terms, step time) and `{"step", "kind":
  "eval", ...}` every `--eval-every` steps (`benchmarks.harness.evaluate`);
- `images/step_<step>.npz`: the evaluation panels (uint8);
- `checkpoints/`: orbax checkpoints every `--checkpoint-every` steps, at the
  end, and when the run is interrupted (Ctrl-C, SIGTERM);
- `tensorboard/`: TensorBoard event files of the same records, panels and
  SDR histograms (`benchmarks.harness.events`; not with `--no-tensorboard`);
- `profile/`: with `--profile-steps N`, a `jax.profiler` trace of N steps
  from the second of this invocation on (`profile/process-<i>/` per process
  when there are several).

Early on, one printed line gives the expected wall time of the run.

Resuming restores the latest checkpoint, drops the metric lines and images
written after it, and continues: batches and noise are functions of
`(seed, step)`, so the resumed run writes the lines an uninterrupted run
would have written. A kill -9 loses at most the steps since the last
checkpoint, which are then recomputed; TensorBoard drops the events after
the checkpoint (a purge marker in the resumed run's event file).

Training is data parallel over all devices (`benchmarks.harness.data`): the batch is
split over a one-axis mesh, the state replicated; on several hosts start one
process per host with `--distributed` (`benchmarks.harness.distributed`).

The network (`--model`) is a `benchmarks.nets.Architecture`: it says how to
build, initialise, train and evaluate it, and the trainer asks it. The penalty
(`--penalty sdr`) is `sdr_flax.spectral_independence` chained after the
generative network's Adam, on its layers at the levels named by
`--penalty-layers` (default: the intermediate, fine and image levels
regularised in the paper's Sec. 4.1), with the cause spectra of the current
batch from the same forward pass: `--penalty-steps` steps per update of the
kind `--penalty-step` (`gauss-newton`: per-pair Gauss–Newton steps,
`scale_free=True`; `gradient`: plain gradient steps of eq. (13),
`scale_free=False`) at `--penalty-rate`, averaging over the aliases of the
zero frequency of the transposed convs' dilated grids or not
(`--penalty-aliases`, `include_aliases`). A run directory recorded without
`--penalty-step`, `--penalty-aliases`, `--heads` or `--kl-weight`
resumes with `gauss-newton`, `include` and the config's heads and KL
weight. CelebA (`--dataset celeb_a` through tensorflow-datasets, or
`--dataset image_folder --data-dir img_align_celeba/`) is cropped as each
model's public reference code does (`data.celeba_crop`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

import sdr_flax
from benchmarks import environment, nets
from benchmarks.harness import checkpoint, data, distributed, evaluate, events, rundir
from benchmarks.harness.checkpoint import TrainState
from benchmarks.harness.faces import FaceFactors
from benchmarks.nets import common, vae

DEFAULT_PENALTY_LEVELS = ("intermediate", "fine", "image")
PENALTY_RATES = {"gauss-newton": 0.5, "gradient": 0.1}
"""The default `--penalty-rate` of each `--penalty-step` (see docs/training.md)."""
# Flags newer than some run directories: a recorded run without them was
# trained with these values.
_ADDED_FLAGS = {
    "penalty_step": "gauss-newton",
    "penalty_aliases": "include",
    "heads": None,
    "kl_weight": None,
}
# `--steps paper`: the paper's shortest training (Sec. 4.1 trains 10k–50k steps).
PAPER_STEPS = 10_000
# Arguments that may differ between a run and its resumption.
_RESUMABLE = {"steps", "out", "progress", "tensorboard", "profile_steps"}
_RESUMABLE |= set(distributed.FLAGS)


def _steps(text: str) -> int:
    """`--steps`: a number, or `paper` (`PAPER_STEPS`)."""
    return PAPER_STEPS if text == "paper" else int(text)


def _add_setup_args(p: argparse.ArgumentParser) -> None:
    """The arguments on where the data is and what the run shows."""
    p.add_argument(
        "--data-dir",
        help="tensorflow-datasets directory (celeb_a), folder of images (image_folder)",
    )
    distributed.add_args(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    p.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="write a jax.profiler trace of N steps, from the second, to RUN/profile",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line `argv` (default `sys.argv[1:]`), parsed."""
    p = environment.parser(
        "benchmarks.harness.train",
        "Train a beta-VAE or a DCGAN with or without the SDR penalty.",
    )
    p.add_argument("--dataset", choices=data.DATASETS, default="faces")
    p.add_argument("--model", choices=tuple(nets.ARCHITECTURES), default="vae")
    p.add_argument("--penalty", choices=("none", "sdr"), default="none")
    p.add_argument("--config", choices=common.CONFIGS, default="small")
    p.add_argument("--image-size", type=int, help="faces only (default: config's)")
    p.add_argument(
        "--steps",
        type=_steps,
        default=2000,
        help=f"total training steps, or 'paper' ({PAPER_STEPS:,})",
    )
    p.add_argument(
        "--heads",
        choices=vae.HEADS,
        help="the β-VAE encoder's heads (default: the config's, plain)",
    )
    p.add_argument(
        "--kl-weight",
        type=float,
        help="the β-VAE's weight of the KL term (default: the config's)",
    )
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, required=True, help="run directory")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument(
        "--penalty-step",
        choices=tuple(PENALTY_RATES),
        default=_ADDED_FLAGS["penalty_step"],
        help="per-pair Gauss-Newton steps (scale free), or plain gradient steps "
        "of the penalty (eq. 13)",
    )
    p.add_argument(
        "--penalty-rate",
        type=float,
        help="the penalty's step size (default: "
        + ", ".join(f"{v} for {k}" for k, v in PENALTY_RATES.items())
        + ")",
    )
    p.add_argument("--penalty-steps", type=int, default=1)
    p.add_argument(
        "--penalty-aliases",
        choices=("include", "exclude"),
        default=_ADDED_FLAGS["penalty_aliases"],
        help="whether the penalty averages over the aliases of the zero "
        "frequency on a transposed conv's dilated grid",
    )
    p.add_argument(
        "--penalty-layers",
        nargs="+",
        choices=nets.LEVEL_NAMES,
        default=DEFAULT_PENALTY_LEVELS,
        help="generative levels regularised",
    )
    _add_setup_args(p)
    args = p.parse_args(argv)
    for name in ("steps", "log_every", "eval_every", "checkpoint_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if args.profile_steps < 0:
        p.error("--profile-steps must be ≥ 0")
    if args.image_size is not None and args.dataset != "faces":
        p.error("--image-size applies to the faces dataset only")
    if args.heads is not None and args.model != "vae":
        p.error("--heads applies to --model vae only")
    if args.kl_weight is not None and (args.model != "vae" or args.kl_weight < 0):
        p.error("--kl-weight applies to --model vae only, and must be ≥ 0")
    distributed.check_args(p, args)
    if args.penalty_rate is None:
        args.penalty_rate = PENALTY_RATES[args.penalty_step]
    return args


def open_run(args: argparse.Namespace) -> tuple[rundir.RunDir, dict]:
    """The run directory, created, or checked to hold a run of the same settings.

    Args:
      args: from `parse_args`.

    Returns:
      `(run, recorded)`: the directory's writer and the arguments recorded in
      its `config.json`.

    Raises:
      SystemExit: if the directory holds a run with other settings.
    """
    run = rundir.RunDir(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    recorded = {k: v for k, v in vars(args).items() if k not in _RESUMABLE}
    recorded["penalty_layers"] = list(args.penalty_layers)
    if run.config.exists():
        previous = {**_ADDED_FLAGS, **json.loads(run.config.read_text())["args"]}
        if previous != json.loads(json.dumps(recorded)):
            raise SystemExit(
                f"{args.out} holds a run with other settings ({previous}); pass "
                "another --out, or the same settings to resume it."
            )
    return run, recorded


def make_optimizer(
    architecture: nets.Architecture, config, args: argparse.Namespace
) -> tuple[optax.GradientTransformation, list[str] | None]:
    """The generative network's optimiser, with the penalty if asked for.

    Args:
      architecture: the network's.
      config: its sizes.
      args: from `parse_args`.

    Returns:
      `(tx, penalty_layers)`: the optimiser, and the regularised layers'
      names (None without the penalty).
    """
    tx = architecture.optimizer(config)
    if args.penalty != "sdr":
        return tx, None
    penalty_layers = [architecture.levels[level] for level in args.penalty_layers]
    penalty = sdr_flax.spectral_independence(
        args.penalty_rate,
        steps=args.penalty_steps,
        layers=penalty_layers,
        scale_free=args.penalty_step == "gauss-newton",
        include_aliases=args.penalty_aliases == "include",
    )
    return optax.chain(tx, penalty), penalty_layers


def run_config(
    args: argparse.Namespace,
    recorded: dict,
    architecture: nets.Architecture,
    config,
    penalty_layers: list[str] | None,
    command: str,
) -> dict:
    """What `config.json` records (`benchmarks.harness.rundir`).

    Args:
      args: from `parse_args`.
      recorded: the arguments to record (from `open_run`).
      architecture: the network's.
      config: its sizes.
      penalty_layers: the regularised layers, or None.
      command: the command line.

    Returns:
      The JSON-ready dict.
    """
    faces_data = args.dataset == "faces"
    return {
        "args": recorded,
        "command": command,
        "architecture": args.model,
        "model": dataclasses.asdict(config),
        "levels": dict(architecture.levels),
        "mirror": dict(architecture.mirror),
        "roles": list(architecture.roles),
        "penalty_layers": penalty_layers,
        "sdr_bins": evaluate.SDR_BINS.tolist(),
        "devices": [str(d) for d in jax.devices()],
        "processes": jax.process_count(),
        "celeba_crop": None if faces_data else data.celeba_crop(args.model),
        "jax_version": jax.__version__,
    }


def evaluation_batch(
    args: argparse.Namespace, architecture: nets.Architecture, size: int
) -> tuple[jax.Array, dict[str, jax.Array], FaceFactors | None]:
    """The evaluation batch (never trained on), and ground truths on faces.

    Args:
      args: from `parse_args`.
      architecture: the network's; truths only for one that reconstructs.
      size: image height and width.

    Returns:
      `(x, truths, factors)`: the faces' factors with their truths, else None.
    """
    if args.dataset != "faces":
        read = (
            data.eval_celeb_a if args.dataset == "celeb_a" else data.eval_image_folder
        )
        crop = data.celeba_crop(args.model)
        x = read(args.seed, args.eval_batch, size, args.data_dir, crop=crop)
        return x, {}, None
    x, factors = data.eval_faces(args.seed, args.eval_batch, size)
    if not architecture.reconstructs:
        return x, {}, None
    return x, evaluate.face_truths(factors, size), factors


def _model_and_optimizer(args: argparse.Namespace) -> tuple:
    """`(architecture, config, model, tx, penalised layers)` of a run's flags."""
    architecture = nets.get(args.model)
    config = checkpoint.model_config(args)
    tx, layers = make_optimizer(architecture, config, args)
    return architecture, config, architecture.build(config), tx, layers


def fresh_step(args: argparse.Namespace, mesh) -> tuple:
    """The initial state and compiled step of a run, with no run directory.

    What `main` builds before training, for the benchmarks and tests that
    time or read the step itself: the model of `args`, its optimiser, the
    state at step 0 (initialised from key 0, replicated over `mesh`) and the
    step compiled for the global batch `args.batch`.

    Args:
      args: from `parse_args`.
      mesh: the data mesh (`data.data_mesh()`).

    Returns:
      `(state, step, noise_key, config)`: the step is
      `step(state, x, key) -> (state, metrics)`.
    """
    architecture, config, model, tx, layers = _model_and_optimizer(args)
    init_key, noise_key = jax.random.split(jax.random.key(0))
    replicated = NamedSharding(mesh, PartitionSpec())
    state = checkpoint.initial_state(architecture, model, tx, init_key, replicated)
    size = config.image_size
    shape = (args.batch, size, size, config.image_channels)
    step = compile_step(architecture, model, tx, layers, state, shape, mesh, noise_key)
    return state, step, noise_key, config


def compile_step(
    architecture: nets.Architecture,
    model,
    tx: optax.GradientTransformation,
    penalty_layers: list[str] | None,
    state: TrainState,
    x_shape: tuple[int, ...],
    mesh,
    key: jax.Array,
):
    """The architecture's training step, compiled for the mesh.

    Args:
      architecture: the network's.
      model: the network.
      tx: the generative network's optimiser.
      penalty_layers: the regularised layers, or None.
      state: a state of the shapes trained.
      x_shape: the global batch's shape.
      mesh: the data mesh; the batch is split over it, the state replicated.
      key: a key of the noise keys' type.

    Returns:
      The compiled `step(state, x, key) -> (state, metrics)`.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    step = architecture.make_train_step(model, tx, penalty_layers=penalty_layers)
    tick = time.perf_counter()
    compiled = (
        jax.jit(
            step,
            in_shardings=(
                replicated,
                NamedSharding(mesh, PartitionSpec("data")),
                replicated,
            ),
            out_shardings=(replicated, replicated),
        )
        .lower(state, jax.ShapeDtypeStruct(x_shape, jnp.float32), key)
        .compile()
    )
    print(f"compiled the training step in {time.perf_counter() - tick:.1f} s")
    return compiled


def train_loop(
    args: argparse.Namespace,
    records: events.Records,
    state: TrainState,
    train_step,
    batches: data.Batches,
    start: int,
    noise_key: jax.Array,
) -> None:
    """Steps `start + 1` … `--steps`, logging, evaluating and saving.

    Args:
      args: from `parse_args`.
      records: the run directory, checkpoints and evaluation.
      state: the state after step `start`.
      train_step: the compiled step (`compile_step`).
      batches: the training batches from step `start + 1` on.
      start: the steps already taken.
      noise_key: folded with each step for the step's noise.

    Raises:
      SystemExit: 130 when interrupted (Ctrl-C, SIGTERM), after saving
        (several processes: after a SIGTERM only, see `distributed`).
    """
    restore_sigterm = distributed.catch_sigterm()
    profile = args.out / "profile"
    if jax.process_count() > 1:  # the trace files are named by host only
        profile = profile / f"process-{jax.process_index()}"
    monitor = events.Monitor(
        profile,
        start=start,
        steps=args.steps,
        eval_every=args.eval_every,
        profile_steps=args.profile_steps,
        progress=args.progress,
    )
    if start == 0:
        monitor.evaluated(records.evaluate(0, state))
    last, tick = start, time.perf_counter()
    try:
        for step in range(start + 1, args.steps + 1):
            monitor.before(step, state)
            state, terms = train_step(
                state, next(batches), jax.random.fold_in(noise_key, step)
            )
            monitor.after(step, state)
            if step % args.log_every == 0 or step == args.steps:
                terms = {k: float(v) for k, v in terms.items()}  # waits for the step
                seconds = (time.perf_counter() - tick) / (step - last)
                records.log_train(
                    {"step": step, "kind": "train", **terms, "step_time_s": seconds}
                )
                monitor.logged(step, terms["loss"], seconds)
                last, tick = step, time.perf_counter()
            if step % args.eval_every == 0 or step == args.steps:
                monitor.evaluated(records.evaluate(step, state))
            if step % args.checkpoint_every == 0 or step == args.steps:
                checkpoint.save(records.manager, step, state)
            if step % args.log_every == 0:
                tick = time.perf_counter()  # evaluations and saves are not steps
            distributed.check_preempted(step)
    except (KeyboardInterrupt, distributed.Interrupted) as e:
        monitor.close()
        if distributed.can_save(e):
            checkpoint.save(records.manager, int(state.step), state)
            records.manager.wait_until_finished()
        print(
            f"interrupted ({type(e).__name__}); the last checkpoint is step "
            f"{records.manager.latest_step()}; rerun the same command to resume"
        )
        raise SystemExit(130) from None
    finally:
        monitor.close()
        records.events.close()
        restore_sigterm()
    records.manager.wait_until_finished()


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Runs (or resumes) one training run.

    Args:
      argv: the command line (default `sys.argv[1:]`).

    Returns:
      The run directory.
    """
    args = parse_args(argv)
    distributed.initialize(args)
    command = environment.command("benchmarks.harness.train", argv)
    run, recorded = open_run(args)
    architecture, config, model, tx, penalty_layers = _model_and_optimizer(args)
    mesh = data.data_mesh()
    data.check_batch_size(args.batch, mesh)
    size = config.image_size
    init_key, noise_key, eval_key = jax.random.split(jax.random.key(args.seed), 3)
    replicated = NamedSharding(mesh, PartitionSpec())
    state, manager, start = checkpoint.init_or_restore(
        architecture, model, tx, init_key, replicated, run
    )
    run.write_config(
        json.dumps(
            run_config(args, recorded, architecture, config, penalty_layers, command),
            indent=2,
        )
    )
    eval_x, truths, factors = evaluation_batch(args, architecture, size)
    evaluator = evaluate.make_evaluator(architecture, model, truths, factors=factors)
    x_shape = (args.batch, size, size, config.image_channels)
    train_step = compile_step(
        architecture, model, tx, penalty_layers, state, x_shape, mesh, noise_key
    )
    batches = data.Batches(
        args.dataset,
        args.batch,
        size,
        args.seed,
        start,
        mesh,
        data_dir=args.data_dir,
        crop=data.celeba_crop(args.model),
    )
    print(distributed.describe(batches.rows, args.batch))
    writer = events.EventWriter(
        args.out / "tensorboard", start=start, enabled=args.tensorboard
    )
    records = events.Records(run, manager, evaluator, eval_x, eval_key, writer)
    records.compile(state)
    train_loop(args, records, state, train_step, batches, start, noise_key)
    return args.out


if __name__ == "__main__":
    main()
