"""The transform's side of the capture contract, on the models of
`models.py` that `test_capture_contract.py` captures.

- A parameter that reaches its conv through a flip, transpose, reshape,
  slice, vmap, closure or `transpose_kernel=True` is updated by
  `spectral_independence`, exactly as the kernel it becomes would be, and the
  layer's SDR moves toward 1.
- Tied weights are regularised over all their uses: the update is the sum of
  the uses' steps.
- Every slice of a stacked (scanned) kernel is regularised.
- An Equinox model works passed as an argument; closed over, `layer_spectra`
  says to pass it as an argument.
"""

import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import models
import numpy as np
import optax
import pytest
from flax import nnx
from models import colored, conv, fresh, normal, numpy_variables, structural_input

import sdr
import sdr_flax


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax's own bias corrections mix Python floats with int32 counts.
    with jax.numpy_dtype_promotion("standard"):
        yield


def gap(r) -> float:
    """The mean |log ρ| of a pair SDR matrix: 0 when every pair is generic."""
    r = np.asarray(r, np.float64).ravel()
    r = r[np.isfinite(r) & (r > 0)]
    assert r.size
    return float(np.mean(np.abs(np.log(r))))


@functools.partial(jax.jit, static_argnames=("fn", "learning_rate", "scale_free"))
def _penalty_update(params, args, taps, *, fn, learning_rate, scale_free):
    tx = sdr_flax.spectral_independence(learning_rate, scale_free=scale_free)
    if taps is None:
        _, taps = sdr.capture_convs(fn, params, *args)
    spectra = sdr_flax.layer_spectra(taps)
    assert spectra, "no layer to regularise"
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params, spectra=spectra)
    return updates


def penalty_update(fn, params, *args, taps=None, learning_rate=0.5, scale_free=True):
    """The transform's update of `params` alone (a zero main update), from the
    taps of `fn(params, *args)` or the given ones."""
    return _penalty_update(
        params,
        args,
        taps,
        fn=fn,
        learning_rate=learning_rate,
        scale_free=scale_free,
    )


def regularise(fn, params, *args, steps=3):
    """`steps` penalty-only updates, spectra re-taken each step."""
    for _ in range(steps):
        params = optax.apply_updates(params, penalty_update(fn, params, *args))
    return params


@functools.partial(jax.jit, static_argnames="fn")
def pair_sdrs(params, args, *, fn):
    """`{name: pair SDR matrix}` of every conv `fn(params, *args)` runs."""
    _, taps = sdr.capture_convs(fn, params, *args)
    return {t.name: t.pair_sdr() for t in taps}


def assert_close(actual, expected, rtol=1e-4):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = float(np.max(np.abs(expected)))
    assert scale > 0, "the expected update is zero"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-5 * scale)


def assert_gaps_shrink(before: dict, after: dict, factor: float):
    assert before.keys() == after.keys()
    for name in before:
        g0, g1 = gap(before[name]), gap(after[name])
        assert g1 < factor * g0, (name, g0, g1)


def assert_moved_toward_one(fn, before, after, *args, factor=0.7):
    assert_gaps_shrink(
        pair_sdrs(before, args, fn=fn), pair_sdrs(after, args, fn=fn), factor
    )


# --------------------------------------------------------------------------
# Structural ops, vmap and closures
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(models.STRUCTURAL))
def test_update_through_a_structural_op_is_the_kernels_update(name):
    fn, params = models.structural_model(name)
    op = models.STRUCTURAL[name][1]
    x = structural_input()
    delta = penalty_update(fn, params, x)["w"]
    # The same layer with the kernel itself as its parameter.
    direct = {"k": op(params["w"])}
    delta_k = penalty_update(lambda p, x: jnp.tanh(conv(x, p["k"])), direct, x)["k"]
    assert_close(op(delta), delta_k)
    if name == "slice":  # the half of the parameter no conv uses stays
        np.testing.assert_array_equal(delta[..., delta_k.shape[-1] :], 0.0)


@pytest.mark.parametrize(
    "model",
    [
        *(f"structural:{n}" for n in models.STRUCTURAL),
        *(f"closure:{n}" for n in models.CLOSURES),
    ],
)
def test_reached_parameters_move_toward_generic(model):
    kind, name = model.split(":")
    fn, params = (
        models.structural_model if kind == "structural" else models.closure_model
    )(name)
    x = structural_input()
    after = regularise(fn, params, x)
    assert not np.allclose(after["w"], params["w"])
    assert_moved_toward_one(fn, params, after, x)


