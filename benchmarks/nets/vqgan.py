"""A decoder of the VQGAN / diffusers AutoencoderKL kind, in Flax Linen.

The generator of maskgit's VQGAN tokenizer (`maskgit/nets/vqgan_tokenizer.py`)
and of the taming-transformers / diffusers autoencoders, without attention:

    conv_in      3×3 conv, latent (h, w, latent_channels) → widths[0]
    mid<i>       `mid_blocks` residual blocks at widths[0]
    level<j>     for each width, coarse to fine: `res_blocks` residual blocks
                 (the first one changes the channels to widths[j]), then,
                 except after the last level, `level<j>_up`: nearest-neighbour
                 upsampling ×2 and a 3×3 conv
    norm_out     GroupNorm, swish
    conv_out     3×3 conv to `image_channels`, no output nonlinearity

A residual block is GroupNorm → swish → conv 3×3 → GroupNorm → swish →
conv 3×3, added to its input, through a 1×1 `shortcut` conv where the
channels change (as in diffusers and taming; maskgit applies its shortcut to
the block's output instead). Every conv is SAME-padded with a bias, Flax's
default initialisers; GroupNorm has `groups` groups and ε = 1e-6.

All 3×3 and 1×1 convs are parameters of Linen `nn.Conv` modules, so
`sdr_flax.capture_layers` ties each one to its kernel (`"level1_block0/
shortcut/kernel"`) and `sdr_flax.spectral_independence` can regularise all of
them (`is_decoder_layer`).

Benchmark objective (no encoder, no quantiser, no GAN): latents drawn from
N(0, 1) are decoded and compared by pixel mean squared error with target
images drawn uniformly from [-1, 1], both fixed by a seed (`random_batch`,
`reconstruction_loss`). It has the decoder's forward and backward cost, which
is what a training step of the autoencoder spends on the generator; its
value means nothing. Optimiser: Adam 1e-4 with taming-transformers' β1 = 0.5,
β2 = 0.9. `make_train_step` is the step `benchmarks.speed.bench_penalty`
times, built as the β-VAE's (`benchmarks.nets.common.make_train_step`).

Configs: `paper` is maskgit's ImageNet tokenizer (128 filters, channel
multipliers 1, 1, 2, 2, 4, two residual blocks per level, 16×16×256 latents
to 256×256 images, 32 groups); GPU-sized (batch 16: tens of GiB, a CPU step
takes minutes). `small` is CPU-sized (8×8×4 latents, widths 128, 64, 32, to
32×32 images), `tiny` is for tests.

Example:
    >>> config = VQGANConfig.small()
    >>> model = Decoder(config)
    >>> z, target = random_batch(config, 8, jax.random.key(0))
    >>> params = model.init(jax.random.key(1), z[:1])["params"]
    >>> loss = reconstruction_loss(model.apply({"params": params}, z), target)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.nets import common


@dataclasses.dataclass(frozen=True)
class VQGANConfig(common.Presets):
    """Sizes and training constants of the decoder.

    Attributes:
      widths: the channels of each level, coarse to fine; every level but the
        last ends with a ×2 upsampling.
      res_blocks: residual blocks per level.
      mid_blocks: residual blocks at `widths[0]` right after `conv_in`.
      latent_size: height and width of the latents.
      latent_channels: channels of the latents.
      image_channels: channels of the output images.
      groups: GroupNorm's number of groups (divides every width).
      batch_size: the benchmark's default batch.
      learning_rate: Adam's learning rate.
      b1: Adam's β1.
      b2: Adam's β2.
    """

    widths: tuple[int, ...] = (512, 256, 256, 128, 128)
    res_blocks: int = 2
    mid_blocks: int = 2
    latent_size: int = 16
    latent_channels: int = 256
    image_channels: int = 3
    groups: int = 32
    batch_size: int = 16
    learning_rate: float = 1e-4
    b1: float = 0.5
    b2: float = 0.9

    def __post_init__(self):
        bad = [w for w in self.widths if w % self.groups]
        if bad:
            raise ValueError(
                f"widths {bad} are not divisible by the {self.groups} GroupNorm groups"
            )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The defaults (`paper`) are maskgit's VQGAN decoder: 16×16×256
        # latents to 256×256 images (GPU). CPU-sized: 8×8×4 latents, widths
        # 128, 64, 32, 32×32 images.
        "small": {"widths": (128, 64, 32), "latent_size": 8, "latent_channels": 4},
        # For tests: 4×4×4 latents, widths 32, 16, one block each, 8×8 images.
        "tiny": {
            "widths": (32, 16),
            "res_blocks": 1,
            "mid_blocks": 1,
            "latent_size": 4,
            "latent_channels": 4,
            "groups": 8,
            "batch_size": 4,
        },
    }

    @property
    def image_size(self) -> int:
        """Height and width of the output images."""
        return self.latent_size * 2 ** (len(self.widths) - 1)


CONFIGS = common.CONFIGS
config = VQGANConfig.named


def is_decoder_layer(name: str) -> bool:
    """Whether a conv layer is the decoder's: all of them (the model is one).

    Args:
      name: a layer name, e.g. `"level1_block0/conv2"`.

    Returns:
      True.
    """
    del name
    return True


def _norm(groups: int, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, name=name)


class ResBlock(nn.Module):
    """GroupNorm → swish → conv 3×3, twice, plus the (1×1 conv) shortcut.

    Attributes:
      width: output channels.
      groups: GroupNorm's groups.
    """

    width: int
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to `(n, h, w, c)` maps."""
        h = nn.swish(_norm(self.groups, "norm1")(x))
        h = nn.Conv(self.width, (3, 3), name="conv1")(h)
        h = nn.swish(_norm(self.groups, "norm2")(h))
        h = nn.Conv(self.width, (3, 3), name="conv2")(h)
        if x.shape[-1] != self.width:
            x = nn.Conv(self.width, (1, 1), name="shortcut")(x)
        return x + h


