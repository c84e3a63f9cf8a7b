"""The capture contract, on models written the way users write them.

1. `sdr.capture_convs` and `sdr_flax.capture_layers` return exactly `fn`'s
   output, and differentiating through them gives `fn`'s gradients: custom
   derivative rules, `jax.checkpoint` / `nnx.remat` with their policies and
   nested `jit` are kept as they are.
2. Every state change an NNX call makes (batch statistics, RNG counts, `sow`,
   a user's own Variable) reaches the module as when it is called directly.
3. Every convolution is captured: one tap per iteration of `scan` (raw,
   `nnx.scan`, `nn.scan`) and of a static `fori_loop`, the taken branch of
   `cond` / `switch`, a `while_loop` (its last iteration, with a warning),
   kernels applied through `vmap`; what cannot be captured warns.
4. Kernels that reach a conv through a flip, transpose, reshape, slice, vmap
   or a closure are tied back to their parameter (`param_path`).

The transform's side of the contract is in `test_capture_penalty.py`.
"""

import functools
import warnings

import equinox as eqx
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax
from jax.sharding import PartitionSpec
from models import (
    CLOSURES,
    DN,
    STRUCTURAL,
    ConvBlock,
    LinenScanStack,
    ScanStack,
    TransposeKernelGenerator,
    branching,
    closure_model,
    colored,
    conv,
    eqx_as_pytree,
    eqx_batch,
    eqx_generator,
    eqx_partitioned,
    fori_stack,
    fresh,
    normal,
    numpy_variables,
    shared_kernel_scan,
    stacked_scan,
    structural_input,
    structural_model,
)

import sdr
import sdr_flax
from benchmarks.nets import dcgan, vae