def test_flip_moves_the_pair_sdr_as_the_unflipped_kernel():
    fn, params = models.structural_model("flip")
    x = structural_input()
    after = regularise(fn, params, x, steps=1)
    # |k̂| is that of the parameter itself, before and after the update.
    _, (tap,) = sdr.capture_convs(fn, after, x)
    np.testing.assert_allclose(tap.pair_sdr(), sdr.conv_sdr(x, after["w"]), rtol=1e-4)
    # The parameter moves as the flipped kernel would, were it the parameter.
    flipped = regularise(
        lambda p, x: jnp.tanh(conv(x, p["k"])),
        {"k": jnp.flip(params["w"], (0, 1))},
        x,
        steps=1,
    )
    assert_close(jnp.flip(after["w"], (0, 1)), flipped["k"])


def test_vmapped_ensemble_each_member_as_its_own_layer():
    members = 3

    def ensemble(params, x):
        return jax.vmap(lambda w: conv(x, w))(params["w"])

    def separate(params, x):
        return [conv(x, params[f"k{e}"]) for e in range(members)]

    params = {"w": normal(1, (members, 3, 3, 3, 2), 0.3)}
    x = structural_input()
    delta = penalty_update(ensemble, params, x)["w"]
    delta_k = penalty_update(
        separate, {f"k{e}": params["w"][e] for e in range(members)}, x
    )
    for e in range(members):
        assert_close(delta[e], delta_k[f"k{e}"])


# --------------------------------------------------------------------------
# Stacked kernels: scan, fori_loop, nnx.scan over nnx.vmap, nn.scan
# --------------------------------------------------------------------------


def unrolled_stack(params, x):
    h = x
    for i in range(3):
        h = jax.nn.relu(conv(h, params[f"k{i}"]))
    return h


@pytest.mark.parametrize(
    "fn", [models.stacked_scan, models.fori_stack], ids=["scan", "fori_loop"]
)
def test_every_slice_of_a_stacked_kernel_is_regularised(fn):
    params = {"w": normal(1, (3, 3, 3, 4, 4), 0.4)}
    x = colored(0, (2, 8, 8, 4))
    delta = penalty_update(fn, params, x)["w"]
    # Each slice moves as the kernel of the unrolled stack's layer does.
    delta_k = penalty_update(
        unrolled_stack, {f"k{i}": params["w"][i] for i in range(3)}, x
    )
    for i in range(3):
        assert_close(delta[i], delta_k[f"k{i}"])
    after = regularise(fn, params, x)
    for i in range(3):
        assert not np.allclose(after["w"][i], params["w"][i])
    assert_moved_toward_one(fn, params, after, x)


def test_kernel_shared_by_scan_iterations_takes_every_iterations_step():
    params = {"w": normal(1, (3, 3, 4, 4), 0.4)}
    x = colored(0, (2, 8, 8, 4))
    _, taps = sdr.capture_convs(models.shared_kernel_scan, params, x)
    assert len(taps) == 3
    delta = penalty_update(models.shared_kernel_scan, params, x, taps=taps)["w"]
    uses = [penalty_update(None, params, taps=[t])["w"] for t in taps]
    assert_close(delta, sum(uses))

    def unrolled(params, x):  # the same kernel three times, without scan
        h = x
        for _ in range(3):
            h = jax.nn.relu(conv(h, params["w"]))
        return h

    assert_close(delta, penalty_update(unrolled, params, x)["w"])


def test_nnx_scan_over_vmapped_blocks_regularises_every_block():
    model = fresh(models.ScanStack)
    x = colored(0, (4, 8, 8, 2))
    target = normal(1, (4, 8, 8, 2), 0.1)
    optimizer = nnx.Optimizer(
        model,
        optax.chain(optax.adam(1e-3), sdr_flax.spectral_independence()),
        wrt=nnx.Param,
    )

    @nnx.jit
    def train_step(model, optimizer):
        def loss_fn(model):
            out, taps = sdr_flax.capture_layers(model, x)
            return jnp.mean((out - target) ** 2), taps

        (_, taps), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads, spectra=sdr_flax.layer_spectra(taps))

    @nnx.jit
    def sdrs(model):
        return {t.name: t.pair_sdr() for t in sdr_flax.capture_layers(model, x)[1]}

    kernel0, sdrs0 = np.array(model.blocks.conv.kernel[...]), sdrs(model)
    for _ in range(5):
        train_step(model, optimizer)
    kernel1, sdrs1 = np.array(model.blocks.conv.kernel[...]), sdrs(model)
    assert len(sdrs1) == 5
    for i in range(kernel0.shape[0]):
        assert not np.allclose(kernel1[i], kernel0[i], rtol=1e-3), i
    assert_gaps_shrink(sdrs0, sdrs1, 0.6)


