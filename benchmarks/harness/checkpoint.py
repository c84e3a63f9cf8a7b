"""The training state, its checkpoints, and a trained model read back.

A run directory's `checkpoints/` (`rundir.checkpoints`) holds `TrainState`s,
written every `--checkpoint-every` steps by `benchmarks.harness.train`;
`load_model` reads the network and its variables back.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from benchmarks import nets
from benchmarks.harness import rundir


def model_config(args: argparse.Namespace):
    """The model's sizes for these arguments.

    Args:
      args: from `benchmarks.harness.train.parse_args`, or a run's recorded
        arguments.

    Returns:
      The architecture's config (`vae.VAEConfig`, `dcgan.DCGANConfig`),
      with `--image-size`, `--heads` and `--kl-weight` applied (arguments
      missing from a run recorded before they existed keep the config's
      defaults).

    Raises:
      ValueError: if `--heads` or `--kl-weight` is given for a network
        without such a field.
    """
    model = getattr(args, "model", "vae")
    config = nets.get(model).config(args.config)
    if getattr(args, "image_size", None) is not None:
        config = dataclasses.replace(config, image_size=args.image_size)
    heads = getattr(args, "heads", None)
    if heads is not None:
        if not any(f.name == "heads" for f in dataclasses.fields(config)):
            raise ValueError(f"--heads applies to the β-VAE only, not {model}")
        config = dataclasses.replace(config, heads=heads)
    kl_weight = getattr(args, "kl_weight", None)
    if kl_weight is not None:
        if not any(f.name == "kl_weight" for f in dataclasses.fields(config)):
            raise ValueError(f"--kl-weight applies to the β-VAE only, not {model}")
        config = dataclasses.replace(config, kl_weight=kl_weight)
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


def initial_state(
    architecture: nets.Architecture,
    model,
    tx: optax.GradientTransformation,
    key: jax.Array,
    sharding: NamedSharding,
) -> TrainState:
    """The state before the first step.

    Args:
      architecture: the network's.
      model: the network.
      tx: the generative network's optimiser.
      key: the initialisation key.
      sharding: where the state lives (replicated).

    Returns:
      The `TrainState` at step 0, placed with `sharding`.
    """

    def init_state():
        variables = architecture.init_variables(model, key)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables["batch_stats"],
            opt_state=architecture.init_opt_state(model, tx, params),
        )

    return jax.jit(init_state, out_shardings=sharding)()


def init_or_restore(
    architecture: nets.Architecture,
    model,
    tx: optax.GradientTransformation,
    key: jax.Array,
    sharding: NamedSharding,
    run: rundir.RunDir,
):
    """The initial state, or the latest checkpoint's.

    Resuming drops the metric lines and images written after the checkpoint.

    Args:
      architecture: the network's.
      model: the network.
      tx: the generative network's optimiser.
      key: the initialisation key.
      sharding: where the state lives (replicated).
      run: the run directory.

    Returns:
      `(state, manager, start)`: the `TrainState`, the checkpoint manager and
      the step to continue from.
    """
    import orbax.checkpoint as ocp

    state = initial_state(architecture, model, tx, key, sharding)
    manager = rundir.checkpoints(run.out / "checkpoints")
    start = manager.latest_step()
    if start is None:
        run.truncate(-1)
        return state, manager, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    state = manager.restore(start, args=ocp.args.StandardRestore(abstract))
    run.truncate(start)
    print(f"resuming {run.out} at step {start}")
    return state, manager, start


def save(manager, step: int, state: TrainState) -> None:
    """Saves `state` as checkpoint `step`, unless that is the latest already.

    Args:
      manager: the run's checkpoint manager (`rundir.checkpoints`).
      step: the step.
      state: the state.
    """
    import orbax.checkpoint as ocp

    if manager.latest_step() != step:
        manager.save(step, args=ocp.args.StandardSave(state))


def load_model(
    out: str | pathlib.Path, *, step: int | None = None
) -> tuple[Any, dict, dict]:
    """A trained model from a run directory.

    Args:
      out: the run directory (`--out` of the training).
      step: the checkpoint to load; the latest by default.

    Returns:
      `(model, variables, config)`: the network (a `vae.BetaVAE` or a
      `dcgan.DCGAN`), its `{"params", "batch_stats"}` and the run's
      `config.json`. A checkpoint written over devices this process does not
      have (another device count, several processes) is read onto its first
      device.

    Raises:
      FileNotFoundError: if the directory holds no run
        (`rundir.load_run`) or no checkpoint.
      ValueError: if a file of the run is not in the expected format.
    """
    import orbax.checkpoint as ocp

    run = rundir.load_run(out)
    args = argparse.Namespace(**run.args)  # model, config, image_size
    model = nets.get(getattr(args, "model", "vae")).build(model_config(args))
    manager = rundir.checkpoints(run.path / "checkpoints")
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{run.path} holds no checkpoint yet.")
    # Saved over other devices (several, or another process's): onto this one.
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    restored = manager.restore(
        step, args=ocp.args.StandardRestore(fallback_sharding=here)
    )
    variables = {"params": restored["params"], "batch_stats": restored["batch_stats"]}
    return model, variables, run.config
