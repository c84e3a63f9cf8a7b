"""The β-VAE's encoder heads: plain dense layers, or the reference code's
μ = BN(dense), log σ² = softplus(BN(dense)) + 1e-6."""

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.harness import checkpoint
from benchmarks.nets import vae

N = 16


def build(heads):
    config = dataclasses.replace(vae.VAEConfig.tiny(), heads=heads)
    model = vae.BetaVAE(config)
    return model, vae.init_variables(model, jax.random.key(0))


def images(seed=1, scale=1.0):
    x = jax.random.uniform(jax.random.key(seed), (N, 32, 32, 3), minval=-1, maxval=1)
    return scale * x


def test_config_default_and_validation():
    assert vae.VAEConfig().heads == "plain"
    assert vae.VAEConfig.tiny().heads == "plain"
    assert vae.HEADS == ("plain", "reference")
    with pytest.raises(ValueError, match="heads"):
        vae.VAEConfig(heads="batchnorm")


def test_parameter_trees():
    (_, plain), (_, reference) = build("plain"), build("reference")
    p_enc, r_enc = plain["params"]["encoder"], reference["params"]["encoder"]
    assert set(r_enc) - set(p_enc) == {"bn_mu", "bn_logvar"}
    assert set(p_enc) <= set(r_enc)
    for name in ("bn_mu", "bn_logvar"):
        assert set(r_enc[name]) == {"scale", "bias"}
        assert r_enc[name]["scale"].shape == (16,)  # tiny: z = 16
        assert set(reference["batch_stats"]["encoder"][name]) == {"mean", "var"}
        assert name not in plain["batch_stats"]["encoder"]
    # Same dense heads, same decoder.
    for name in ("mu", "logvar"):
        assert jax.tree.map(jnp.shape, p_enc[name]) == jax.tree.map(
            jnp.shape, r_enc[name]
        )
    assert jax.tree.structure(plain["params"]["decoder"]) == jax.tree.structure(
        reference["params"]["decoder"]
    )


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_reference_logvar_is_above_its_floor(train, scale):
    model, variables = build("reference")
    _, logvar = model.apply(
        variables,
        images(scale=scale),
        train=train,
        method=vae.BetaVAE.encode,
        mutable=["batch_stats"] if train else False,
    )[0 if train else slice(None)]
    logvar = np.asarray(logvar)
    # softplus(·) ≥ 0, so log σ² ≥ 1e-6 (up to float32 rounding of the sum)
    # and σ² > 1: never below the prior's variance.
    assert logvar.min() >= vae.REFERENCE_LOGVAR_FLOOR * (1 - 1e-3)
    assert (np.exp(logvar.astype(np.float64)) > 1.0).all()


def test_plain_logvar_takes_both_signs():
    model, variables = build("plain")
    _, logvar = model.apply(variables, images(), method=vae.BetaVAE.encode)
    assert float(jnp.min(logvar)) < 0.0 < float(jnp.max(logvar))


def test_reference_mu_is_batch_normalised_in_training():
    model, variables = build("reference")
    (mu, _), _ = model.apply(
        variables,
        images(),
        train=True,
        method=vae.BetaVAE.encode,
        mutable=["batch_stats"],
    )
    scale = variables["params"]["encoder"]["bn_mu"]["scale"]
    np.testing.assert_allclose(jnp.mean(mu, axis=0), 0.0, atol=1e-4)
    # The batch's spread is the BN scale (≈ 1), up to BN's ε = 1e-5.
    np.testing.assert_allclose(jnp.std(mu, axis=0), jnp.abs(scale), rtol=0.02)


# Adam's bias correction mixes int and float, which the suite's strict dtype
# promotion (conftest.py) refuses; the harness runs "standard".
@jax.numpy_dtype_promotion("standard")
@pytest.mark.parametrize("heads", vae.HEADS)
def test_training_step_runs(heads):
    model, variables = build(heads)
    tx = vae.optimizer(model.config)
    state = checkpoint.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
    )
    step = jax.jit(vae.make_train_step(model, tx, penalty_layers=None))
    new, metrics = step(state, images(), jax.random.key(3))
    assert np.isfinite(float(metrics["loss"]))
    assert float(metrics["kl"]) >= 0.0
    assert int(new.step) == 1
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new.params)
    assert all(jax.tree.leaves(moved["encoder"]["mu"]))
    if heads == "reference":
        old = state.batch_stats["encoder"]["bn_logvar"]["mean"]
        assert bool(jnp.any(new.batch_stats["encoder"]["bn_logvar"]["mean"] != old))


def test_model_config_applies_heads():
    args = argparse.Namespace(model="vae", config="tiny", image_size=None)
    assert checkpoint.model_config(args).heads == "plain"  # runs recorded before
    args.heads = None
    assert checkpoint.model_config(args).heads == "plain"
    args.heads = "reference"
    assert checkpoint.model_config(args).heads == "reference"
    args.model = "dcgan"
    with pytest.raises(ValueError, match="heads"):
        checkpoint.model_config(args)
