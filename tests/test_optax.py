"""spectral_independence as an Optax citizen: schedules, wrappers, misuse."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sdr_flax


class Generator(nn.Module):
    @nn.compact
    def __call__(self, z):
        h = nn.Dense(4 * 4 * 8, name="project")(z).reshape(-1, 4, 4, 8)
        h = nn.relu(nn.ConvTranspose(8, (3, 3), strides=(2, 2), name="up")(h))
        return nn.ConvTranspose(3, (3, 3), strides=(2, 2), name="out")(h)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
    model = Generator()
    params = model.init(jax.random.key(0), z)["params"]
    _, taps = sdr_flax.capture_layers(model.apply, {"params": params}, z)
    spectra = sdr_flax.layer_spectra(taps)
    grads = jax.tree.map(jnp.zeros_like, params)
    return params, grads, spectra


def _update(tx, params, grads, spectra, steps=1):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params, spectra=spectra)
        params = optax.apply_updates(params, updates)
    return params, state


def _changed(a, b, name):
    return float(jnp.max(jnp.abs(a[name]["kernel"] - b[name]["kernel"])))


def test_schedule_rate_follows_the_count(setup):
    params, grads, spectra = setup
    # A schedule that is 0 at step 0 leaves the first update unchanged and
    # acts from the second on; the state counts the updates.
    tx = sdr_flax.spectral_independence(
        lambda count: jnp.where(count >= 1, 0.5, 1e-30).astype(jnp.float32)
    )
    first, state = _update(tx, params, grads, spectra, steps=1)
    assert int(state.count) == 1
    assert _changed(first, params, "up") < 1e-12
    second, state = _update(tx, params, grads, spectra, steps=2)
    assert int(state.count) == 2
    constant, _ = _update(
        sdr_flax.spectral_independence(0.5), params, grads, spectra, steps=1
    )
    np.testing.assert_allclose(
        second["up"]["kernel"], constant["up"]["kernel"], rtol=1e-5, atol=1e-7
    )


def test_inject_hyperparams_matches_a_plain_rate(setup):
    params, grads, spectra = setup
    tx = optax.inject_hyperparams(sdr_flax.spectral_independence)(learning_rate=0.3)
    injected, state = jax.jit(lambda p: _update(tx, p, grads, spectra))(params)
    plain, _ = _update(sdr_flax.spectral_independence(0.3), params, grads, spectra)
    np.testing.assert_allclose(float(state.hyperparams["learning_rate"]), 0.3)
    for name in ("up", "out"):
        assert _changed(injected, params, name) > 1e-4
        np.testing.assert_allclose(
            injected[name]["kernel"], plain[name]["kernel"], rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("wrapper", ["masked", "multi_transform"])
def test_masked_out_layers_are_not_regularised(setup, wrapper):
    params, grads, spectra = setup
    mask = jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == "up", params)
    if wrapper == "masked":
        tx = optax.masked(sdr_flax.spectral_independence(), mask)
    else:
        labels = jax.tree.map(lambda m: "sdr" if m else "none", mask)
        tx = optax.multi_transform(
            {"sdr": sdr_flax.spectral_independence(), "none": optax.identity()},
            labels,
        )
    new, _ = _update(tx, params, grads, spectra)
    assert _changed(new, params, "up") > 1e-4
    assert _changed(new, params, "out") == 0.0


# optax's MultiSteps and Adam mix Python floats with int32 counts, which the
# suite's strict dtype promotion (conftest.py) refuses; users run "standard".
@jax.numpy_dtype_promotion("standard")
def test_multisteps_applies_the_penalty_once_per_accumulation(setup):
    params, grads, spectra = setup
    tx = optax.MultiSteps(
        optax.chain(optax.sgd(0.0), sdr_flax.spectral_independence()),
        every_k_schedule=2,
    )
    state = tx.init(params)
    updates, state = tx.update(grads, state, params, spectra=spectra)
    assert _changed(optax.apply_updates(params, updates), params, "up") == 0.0
    updates, state = tx.update(grads, state, params, spectra=spectra)
    after_two = optax.apply_updates(params, updates)
    once, _ = _update(sdr_flax.spectral_independence(), params, grads, spectra)
    np.testing.assert_allclose(
        after_two["up"]["kernel"], once["up"]["kernel"], rtol=1e-5, atol=1e-7
    )


def test_apply_if_finite_rejects_non_finite_gradients(setup):
    params, grads, spectra = setup
    tx = optax.apply_if_finite(
        optax.chain(optax.sgd(1.0), sdr_flax.spectral_independence()), 3
    )
    bad = jax.tree.map(lambda g: g + jnp.nan, grads)
    state = tx.init(params)
    updates, state = tx.update(bad, state, params, spectra=spectra)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
    assert int(state.notfinite_count) == 1
    updates, state = tx.update(grads, state, params, spectra=spectra)
    assert _changed(optax.apply_updates(params, updates), params, "up") > 1e-4


def test_conditionally_transform_runs_it_every_k_steps(setup):
    params, grads, spectra = setup
    tx = optax.transforms.conditionally_transform(
        sdr_flax.spectral_independence(), lambda step: step % 2 == 1
    )
    state = tx.init(params)
    moved = []
    for _ in range(4):
        updates, state = tx.update(grads, state, params, spectra=spectra)
        moved.append(_changed(optax.apply_updates(params, updates), params, "up") > 0)
    assert moved == [False, True, False, True]


@jax.numpy_dtype_promotion("standard")
def test_with_spectral_independence_chains_in_the_right_order(setup):
    params, grads, spectra = setup
    adam = optax.adam(1e-2)
    g = jax.tree.map(jnp.ones_like, grads)
    wrapped = sdr_flax.with_spectral_independence(adam, learning_rate=0.5)
    chained = optax.chain(adam, sdr_flax.spectral_independence(0.5))
    reversed_ = optax.chain(sdr_flax.spectral_independence(0.5), adam)
    a, _ = _update(wrapped, params, g, spectra)
    b, _ = _update(chained, params, g, spectra)
    c, _ = _update(reversed_, params, g, spectra)
    np.testing.assert_allclose(a["up"]["kernel"], b["up"]["kernel"], rtol=1e-6)
    assert _changed(a, c, "up") > 1e-4  # the other order is another update
    # The rate and every other keyword reach the transform; the default rate
    # is the transform's.
    wrapped = sdr_flax.with_spectral_independence(
        adam, learning_rate=0.3, steps=2, include_dc=True
    )
    chained = optax.chain(
        adam, sdr_flax.spectral_independence(0.3, steps=2, include_dc=True)
    )
    default = optax.chain(adam, sdr_flax.spectral_independence(0.3))
    a, _ = _update(wrapped, params, g, spectra)
    b, _ = _update(chained, params, g, spectra)
    d, _ = _update(default, params, g, spectra)
    np.testing.assert_allclose(a["up"]["kernel"], b["up"]["kernel"], rtol=1e-6)
    assert _changed(a, d, "up") > 1e-4  # the keywords change the update
    a, _ = _update(sdr_flax.with_spectral_independence(adam), params, g, spectra)
    b, _ = _update(
        optax.chain(adam, sdr_flax.spectral_independence()), params, g, spectra
    )
    np.testing.assert_allclose(a["up"]["kernel"], b["up"]["kernel"], rtol=1e-6)
    message = (
        r"^`optimizer` must be an optax\.GradientTransformation \(e\.g\. "
        r"optax\.adam\(1e-3\)\); got float\.$"
    )
    with pytest.raises(TypeError, match=message):
        sdr_flax.with_spectral_independence(0.5, learning_rate=0.5)


def test_layers_accepts_any_iterable_once(setup):
    params, grads, spectra = setup
    from_list, _ = _update(
        sdr_flax.spectral_independence(layers=["up", "out"]), params, grads, spectra
    )
    from_generator, _ = _update(
        sdr_flax.spectral_independence(layers=(n for n in ["up", "out"])),
        params,
        grads,
        spectra,
    )
    for name in ("up", "out"):
        assert _changed(from_generator, params, name) > 1e-4
        np.testing.assert_array_equal(
            from_generator[name]["kernel"], from_list[name]["kernel"]
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": "up"}, TypeError, r"layers=\['up'\]"),
        ({"layers": [1]}, TypeError, "layer names"),
        (
            {"learning_rate": -0.5},
            ValueError,
            "^`learning_rate` must be a positive, finite number or an optax "
            "schedule; got -0.5.$",
        ),
        ({"learning_rate": 0.0}, ValueError, "positive.*; got 0.0.$"),
        ({"learning_rate": float("nan")}, ValueError, "finite.*; got nan.$"),
        ({"learning_rate": float("inf")}, ValueError, "finite.*; got inf.$"),
        ({"steps": 0}, ValueError, "^`steps` must be an int ≥ 1; got 0.$"),
        ({"steps": 2.5}, ValueError, "^`steps` must be an int ≥ 1; got 2.5.$"),
    ],
)
def test_misuse_is_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        sdr_flax.spectral_independence(**kwargs)


def test_unknown_layer_names_are_refused_with_the_known_ones(setup):
    params, grads, spectra = setup
    tx = sdr_flax.spectral_independence(layers=["up", "upp"])
    with pytest.raises(ValueError, match=r"\['upp'\].*\['up', 'out'\]"):
        _update(tx, params, grads, spectra)
    with pytest.raises(ValueError, match="upp"):
        sdr_flax.layer_spectra([], layers=["upp"])


def test_wrong_spectra_point_to_layer_spectra(setup):
    params, grads, _ = setup
    model = Generator()
    z = jnp.ones((4, 6))
    _, taps = sdr_flax.capture_layers(model.apply, {"params": params}, z)
    tx = sdr_flax.spectral_independence()
    with pytest.raises(TypeError, match="layer_spectra"):
        tx.update(grads, tx.init(params), params, spectra=taps)


def test_missing_parameters_are_refused(setup):
    _, grads, spectra = setup
    tx = sdr_flax.spectral_independence()
    with pytest.raises(ValueError, match="parameters"):
        tx.update(grads, tx.init(grads), None, spectra=spectra)
    other = {"project": grads["project"]}
    with pytest.raises(ValueError, match="no parameter at"):
        tx.update(other, tx.init(other), other, spectra=spectra)
