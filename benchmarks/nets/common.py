"""What the benchmark networks share: size presets, initialisers, batch norm,
and the training step of one network with its optimiser.

The β-VAE and the DCGAN follow their reference code: kernels N(0, 0.02²),
batch norm scales N(1, 0.02²), moving-average decay 0.9, ε = 1e-5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import sdr_flax

CONFIGS = ("tiny", "small", "paper")

# N(0, 0.02²), the kernels of the reference code.
kernel_init = nn.initializers.normal(0.02)


class Presets:
    """The named sizes (`CONFIGS`) of a config dataclass.

    A config class lists its `tiny` and `small` sizes in `PRESETS`, as the
    fields that differ from its defaults (its `paper` sizes: those of the
    public reference code that the paper's Sec. 4 links).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def paper(cls):
        """The default sizes: those of the public reference code.

        Returns:
          The default config.
        """
        return cls()

    @classmethod
    def small(cls):
        """A CPU-sized variant (`PRESETS["small"]`).

        Returns:
          The small config.
        """
        return cls(**cls.PRESETS["small"])

    @classmethod
    def tiny(cls):
        """The quick variant of tests and of the default comparison
        (`PRESETS["tiny"]`).

        Returns:
          The tiny config.
        """
        return cls(**cls.PRESETS["tiny"])

    @classmethod
    def named(cls, name: str):
        """The named config (`tiny`, `small` or `paper`).

        Args:
          name: one of `CONFIGS`.

        Returns:
          The config.

        Raises:
          ValueError: for another name.
        """
        if name not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}; got {name!r}")
        return getattr(cls, name)()


def adam(config) -> optax.GradientTransformation:
    """Adam with the config's `learning_rate` and `b1`, as the reference code.

    Args:
      config: a config with `learning_rate` and `b1`.

    Returns:
      The optimiser.
    """
    return optax.adam(config.learning_rate, b1=config.b1)


def scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Batch norm scales drawn from N(1, 0.02²).

    Args:
      key: a PRNG key.
      shape: the scales' shape.
      dtype: their dtype.

    Returns:
      `1 + 0.02 · N(0, 1)` of that shape.
    """
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, name: str) -> nn.BatchNorm:
    """The reference code's batch norm: decay 0.9, ε = 1e-5, scales `scale_init`.

    Args:
      train: normalise with the batch's statistics (and update the running
        averages, with `mutable=["batch_stats"]`) rather than the averages.
      name: the module's name.

    Returns:
      The module.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=scale_init,
        name=name,
    )


def capturing(apply: Callable, sink: list | None = None) -> Callable:
    """`apply` run through `sdr_flax.capture_layers`, its taps added to `sink`.

    Args:
      apply: a model's `apply`.
      sink: a list that receives the taps of every call; None drops them.

    Returns:
      A function with `apply`'s arguments and output.
    """

    def call(*args, **kwargs):
        output, taps = sdr_flax.capture_layers(apply, *args, **kwargs)
        if sink is not None:
            sink.extend(taps)
        return output

    return call


Objective = Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


def make_train_step(
    apply: Callable,
    objective: Objective,
    tx: optax.GradientTransformation,
    *,
    penalty_layers,
) -> Callable:
    """One training step of a network: `(state, batch, key) -> (state, metrics)`.

    The state is a dataclass with `step`, `params`, `batch_stats` and
    `opt_state` fields (`benchmarks.harness.train.TrainState`). With
    `penalty_layers`, the forward pass runs under `capture_layers` and the
    optimiser (which ends with `spectral_independence`) gets the cause
    spectra of those layers.

    Args:
      apply: the model's `apply`.
      objective: `objective(apply, params, batch_stats, batch, key) -> (loss,
        (terms, batch_stats))`, calling the model through `apply` (the
        model's, or a capture of it); `terms` are logged beside the loss.
      tx: the optimiser.
      penalty_layers: the layers for the penalty (names or a predicate, as
        `sdr_flax.layer_spectra` takes them), or None: no capture. An empty
        collection captures the forward pass and regularises no layer.

    Returns:
      The step function (not jitted); its metrics are `{"loss", **terms}`.
    """

    def loss_fn(params, batch_stats, batch, key):
        taps = []
        model = apply if penalty_layers is None else capturing(apply, taps)
        loss, (terms, batch_stats) = objective(model, params, batch_stats, batch, key)
        return loss, (terms, batch_stats, taps)

    def step(state, batch, key):
        (loss, (terms, batch_stats, taps)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params, state.batch_stats, batch, key)
        extra = {}
        if penalty_layers is not None:
            extra["spectra"] = sdr_flax.layer_spectra(taps, layers=penalty_layers)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
        new = dataclasses.replace(
            state,
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        return new, {"loss": loss, **terms}

    return step


def upsample(
    z: jax.Array,
    widths: Sequence[int],
    strides: Sequence[int],
    *,
    coarse_size: int,
    kernel_size: int,
    train: bool,
) -> jax.Array:
    """The reference code's generative network, inside a compact Linen method.

    A dense layer to `coarse_size`² × `widths[0]` maps (`dense`, `bn0`), then
    one transposed conv per further width (`deconv1`, `deconv2`, …) with the
    given strides, each but the last followed by batch norm (`bn1`, …) and a
    ReLU; the last one's output goes through tanh.

    Args:
      z: latent codes `(n, latent_dim)`.
      widths: the coarse maps' channels, then each transposed conv's
        output channels (the last: the image channels).
      strides: each transposed conv's stride, one per width after the first.
      coarse_size: the side of the coarse maps.
      kernel_size: the side of every kernel.
      train: as in `batch_norm`.

    Returns:
      Images in [-1, 1].
    """
    k = (kernel_size, kernel_size)
    s, width = coarse_size, widths[0]
    h = nn.Dense(s * s * width, kernel_init=kernel_init, name="dense")(z)
    h = nn.relu(batch_norm(train, "bn0")(h.reshape(-1, s, s, width)))
    last = len(widths) - 1
    for i, (width, stride) in enumerate(zip(widths[1:], strides, strict=True), 1):
        h = nn.ConvTranspose(
            width,
            k,
            strides=(stride, stride),
            kernel_init=kernel_init,
            name=f"deconv{i}",
        )(h)
        if i < last:
            h = nn.relu(batch_norm(train, f"bn{i}")(h))
    return jnp.tanh(h)


class Upsampling(nn.Module):
    """The generative network of the β-VAE (its decoder) and of the DCGAN (its
    generator): `upsample` as a module.

    Attributes:
      widths: as in `upsample`.
      strides: as in `upsample`.
      coarse_size: as in `upsample`.
      kernel_size: as in `upsample`.
    """

    widths: tuple[int, ...]
    strides: tuple[int, ...]
    coarse_size: int
    kernel_size: int

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        """Generates images `(n, size, size, channels)` in [-1, 1].

        Args:
          z: latent codes `(n, latent_dim)`.
          train: as in `batch_norm`.

        Returns:
          The images.
        """
        return upsample(
            z,
            self.widths,
            self.strides,
            coarse_size=self.coarse_size,
            kernel_size=self.kernel_size,
            train=train,
        )
