"""The β-VAE of the paper's Sec. 4 ("a plain β-VAE", with a link to the
public code yzwxx/vae-celebA) in Flax Linen.

The paper's Sec. 4 names the public code and leaves the architecture to
its technical appendix (App. B.11 and Suppl. Fig. 1b of the extended
version, arXiv:2004.00184); the sizes and training constants here are read
from the public reference code. Encoder: 64×64×3 images, four
5×5 stride-2 SAME convs 64→128→256→512, each followed by batch norm and
ReLU, then dense heads for μ and log σ² (z = 128). Decoder: dense →
8×8×256, BN+ReLU; 5×5 stride-2 transposed convs to 16×16×256, 32×32×128 and
64×64×32 (BN+ReLU); a 5×5 stride-1 transposed conv to 64×64×3 and tanh.
Loss: pixel mean squared error + 0.005·KL; Adam 1e-3, β1 = 0.5, batch 64;
CelebA centre-cropped at 148×148 (all from the public reference code).

Modules are named so that `sdr_flax.layer_sdr` and the taps read
`encoder/conv1` … `encoder/conv4` and `decoder/deconv1` … `decoder/deconv4`.
Initialisation follows the reference (`benchmarks.nets.common`): kernels
N(0, 0.02²), biases 0, batch norm scales N(1, 0.02²), moving-average decay
0.9.

The heads are a config choice (`VAEConfig.heads`). `"plain"` (the default,
our choice): μ and log σ² are plain dense layers. `"reference"`, as the
public reference code: μ = BN(dense) and log σ² = softplus(BN(dense)) +
1e-6, so log σ² ≥ 1e-6 and σ² ≥ exp(1e-6) > 1: the posterior's variance
never drops below the prior's (N(0, I)), and in training mode each
dimension of μ has the batch mean and spread that its batch norm sets.
Plain is the default because, on the `tiny` faces at 1,500 steps (`python -m
benchmarks.harness.train --config tiny --dataset faces --steps 1500 --seed
S --heads H`, seeds 0 and 1), the reference heads reconstructed worse
(evaluation `recon_mse` 0.069 and 0.061 against 0.040 and 0.039) at about
the same KL (5.46 and 5.60 against 5.41 and 5.64, on the last 100 training
batches); their lower `stretch_mse` at every
level came with higher errors against the ground-truth extrapolations
(`truth_mse`) at every level, truth and seed but one.

Example:
    >>> config = VAEConfig.small()
    >>> model = BetaVAE(config)
    >>> x = jnp.zeros((8, 64, 64, 3))
    >>> variables = model.init(jax.random.key(0), x, jax.random.key(1), train=False)
    >>> (recon, mu, logvar), updates = model.apply(
    ...     variables, x, jax.random.key(2), train=True, mutable=["batch_stats"]
    ... )
    >>> loss, metrics = vae_loss(recon, x, mu, logvar, kl_weight=config.kl_weight)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import sdr_flax
from benchmarks.nets import common
from benchmarks.nets.architecture import Architecture

# The encoder heads `VAEConfig.heads` can name.
HEADS = ("plain", "reference")
# Added to the softplus of the reference heads' log σ², as the reference code.
REFERENCE_LOGVAR_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class VAEConfig(common.Presets):
    """Sizes and training constants of the β-VAE.

    Attributes:
      encoder_widths: output channels of the stride-2 encoder convs.
      decoder_widths: channels of the dense projection's coarse maps, then
        the outputs of the stride-2 transposed convs; the last transposed
        conv (stride 1) maps to `image_channels`.
      latent_dim: the size of z.
      image_size: height and width of the (square) images.
      image_channels: colour channels.
      kernel_size: the spatial size of every conv kernel.
      kl_weight: the weight of the KL term in the loss (0.005, the public
        reference code's).
      learning_rate: Adam's learning rate.
      b1: Adam's β1.
      heads: the encoder's heads, one of `HEADS`: `"plain"` dense layers
        for μ and log σ² (our choice), or `"reference"`, those of the
        public reference code (μ = BN(dense), log σ² = softplus(BN(dense))
        + 1e-6).
    """

    encoder_widths: tuple[int, ...] = (64, 128, 256, 512)
    decoder_widths: tuple[int, ...] = (256, 256, 128, 32)
    latent_dim: int = 128
    image_size: int = 64
    image_channels: int = 3
    kernel_size: int = 5
    kl_weight: float = 0.005
    learning_rate: float = 1e-3
    b1: float = 0.5
    heads: str = "plain"

    def __post_init__(self):
        if self.heads not in HEADS:
            raise ValueError(f"heads must be one of {HEADS}; got {self.heads!r}")
        steps = len(self.decoder_widths) - 1
        if self.image_size % 2**steps:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**{steps}, the "
                f"upsampling of {steps} stride-2 transposed convs."
            )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU-sized: every width divided by 4, z = 32, the same grids.
        "small": {
            "encoder_widths": (16, 32, 64, 128),
            "decoder_widths": (64, 64, 32, 8),
            "latent_dim": 32,
        },
        # The quick comparison's sizes: 32×32 images, narrow layers, z = 16;
        # coarse, intermediate, fine and image levels on 4×4, 8×8, 16×16 and
        # 32×32 grids.
        "tiny": {
            "encoder_widths": (16, 32, 32, 64),
            "decoder_widths": (32, 32, 16, 8),
            "latent_dim": 16,
            "image_size": 32,
        },
    }

    @property
    def coarse_size(self) -> int:
        """Height and width of the decoder's first (coarse) maps (8 at the
        default sizes)."""
        return self.image_size // 2 ** (len(self.decoder_widths) - 1)


CONFIGS = common.CONFIGS
config = VAEConfig.named


# The decoder layer whose input maps form each level of the paper's Sec. 4.
LEVELS = {
    "coarse": "decoder/deconv1",
    "intermediate": "decoder/deconv2",
    "fine": "decoder/deconv3",
    "image": "decoder/deconv4",
}

# The encoder layer working on the same grid as each decoder level (Fig. 5).
MIRROR = {
    "coarse": "encoder/conv4",
    "intermediate": "encoder/conv3",
    "fine": "encoder/conv2",
    "image": "encoder/conv1",
}


def is_decoder_layer(name: str) -> bool:
    """Whether a layer name (as `sdr_flax` prints it) is one of the decoder's.

    Pass it as `layers=` to `sdr_flax.layer_spectra` or
    `sdr_flax.spectral_independence` to regularise the decoder only.

    Args:
      name: a layer name, e.g. `"decoder/deconv1"`.

    Returns:
      True for the decoder's layers.
    """
    return name.startswith("decoder/")


def _bn_relu(h: jax.Array, train: bool, name: str) -> jax.Array:
    return nn.relu(common.batch_norm(train, name)(h))


class Encoder(nn.Module):
    """Images to the mean and log-variance of q(z | x).

    The heads are dense layers `mu` and `logvar`; with `config.heads ==
    "reference"` each is followed by a batch norm (`bn_mu`, `bn_logvar`)
    and log σ² by softplus + `REFERENCE_LOGVAR_FLOOR`, so log σ² ≥ 1e-6 > 0.

    Attributes:
      config: the sizes.
    """

    config: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
        """Encodes a batch.

        Args:
          x: images `(n, size, size, channels)` in [-1, 1].
          train: batch norm on batch statistics (and updating its averages,
            with `mutable=["batch_stats"]`) rather than on the averages.

        Returns:
          `(mu, logvar)`, each `(n, latent_dim)`.
        """
        cfg = self.config
        k = (cfg.kernel_size, cfg.kernel_size)
        h = x
        for i, width in enumerate(cfg.encoder_widths, start=1):
            h = nn.Conv(
                width, k, strides=2, kernel_init=common.kernel_init, name=f"conv{i}"
            )(h)
            h = _bn_relu(h, train, f"bn{i}")
        h = h.reshape(h.shape[0], -1)
        mu = nn.Dense(cfg.latent_dim, kernel_init=common.kernel_init, name="mu")(h)
        logvar = nn.Dense(
            cfg.latent_dim, kernel_init=common.kernel_init, name="logvar"
        )(h)
        if cfg.heads == "reference":
            mu = common.batch_norm(train, "bn_mu")(mu)
            logvar = nn.softplus(common.batch_norm(train, "bn_logvar")(logvar))
            logvar = logvar + REFERENCE_LOGVAR_FLOOR
        return mu, logvar


def decoder(config: VAEConfig) -> common.Upsampling:
    """The decoder, the generator whose layers the paper's Sec. 4 studies:
    latent codes to images `(n, size, size, channels)` in [-1, 1].

    Args:
      config: the sizes.

    Returns:
      The module.
    """
    ups = len(config.decoder_widths) - 1
    return common.Upsampling(
        widths=(*config.decoder_widths, config.image_channels),
        strides=(2,) * ups + (1,),
        coarse_size=config.coarse_size,
        kernel_size=config.kernel_size,
    )


def reparameterize(mu: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
    """A sample of N(mu, exp(logvar)) that is differentiable in mu and logvar.

    Args:
      mu: means `(n, latent_dim)`.
      logvar: log-variances, same shape.
      key: a PRNG key for the noise.

    Returns:
      `mu + exp(logvar / 2) · eps`, eps standard normal.
    """
    eps = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + jnp.exp(0.5 * logvar) * eps


class BetaVAE(nn.Module):
    """The β-VAE: `Encoder`, reparameterisation, `decoder`.

    Parameters live under `encoder/` and `decoder/`; use `method=BetaVAE.decode`
    to run the generator alone.

    Attributes:
      config: the sizes.
    """

    config: VAEConfig = VAEConfig()

    def setup(self):
        """The encoder and the decoder."""
        self.encoder = Encoder(self.config)
        self.decoder = decoder(self.config)

    def __call__(
        self, x: jax.Array, key: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Encodes, samples z with `key` and decodes.

        Args:
          x: images `(n, size, size, channels)` in [-1, 1].
          key: a PRNG key for the reparameterisation noise.
          train: as in `Encoder`.

        Returns:
          `(reconstruction, mu, logvar)`.
        """
        mu, logvar = self.encoder(x, train)
        return self.decoder(reparameterize(mu, logvar, key), train), mu, logvar

    def encode(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
        """The encoder alone (`Encoder.__call__`).

        Args:
          x: images.
          train: as in `Encoder`.

        Returns:
          `(mu, logvar)`.
        """
        return self.encoder(x, train)

    def decode(self, z: jax.Array, train: bool = False) -> jax.Array:
        """The decoder alone (`decoder`).

        Args:
          z: latent codes.
          train: as in `Encoder`.

        Returns:
          Images.
        """
        return self.decoder(z, train)


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) ‖ N(0, I)), summed over z, averaged over the batch.

    Args:
      mu: means `(n, latent_dim)`.
      logvar: log-variances, same shape.

    Returns:
      The scalar KL.
    """
    kl = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=-1)
    return jnp.mean(kl)


def vae_loss(
    recon: jax.Array,
    x: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    *,
    kl_weight: float = 0.005,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The reference's loss: pixel mean squared error + `kl_weight` · KL.

    The squared error is averaged over every pixel and channel of the batch;
    the KL is summed over z and averaged over the batch.

    Args:
      recon: reconstructions, shape of `x`.
      x: the images.
      mu: means of q(z | x).
      logvar: log-variances of q(z | x).
      kl_weight: the KL's weight (0.005 in the public reference code).

    Returns:
      `(loss, {"mse": ..., "kl": ...})`.
    """
    mse = jnp.mean((recon - x) ** 2)
    kl = kl_divergence(mu, logvar)
    return mse + kl_weight * kl, {"mse": mse, "kl": kl}


