"""The DCGAN of the paper's Sec. 4 in Flax.

The paper's Sec. 4 uses "the official tensorlayer DCGAN implementation"
(tensorlayer/dcgan) and leaves its details to Suppl. Table 2 and its GAN
results to App. B.13 of the extended version (arXiv:2004.00184); the sizes
and training constants here are read from the public reference code, which
also centre-crops CelebA at 108×108 (`benchmarks.harness.data.CELEBA_CROPS`).

Generator: z → dense → `coarse`×`coarse`×`widths[0]`, batch norm and ReLU;
5×5 stride-2 transposed convs `deconv1` … `deconv4` (batch norm and ReLU
between them), the last to 3 channels and tanh. At the public reference
code's sizes (`DCGANConfig.paper`): z = 100, 4×4×512 → 8×8×256 →
16×16×128 → 32×32×64 → 64×64×3. Discriminator: 5×5 stride-2 convs
`conv1` … `conv4` (64 → 512), LeakyReLU 0.2, batch norm after all but the
first, then a dense logit.
Adam 2e-4, β1 0.5, batch 64; each training step makes one discriminator
update and two generator updates (the non-saturating loss).

Parameters live under `generator/` and `discriminator/`, so the taps read
`generator/deconv1` … and `discriminator/conv1` …; the generator's levels
are the inputs of its transposed convs, as for the β-VAE's decoder.
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

LEVELS = {
    "coarse": "generator/deconv1",
    "intermediate": "generator/deconv2",
    "fine": "generator/deconv3",
    "image": "generator/deconv4",
}
# The discriminator layer working on the same grid as each generator level.
MIRROR = {
    "coarse": "discriminator/conv4",
    "intermediate": "discriminator/conv3",
    "fine": "discriminator/conv2",
    "image": "discriminator/conv1",
}


@dataclasses.dataclass(frozen=True)
class DCGANConfig(common.Presets):
    """Sizes and training constants of the DCGAN.

    Attributes:
      latent_dim: the size of z.
      generator_widths: channels of the coarse maps, then of the outputs of
        the first three transposed convs (the fourth outputs the image).
      discriminator_widths: output channels of the four convs.
      image_size: height and width of the images.
      image_channels: colour channels.
      kernel_size: the spatial size of every conv kernel.
      learning_rate: Adam's learning rate (both networks).
      b1: Adam's β1.
    """

    latent_dim: int = 100
    generator_widths: tuple[int, ...] = (512, 256, 128, 64)
    discriminator_widths: tuple[int, ...] = (64, 128, 256, 512)
    image_size: int = 64
    image_channels: int = 3
    kernel_size: int = 5
    learning_rate: float = 2e-4
    b1: float = 0.5

    def __post_init__(self):
        if len(self.generator_widths) != 4 or len(self.discriminator_widths) != 4:
            raise ValueError("the DCGAN has four (transposed) convs per network")
        if self.image_size % 16:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 16, the "
                "upsampling of four stride-2 transposed convs."
            )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Every width divided by 4 (64×64 images).
        "small": {
            "generator_widths": (128, 64, 32, 16),
            "discriminator_widths": (16, 32, 64, 128),
        },
        # 32×32 images, narrow layers, z = 32.
        "tiny": {
            "latent_dim": 32,
            "generator_widths": (64, 32, 16, 8),
            "discriminator_widths": (8, 16, 32, 64),
            "image_size": 32,
        },
    }


def generator(config: DCGANConfig) -> common.Upsampling:
    """The generator: latent codes to images, four stride-2 transposed convs.

    Args:
      config: the sizes.

    Returns:
      The module.
    """
    widths = (*config.generator_widths, config.image_channels)
    return common.Upsampling(
        widths=widths,
        strides=(2,) * (len(widths) - 1),
        coarse_size=config.image_size // 16,
        kernel_size=config.kernel_size,
    )


class Discriminator(nn.Module):
    """Images to the logit of being real.

    Attributes:
      config: the sizes.
    """

    config: DCGANConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Scores a batch.

        Args:
          x: images in [-1, 1].
          train: as in `common.batch_norm`.

        Returns:
          Logits `(n,)`.
        """
        cfg = self.config
        k = (cfg.kernel_size, cfg.kernel_size)
        h = x
        for i, width in enumerate(cfg.discriminator_widths, start=1):
            h = nn.Conv(
                width, k, strides=2, kernel_init=common.kernel_init, name=f"conv{i}"
            )(h)
            if i > 1:
                h = common.batch_norm(train, f"bn{i}")(h)
            h = nn.leaky_relu(h, 0.2)
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(1, kernel_init=common.kernel_init, name="logit")(h)[:, 0]


