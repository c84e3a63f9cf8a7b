"""Models and data shared by the tests: small generators written the way
users write them (Linen, NNX, raw `lax`, Equinox), kernels reached through
loops, branches, structural ops and closures, and NumPy-drawn data."""

import functools

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

# --- Data ------------------------------------------------------------------


# Test data is drawn with NumPy: a `jax.random` draw of each new shape costs
# a compilation (about a second on CPU).


def normal(seed, shape, scale=1.0):
    x = np.random.default_rng(seed).normal(0.0, scale, shape)
    return jnp.asarray(x, jnp.float32)


def colored(seed, shape):
    """Low-pass noise `(n, H, W, C)`: a random walk along both spatial axes, so
    the maps' spectra are far from flat and random kernels are far from ρ = 1."""
    x = np.random.default_rng(seed).normal(size=shape)
    x = np.cumsum(np.cumsum(x, axis=1), axis=2)
    return jnp.asarray((x - x.mean()) / x.std(), jnp.float32)


def numpy_variables(init, seed, scale=0.05):
    """Flax variables of the shapes `init()` returns, drawn with NumPy (no
    compilation): kernels and biases N(0, scale²), batch-norm scales
    1 + N(0, 0.05²), means 0 and variances 1."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        last = path[-1].key
        if last in ("mean", "bias") and path[0].key == "batch_stats":
            value = np.zeros(s.shape)
        elif last == "var":
            value = np.ones(s.shape)
        elif last == "scale":
            value = 1.0 + rng.normal(0.0, 0.05, s.shape)
        else:
            value = rng.normal(0.0, scale, s.shape)
        return jnp.asarray(value, s.dtype)

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(init))


@functools.cache
def _prototype(cls):
    return cls(nnx.Rngs(0))


def fresh(cls):
    """A new NNX module `cls(nnx.Rngs(0))`: a clone of one built once, so its
    random initialisation is compiled once per test session."""
    return nnx.clone(_prototype(cls))


# --- Generators -----------------------------------------------------------


DN = ("NHWC", "HWIO", "NHWC")


def conv(x, w, strides=(1, 1)):
    """A channels-last SAME convolution with a Flax-layout kernel."""
    return lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=DN)


class LinenGenerator(nn.Module):
    """A small DCGAN-style generator; it sows each conv's input by hand."""

    @nn.compact
    def __call__(self, z, train: bool = False):
        h = nn.Dense(4 * 4 * 16, name="project")(z).reshape(-1, 4, 4, 16)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn0")(h))
        self.sow("intermediates", "deconv1_in", h)
        h = nn.ConvTranspose(8, (5, 5), strides=(2, 2), name="deconv1")(h)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn1")(h))
        self.sow("intermediates", "deconv2_in", h)
        return jnp.tanh(nn.ConvTranspose(3, (5, 5), strides=(2, 2), name="deconv2")(h))


class Decoder(nnx.Module):
    """A small beta-VAE decoder in NNX."""

    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(6, 4 * 4 * 8, rngs=rngs)
        self.coarse = nnx.ConvTranspose(8, 8, (5, 5), strides=(2, 2), rngs=rngs)
        self.fine = nnx.ConvTranspose(8, 4, (5, 5), strides=(2, 2), rngs=rngs)
        self.image = nnx.ConvTranspose(4, 3, (5, 5), strides=(1, 1), rngs=rngs)

    def hidden(self, z):
        h0 = nnx.relu(self.dense(z).reshape(-1, 4, 4, 8))
        h1 = nnx.relu(self.coarse(h0))
        h2 = nnx.relu(self.fine(h1))
        return h0, h1, h2

    def __call__(self, z):
        return jnp.tanh(self.image(self.hidden(z)[-1]))


# --- Loops and branches ---------------------------------------------------


def stacked_scan(params, x):
    """lax.scan over a stacked kernel parameter: one conv per slice."""

    def body(h, w):
        return jax.nn.relu(conv(h, w)), h

    h, inputs = lax.scan(body, x, params["w"])
    return h, inputs


def shared_kernel_scan(params, x):
    """lax.scan whose body closes over one kernel."""

    def body(h, _):
        return jax.nn.relu(conv(h, params["w"])), h

    return lax.scan(body, x, None, length=3)


def fori_stack(params, x):
    """fori_loop with static bounds, indexing a stacked kernel."""

    def body(i, h):
        return jax.nn.relu(conv(h, params["w"][i]))

    return lax.fori_loop(0, 3, body, x)


def branching(params, x, pred):
    return lax.cond(
        pred,
        lambda h: conv(h, params["a"]),
        lambda h: conv(jax.nn.relu(h), params["b"]),
        x,
    )


class ConvBlock(nnx.Module):
    def __init__(self, channels, rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), rngs=rngs)

    def __call__(self, h):
        return nnx.relu(self.conv(h))


