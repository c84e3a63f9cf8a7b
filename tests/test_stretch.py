"""The stretch group, its action, its Fourier form, and Prop. 4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdr


@pytest.mark.parametrize("d", [2, 3, 5, 13, 31])
def test_group_elements_and_inverse(d):
    g = sdr.stretch_group(d)
    np.testing.assert_array_equal(g, np.arange(1, d))
    inv = sdr.group_inverse(g, d)
    np.testing.assert_array_equal((np.asarray(g) * np.asarray(inv)) % d, 1)
    assert sorted(np.asarray(inv).tolist()) == list(range(1, d))


@pytest.mark.parametrize("d", [7, 11, 17])
def test_action_laws(d, rng):
    x = rng.normal(size=(3, d)).astype(np.float32)
    np.testing.assert_array_equal(sdr.stretch(x, 1), x)
    for g in range(1, d):
        gx = np.asarray(sdr.stretch(x, g))
        np.testing.assert_array_equal(gx, x[:, (g * np.arange(d)) % d])
        np.testing.assert_array_equal(sdr.stretch(gx, int(sdr.group_inverse(g, d))), x)
        for h in (2, d - 1):
            np.testing.assert_array_equal(
                sdr.stretch(gx, h), sdr.stretch(x, (g * h) % d)
            )


def test_action_on_several_axes(rng):
    x = rng.normal(size=(5, 4, 7)).astype(np.float32)
    got = sdr.stretch(x, 3, axes=(0, -1))
    expected = x[(3 * np.arange(5)) % 5][:, :, (3 * np.arange(7)) % 7]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("d", [5, 13, 29])
def test_fourier_form(d, rng):
    x = rng.normal(size=(2, d, d)).astype(np.float32)
    for g in range(1, d):
        lhs = sdr.stretch_fourier(jnp.fft.fft2(x), g, axes=(1, 2))
        rhs = jnp.fft.fft2(sdr.stretch(x, g, axes=(1, 2)))
        np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


def test_traced_group_element_under_vmap(rng):
    d = 11
    x = rng.normal(size=(d,)).astype(np.float32)
    group = sdr.stretch_group(d)
    batched = jax.vmap(lambda g: sdr.stretch(x, g))(group)
    looped = np.stack([np.asarray(sdr.stretch(x, int(g))) for g in group])
    np.testing.assert_array_equal(batched, looped)
    batched_f = jax.jit(jax.vmap(lambda g: sdr.stretch_fourier(x, g)))(group)
    looped_f = np.stack([np.asarray(sdr.stretch_fourier(x, int(g))) for g in group])
    np.testing.assert_array_equal(batched_f, looped_f)


def _power_of_convolution(x, k):
    return sdr.power_contrast(sdr.circular_convolve(x, k))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("d", "n", "klen"), [(7, 1, 3), (13, 5, 4), (31, 16, 5), (61, 8, 9)]
)
def test_prop4_generic_ratio_equals_sdr(seed, d, n, klen):
    # Prop. 4: the S_d-generic ratio of the power contrast of k ⊛ x is the SDR.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32) + rng.normal()
    k = rng.normal(size=(klen,)).astype(np.float32)
    rho = sdr.generic_ratio(_power_of_convolution, x, k, group=sdr.stretch_group(d))
    np.testing.assert_allclose(rho, sdr.spectral_density_ratio(x, k), rtol=1e-5)


def test_generic_ratio_other_group_and_action(rng):
    # A contrast invariant under the action gives ratio 1 whatever the group.
    x = rng.normal(size=(4, 9)).astype(np.float32)
    shift = lambda v, g: jnp.roll(v, g, axis=-1)  # noqa: E731
    rho = sdr.generic_ratio(
        lambda v, k: sdr.power_contrast(sdr.circular_convolve(v, k)),
        x,
        rng.normal(size=(3,)).astype(np.float32),
        group=jnp.arange(9),
        action=shift,
    )
    np.testing.assert_allclose(rho, 1.0, rtol=1e-5)


# --- errors name the argument and the value; dtypes hold under x64 ------------

_NOT_PRIME = "The stretch group S_d needs a prime d; {} is {}, which is not prime."


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: sdr.stretch_group(9), ValueError, _NOT_PRIME.format("d", 9)),
        (lambda: sdr.group_inverse(3, 12), ValueError, _NOT_PRIME.format("d", 12)),
        (
            lambda: sdr.group_inverse(np.float32(2.0), 7),
            TypeError,
            "`g` must hold integer group elements; got dtype float32 with shape ().",
        ),
        (
            lambda: sdr.stretch(np.zeros((3, 8)), 3),
            ValueError,
            _NOT_PRIME.format("the length of axis 1 of `x` (shape (3, 8))", 8),
        ),
        (  # axis 0 (length 5) takes g = 2; axis 1 (length 2) does not
            lambda: sdr.stretch_fourier(np.zeros((5, 2)), 2, axes=(0, 1)),
            ValueError,
            "`g` = 2 is not an element of S_2: it is divisible by 2.",
        ),
        (
            lambda: sdr.stretch(np.zeros((3, 7)), 2, axes=(2,)),
            ValueError,
            "`axes` entry 2 is out of range for `x` of rank 2.",
        ),
        (
            lambda: sdr.stretch(np.zeros((7, 7)), 2, axes=(1, -1)),
            ValueError,
            "`axes` has repeated entries: (1, -1).",
        ),
        (
            lambda: sdr.stretch(np.zeros((3, 7)), np.array([1, 2])),
            ValueError,
            "`g` must be a single group element (a scalar); got shape (2,). "
            "Use jax.vmap over group elements.",
        ),
    ],
)
def test_stretch_errors_say_which_argument_and_why(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message


def test_group_elements_stay_int32_under_x64_and_act_under_strict_promotion():
    # Under x64 a default integer is int64; the group's elements are int32 as
    # documented, and acting with them must not meet an int64 index (strict
    # promotion, as in this suite, refuses int32 * int64).
    x = np.arange(7.0, dtype=np.float32)
    with jax.enable_x64(True):
        group = sdr.stretch_group(7)
        assert group.dtype == jnp.int32
        assert sdr.group_inverse(group, 7).dtype == jnp.int32
        stretched = jax.vmap(lambda g: sdr.stretch(x, g))(group)
        back = jax.vmap(lambda g: sdr.stretch_fourier(x, g))(group)
    np.testing.assert_array_equal(stretched[1], x[(2 * np.arange(7)) % 7])
    np.testing.assert_array_equal(back[1], x[(4 * np.arange(7)) % 7])  # 2⁻¹ = 4