class DCGAN(nn.Module):
    """The generator and the discriminator under one parameter tree.

    Attributes:
      config: the sizes.
    """

    config: DCGANConfig = DCGANConfig()

    def setup(self):
        """The generator and the discriminator."""
        self.generator = generator(self.config)
        self.discriminator = Discriminator(self.config)

    def __call__(self, z: jax.Array, x: jax.Array, train: bool = False):
        """Generates from `z` and scores `x` (for `init`).

        Args:
          z: latent codes.
          x: images.
          train: as in `common.batch_norm`.

        Returns:
          `(images, logits of x)`.
        """
        return self.generate(z, train), self.discriminate(x, train)

    def generate(self, z: jax.Array, train: bool = False) -> jax.Array:
        """The generator alone.

        Args:
          z: latent codes.
          train: as in `common.batch_norm`.

        Returns:
          Images.
        """
        return self.generator(z, train)

    def discriminate(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The discriminator alone.

        Args:
          x: images.
          train: as in `common.batch_norm`.

        Returns:
          Logits.
        """
        return self.discriminator(x, train)


CONFIGS = common.CONFIGS
config = DCGANConfig.named


# Adam with the config's rate and β1, one per network.
optimizer = common.adam


_bce = optax.sigmoid_binary_cross_entropy


def _merge(tree: dict, part: str, value) -> dict:
    return {**tree, part: value}


def _train_generate(model: DCGAN, params, stats, z, capture: bool):
    """The generator in training mode: `((images, updates), taps)`."""
    variables = {"params": params, "batch_stats": stats}
    fn = lambda v, z: model.apply(  # noqa: E731
        v, z, train=True, mutable=["batch_stats"], method=DCGAN.generate
    )
    if capture:
        return sdr_flax.capture_layers(fn, variables, z)
    return fn(variables, z), []


def _train_discriminate(model: DCGAN, params, stats, x):
    """The discriminator in training mode: `(logits, updates)`."""
    return model.apply(
        {"params": params, "batch_stats": stats},
        x,
        train=True,
        mutable=["batch_stats"],
        method=DCGAN.discriminate,
    )


def _updated(state, part: str, tx, grads, batch_stats, **extra):
    """`state` with `tx` applied to the parameters of one network (`part`)."""
    params = state.params
    updates, opt = tx.update(grads, state.opt_state[part], params[part], **extra)
    return dataclasses.replace(
        state,
        params=_merge(params, part, optax.apply_updates(params[part], updates)),
        batch_stats=batch_stats,
        opt_state=_merge(state.opt_state, part, opt),
    )


def _d_step(model: DCGAN, tx_d, state, x, z):
    """A discriminator update on real `x` and fakes from `z`: `(state, loss)`."""
    params, stats = state.params, state.batch_stats
    (fake, g_upd), _ = _train_generate(model, params, stats, z, capture=False)
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(dp):
        d_params = _merge(params, "discriminator", dp)
        real_logits, upd = _train_discriminate(model, d_params, stats, x)
        stats2 = _merge(stats, "discriminator", upd["batch_stats"]["discriminator"])
        fake_logits, upd = _train_discriminate(model, d_params, stats2, fake)
        loss = jnp.mean(_bce(real_logits, jnp.ones_like(real_logits))) + jnp.mean(
            _bce(fake_logits, jnp.zeros_like(fake_logits))
        )
        return loss, upd["batch_stats"]["discriminator"]

    (loss, d_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params["discriminator"]
    )
    new_stats = _merge(
        _merge(stats, "discriminator", d_stats),
        "generator",
        g_upd["batch_stats"]["generator"],
    )
    return _updated(state, "discriminator", tx_d, grads, new_stats), loss


def _g_step(model: DCGAN, tx_g, penalty_layers, state, z):
    """A generator update (non-saturating loss) from `z`: `(state, loss)`."""
    params, stats = state.params, state.batch_stats

    def loss_fn(gp):
        (fake, upd), taps = _train_generate(
            model,
            _merge(params, "generator", gp),
            stats,
            z,
            capture=penalty_layers is not None,
        )
        logits, _ = _train_discriminate(model, params, stats, fake)  # D's kept
        loss = jnp.mean(_bce(logits, jnp.ones_like(logits)))
        return loss, (upd["batch_stats"]["generator"], taps)

    (loss, (g_stats, taps)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params["generator"]
    )
    extra = {}
    if penalty_layers is not None:
        spectra = sdr_flax.layer_spectra(taps, layers=penalty_layers)
        extra["spectra"] = {
            name: dataclasses.replace(
                s, param_path=s.param_path.removeprefix("generator/")
            )
            for name, s in spectra.items()
        }
    new_stats = _merge(stats, "generator", g_stats)
    return _updated(state, "generator", tx_g, grads, new_stats, **extra), loss


def make_train_step(model: DCGAN, tx_g, tx_d, *, penalty_layers):
    """One DCGAN training step: a discriminator update, two generator updates.

    The state's `params`, `batch_stats` and `opt_state` are dicts with
    `generator` and `discriminator` entries. With `penalty_layers`, each
    generator forward pass runs under `capture_layers` and `tx_g` (which
    ends with `spectral_independence`) gets the cause spectra.

    Args:
      model: the DCGAN.
      tx_g: the generator's optimiser.
      tx_d: the discriminator's optimiser.
      penalty_layers: generator layer names for the penalty, or None.

    Returns:
      `step(state, x, key) -> (state, metrics)`, for `benchmarks.harness.train`.
    """
    latent = model.config.latent_dim

    def step(state, x, key):
        k_d, k_g1, k_g2 = jax.random.split(key, 3)
        n = x.shape[0]
        state, d_loss = _d_step(
            model, tx_d, state, x, jax.random.normal(k_d, (n, latent))
        )
        for k in (k_g1, k_g2):
            z = jax.random.normal(k, (n, latent))
            state, g_loss = _g_step(model, tx_g, penalty_layers, state, z)
        state = dataclasses.replace(state, step=state.step + 1)
        return state, {"loss": g_loss + d_loss, "g_loss": g_loss, "d_loss": d_loss}

    return step


def init_variables(model: DCGAN, key: jax.Array):
    """The DCGAN's initial `{"params", "batch_stats"}`.

    Args:
      model: the DCGAN.
      key: a PRNG key.

    Returns:
      The variables.
    """
    cfg = model.config
    z = jnp.zeros((1, cfg.latent_dim))
    x = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.image_channels))
    return model.init(key, z, x, train=False)


def _train_step(model: DCGAN, tx_g, *, penalty_layers):
    return make_train_step(
        model, tx_g, optimizer(model.config), penalty_layers=penalty_layers
    )


def _init_opt_state(model: DCGAN, tx_g, params) -> dict:
    return {
        "generator": tx_g.init(params["generator"]),
        "discriminator": optimizer(model.config).init(params["discriminator"]),
    }


def _generate(model: DCGAN, variables, z):
    return model.apply(variables, z, method=DCGAN.generate)


def _latent_codes(model: DCGAN, variables, x, key):
    del variables
    return jax.random.normal(key, (x.shape[0], model.config.latent_dim))


def _taps(model: DCGAN, variables, x, z, key):
    """The generator's taps on `z`, then the discriminator's on `x`."""
    del key

    def discriminate(variables, x):
        return model.apply(variables, x, method=DCGAN.discriminate)

    _, g_taps = sdr_flax.capture_layers(
        lambda v, z: _generate(model, v, z), variables, z
    )
    _, d_taps = sdr_flax.capture_layers(discriminate, variables, x)
    return [*g_taps, *d_taps]


ARCHITECTURE = Architecture(
    name="dcgan",
    config=config,
    build=DCGAN,
    levels=LEVELS,
    mirror=MIRROR,
    roles=("generator", "discriminator"),
    reconstructs=False,
    optimizer=optimizer,
    init_variables=init_variables,
    init_opt_state=_init_opt_state,
    make_train_step=_train_step,
    generate=_generate,
    codes=_latent_codes,
    taps=_taps,
)