class ScanStack(nnx.Module):
    """NNX: blocks built by `nnx.vmap`, applied by `nnx.scan` (the Flax docs'
    pattern), between a stem and a head."""

    def __init__(self, rngs, channels=4, depth=3):
        self.stem = nnx.Conv(2, channels, (3, 3), rngs=rngs)

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create_block(rngs):
            return ConvBlock(channels, rngs)

        self.blocks = create_block(rngs)
        self.head = nnx.Conv(channels, 2, (3, 3), rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(h, block):
            return block(h)

        return self.head(forward(nnx.relu(self.stem(x)), self.blocks))


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        self.sow("intermediates", "input", h)
        return nn.relu(nn.Conv(4, (3, 3), name="conv")(h)), None


class LinenScanStack(nn.Module):
    """Linen: a stem, three blocks stacked with `nn.scan`, a head."""

    depth: int = 3

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        blocks = nn.scan(
            LinenBlock,
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True},
            length=self.depth,
        )
        h, _ = blocks(name="blocks")(h, None)
        return nn.Conv(2, (3, 3), name="head")(h)


# --- Kernels reached through structural ops and closures ------------------


C_IN, C_OUT = 3, 4


def structural_input(seed=0):
    """The input of the structural and closure models: colored `(4, 8, 8, C_IN)`."""
    return colored(seed, (4, 8, 8, C_IN))


# name -> (the parameter's shape, the structural op from the parameter to the
# HWIO kernel the conv takes). Every conv below takes op(params["w"]).
STRUCTURAL = {
    "flip": ((3, 3, C_IN, C_OUT), lambda w: jnp.flip(w, (0, 1))),
    "transpose": ((C_OUT, C_IN, 3, 3), lambda w: jnp.transpose(w, (2, 3, 1, 0))),
    "reshape": ((9 * C_IN * C_OUT,), lambda w: w.reshape(3, 3, C_IN, C_OUT)),
    "slice": ((3, 3, C_IN, 2 * C_OUT), lambda w: w[..., :C_OUT]),
    "flip_and_transpose": (
        (C_OUT, C_IN, 3, 3),
        lambda w: jnp.flip(jnp.transpose(w, (2, 3, 1, 0)), (0, 1)),
    ),
}


def structural_model(name):
    shape, op = STRUCTURAL[name]

    def fn(params, x):
        return jnp.tanh(conv(x, op(params["w"])))

    return fn, {"w": normal(1, shape, 0.3)}


def closure_model(name):
    """A kernel closed over by the body of a higher-order primitive."""
    params = {"w": normal(1, (3, 3, C_IN, C_OUT), 0.3)}
    if name == "checkpoint":

        def fn(params, x):
            return jax.checkpoint(lambda h: conv(h, params["w"]))(x)

    elif name == "cond":

        def fn(params, x):
            return lax.cond(
                jnp.mean(x) > -1e9,
                lambda h: conv(h, params["w"]),
                lambda h: jnp.zeros((*h.shape[:-1], C_OUT), h.dtype),
                x,
            )

    elif name == "jit":

        def fn(params, x):
            return jax.jit(lambda h: conv(h, params["w"]))(x)

    elif name == "custom_jvp":

        @jax.custom_jvp
        def act(h):
            return jnp.tanh(h)

        act.defjvp(lambda p, t: (act(p[0]), t[0] * (1 - jnp.tanh(p[0]) ** 2)))

        def fn(params, x):
            return act(conv(x, params["w"]))

    else:
        raise ValueError(name)
    return fn, params


CLOSURES = ("checkpoint", "cond", "jit", "custom_jvp")


class TransposeKernelGenerator(nn.Module):
    """Linen: transposed convs with `transpose_kernel=True` (PyTorch-style
    gradient-of-conv kernels: flipped, input and output axes swapped)."""

    transpose_kernel: bool = True

    @nn.compact
    def __call__(self, z):
        h = nn.Dense(4 * 4 * 6, name="project")(z).reshape(-1, 4, 4, 6)
        h = nn.ConvTranspose(
            4, (3, 3), strides=(2, 2), transpose_kernel=self.transpose_kernel, name="up"
        )(nn.relu(h))
        return jnp.tanh(
            nn.ConvTranspose(
                3,
                (3, 3),
                strides=(2, 2),
                transpose_kernel=self.transpose_kernel,
                name="image",
            )(nn.relu(h))
        )


# --- Equinox --------------------------------------------------------------


class EqxGenerator(eqx.Module):
    """An Equinox generator on channels-first samples `(C, H, W)`."""

    up: eqx.nn.ConvTranspose2d
    out: eqx.nn.Conv2d

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.up = eqx.nn.ConvTranspose2d(
            4, 3, 3, stride=2, padding=1, output_padding=1, key=k1
        )
        self.out = eqx.nn.Conv2d(3, 2, 3, padding=1, key=k2)

    def __call__(self, x):
        return jnp.tanh(self.out(jax.nn.relu(self.up(x))))


@functools.cache
def eqx_generator(seed=1):
    """An `EqxGenerator`, built once per seed (Equinox modules are immutable)."""
    return EqxGenerator(jax.random.key(seed))


def eqx_batch():
    return jnp.transpose(colored(0, (4, 4, 4, 4)), (0, 3, 1, 2))  # (n, C, H, W)


def eqx_partitioned(params, static, z):
    return jax.vmap(eqx.combine(params, static))(z)


def eqx_as_pytree(model, z):
    return jax.vmap(model)(z)
