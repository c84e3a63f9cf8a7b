"""The models `benchmarks.speed.bench_penalty` times, and its three steps.

A `Task` is a model with its data and objective. Its training steps are the
real ones: the β-VAE's is `benchmarks.nets.vae.ARCHITECTURE.make_train_step`,
the step `benchmarks.harness.train` runs; the VQGAN decoder has no trainer,
and its step is built the same way (`benchmarks.nets.common.make_train_step`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import sdr
import sdr_flax
from benchmarks.harness.checkpoint import TrainState
from benchmarks.nets import common, vae, vqgan


@dataclasses.dataclass(frozen=True)
class Task:
    """A model to time: its variables, data, objective and steps.

    Attributes:
      description: one line for the printout.
      config: the model's config dataclass (recorded in the JSON).
      apply: the Linen `model.apply`.
      params: the initial parameters.
      batch_stats: the initial batch statistics (`{}` for none).
      batch: the fixed batch, the steps' second argument.
      objective: the objective of `common.make_train_step`, `objective(apply,
        params, batch_stats, batch, key) -> (loss, (terms, batch_stats))`.
      layers: the layers the penalty regularises (a predicate on names).
      optimizer: the plain optimiser.
      make_step: `make_step(tx, *, penalty_layers) -> step(state, batch, key)
        -> (state, metrics)`, the model's training step.
    """

    description: str
    config: Any
    apply: Callable
    params: Any
    batch_stats: Any
    batch: Any
    objective: Callable
    layers: Callable[[str], bool]
    optimizer: optax.GradientTransformation
    make_step: Callable[..., Callable]

    def state(self, tx: optax.GradientTransformation) -> TrainState:
        """The initial training state for the optimiser `tx`.

        Args:
          tx: the optimiser.

        Returns:
          The `TrainState` at step 0.
        """
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=self.params,
            batch_stats=self.batch_stats,
            opt_state=tx.init(self.params),
        )


def vae_task(name: str, batch: int | None, key: jax.Array) -> Task:
    """The β-VAE (`benchmarks.nets.vae`) on random images, batch 64 by default.

    Args:
      name: the config's name.
      batch: the batch size; None for 64.
      key: a PRNG key, split into init, data and noise keys.

    Returns:
      The task; its step is the harness's (`vae.ARCHITECTURE`).
    """
    arch = vae.ARCHITECTURE
    config = arch.config(name)
    model = arch.build(config)
    init_key, data_key, _ = jax.random.split(key, 3)
    size, channels, batch = config.image_size, config.image_channels, batch or 64
    x = jax.random.uniform(
        data_key, (batch, size, size, channels), minval=-1.0, maxval=1.0
    )
    variables = jax.jit(functools.partial(arch.init_variables, model))(init_key)
    return Task(
        description=f"beta-VAE ({name}): encoder {config.encoder_widths}, decoder "
        f"{config.decoder_widths}, z = {config.latent_dim}; batch {batch} of "
        f"{size}x{size}x{channels}; penalty on the decoder's transposed convs",
        config=config,
        apply=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        batch=x,
        objective=vae.objective(config.kl_weight),
        layers=vae.is_decoder_layer,
        optimizer=arch.optimizer(config),
        make_step=functools.partial(arch.make_train_step, model),
    )


def vqgan_task(name: str, batch: int | None, key: jax.Array) -> Task:
    """The VQGAN decoder (`benchmarks.nets.vqgan`) from random latents.

    Args:
      name: the config's name.
      batch: the batch size; None for the config's `batch_size`.
      key: a PRNG key, split into init, data and (unused) noise keys.

    Returns:
      The task: batch `(z, target)` from `vqgan.random_batch`, the penalty
      on every conv.
    """
    cfg = vqgan.config(name)
    model = vqgan.Decoder(cfg)
    init_key, data_key, _ = jax.random.split(key, 3)
    batch = batch or cfg.batch_size
    # Jitted: eagerly, every op of the init and the draws compiles on its own.
    z, target = jax.jit(vqgan.random_batch, static_argnums=(0, 1))(cfg, batch, data_key)
    s, size = cfg.latent_size, cfg.image_size
    return Task(
        description=f"VQGAN decoder ({name}): widths {cfg.widths}, "
        f"{cfg.res_blocks} res blocks per level, {cfg.mid_blocks} mid, "
        f"GroupNorm({cfg.groups}); batch {batch} of {s}x{s}x{cfg.latent_channels} "
        f"latents to {size}x{size}x{cfg.image_channels}; penalty on every conv",
        config=cfg,
        apply=model.apply,
        params=jax.jit(model.init)(init_key, z[:1])["params"],
        batch_stats={},
        batch=(z, target),
        objective=vqgan.objective,
        layers=vqgan.is_decoder_layer,
        optimizer=vqgan.optimizer(cfg),
        make_step=functools.partial(vqgan.make_train_step, model),
    )


TASKS = {"vae": vae_task, "vqgan": vqgan_task}


def make_steps(task: Task, tx_plain, tx_sdr) -> dict[str, Callable]:
    """The three training steps (not yet jitted), the model's own.

    Args:
      task: the model.
      tx_plain: the optimiser of steps (a) and (c).
      tx_sdr: the optimiser of step (b), taking `spectra=` in its update.

    Returns:
      `{"plain": (a), "capture": (c), "sdr": (b)}`, each `step(state, batch,
      key) -> (state, metrics)`. `capture` is `plain` with its forward pass
      run through `sdr_flax.capture_layers` and no layer regularised: what
      capture alone costs.
    """
    return {
        "plain": task.make_step(tx_plain, penalty_layers=None),
        "capture": task.make_step(tx_plain, penalty_layers=()),
        "sdr": task.make_step(tx_sdr, penalty_layers=task.layers),
    }


def first_taps(task: Task, key: jax.Array) -> list[sdr.ConvTap]:
    """The taps of the regularised layers in the first step's forward pass.

    Args:
      task: the model, at its initial parameters.
      key: the first step's key.

    Returns:
      The taps of the layers `task.layers` selects.
    """

    def taps_of(params, batch_stats, batch, key):
        taps = []
        apply = common.capturing(task.apply, taps)
        task.objective(apply, params, batch_stats, batch, key)
        return [t for t in taps if task.layers(t.name)]

    return jax.jit(taps_of)(task.params, task.batch_stats, task.batch, key)


def param_at(params: Any, path: str) -> jax.Array:
    """The parameter leaf at a `LayerSpectra.param_path` (`"decoder/deconv1/kernel"`).

    Leaves are named by `sdr.path_name`, as captures name `param_path`.

    Args:
      params: the parameters.
      path: the leaf's name.

    Returns:
      The leaf.

    Raises:
      KeyError: if no leaf has that name.
    """
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if sdr.path_name(key_path) == path:
            return leaf
    raise KeyError(f"no parameter at {path!r}")


def layer_penalty(layer: sdr_flax.LayerSpectra, param: jax.Array) -> jax.Array:
    """The eq. (13) penalty of a layer, its kernel given as the parameter leaf.

    Args:
      layer: the layer's cause spectra.
      param: its parameter leaf.

    Returns:
      The penalty summed over pairs.
    """
    return sdr.conv_penalty(
        layer.spectra, layer.kernel(param), geometry=layer.geometry, grid=layer.grid
    )


def penalty_check(
    spectra: dict[str, sdr_flax.LayerSpectra],
    taps: list[sdr.ConvTap],
    params: Any,
    stepped: dict[str, Any],
) -> dict:
    """Each regularised layer's penalty and median pair SDR, before and after.

    The penalty is eq. (13) summed over pairs, with the cause spectra of the
    first batch held fixed.

    Args:
      spectra: the cause spectra of the first batch, by layer.
      taps: the taps they were computed from (the maps of the first batch).
      params: the initial parameters.
      stepped: the parameters after the first step of each variant, by
        variant (`plain`, `sdr`).

    Returns:
      `layers` (by layer: `before`, `after_<variant>`, and the same with a
      `median_sdr_` prefix), their sums `sum_before`, `sum_after_<variant>`,
      and `lowered` (whether the step of `sdr` lowered the sum).
    """

    def check(params):
        out = {}
        for name, layer in spectra.items():
            param = param_at(params, layer.param_path)
            tap = next(t for t in taps if t.name == name)
            r = sdr.conv_sdr(tap.maps, layer.kernel(param), geometry=tap.geometry)
            out[name] = (layer_penalty(layer, param), jnp.median(r))
        return out

    check = jax.jit(check)
    cells = {"before": check(params)}
    cells.update({f"after_{name}": check(p) for name, p in stepped.items()})
    layers = {
        name: {
            **{k: float(c[name][0]) for k, c in cells.items()},
            **{f"median_sdr_{k}": float(c[name][1]) for k, c in cells.items()},
        }
        for name in spectra
    }
    sums = {f"sum_{k}": float(sum(p for p, _ in c.values())) for k, c in cells.items()}
    return {
        "layers": layers,
        **sums,
        "lowered": sums["sum_after_sdr"] < sums["sum_before"],
    }