def flat(tree):
    """`{path: numpy array}` of a pytree (PRNG keys as their key data)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {}
    for path, leaf in leaves:
        if isinstance(leaf, jax.Array) and jnp.issubdtype(
            leaf.dtype, jax.dtypes.prng_key
        ):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def assert_trees_close(actual, expected, *, rtol, atol=0.0):
    a, e = flat(actual), flat(expected)
    assert a.keys() == e.keys()
    for key in e:
        np.testing.assert_allclose(a[key], e[key], rtol=rtol, atol=atol, err_msg=key)


def grad_close(actual, expected):
    """Gradients equal up to float reassociation (rtol 1e-4, atol relative to
    each leaf's largest entry)."""
    a, e = flat(actual), flat(expected)
    assert a.keys() == e.keys()
    for key in e:
        scale = float(np.max(np.abs(e[key]))) if e[key].size else 0.0
        np.testing.assert_allclose(
            a[key], e[key], rtol=1e-4, atol=1e-5 * scale + 1e-7, err_msg=key
        )


def all_eqns(jaxpr):
    """Every equation of a jaxpr, those of its sub-jaxprs included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            subs = param if isinstance(param, tuple | list) else (param,)
            for sub in subs:
                if isinstance(sub, jex.ClosedJaxpr):
                    yield from all_eqns(sub.jaxpr)
                elif isinstance(sub, jex.Jaxpr):
                    yield from all_eqns(sub)


def remat_policies(closed_jaxpr):
    return [
        eqn.params.get("policy")
        for eqn in all_eqns(closed_jaxpr.jaxpr)
        if eqn.primitive.name in ("remat2", "remat", "checkpoint")
    ]


# --------------------------------------------------------------------------
# 1. Outputs and gradients
# --------------------------------------------------------------------------


@jax.custom_jvp
def clip_straight_through(x):
    """Clips to [-1, 1]; its derivative is the identity (straight-through)."""
    return jnp.clip(x, -1.0, 1.0)


@clip_straight_through.defjvp
def _clip_straight_through_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return clip_straight_through(x), t


def clipped_generator(params, x):
    h = clip_straight_through(conv(x, params["w1"]))
    return conv(h, params["w2"])


def _clipped_params():
    # Kernels of scale 1 on 4 channels: most pre-activations leave [-1, 1].
    return {"w1": normal(1, (3, 3, 4, 6)), "w2": normal(2, (3, 3, 6, 3))}


def _loss_through(fn, capture):
    def loss(params, *args):
        out = sdr.capture_convs(fn, params, *args)[0] if capture else fn(params, *args)
        return jnp.sum(out * normal(9, out.shape))

    return loss


def test_custom_jvp_activation_keeps_its_rule():
    params, x = _clipped_params(), normal(0, (2, 8, 8, 4))
    out, taps = sdr.capture_convs(clipped_generator, params, x)
    np.testing.assert_allclose(out, clipped_generator(params, x), rtol=1e-5, atol=1e-6)
    assert [t.param_path for t in taps] == ["w1", "w2"]

    direct = jax.jit(jax.grad(_loss_through(clipped_generator, False)))(params, x)
    captured = jax.jit(jax.grad(_loss_through(clipped_generator, True)))(params, x)
    # The rule matters here: autodiff of the clip itself gives other gradients.
    plain = jax.jit(
        jax.grad(
            lambda p, x: jnp.sum(
                conv(jnp.clip(conv(x, p["w1"]), -1.0, 1.0), p["w2"])
                * normal(9, out.shape)
            )
        )
    )(params, x)
    assert not np.allclose(plain["w1"], direct["w1"], rtol=0.1)
    grad_close(captured, direct)


def relu_generator(params, x):
    h = jax.nn.relu(conv(x, params["w1"]) + params["b1"][None, None, None, :])
    return conv(h, params["w2"])


def test_relu_at_exactly_zero_keeps_its_derivative():
    # Zero maps outside a central patch and a zero bias: most pre-activations
    # are exactly 0, where jax.nn.relu's derivative is 0 (autodiff of
    # max(x, 0) would give 0.5 there).
    params = {
        "w1": normal(1, (3, 3, 2, 4)),
        "b1": jnp.zeros((4,), jnp.float32),
        "w2": normal(2, (3, 3, 4, 2)),
    }
    x = jnp.zeros((2, 10, 10, 2), jnp.float32).at[:, 4:6, 4:6, :].set(1.0)
    direct = jax.jit(jax.grad(_loss_through(relu_generator, False)))(params, x)
    captured = jax.jit(jax.grad(_loss_through(relu_generator, True)))(params, x)
    grad_close(captured, direct)
    # The rule matters here: through max(x, 0) the bias gets another gradient.
    plain = jax.jit(
        jax.grad(
            lambda p, x: jnp.sum(
                conv(
                    jnp.maximum(conv(x, p["w1"]) + p["b1"][None, None, None, :], 0.0),
                    p["w2"],
                )
                * normal(9, (2, 10, 10, 2))
            )
        )
    )(params, x)
    assert not np.allclose(plain["b1"], direct["b1"], rtol=0.1)


@jax.custom_vjp
def scaled_grad_conv(x, w):
    return conv(x, w)


def _scaled_fwd(x, w):
    return conv(x, w), (x, w)


def _scaled_bwd(res, g):
    x, w = res
    _, vjp = jax.vjp(conv, x, w)
    gx, gw = vjp(g)
    return gx, 3.0 * gw  # a deliberately non-autodiff rule


scaled_grad_conv.defvjp(_scaled_fwd, _scaled_bwd)


def test_custom_vjp_rule_is_kept():
    def generator(params, x):
        return scaled_grad_conv(jax.nn.tanh(conv(x, params["w1"])), params["w2"])

    params, x = _clipped_params(), normal(0, (2, 8, 8, 4))
    out, taps = sdr.capture_convs(generator, params, x)
    np.testing.assert_allclose(out, generator(params, x), rtol=1e-5, atol=1e-6)
    assert len(taps) == 2
    direct = jax.jit(jax.grad(_loss_through(generator, False)))(params, x)
    captured = jax.jit(jax.grad(_loss_through(generator, True)))(params, x)
    grad_close(captured, direct)


def checkpointed_generator(params, x):
    block = jax.checkpoint(
        lambda h, w: jnp.sin(conv(h, w)),
        policy=jax.checkpoint_policies.nothing_saveable,
    )
    return conv(block(x, params["w1"]), params["w2"])


def test_checkpoint_and_its_policy_are_kept():
    params, x = _clipped_params(), normal(0, (2, 8, 8, 4))
    out, taps = sdr.capture_convs(checkpointed_generator, params, x)
    np.testing.assert_allclose(
        out, checkpointed_generator(params, x), rtol=1e-5, atol=1e-6
    )
    assert [t.param_path for t in taps] == ["w1", "w2"]
    loss = _loss_through(checkpointed_generator, True)
    grad_close(
        jax.jit(jax.grad(loss))(params, x),
        jax.jit(jax.grad(_loss_through(checkpointed_generator, False)))(params, x),
    )
    grad_jaxpr = jax.make_jaxpr(jax.grad(loss))(params, x)
    assert "remat" in str(grad_jaxpr)
    assert jax.checkpoint_policies.nothing_saveable in remat_policies(grad_jaxpr)


def test_nested_jit_is_kept():
    @jax.jit
    def upsample_block(x, w):
        return jax.nn.relu(
            lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=DN)
        )

    def generator(params, x):
        return conv(upsample_block(x, params["up"]), params["out"])

    params = {"up": normal(1, (3, 3, 4, 4)), "out": normal(2, (3, 3, 4, 2))}
    x = normal(0, (2, 4, 4, 4))
    out, taps = sdr.capture_convs(generator, params, x)
    np.testing.assert_allclose(out, generator(params, x), rtol=1e-5, atol=1e-6)
    assert [t.param_path for t in taps] == ["up", "out"]
    assert taps[0].geometry.input_dilation == (2, 2)
    np.testing.assert_array_equal(taps[0].maps, x)
    jaxpr = jax.make_jaxpr(lambda p, x: sdr.capture_convs(generator, p, x)[0])(
        params, x
    )
    assert "name=upsample_block" in str(jaxpr)


class RematNet(nnx.Module):
    """NNX: a block under `nnx.remat` with a policy."""

    def __init__(self, rngs):
        self.stem = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.block = ConvBlock(4, rngs)
        self.head = nnx.Conv(4, 2, (3, 3), rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.stem(x))
        h = nnx.remat(
            lambda block, h: block(h), policy=jax.checkpoint_policies.nothing_saveable
        )(self.block, h)
        return self.head(h)


def test_nnx_remat_and_its_policy_are_kept():
    model = fresh(RematNet)
    x = normal(0, (2, 8, 8, 2))
    graphdef, state = nnx.split(model)

    def loss(state, capture):
        m = nnx.merge(graphdef, state)
        out = sdr_flax.capture_layers(m, x)[0] if capture else m(x)
        return jnp.sum(out * normal(9, out.shape))

    out, taps = sdr_flax.capture_layers(model, x)
    np.testing.assert_allclose(out, model(x), rtol=1e-5, atol=1e-6)
    assert [t.param_path for t in taps] == [
        "stem/kernel",
        "block/conv/kernel",
        "head/kernel",
    ]
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    grad_close(grad(state, True), grad(state, False))
    grad_jaxpr = jax.make_jaxpr(jax.grad(lambda s: loss(s, True)))(state)
    assert "remat" in str(grad_jaxpr)
    assert jax.checkpoint_policies.nothing_saveable in remat_policies(grad_jaxpr)


def test_nnx_grad_through_capture_layers():
    model = fresh(RematNet)
    x = normal(0, (2, 8, 8, 2))
    r = normal(9, (2, 8, 8, 2))
    direct = nnx.grad(lambda m: jnp.sum(m(x) * r))(model)
    captured = nnx.grad(lambda m: jnp.sum(sdr_flax.capture_layers(m, x)[0] * r))(model)
    grad_close(captured, direct)


def test_beta_vae_gradients_and_batch_stats_through_capture():
    config = vae.VAEConfig.tiny()
    model = vae.BetaVAE(config)
    x = jnp.tanh(normal(0, (2, config.image_size, config.image_size, 3)))
    key = jax.random.key(3)
    variables = numpy_variables(
        lambda: model.init(jax.random.key(1), x, jax.random.key(2), train=False), 1
    )

    def forward(variables, x, key):
        return model.apply(variables, x, key, train=True, mutable=["batch_stats"])

    def loss(params, capture):
        v = {"params": params, "batch_stats": variables["batch_stats"]}
        if capture:
            ((recon, mu, logvar), updates), taps = sdr_flax.capture_layers(
                forward, v, x, key
            )
        else:
            (recon, mu, logvar), updates = forward(v, x, key)
            taps = []
        value, _ = vae.vae_loss(recon, x, mu, logvar, kl_weight=config.kl_weight)
        return value, (recon, updates["batch_stats"], taps)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (l_d, (recon_d, stats_d, _)), g_d = grad(variables["params"], False)
    (l_c, (recon_c, stats_c, taps)), g_c = grad(variables["params"], True)
    np.testing.assert_allclose(recon_c, recon_d, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l_c, l_d, rtol=1e-5)
    assert_trees_close(stats_c, stats_d, rtol=1e-5, atol=1e-6)
    grad_close(g_c, g_d)
    names = [t.name for t in taps]
    for layer in (*vae.LEVELS.values(), *vae.MIRROR.values()):
        assert layer in names


def test_dcgan_generator_gradients_through_capture():
    model = dcgan.DCGAN(dcgan.DCGANConfig.tiny())
    variables = numpy_variables(
        lambda: dcgan.init_variables(model, jax.random.key(0)), 0
    )
    params, stats = variables["params"], variables["batch_stats"]
    z = normal(1, (2, model.config.latent_dim))

    def generate(variables, z):
        return model.apply(
            variables,
            z,
            train=True,
            mutable=["batch_stats"],
            method=dcgan.DCGAN.generate,
        )

    def loss(generator_params, capture):
        v = {"params": {**params, "generator": generator_params}, "batch_stats": stats}
        if capture:
            (fake, updates), taps = sdr_flax.capture_layers(generate, v, z)
        else:
            (fake, updates), taps = generate(v, z), []
        logits = model.apply(
            {"params": params, "batch_stats": stats},
            fake,
            train=False,
            method=dcgan.DCGAN.discriminate,
        )
        value = jnp.mean(
            optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(logits))
        )
        return value, (fake, updates["batch_stats"], taps)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, (fake_d, stats_d, _)), g_d = grad(params["generator"], False)
    (_, (fake_c, stats_c, taps)), g_c = grad(params["generator"], True)
    np.testing.assert_allclose(fake_c, fake_d, rtol=1e-5, atol=1e-6)
    assert_trees_close(stats_c, stats_d, rtol=1e-5, atol=1e-6)
    grad_close(g_c, g_d)
    assert [t.name for t in taps] == list(dcgan.LEVELS.values())


# --------------------------------------------------------------------------
# 2. NNX state
# --------------------------------------------------------------------------


class NNXNet(nnx.Module):
    """Conv, batch norm, ReLU, conv, dropout; counts its own calls."""

    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 6, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(6, momentum=0.5, rngs=rngs)
        self.conv2 = nnx.Conv(6, 4, (3, 3), rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.calls = nnx.Variable(jnp.zeros((), jnp.int32))

    def __call__(self, x):
        self.calls[...] += 1
        h = nnx.relu(self.bn(self.conv1(x)))
        return self.drop(self.conv2(h))


def _rng_counts(model):
    return [int(c) for c in jax.tree.leaves(nnx.state(model, nnx.RngCount))]


def test_nnx_state_changes_reach_the_module():
    direct, captured = fresh(NNXNet), fresh(NNXNet)
    x = colored(0, (4, 8, 8, 3))
    counts = _rng_counts(direct)
    mean0 = np.array(direct.bn.mean[...])
    outs_d, outs_c = [], []
    for call in (1, 2):
        outs_d.append(direct(x))
        out, taps = sdr_flax.capture_layers(captured, x)
        outs_c.append(out)
        assert [t.param_path for t in taps] == ["conv1/kernel", "conv2/kernel"]
        np.testing.assert_allclose(out, outs_d[-1], rtol=1e-5, atol=1e-6)
        # The same dropout mask as the direct call.
        np.testing.assert_array_equal(out == 0, outs_d[-1] == 0)
        # Batch statistics, RNG counts and keys, the call counter: all of it.
        assert_trees_close(nnx.state(captured), nnx.state(direct), rtol=1e-5, atol=1e-7)
        assert int(captured.calls[...]) == call
    assert _rng_counts(captured) == [c + 2 for c in counts]
    assert not np.allclose(captured.bn.mean[...], mean0)
    # Two successive calls drop different units, through capture as directly.
    assert np.any((outs_c[0] == 0) != (outs_c[1] == 0))


def test_nnx_eval_mode_through_capture():
    direct, captured = fresh(NNXNet), fresh(NNXNet)
    x = colored(0, (4, 8, 8, 3))
    direct(x), sdr_flax.capture_layers(captured, x)  # one training call each
    direct.eval(), captured.eval()
    out, _ = sdr_flax.capture_layers(captured, x)
    np.testing.assert_allclose(out, direct(x), rtol=1e-5, atol=1e-6)
    assert_trees_close(nnx.state(captured), nnx.state(direct), rtol=1e-5, atol=1e-7)


class SowingNet(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(4, 2, (3, 3), rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.conv1(x))
        self.sow(nnx.Intermediate, "hidden", h)
        return self.conv2(h)


def test_nnx_sow_reaches_the_capture_context():
    direct, captured = fresh(SowingNet), fresh(SowingNet)
    x = colored(0, (2, 8, 8, 3))
    out_d, sown_d = nnx.capture(direct, nnx.Intermediate)(x)
    (out_c, taps), sown_c = nnx.capture(
        lambda model, x: sdr_flax.capture_layers(model, x), nnx.Intermediate
    )(captured, x)
    np.testing.assert_allclose(out_c, out_d, rtol=1e-5, atol=1e-6)
    assert flat(sown_d), "the direct call sowed nothing"
    assert_trees_close(sown_c, sown_d, rtol=1e-5, atol=1e-6)
    # The sown map is the second conv's input.
    (hidden,) = jax.tree.leaves(sown_c)
    np.testing.assert_allclose(taps[1].maps, hidden, rtol=1e-5, atol=1e-6)


def test_nnx_train_step_through_capture_matches_direct():
    def make():
        model = fresh(NNXNet)
        return model, nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)

    x = colored(0, (4, 8, 8, 3))
    target = normal(1, (4, 8, 8, 4), 0.1)

    def train_step(model, optimizer, capture):
        def loss_fn(model):
            out = sdr_flax.capture_layers(model, x)[0] if capture else model(x)
            return jnp.mean((out - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    step = nnx.jit(train_step, static_argnums=2)
    with jax.numpy_dtype_promotion("standard"):
        (direct, opt_d), (captured, opt_c) = make(), make()
        for _ in range(2):
            loss_d = step(direct, opt_d, False)
            loss_c = step(captured, opt_c, True)
            np.testing.assert_allclose(loss_c, loss_d, rtol=1e-5)
    assert_trees_close(nnx.state(captured), nnx.state(direct), rtol=1e-4, atol=1e-6)
    assert int(captured.calls[...]) == 2


# --------------------------------------------------------------------------
# 3. Coverage: loops, branches, vmap
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "shape"),
    [(stacked_scan, (3, 3, 3, 4, 4)), (shared_kernel_scan, (3, 3, 4, 4))],
    ids=["stacked_kernel", "closed_over_kernel"],
)
def test_lax_scan_one_tap_per_iteration(fn, shape):
    params = {"w": normal(1, shape, 0.4)}
    x = colored(0, (2, 8, 8, 4))
    (out, _), taps = sdr.capture_convs(fn, params, x)
    expected, inputs = fn(params, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert len(taps) == 3
    assert len({t.name for t in taps}) == 3
    for i, tap in enumerate(taps):
        assert tap.name.endswith(f"[{i}]"), tap.name
        assert tap.param_path == "w"
        np.testing.assert_allclose(tap.maps, inputs[i], rtol=1e-5, atol=1e-6)
        kernel = params["w"][i] if len(shape) == 5 else params["w"]
        np.testing.assert_allclose(tap.kernel, kernel, rtol=1e-6)
        # The parameter's slice is static: no traced indices travel with it.
        assert tap.param_indices == ()
        np.testing.assert_array_equal(
            functools.reduce(lambda k, op: op(k), tap.param_ops, params["w"]),
            tap.kernel,
        )


def nested_scans(params, x):
    def inner(h, w):
        return jax.nn.relu(conv(h, w)), h

    return lax.scan(lambda h, ws: lax.scan(inner, h, ws), x, params["w"])


def test_nested_scans_one_tap_per_inner_iteration():
    params = {"w": normal(1, (2, 3, 3, 3, 4, 4), 0.4)}
    x = colored(0, (2, 6, 6, 4))
    (out, _), taps = sdr.capture_convs(nested_scans, params, x)
    expected, seen = nested_scans(params, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert len(taps) == 6
    assert len({t.name for t in taps}) == 6
    assert all(t.param_path == "w" for t in taps)
    # Every (outer, inner) iteration's input and kernel is one tap's.
    for i in range(2):
        for j in range(3):
            matches = [
                t
                for t in taps
                if np.allclose(t.kernel, params["w"][i, j], rtol=1e-6)
                and np.allclose(t.maps, seen[i, j], rtol=1e-5, atol=1e-6)
            ]
            assert len(matches) == 1, (i, j)
            # Its ops take the parameter to this kernel: each scan level
            # indexes its own axis by its own iteration.
            np.testing.assert_array_equal(
                _through_ops(matches[0], params["w"]), params["w"][i, j]
            )


def test_weak_types_reach_the_bodies_unchanged():
    # A Python scalar enters a jit or a scan weakly typed; the rewritten body
    # must take it so, or what it returns of it loses its weak type.
    def scaled(params, x):
        in_jit = jax.jit(lambda s, h: (2.0 * s, conv(h, params["w"])))(2.0, x)[0]
        step = lambda c, w: (2.0 * c, jnp.sum(conv(x, w)))  # noqa: E731
        in_scan = lax.scan(step, 1.0, params["ws"])[0]
        return in_jit, in_scan

    params = {"w": normal(1, (3, 3, 4, 4), 0.4), "ws": normal(2, (2, 3, 3, 4, 4))}
    x = colored(0, (2, 8, 8, 4))
    expected = jax.eval_shape(scaled, params, x)
    assert [a.weak_type for a in expected] == [True, True]
    got, _ = jax.eval_shape(lambda p, x: sdr.capture_convs(scaled, p, x), params, x)
    assert got == expected


def test_taps_follow_execution_order_across_iterations():
    # `capture_convs` returns its taps in execution order: iteration by
    # iteration, also for nested scans and for bodies with two convs.
    params = {"w": normal(1, (2, 3, 3, 3, 4, 4), 0.4)}
    x = colored(0, (2, 6, 6, 4))
    _, taps = sdr.capture_convs(nested_scans, params, x)
    _, seen = nested_scans(params, x)
    for tap, maps in zip(taps, seen.reshape(6, *seen.shape[2:]), strict=True):
        np.testing.assert_allclose(tap.maps, maps, rtol=1e-5, atol=1e-6)

    def two_per_step(params, x):
        def body(h, ws):
            g = jax.nn.relu(conv(h, ws[0]))
            return jax.nn.relu(conv(g, ws[1])), (h, g)

        return lax.scan(body, x, params["w"])

    (_, (hs, gs)), taps = sdr.capture_convs(two_per_step, params, x)
    expected = [m for i in range(2) for m in (hs[i], gs[i])]
    assert len(taps) == 4
    for tap, maps in zip(taps, expected, strict=True):
        np.testing.assert_allclose(tap.maps, maps, rtol=1e-5, atol=1e-6)


def scan_stack_inputs(model, x):
    """The input of every block of a `ScanStack`, by a Python loop."""
    kernel, bias = model.blocks.conv.kernel[...], model.blocks.conv.bias[...]
    h = nnx.relu(model.stem(x))
    inputs = []
    for i in range(kernel.shape[0]):
        inputs.append(h)
        h = jax.nn.relu(conv(h, kernel[i]) + bias[i][None, None, None, :])
    return inputs


def test_nnx_scan_over_vmapped_blocks():
    model = fresh(ScanStack)
    x = colored(0, (2, 8, 8, 2))
    out, taps = sdr_flax.capture_layers(model, x)
    np.testing.assert_allclose(out, model(x), rtol=1e-5, atol=1e-6)
    assert len(taps) == 5
    stem, *blocks, head = taps
    assert stem.param_path == "stem/kernel" and head.param_path == "head/kernel"
    kernel = model.blocks.conv.kernel[...]
    assert kernel.shape == (3, 3, 3, 4, 4)
    for i, (tap, maps) in enumerate(
        zip(blocks, scan_stack_inputs(model, x), strict=True)
    ):
        assert tap.name.endswith(f"[{i}]"), tap.name
        assert tap.param_path == "blocks/conv/kernel"
        np.testing.assert_allclose(tap.maps, maps, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tap.kernel, kernel[i], rtol=1e-6)


class NormBlock(nnx.Module):
    def __init__(self, channels, rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(channels, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(0.25, rngs=rngs)

    def __call__(self, h):
        return self.drop(nnx.relu(self.bn(self.conv(h))))


class NormScanStack(nnx.Module):
    """`ScanStack` with batch norm and dropout inside the scanned blocks."""

    def __init__(self, rngs, channels=4, depth=3):
        self.stem = nnx.Conv(2, channels, (3, 3), rngs=rngs)

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create_block(rngs):
            return NormBlock(channels, rngs)

        self.blocks = create_block(rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(h, block):
            return block(h)

        return forward(self.stem(x), self.blocks)


def test_nnx_state_changes_inside_scanned_blocks_reach_the_module():
    direct, captured = fresh(NormScanStack), fresh(NormScanStack)
    x = colored(0, (2, 8, 8, 2))
    call = nnx.jit(lambda model, x: model(x))
    capture = nnx.jit(sdr_flax.capture_layers)
    for _ in range(2):
        expected = call(direct, x)
        out, taps = capture(captured, x)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out == 0, expected == 0)
        assert len(taps) == 4
        assert_trees_close(nnx.state(captured), nnx.state(direct), rtol=1e-5, atol=1e-7)
    means = np.asarray(captured.blocks.bn.mean[...])
    assert means.shape == (3, 4) and not np.allclose(means, 0.0)


def test_linen_scan_one_tap_per_iteration():
    model = LinenScanStack()
    x = colored(0, (2, 8, 8, 2))
    variables = numpy_variables(lambda: model.init(jax.random.key(0), x), 0, 0.3)
    out, taps = sdr_flax.capture_layers(model.apply, variables, x)
    expected, sown = model.apply(variables, x, mutable=["intermediates"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    (inputs,) = sown["intermediates"]["blocks"]["input"]  # (depth, n, H, W, C)
    kernel = variables["params"]["blocks"]["conv"]["kernel"]
    assert len(taps) == 5
    assert [taps[0].param_path, taps[-1].param_path] == ["stem/kernel", "head/kernel"]
    for i, tap in enumerate(taps[1:-1]):
        assert tap.name.endswith(f"[{i}]"), tap.name
        assert tap.param_path == "blocks/conv/kernel"
        np.testing.assert_allclose(tap.maps, inputs[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tap.kernel, kernel[i], rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("pred", [True, False])
def test_cond_captures_the_taken_branch(pred, jit):
    params = {"a": normal(1, (3, 3, 3, 2)), "b": normal(2, (3, 3, 3, 2))}
    x = colored(0, (2, 8, 8, 3))
    capture = lambda p, x, pred: sdr.capture_convs(branching, p, x, pred)  # noqa: E731
    if jit:
        capture = jax.jit(capture)
    out, taps = capture(params, x, jnp.asarray(pred))
    np.testing.assert_allclose(out, branching(params, x, pred), rtol=1e-5, atol=1e-6)
    taken = "a" if pred else "b"
    assert {t.param_path for t in taps} <= {"a", "b"}
    (tap,) = [t for t in taps if t.param_path == taken]
    np.testing.assert_allclose(tap.maps, x if pred else jax.nn.relu(x), rtol=1e-6)
    np.testing.assert_allclose(tap.kernel, params[taken], rtol=1e-6)
    for other in taps:  # the untaken branch: reported or not; if so, zero maps
        if other.param_path != taken:
            np.testing.assert_array_equal(other.maps, jnp.zeros_like(other.maps))


def test_switch_captures_the_taken_branch_under_jit():
    ws = [normal(i, (3, 3, 3, 2)) for i in range(3)]

    def switched(params, x, index):
        return lax.switch(index, [lambda h, w=w: conv(h, w) for w in params["w"]], x)

    x = colored(0, (2, 8, 8, 3))
    capture = jax.jit(lambda p, x, i: sdr.capture_convs(switched, p, x, i))
    for index in range(3):
        out, taps = capture({"w": ws}, x, jnp.asarray(index))
        np.testing.assert_allclose(
            out, switched({"w": ws}, x, index), rtol=1e-5, atol=1e-6
        )
        (tap,) = [t for t in taps if t.param_path == f"w/{index}"]
        np.testing.assert_allclose(tap.maps, x, rtol=1e-6)
        np.testing.assert_allclose(tap.kernel, ws[index], rtol=1e-6)
        for other in taps:
            if other is not tap:
                np.testing.assert_array_equal(other.maps, jnp.zeros_like(other.maps))


def test_fori_loop_with_static_bounds_one_tap_per_iteration():
    params = {"w": normal(1, (3, 3, 3, 4, 4), 0.4)}
    x = colored(0, (2, 8, 8, 4))
    out, taps = sdr.capture_convs(fori_stack, params, x)
    np.testing.assert_allclose(out, fori_stack(params, x), rtol=1e-5, atol=1e-6)
    assert len(taps) == 3
    h = x
    for i, tap in enumerate(taps):
        assert tap.name.endswith(f"[{i}]"), tap.name
        np.testing.assert_allclose(tap.maps, h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tap.kernel, params["w"][i], rtol=1e-6)
        h = jax.nn.relu(conv(h, params["w"][i]))


def fori_shared(params, x):
    """fori_loop with static bounds whose body closes over one kernel."""
    return lax.fori_loop(0, 3, lambda i, h: jax.nn.relu(conv(h, params["w"])), x)


def fori_nested(params, x):
    """Two fori_loops with static bounds, indexing a kernel stacked twice."""

    def outer(i, h):
        inner = lambda j, h: jax.nn.relu(conv(h, params["w"][i][j]))  # noqa: E731
        return lax.fori_loop(0, 1, inner, h)

    return lax.fori_loop(0, 3, outer, x)


@pytest.mark.parametrize(
    ("fn", "shape"),
    [
        (fori_stack, (3, 3, 3, 4, 4)),
        (fori_shared, (3, 3, 4, 4)),
        (fori_nested, (3, 1, 3, 3, 4, 4)),
    ],
    ids=["indexed_by_the_loop_counter", "closed_over", "indexed_twice"],
)
def test_fori_loop_kernels_are_tied_back(fn, shape):
    params = {"w": normal(1, shape, 0.4)}
    _, taps = sdr.capture_convs(fn, params, colored(0, (2, 8, 8, 4)))
    assert len(taps) == 3
    assert [t.param_path for t in taps] == ["w"] * 3
    for tap in taps:  # a slice by the loop counter travels with its index
        np.testing.assert_array_equal(_through_ops(tap, params["w"]), tap.kernel)
        sliced = [op.primitive for op in tap.param_ops if op.n_indices]
        assert sliced == ["dynamic_slice"] * (len(shape) - 4)


def test_while_loop_warns_and_keeps_the_last_iteration():
    def until(params, x, n):
        def body(carry):
            i, h = carry
            return i + 1, jax.nn.relu(conv(h, params["w"]))

        return lax.while_loop(lambda c: c[0] < n, body, (jnp.zeros((), jnp.int32), x))[
            1
        ]

    params = {"w": normal(1, (3, 3, 4, 4), 0.4)}
    x = colored(0, (2, 8, 8, 4))
    n = jnp.asarray(3, jnp.int32)
    with pytest.warns(UserWarning, match=r"while") as record:
        out, taps = sdr.capture_convs(until, params, x, n)
    assert [str(w.message) for w in record] == [
        "sdr.capture_convs: conv layer(s) ['w'] run inside a `while_loop`: only "
        "the last iteration's maps are captured. Use `lax.fori_loop` with static "
        "bounds or `lax.scan` to capture every iteration."
    ]
    np.testing.assert_allclose(out, until(params, x, n), rtol=1e-5, atol=1e-6)
    (tap,) = taps
    assert tap.name == "w[last]"
    assert tap.param_path == "w"
    last_input = jax.nn.relu(conv(jax.nn.relu(conv(x, params["w"])), params["w"]))
    np.testing.assert_allclose(tap.maps, last_input, rtol=1e-5, atol=1e-6)


def _sorted_sdrs(taps):
    return np.sort(np.concatenate([np.ravel(t.pair_sdr()) for t in taps]))


def test_vmap_over_an_ensemble_of_kernels():
    def ensemble(params, x):
        return jax.vmap(lambda w: conv(x, w))(params["w"])

    params = {"w": normal(1, (3, 3, 3, 3, 2))}  # 3 members
    x = colored(0, (2, 8, 8, 3))
    out, taps = sdr.capture_convs(ensemble, params, x)
    np.testing.assert_allclose(out, ensemble(params, x), rtol=1e-5, atol=1e-6)
    assert taps and all(t.param_path == "w" for t in taps)
    expected = np.concatenate(
        [np.ravel(sdr.conv_sdr(x, params["w"][e])) for e in range(3)]
    )
    np.testing.assert_allclose(_sorted_sdrs(taps), np.sort(expected), rtol=1e-4)


def test_vmap_over_samples_and_kernels():
    def per_sample(params, x):
        return jax.vmap(lambda x, w: conv(x[None], w)[0])(x, params["w"])

    params = {"w": normal(1, (3, 3, 3, 3, 2))}
    x = colored(0, (3, 8, 8, 3))
    out, taps = sdr.capture_convs(per_sample, params, x)
    np.testing.assert_allclose(out, per_sample(params, x), rtol=1e-5, atol=1e-6)
    assert taps and all(t.param_path == "w" for t in taps)
    expected = np.concatenate(
        [np.ravel(sdr.conv_sdr(x[e : e + 1], params["w"][e])) for e in range(3)]
    )
    np.testing.assert_allclose(_sorted_sdrs(taps), np.sort(expected), rtol=1e-4)


def test_shard_map_is_captured_or_named_in_a_warning():
    mesh = jax.make_mesh((1,), ("data",))
    spec = PartitionSpec()

    def sharded(params, x):
        f = jax.shard_map(
            lambda x, w: conv(x, w),
            mesh=mesh,
            in_specs=(spec, spec),
            out_specs=spec,
        )
        return f(x, params["w"])

    params = {"w": normal(1, (3, 3, 3, 2))}
    x = colored(0, (2, 8, 8, 3))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out, taps = sdr.capture_convs(sharded, params, x)
    np.testing.assert_allclose(out, sharded(params, x), rtol=1e-5, atol=1e-6)
    captured = any(
        t.maps.shape == x.shape and np.allclose(t.maps, x, rtol=1e-6) for t in taps
    )
    warned = any("shard_map" in str(w.message) for w in record)
    assert captured or warned, "the conv inside shard_map was left out silently"


# --------------------------------------------------------------------------
# 4. Kernels tied back to their parameters
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRUCTURAL))
def test_structural_ops_are_tied_back(name):
    fn, params = structural_model(name)
    x = structural_input()
    out, (tap,) = sdr.capture_convs(fn, params, x)
    np.testing.assert_allclose(out, fn(params, x), rtol=1e-5, atol=1e-6)
    assert tap.param_path == "w"
    assert tap.name == "w"
    np.testing.assert_allclose(tap.kernel, STRUCTURAL[name][1](params["w"]), rtol=1e-6)
    np.testing.assert_allclose(tap.maps, x, rtol=1e-6)
    # The ops that lead there, by name, take the parameter to the kernel.
    assert [op.primitive for op in tap.param_ops] == _STRUCTURAL_OPS[name]
    np.testing.assert_array_equal(_through_ops(tap, params["w"]), tap.kernel)


_STRUCTURAL_OPS = {
    "flip": ["rev"],
    "transpose": ["transpose"],
    "reshape": ["reshape"],
    "slice": ["slice"],
    "flip_and_transpose": ["transpose", "rev"],
}


def _through_ops(tap, param):
    """The parameter taken through the tap's ops, with their traced indices."""
    indices = list(tap.param_indices)
    for op in tap.param_ops:
        param = op(param, *indices[: op.n_indices])
        del indices[: op.n_indices]
    assert not indices
    return param


@pytest.mark.parametrize("name", CLOSURES)
def test_kernels_closed_over_by_inner_functions_are_tied_back(name):
    fn, params = closure_model(name)
    x = structural_input()
    out, (tap,) = sdr.capture_convs(fn, params, x)
    np.testing.assert_allclose(out, fn(params, x), rtol=1e-5, atol=1e-6)
    assert tap.param_path == "w"
    np.testing.assert_allclose(tap.maps, x, rtol=1e-6)


def test_flip_keeps_the_pair_sdr_of_the_unflipped_kernel():
    fn, params = structural_model("flip")
    x = structural_input()
    _, (tap,) = sdr.capture_convs(fn, params, x)
    # |k̂| is the same for a kernel and its flip: so is every pair's SDR.
    np.testing.assert_allclose(tap.pair_sdr(), sdr.conv_sdr(x, params["w"]), rtol=1e-4)


def test_conv_transpose_with_transpose_kernel_is_tied_back():
    model = TransposeKernelGenerator()
    z = normal(0, (4, 8))
    variables = numpy_variables(lambda: model.init(jax.random.key(1), z), 1, 0.3)
    out, taps = sdr_flax.capture_layers(model.apply, variables, z)
    np.testing.assert_allclose(out, model.apply(variables, z), rtol=1e-5, atol=1e-6)
    assert [t.param_path for t in taps] == ["up/kernel", "image/kernel"]
    assert [t.name for t in taps] == ["up", "image"]
    assert [t.geometry.input_dilation for t in taps] == [(2, 2), (2, 2)]
    # The same layer as a plain transposed conv with the flipped, swapped kernel.
    kernel = variables["params"]["up"]["kernel"]
    np.testing.assert_allclose(
        taps[0].pair_sdr(),
        sdr.conv_sdr(
            taps[0].maps,
            jnp.swapaxes(jnp.flip(kernel, (0, 1)), 2, 3),
            strides=2,
            transpose=True,
        ),
        rtol=1e-4,
    )


def test_equinox_generator_passed_through_partition():
    model = eqx_generator()
    z = eqx_batch()
    params, static = eqx.partition(model, eqx.is_array)
    out, taps = sdr.capture_convs(lambda p, z: eqx_partitioned(p, static, z), params, z)
    np.testing.assert_allclose(out, jax.vmap(model)(z), rtol=1e-5, atol=1e-6)
    assert [t.param_path for t in taps] == ["up/weight", "out/weight"]
    assert [t.name for t in taps] == ["up", "out"]
    assert taps[0].geometry.input_dilation == (2, 2)
    np.testing.assert_allclose(taps[0].maps, jnp.transpose(z, (0, 2, 3, 1)), rtol=1e-6)


def test_equinox_generator_passed_as_a_pytree():
    model = eqx_generator()
    z = eqx_batch()
    out, taps = sdr.capture_convs(eqx_as_pytree, model, z)
    np.testing.assert_allclose(out, jax.vmap(model)(z), rtol=1e-5, atol=1e-6)
    assert [t.param_path for t in taps] == ["up/weight", "out/weight"]

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(model, capture):
        if capture:
            out = sdr.capture_convs(eqx_as_pytree, model, z)[0]
        else:
            out = eqx_as_pytree(model, z)
        return jnp.sum(out * normal(9, out.shape))

    grad_close(grads(model, True), grads(model, False))


def test_tied_weights_share_their_param_path():
    def tied(params, x):
        h = jax.nn.relu(conv(x, params["w"]))
        return conv(h, params["w"])

    params = {"w": normal(1, (3, 3, 3, 3), 0.4)}
    x = colored(0, (2, 8, 8, 3))
    out, taps = sdr.capture_convs(tied, params, x)
    np.testing.assert_allclose(out, tied(params, x), rtol=1e-5, atol=1e-6)
    assert [t.param_path for t in taps] == ["w", "w"]
    assert len({t.name for t in taps}) == 2
    np.testing.assert_allclose(
        taps[1].maps, jax.nn.relu(conv(x, params["w"])), rtol=1e-5, atol=1e-6
    )


# --- kernels that are not parameters, inside and out of bodies --------------


def _scoped(name, fn):
    def scoped(*args):
        with jax.named_scope(name):
            return fn(*args)

    return scoped


def _computed_in_jit(p, x):
    return jax.jit(_scoped("inner", lambda h, w: conv(h, 2.0 * w)))(x, p["w"])


def _computed_in_scan(p, x):
    body = _scoped("inner", lambda h, w: (conv(h, 2.0 * w), None))
    return lax.scan(body, x, p["ws"])[0]


def _computed_in_scan_in_jit(p, x):
    return jax.jit(_scoped("mid", _computed_in_scan))(p, x)


def _computed_in_cond(p, x):
    no = _scoped("no", lambda h: conv(h, 3.0 * p["w"]))
    yes = _scoped("yes", lambda h: conv(h, 2.0 * p["w"]))
    return lax.cond(jnp.sum(x) > 1e4, yes, no, x)


def _computed_in_while(p, x):
    body = _scoped("inner", lambda c: (c[0] + 1, conv(c[1], 2.0 * p["w"])))
    return lax.while_loop(lambda c: c[0] < 2, body, (jnp.int32(0), x))[1]


_BODY_PARAMS = {"w": normal(1, (3, 3, 4, 4), 0.4), "ws": normal(2, (2, 3, 3, 4, 4))}


@pytest.mark.parametrize(
    ("fn", "names", "kernels"),
    [
        (_computed_in_jit, ["outer/inner"], lambda p: [2.0 * p["w"]]),
        (
            _computed_in_scan,
            ["outer/inner[0]", "outer/inner[1]"],
            lambda p: [2.0 * p["ws"][0], 2.0 * p["ws"][1]],
        ),
        (
            _computed_in_scan_in_jit,
            ["outer/mid/inner[0]", "outer/mid/inner[1]"],
            lambda p: [2.0 * p["ws"][0], 2.0 * p["ws"][1]],
        ),
        (  # cond's branches are (false, true): the taken one is branch0
            _computed_in_cond,
            ["outer/branch0/no", "outer/branch1/yes"],
            lambda p: [3.0 * p["w"], jnp.zeros_like(p["w"])],
        ),
        (_computed_in_while, ["outer/inner[last]"], lambda p: [2.0 * p["w"]]),
    ],
    ids=["jit", "scan", "scan_in_jit", "cond", "while"],
)
def test_computed_kernels_inside_bodies_are_named_by_their_scope(fn, names, kernels):
    # A kernel that is no parameter has no layer name: the tap is named by
    # the scopes it runs in, the body's included.
    x = colored(0, (2, 8, 8, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the while_loop's, tested elsewhere
        out, taps = sdr.capture_convs(_scoped("outer", fn), _BODY_PARAMS, x)
    np.testing.assert_allclose(out, fn(_BODY_PARAMS, x), rtol=1e-5, atol=1e-5)
    assert [t.name for t in taps] == names
    assert {t.kernel_source for t in taps} == {"computed"}
    assert {t.param_path for t in taps} == {None}
    for tap, kernel in zip(taps, kernels(_BODY_PARAMS), strict=True):
        np.testing.assert_allclose(tap.kernel, kernel, rtol=1e-6)


@jax.custom_jvp
def _conv_and_kernel(h, w):
    with jax.named_scope("inner"):
        return conv(h, 2.0 * w), 2.0 * w


@_conv_and_kernel.defjvp
def _conv_and_kernel_jvp(primals, tangents):
    return jax.jvp(lambda h, w: (conv(h, 2.0 * w), 2.0 * w), primals, tangents)


def _kernel_from_custom_jvp(p, x, make=lambda p: p["w"]):
    h, kernel = _conv_and_kernel(x, make(p))
    return conv(h, kernel)


def _constant_from_custom_jvp(p, x):
    return _kernel_from_custom_jvp(p, jnp.ones((2, 8, 8, 4)), _ones) + 0.0 * x


def test_custom_jvp_bodies_are_named_by_their_scope():
    x = colored(0, (2, 8, 8, 4))
    _, taps = sdr.capture_convs(
        _scoped("outer", _kernel_from_custom_jvp), _BODY_PARAMS, x
    )
    assert [t.name for t in taps] == ["outer/inner", "outer"]
    np.testing.assert_allclose(taps[0].kernel, 2.0 * _BODY_PARAMS["w"], rtol=1e-6)


# Each loop or branch below also runs a conv, so sdr rewrites it; the kernel
# it returns then feeds a conv outside.


def _kernel_from_scan(p, x, make=lambda p: p["ws"]):
    body = lambda h, w: (conv(h, w), 2.0 * w)  # noqa: E731
    h, kernels = lax.scan(body, x, make(p))
    return conv(h, kernels[0])


def _kernel_from_cond(p, x, make=lambda p: p["w"], pred=lambda x: jnp.sum(x) > 1e4):
    yes = lambda h, w: (conv(h, w), 2.0 * w)  # noqa: E731
    no = lambda h, w: (conv(h, w), w)  # noqa: E731
    h, kernel = lax.cond(pred(x), yes, no, x, make(p))
    return conv(h, kernel)


def _kernel_from_while(p, x, make=lambda p: p["w"]):
    def body(carry):
        i, h, w = carry
        return i + 1, conv(h, w), 2.0 * w

    _, h, kernel = lax.while_loop(lambda c: c[0] < 2, body, (0, x, make(p)))
    return conv(h, kernel)


def _ones(p):
    return jnp.ones((3, 3, 4, 4))


def _constant_from_scan(p, x):
    return _kernel_from_scan(p, x, lambda p: jnp.ones((2, 3, 3, 4, 4)))


def _constant_from_cond(p, x):
    # The predicate is a constant too: a branch chosen by the data would make
    # the kernel depend on the data.
    return _kernel_from_cond(p, x, _ones, lambda x: jnp.asarray(False))


def _kernel_from_a_conv(p, x, make=lambda p: p["w"]):
    # A hypernetwork in miniature: one conv's output is another's kernel.
    kernel = jnp.transpose(conv(jnp.ones((4, 3, 3, 4)), make(p)), (1, 2, 3, 0))
    return conv(x, kernel)


def _constant_from_a_conv(p, x):
    return _kernel_from_a_conv(p, x, _ones)


def _constant_from_plain_scan(p, x):
    # A loop without a conv, over constants alone.
    kernels = lax.scan(lambda c, w: (c, 2.0 * w), 0.0, jnp.ones((2, 3, 3, 4, 4)))[1]
    return conv(x, kernels[0])


def _constant_from_while(p, x):
    # Everything the loop takes is a constant.
    return _kernel_from_while(p, jnp.ones((2, 8, 8, 4)), _ones) + 0.0 * x


@pytest.mark.parametrize(
    ("fn", "source"),
    [
        (_kernel_from_scan, "computed"),
        (_kernel_from_cond, "computed"),
        (_kernel_from_while, "computed"),
        (_kernel_from_custom_jvp, "computed"),
        (_constant_from_scan, "constant"),
        (_constant_from_cond, "constant"),
        (_constant_from_while, "constant"),
        (_constant_from_custom_jvp, "constant"),
        (_constant_from_plain_scan, "constant"),
        (_kernel_from_a_conv, "computed"),
        (_constant_from_a_conv, "constant"),
    ],
)
def test_kernel_source_through_scan_cond_and_while(fn, source):
    # A kernel that a loop or branch makes from a parameter is computed (not
    # the parameter); one made from constants alone is a constant.
    x = colored(0, (2, 8, 8, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the while_loop's, tested elsewhere
        out, taps = sdr.capture_convs(fn, _BODY_PARAMS, x)
    np.testing.assert_allclose(out, fn(_BODY_PARAMS, x), rtol=1e-5, atol=1e-5)
    assert taps[-1].kernel_source == source
    assert taps[-1].param_path is None


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_untaken_branches_and_loop_carries_keep_the_maps_dtype(dtype):
    # The untaken branch's taps and a while_loop's initial taps are zeros of
    # the maps' own dtype, or the branches' and the carry's types disagree.
    params = {k: v.astype(dtype) for k, v in _BODY_PARAMS.items()}
    x = colored(0, (2, 8, 8, 4)).astype(dtype)
    _, taps = sdr.capture_convs(_computed_in_cond, params, x)
    assert [t.maps.dtype for t in taps] == [dtype, dtype]
    np.testing.assert_array_equal(taps[1].maps, jnp.zeros_like(taps[1].maps))
    with pytest.warns(UserWarning, match="while_loop"):
        _, (tap,) = sdr.capture_convs(_computed_in_while, params, x)
    assert tap.maps.dtype == dtype


def _solve(params, x):
    def matvec(v):
        with jax.named_scope("blur"):
            return v + 0.1 * conv(v, params["w"])

    return lax.custom_linear_solve(matvec, x, lambda mv, b: b, symmetric=False)


def _solve_in_jit(params, x):
    with jax.named_scope("outer"):
        return jax.jit(_solve)(params, x)


@pytest.mark.parametrize(
    ("fn", "where"), [(_solve, "top level"), (_solve_in_jit, "outer")]
)
def test_convs_sdr_cannot_look_into_are_named_in_a_warning(fn, where):
    params = {"w": normal(1, (3, 3, 2, 2), 0.4)}
    x = colored(0, (1, 6, 6, 2))
    with pytest.warns(UserWarning) as record:
        out, taps = sdr.capture_convs(fn, params, x)
    np.testing.assert_allclose(out, fn(params, x), rtol=1e-5, atol=1e-6)
    assert taps == []
    assert [str(w.message) for w in record] == [
        "sdr.capture_convs: 1 convolution(s) ['blur'] inside "
        f"`custom_linear_solve` (at {where}) are run but not captured: sdr cannot "
        "look inside `custom_linear_solve`. Call the layers outside it to measure "
        "or regularise them."
    ]


def test_a_broadcast_ties_the_kernel_back_only_when_it_copies_nothing():
    # expand_dims (a broadcast that adds a unit axis) moves each entry once:
    # the kernel is still the parameter. A broadcast that repeats entries
    # makes a new kernel.
    params = {"w": normal(1, (3, 3, 4), 0.4)}
    x = colored(0, (2, 8, 8, 4))

    def expanded(p, x):
        return conv(x[..., :1], lax.expand_dims(p["w"], (2,)))

    def repeated(p, x):
        return conv(x, lax.broadcast_in_dim(p["w"][:, :, :1], (3, 3, 4, 4), (0, 1, 2)))

    assert str(jax.make_jaxpr(expanded)(params, x)).count("broadcast_in_dim") == 1
    _, (tap,) = sdr.capture_convs(expanded, params, x)
    assert (tap.kernel_source, tap.param_path) == ("parameter", "w")
    _, (tap,) = sdr.capture_convs(repeated, params, x)
    assert (tap.kernel_source, tap.param_path) == ("computed", None)


@pytest.mark.parametrize("leaf", ["kernel", "weight", "w"])
def test_a_layer_is_named_by_the_parent_of_its_kernel_leaf(leaf):
    params = {"up": {leaf: normal(1, (3, 3, 4, 4), 0.4)}, "w": normal(2, (3, 3, 4, 4))}
    _, taps = sdr.capture_convs(
        lambda p, x: conv(conv(x, p["up"][leaf]), p["w"]),
        params,
        colored(0, (2, 8, 8, 4)),
    )
    assert [(t.name, t.param_path) for t in taps] == [("up", f"up/{leaf}"), ("w", "w")]


def test_an_equations_context_survives_capture():
    # Each equation is bound again in its own context: XLA metadata set by
    # the user reaches the compiled program of the captured function.
    from jax.experimental.xla_metadata import set_xla_metadata

    def tagged(p, x):
        h = conv(x, p["w"])
        with set_xla_metadata(sdr_test_tag="kept"):
            return jnp.sin(h)

    params, x = {"w": normal(1, (3, 3, 4, 4), 0.4)}, colored(0, (2, 8, 8, 4))
    assert "sdr_test_tag" in jax.jit(tagged).lower(params, x).as_text()
    captured = jax.jit(lambda p, x: sdr.capture_convs(tagged, p, x)[0])
    assert "sdr_test_tag" in captured.lower(params, x).as_text()


def test_capture_warnings_point_at_the_callers_line():
    def until(params, x):
        body = lambda c: (c[0] + 1, conv(c[1], params["w"]))  # noqa: E731
        return lax.while_loop(lambda c: c[0] < 2, body, (0, x))[1]

    params, x = {"w": normal(1, (3, 3, 4, 4), 0.4)}, colored(0, (2, 8, 8, 4))
    with pytest.warns(UserWarning, match="while_loop") as record:
        sdr.capture_convs(until, params, x)
    with pytest.warns(UserWarning, match="^sdr.edit_convs: .*while_loop") as edited:
        sdr.edit_convs(until, {})(params, x)
    assert [w.filename for w in [*record, *edited]] == [__file__, __file__]