def test_linen_scan_regularises_every_block():
    model = models.LinenScanStack()
    x = colored(0, (4, 8, 8, 2))
    variables = numpy_variables(lambda: model.init(jax.random.key(0), x), 0, 0.3)
    params = variables["params"]
    target = normal(1, (4, 8, 8, 2), 0.1)
    tx = optax.chain(optax.adam(1e-3), sdr_flax.spectral_independence())
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state):
        def loss_fn(params):
            out, taps = sdr_flax.capture_layers(model.apply, {"params": params}, x)
            return jnp.mean((out - target) ** 2), taps

        (_, taps), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(
            grads, opt_state, params, spectra=sdr_flax.layer_spectra(taps)
        )
        return optax.apply_updates(params, updates), opt_state

    before = params
    for _ in range(5):
        params, opt_state = train_step(params, opt_state)
    k0 = before["blocks"]["conv"]["kernel"]
    k1 = params["blocks"]["conv"]["kernel"]
    for i in range(k0.shape[0]):
        assert not np.allclose(k1[i], k0[i], rtol=1e-3), i
    apply = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    sdrs0, sdrs1 = pair_sdrs(before, (x,), fn=apply), pair_sdrs(params, (x,), fn=apply)
    assert len(sdrs1) == 5  # the stem, the three blocks, the head
    assert_gaps_shrink(sdrs0, sdrs1, 0.6)


# --------------------------------------------------------------------------
# Tied weights
# --------------------------------------------------------------------------


def tied(params, x):
    h = jax.nn.relu(conv(x, params["w"]))
    return conv(h, params["w"])


@pytest.mark.parametrize("scale_free", [True, False])
def test_tied_weights_take_the_sum_of_both_uses_steps(scale_free):
    params = {"w": normal(1, (3, 3, 3, 3), 0.4)}
    x = colored(0, (4, 8, 8, 3))
    _, taps = sdr.capture_convs(tied, params, x)
    assert [t.param_path for t in taps] == ["w", "w"]
    rate = 0.5 if scale_free else 0.01
    kw = {"learning_rate": rate, "scale_free": scale_free}
    both = penalty_update(None, params, taps=taps, **kw)["w"]
    first = penalty_update(None, params, taps=taps[:1], **kw)["w"]
    second = penalty_update(None, params, taps=taps[1:], **kw)["w"]
    for one in (first, second):
        assert not np.allclose(both, one, rtol=1e-2)
    assert_close(both, first + second)


def test_tied_weights_move_both_uses_toward_generic():
    params = {"w": normal(1, (3, 3, 3, 3), 0.4)}
    x = colored(0, (4, 8, 8, 3))
    after = regularise(tied, params, x, steps=4)
    assert_moved_toward_one(tied, params, after, x, factor=0.8)


# --------------------------------------------------------------------------
# Branches
# --------------------------------------------------------------------------


@pytest.mark.parametrize("pred", [True, False])
def test_cond_regularises_the_taken_branch_only(pred):
    params = {"a": normal(1, (3, 3, 3, 2)), "b": normal(2, (3, 3, 3, 2))}
    x = structural_input()
    tx = sdr_flax.spectral_independence()

    @jax.jit
    def step(params, x, pred):
        _, taps = sdr.capture_convs(models.branching, params, x, pred)
        zeros = jax.tree.map(jnp.zeros_like, params)
        with warnings.catch_warnings():
            # layer_spectra may warn about the untaken branch at trace time.
            warnings.simplefilter("ignore")
            spectra = sdr_flax.layer_spectra(taps)
        updates, _ = tx.update(zeros, tx.init(params), params, spectra=spectra)
        return optax.apply_updates(params, updates)

    after = step(params, x, jnp.asarray(pred))
    taken, untaken = ("a", "b") if pred else ("b", "a")
    for leaf in after.values():
        assert np.all(np.isfinite(leaf))
    np.testing.assert_array_equal(after[untaken], params[untaken])
    assert not np.allclose(after[taken], params[taken])
    maps = x if pred else jax.nn.relu(x)
    before_gap = gap(sdr.conv_sdr(maps, params[taken]))
    assert gap(sdr.conv_sdr(maps, after[taken])) < 0.7 * before_gap