class Upsample(nn.Module):
    """Nearest-neighbour upsampling ×2, then a 3×3 conv.

    Attributes:
      width: output channels.
    """

    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Upsamples `(n, h, w, c)` maps to `(n, 2h, 2w, width)`."""
        n, h, w, c = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method="nearest")
        return nn.Conv(self.width, (3, 3), name="conv")(x)


class Decoder(nn.Module):
    """Latents to images: conv_in, residual blocks, upsampling, conv_out.

    Attributes:
      config: the sizes.
    """

    config: VQGANConfig = VQGANConfig()

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """Decodes a batch.

        Args:
          z: latents `(n, latent_size, latent_size, latent_channels)`.

        Returns:
          Images `(n, image_size, image_size, image_channels)`, unbounded.
        """
        cfg = self.config
        h = nn.Conv(cfg.widths[0], (3, 3), name="conv_in")(z)
        for i in range(cfg.mid_blocks):
            h = ResBlock(cfg.widths[0], cfg.groups, name=f"mid{i}")(h)
        for j, width in enumerate(cfg.widths):
            for i in range(cfg.res_blocks):
                h = ResBlock(width, cfg.groups, name=f"level{j}_block{i}")(h)
            if j < len(cfg.widths) - 1:
                h = Upsample(width, name=f"level{j}_up")(h)
        h = nn.swish(_norm(cfg.groups, "norm_out")(h))
        return nn.Conv(cfg.image_channels, (3, 3), name="conv_out")(h)


def random_batch(
    config: VQGANConfig, batch: int, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The benchmark's data: N(0, 1) latents and uniform [-1, 1] target images.

    Args:
      config: the sizes.
      batch: the batch size.
      key: a PRNG key.

    Returns:
      `(z, target)`, `(batch, latent_size, latent_size, latent_channels)` and
      `(batch, image_size, image_size, image_channels)`.
    """
    z_key, x_key = jax.random.split(key)
    s, c = config.latent_size, config.latent_channels
    z = jax.random.normal(z_key, (batch, s, s, c))
    size = config.image_size
    target = jax.random.uniform(
        x_key, (batch, size, size, config.image_channels), minval=-1.0, maxval=1.0
    )
    return z, target


def reconstruction_loss(images: jax.Array, target: jax.Array) -> jax.Array:
    """Pixel mean squared error, averaged over every pixel and channel.

    Args:
      images: the decoder's output.
      target: the target images, same shape.

    Returns:
      The scalar loss.
    """
    return jnp.mean((images - target) ** 2)


def optimizer(config: VQGANConfig) -> optax.GradientTransformation:
    """Adam with the config's rate and betas.

    Args:
      config: the config.

    Returns:
      `optax.adam(config.learning_rate, b1=config.b1, b2=config.b2)`.
    """
    return optax.adam(config.learning_rate, b1=config.b1, b2=config.b2)


def objective(apply, params, batch_stats, batch, key):
    """The benchmark objective of `common.make_train_step`: `reconstruction_loss`.

    Args:
      apply: the decoder's `apply` (or a capture of it).
      params: its parameters.
      batch_stats: `{}` (no batch statistics), returned as they are.
      batch: `(z, target)`, from `random_batch`.
      key: unused.

    Returns:
      `(loss, ({}, batch_stats))`.
    """
    del key
    z, target = batch
    return reconstruction_loss(apply({"params": params}, z), target), ({}, batch_stats)


def make_train_step(
    model: Decoder, tx: optax.GradientTransformation, *, penalty_layers
):
    """One benchmark training step: `(state, (z, target), key) -> (state, metrics)`.

    Built as the β-VAE's (`common.make_train_step`), on `objective`; the
    state's `batch_stats` is `{}`.

    Args:
      model: the decoder.
      tx: the optimiser.
      penalty_layers: layer names (or a predicate) for the penalty, or None.

    Returns:
      The step function (not jitted); its metrics are the loss.
    """
    return common.make_train_step(
        model.apply, objective, tx, penalty_layers=penalty_layers
    )