# The reference's optimiser: Adam with the config's rate and β1.
optimizer = common.adam


def objective(kl_weight: float):
    """The training objective of `common.make_train_step`: `vae_loss`.

    Args:
      kl_weight: the KL's weight.

    Returns:
      `objective(apply, params, batch_stats, x, key) -> (loss, ({"mse",
      "kl"}, batch_stats))`, with batch norm on the batch's statistics and
      `key` for the reparameterisation noise.
    """

    def fn(apply, params, batch_stats, x, key):
        (recon, mu, logvar), updates = apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            key,
            train=True,
            mutable=["batch_stats"],
        )
        loss, terms = vae_loss(recon, x, mu, logvar, kl_weight=kl_weight)
        return loss, (terms, updates["batch_stats"])

    return fn


def make_train_step(
    model: BetaVAE, tx: optax.GradientTransformation, *, penalty_layers
):
    """One training step: `(state, x, key) -> (state, metrics)`.

    With `penalty_layers`, the forward pass runs under `capture_layers` and
    the optimiser (which ends with `spectral_independence`) gets the cause
    spectra of those layers (`common.make_train_step`).

    Args:
      model: the β-VAE.
      tx: the optimiser.
      penalty_layers: layer names (or a predicate) for the penalty, or None.

    Returns:
      The step function (not jitted); its metrics are the loss, `mse` and
      `kl`.
    """
    return common.make_train_step(
        model.apply,
        objective(model.config.kl_weight),
        tx,
        penalty_layers=penalty_layers,
    )


def init_variables(model: BetaVAE, key: jax.Array) -> dict:
    """The β-VAE's initial `{"params", "batch_stats"}`.

    Args:
      model: the β-VAE.
      key: a PRNG key.

    Returns:
      The variables.
    """
    cfg = model.config
    x = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.image_channels))
    return model.init(key, x, key, train=False)


def _decode(model: BetaVAE, variables, z):
    return model.apply(variables, z, method=BetaVAE.decode)


def _encode_mean(model: BetaVAE, variables, x, key):
    del key
    mu, _ = model.apply(variables, x, method=BetaVAE.encode)
    return mu


def _taps(model: BetaVAE, variables, x, codes, key):
    del codes
    _, taps = sdr_flax.capture_layers(model.apply, variables, x, key, train=False)
    return taps


ARCHITECTURE = Architecture(
    name="vae",
    config=config,
    build=BetaVAE,
    levels=LEVELS,
    mirror=MIRROR,
    roles=("decoder", "encoder"),
    reconstructs=True,
    optimizer=optimizer,
    init_variables=init_variables,
    init_opt_state=lambda model, tx, params: tx.init(params),
    make_train_step=make_train_step,
    generate=_decode,
    codes=_encode_mean,
    taps=_taps,
)