# --------------------------------------------------------------------------
# Linen transpose_kernel=True and Equinox
# --------------------------------------------------------------------------


def test_conv_transpose_with_transpose_kernel_updates_its_parameter():
    z = normal(0, (8, 8))
    model = models.TransposeKernelGenerator()
    variables = numpy_variables(lambda: model.init(jax.random.key(1), z), 1, 0.3)
    params = variables["params"]

    # The same generator written with plain transposed convs.
    plain = models.TransposeKernelGenerator(transpose_kernel=False)

    def as_plain(kernel):
        return jnp.swapaxes(jnp.flip(kernel, (0, 1)), 2, 3)

    plain_params = {
        **params,
        "up": {**params["up"], "kernel": as_plain(params["up"]["kernel"])},
        "image": {**params["image"], "kernel": as_plain(params["image"]["kernel"])},
    }
    np.testing.assert_allclose(
        plain.apply({"params": plain_params}, z),
        model.apply(variables, z),
        rtol=1e-5,
        atol=1e-6,
    )

    def apply(model):
        return lambda p, z: model.apply({"params": p}, z)

    fn = apply(model)
    delta = penalty_update(fn, params, z)
    delta_plain = penalty_update(apply(plain), plain_params, z)
    for layer in ("up", "image"):
        assert_close(as_plain(delta[layer]["kernel"]), delta_plain[layer]["kernel"])
        np.testing.assert_array_equal(delta[layer]["bias"], 0.0)
    after = regularise(fn, params, z)
    assert_moved_toward_one(fn, params, after, z)


def _eqx_train(model, z, steps, *, partitioned):
    """A user's Equinox loop: Adam on the array leaves, penalty chained."""
    tx = optax.chain(optax.adam(1e-3), sdr_flax.spectral_independence())
    target = 0.1 * jnp.tanh(normal(7, (z.shape[0], 2, 8, 8)))
    params, static = eqx.partition(model, eqx.is_array)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(params):
            if partitioned:
                out, taps = sdr.capture_convs(
                    lambda p, z: models.eqx_partitioned(p, static, z), params, z
                )
            else:
                out, taps = sdr.capture_convs(
                    models.eqx_as_pytree, eqx.combine(params, static), z
                )
            return jnp.mean((out - target) ** 2), taps

        (_, taps), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(
            grads, opt_state, params, spectra=sdr_flax.layer_spectra(taps)
        )
        return eqx.apply_updates(params, updates), opt_state

    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return eqx.combine(params, static)


@pytest.mark.parametrize("partitioned", [True, False], ids=["partition", "pytree"])
def test_equinox_generator_passed_as_an_argument_is_regularised(partitioned):
    model = models.eqx_generator()
    z = models.eqx_batch()
    after = _eqx_train(model, z, 4, partitioned=partitioned)
    assert not np.allclose(after.up.weight, model.up.weight, rtol=1e-3)
    assert not np.allclose(after.out.weight, model.out.weight, rtol=1e-3)
    assert_moved_toward_one(models.eqx_as_pytree, model, after, z)


def test_equinox_generator_closed_over_says_pass_it_as_an_argument():
    model = models.eqx_generator()
    z = models.eqx_batch()
    out, taps = sdr.capture_convs(lambda z: jax.vmap(model)(z), z)
    np.testing.assert_allclose(out, jax.vmap(model)(z), rtol=1e-5, atol=1e-6)
    assert len(taps) == 2
    assert [t.param_path for t in taps] == [None, None]
    with pytest.warns(UserWarning, match="pass the model as an argument") as record:
        spectra = sdr_flax.layer_spectra(taps)
    assert spectra == {}
    messages = [str(w.message) for w in record]
    assert len(messages) == 2, messages
    assert all("pass the model as an argument" in m for m in messages), messages
