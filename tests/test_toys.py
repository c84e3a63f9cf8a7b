"""The toy models of `sdr.toys` and the drift of their training (fast sizes)."""

import inspect
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdr
from sdr import toys

EYE = np.array([0.2, 1.0, 1.5, 1.0, 0.2], np.float32)


def closed_form_1d(d, eye):
    """The closed form of docs/theory.md ("The zero frequency"): the SDR of the
    true 1-D eye generator, zero frequency excluded."""
    k = np.asarray(eye, np.float64)
    energy, k0 = np.sum(k**2), np.sum(k) ** 2
    return (2 * d * energy - 4 * k0) * (d - 1) / ((2 * d - 4) * (d * energy - k0))


# --------------------------------------------------------------------------
# Example 1: the true eye generator


@pytest.mark.parametrize(("d", "distance"), [(31, 9), (31, 15), (37, 5), (101, 40)])
def test_true_eye_generator_sdr_is_the_closed_form(d, distance):
    true = toys.eye_generator(d, distance)
    np.testing.assert_array_equal(true.k2[:5], EYE)
    assert float(true.k1.sum()) == 2.0 and true.k1[0] == 1 and true.k1[distance] == 1
    cause = true.k1[None]  # V = k1 ⊛ Z, Z the Dirac at the origin
    rho = sdr.spectral_density_ratio(cause, true.k2)
    np.testing.assert_allclose(rho, closed_form_1d(d, EYE), rtol=1e-5)
    np.testing.assert_allclose(toys.eye_generator_sdr(d, distance), rho, rtol=1e-5)
    rho_dc = sdr.spectral_density_ratio(cause, true.k2, include_dc=True)
    np.testing.assert_allclose(rho_dc, 1.0, atol=2e-6)
    assert toys.eye_generator_sdr(d, distance, include_dc=True) == 1.0  # exact: r = 0


def test_theory_page_example_value():
    # docs/theory.md: ρ ≈ 0.902 for d = 31 and the eye [0.2, 1, 1.5, 1, 0.2].
    assert round(toys.eye_generator_sdr(31, 9), 3) == 0.902


@pytest.mark.parametrize(
    ("grid", "distance"), [(31, 3), (31, 29), ((13, 31), 10), ((13, 31), 4)]
)
def test_closed_form_with_overlap_and_in_2d(grid, distance):
    # Overlapping eyes (distance < δ or > d − δ) and 2-D grids: the general
    # closed form, and ρ ≠ 1 with the zero frequency once the eyes overlap.
    true = toys.eye_generator(grid, distance)
    for include_dc in (False, True):
        np.testing.assert_allclose(
            sdr.spectral_density_ratio(true.k1[None], true.k2, include_dc=include_dc),
            toys.eye_generator_sdr(grid, distance, include_dc=include_dc),
            rtol=2e-5,
        )
    delta = true.eye.shape[0]
    overlap = not delta <= distance <= np.atleast_1d(grid)[-1] - delta
    assert (toys.eye_generator_sdr(grid, distance, include_dc=True) != 1.0) == overlap


@pytest.mark.parametrize("grid", [31, (13, 31)])
def test_stretch_moves_the_eye_and_keeps_its_shape(grid):
    # Fig. 2, top row: g · k1 puts the second eye at g⁻¹ · distance mod d.
    true = toys.eye_generator(grid, 10)
    d = true.k1.shape[-1]
    for g in (1, 2, 7, d - 1):
        target = (pow(g, -1, d) * 10) % d
        image = np.asarray(toys.stretch_extrapolate(true.k1, true.k2, g))
        expected = np.asarray(true.k2) + np.roll(np.asarray(true.k2), target, axis=-1)
        np.testing.assert_allclose(image, expected, atol=1e-5)


def test_model1_with_dirac_latents():
    true = toys.eye_generator(31, 9)
    pi = np.full(31, 1 / 31, np.float32)
    z = toys.sample_dirac(jax.random.key(0), pi, 6)
    assert z.shape == (6, 31) and np.all(np.asarray(z).sum(1) == 1)
    x = np.asarray(toys.model1(true.k1, EYE, z))  # k2 given smaller than the grid
    image = np.asarray(toys.stretch_extrapolate(true.k1, true.k2, 1))
    for row, zi in zip(x, np.asarray(z), strict=True):
        np.testing.assert_allclose(row, np.roll(image, int(np.argmax(zi))), atol=1e-5)


def test_sample_dirac_follows_pi():
    pi = np.zeros((5, 7), np.float32)
    pi[0, 0], pi[2, 3], pi[4, 6] = 0.5, 0.3, 0.2
    z = np.asarray(toys.sample_dirac(jax.random.key(1), pi, 4000))
    freq = z.mean(0)
    assert freq[pi == 0].sum() == 0
    np.testing.assert_allclose(freq[pi > 0], pi[pi > 0], atol=0.03)


def test_model2():
    a, b = np.array([1.0, 2.0, 0.5], np.float32), np.array([3.0, 0.5, 2.0], np.float32)
    z = np.abs(np.random.default_rng(0).normal(size=(4, 3))).astype(np.float32)
    np.testing.assert_allclose(toys.model2(a, b, z), z * a * b, rtol=1e-6)


# --------------------------------------------------------------------------
# Extrapolation


def test_extrapolation_error_vanishes_exactly_on_the_equivalence_class(rng):
    # Prop. 2: (k̂1/λ, λ k̂2) with one λ extrapolates like the truth.
    true = toys.eye_generator(31, 9)
    for lam in (2.0, -0.5):
        err = toys.extrapolation_error(true.k1 / lam, true.k2 * lam, *true[:2])
        assert err.shape == (30,)
        np.testing.assert_allclose(err, 0.0, atol=1e-10)
    # A translation is in the solution set but not S-equivalent: shifting k1
    # right and k2 left fits the data (g = 1) and fails for other g.
    err = toys.extrapolation_error(
        jnp.roll(true.k1, 3), jnp.roll(true.k2, -3), true.k1, true.k2
    )
    assert float(err[0]) < 1e-10 and float(jnp.min(err[1:])) > 0.1
    # Agrees with the spatial definition.
    k1 = rng.normal(size=31).astype(np.float32)
    k2 = rng.normal(size=5).astype(np.float32)
    err = toys.extrapolation_error(k1, k2, true.k1, true.k2)
    for g in (1, 4, 30):
        x = toys.stretch_extrapolate(k1, k2, g)
        x_true = toys.stretch_extrapolate(true.k1, true.k2, g)
        np.testing.assert_allclose(
            err[g - 1], jnp.sum((x - x_true) ** 2) / jnp.sum(x_true**2), rtol=1e-4
        )


def test_balanced_kernels():
    true = toys.eye_generator(31, 9)
    k1, k2 = toys.balanced_kernels(true.k1, true.k2)
    np.testing.assert_allclose(
        toys.stretch_extrapolate(k1, k2, 1),
        toys.stretch_extrapolate(true.k1, true.k2, 1),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        jnp.abs(jnp.fft.fft(k1)), jnp.abs(jnp.fft.fft(k2)), rtol=1e-4, atol=1e-5
    )
    # ρ of the balanced pair is ⟨|ĉ|²⟩ / ⟨|ĉ|⟩² (Cauchy–Schwarz: ≥ 1).
    c2 = (
        np.abs(np.fft.fft(np.asarray(true.k1, np.float64))) ** 2
        * np.abs(np.fft.fft(np.asarray(true.k2, np.float64))) ** 2
    )
    expected = np.mean(c2[1:]) / np.mean(np.sqrt(c2[1:])) ** 2
    np.testing.assert_allclose(
        sdr.spectral_density_ratio(k1[None], k2), expected, rtol=1e-4
    )
    assert expected > 2.0


# --------------------------------------------------------------------------
# Drift on |c − ab|² (Sec. 3.2, Fig. 3a)


def test_gradient_flow_conserves_a2_minus_b2():
    starts = np.array([[0.2, 0.3], [2.5, 1.5], [0.1, 2.0]], np.float32)

    def run(a0, b0, lr):
        return toys.product_sgd(
            jax.random.key(0), a0, b0, 1.0, lr=lr, steps=4000, record_every=100
        )

    drifts = {}
    for lr in (4e-3, 2e-3):
        path = jax.vmap(lambda s, lr=lr: run(s[0], s[1], lr))(starts)
        q = np.asarray(path.a, np.float64) ** 2 - np.asarray(path.b, np.float64) ** 2
        np.testing.assert_allclose(path.a[:, -1] * path.b[:, -1], 1.0, atol=1e-4)
        drifts[lr] = np.abs(q[:, -1] - q[:, 0]) / np.abs(q[:, 0])
        assert np.all(drifts[lr] < 2e-2)
    # The discrete drift is O(η): halving the step halves it (flow: 0).
    np.testing.assert_allclose(drifts[4e-3] / drifts[2e-3], 2.0, rtol=0.15)


def test_each_gd_step_shrinks_a2_minus_b2_by_one_minus_4_eta2_e2():
    lr = 0.05
    path = toys.product_sgd(jax.random.key(0), 0.3, 1.8, 1.0, lr=lr, steps=50)
    a, b = np.asarray(path.a, np.float64), np.asarray(path.b, np.float64)
    q, e = a**2 - b**2, 1.0 - a * b
    np.testing.assert_allclose(q[1:], q[:-1] * (1 - 4 * lr**2 * e[:-1] ** 2), rtol=1e-5)


def test_sgd_drifts_to_a_equal_b():
    # From (2, 0.5) on the solution set, mean over 32 seeds: a² − b² decays at
    # a rate of at least 4η²σ² (each step multiplies it by 1 − 4η²e², and
    # E e² ≥ σ²) and (a, b) approaches (1, 1).
    lr, sigma, steps = 0.02, 0.5, 6000
    keys = jax.random.split(jax.random.key(2), 32)
    path = jax.vmap(
        lambda k: toys.product_sgd(
            k, 2.0, 0.5, 1.0, lr=lr, steps=steps, noise=sigma, record_every=2000
        )
    )(keys)
    a, b = np.asarray(path.a, np.float64), np.asarray(path.b, np.float64)
    q = (a**2 - b**2).mean(0)
    rate = -np.log(q[-1] / q[0]) / steps
    predicted = 4 * lr**2 * sigma**2
    assert predicted * 0.95 < rate < predicted * 1.3, (rate, predicted)
    assert np.all(np.diff(q) < 0) and q[-1] < 0.15 * q[0]
    distance = np.hypot(a - 1, b - 1).mean(0)
    assert distance[0] > 1.1 and distance[-1] < 0.35 * distance[0]
    # Without noise nothing drifts.
    gd = toys.product_sgd(jax.random.key(0), 2.0, 0.5, 1.0, lr=lr, steps=steps)
    np.testing.assert_allclose(gd.a[-1] ** 2 - gd.b[-1] ** 2, 3.75, rtol=1e-5)


def test_stale_gradient_sgd():
    key = jax.random.key(3)
    kwargs = {"lr": 0.05, "steps": 40, "noise": 0.3}
    plain = toys.product_sgd(key, 1.5, 0.8, 1.0, **kwargs)
    # delay 0 via the history buffer is plain SGD: bit for bit on the CPU, else a
    # few ulp per step (40 · 4 ε ≈ 2e-5); a delay of one step parts them by 0.036.
    buffered = toys.product_sgd(key, 1.5, 0.8, 1.0, delay=0, max_delay=5, **kwargs)
    np.testing.assert_allclose(plain.a, buffered.a, rtol=2e-5, atol=1e-6)
    # A traced delay (vmapped) equals the same static delay.
    traced = jax.vmap(
        lambda t: toys.product_sgd(key, 1.5, 0.8, 1.0, delay=t, max_delay=5, **kwargs)
    )(jnp.array([0, 3]))
    static = toys.product_sgd(key, 1.5, 0.8, 1.0, delay=3, **kwargs)
    np.testing.assert_allclose(traced.a[1], static.a, rtol=1e-6)
    np.testing.assert_allclose(traced.a[0], plain.a, rtol=1e-6)
    # Against a NumPy loop of the definition, with the same targets.
    tau = 3
    xi = np.array(
        [float(jax.random.normal(jax.random.fold_in(key, t), ())) for t in range(40)]
    )
    a, b = [1.5], [0.8]
    for t in range(40):
        sa, sb = a[max(t - tau, 0)], b[max(t - tau, 0)]
        e = 1.0 + 0.3 * xi[t] - sa * sb
        a.append(a[-1] + 2 * 0.05 * e * sb)
        b.append(b[-1] + 2 * 0.05 * e * sa)
    np.testing.assert_allclose(static.a, a, rtol=1e-4)
    np.testing.assert_allclose(static.b, b, rtol=1e-4)


# --------------------------------------------------------------------------
# Example 1 under SGD, with and without the penalty (Sec. 3.3–3.4)


def test_fourier_sgd_is_sgd_on_the_kernels(rng):
    # One noiseless step in Fourier equals a gradient step on the real kernels
    # for ‖X − k2 ⊛ k1‖² (Parseval), and |k̂1|² − |k̂2|² shrinks by exactly
    # 1 − 4η²|e|² at every frequency.
    true = toys.eye_generator(31, 9)
    target = toys.stretch_extrapolate(true.k1, true.k2, 1)
    k1 = rng.normal(0, 0.5, 31).astype(np.float32)
    k2 = rng.normal(0, 0.5, 31).astype(np.float32)
    lr = 0.01
    path = toys.fourier_sgd(jax.random.key(0), k1, k2, target, lr=lr, steps=1)

    def loss(k1, k2):
        return jnp.sum((target - sdr.circular_convolve(k1, k2)) ** 2)

    g1, g2 = jax.grad(loss, argnums=(0, 1))(k1, k2)
    np.testing.assert_allclose(path.k1[1], k1 - lr * g1, atol=1e-5)
    np.testing.assert_allclose(path.k2[1], k2 - lr * g2, atol=1e-5)
    a, b = np.fft.fft(k1.astype(np.float64)), np.fft.fft(k2.astype(np.float64))
    e = np.fft.fft(np.asarray(target, np.float64)) - a * b
    gap = np.abs(a) ** 2 - np.abs(b) ** 2
    a1 = np.fft.fft(np.asarray(path.k1[1], np.float64))
    b1 = np.fft.fft(np.asarray(path.k2[1], np.float64))
    np.testing.assert_allclose(
        np.abs(a1) ** 2 - np.abs(b1) ** 2,
        gap * (1 - 4 * lr**2 * np.abs(e) ** 2),
        atol=1e-4,
    )


@pytest.fixture(scope="module")
def eye_runs():
    """SGD from the true eye generator, without and with the penalty, 3 seeds."""
    true = toys.eye_generator(31, 9)
    target = toys.stretch_extrapolate(true.k1, true.k2, 1)
    rates = jnp.array([0.0] * 3 + [0.25] * 3)
    path = jax.jit(
        jax.vmap(
            lambda k, r: toys.fourier_sgd(
                k,
                true.k1,
                true.k2,
                target,
                lr=0.03,
                steps=4000,
                noise=0.1,
                penalty_rate=r,
                record_every=100,
            )
        )
    )(jax.random.split(jax.random.key(4), 6), rates)

    def measure(k1, k2):
        return (
            sdr.spectral_density_ratio(k1[None], k2),
            sdr.spectral_density_ratio(k1[None], k2, include_dc=True),
            jnp.mean(jnp.abs(jnp.log(jnp.abs(jnp.fft.fft(k1) / jnp.fft.fft(k2))))),
            jnp.sum((toys.stretch_extrapolate(k1, k2, 1) - target) ** 2),
        )

    rho, rho_dc, gap, fit = jax.vmap(jax.vmap(measure))(path.k1, path.k2)
    return true, target, np.asarray(rho), np.asarray(rho_dc), np.asarray(gap), fit


def test_sgd_moduli_converge_and_sdr_exceeds_the_truth(eye_runs):
    true, target, rho, rho_dc, gap, fit = eye_runs
    plain = slice(0, 3)
    # |k̂1|² and |k̂2|² converge towards each other...
    assert np.all(gap[plain, -1] < 0.2 * gap[plain, 0])
    # ... while the data stay fitted (relative squared error < 5 %).
    assert np.all(np.asarray(fit[plain, -1]) < 0.05 * float(jnp.sum(target**2)))
    # The SGD solution is not generic: its SDR is far above the truth's.
    rho_true = toys.eye_generator_sdr(31, 9)
    np.testing.assert_allclose(rho[plain, 0], rho_true, rtol=1e-5)
    assert np.all(rho[plain, -5:] > rho_true + 1.0)
    assert np.all(rho_dc[plain, -5:] > 2.0)
    # ... and close to the balanced limit |k̂1| = |k̂2| = √|ĉ|.
    balanced = toys.balanced_kernels(true.k1, true.k2)
    limit = float(sdr.spectral_density_ratio(balanced[0][None], balanced[1]))
    np.testing.assert_allclose(rho[plain, -5:].mean(), limit, rtol=0.08)


def test_penalty_brings_the_sdr_back_to_one(eye_runs):
    _, target, _, rho_dc, _, fit = eye_runs
    penalised = slice(3, 6)
    np.testing.assert_allclose(rho_dc[penalised, -10:].mean(1), 1.0, atol=0.04)
    assert np.all(rho_dc[0:3, -10:].mean(1) > 2.0)
    assert np.all(np.asarray(fit[penalised, -1]) < 0.06 * float(jnp.sum(target**2)))


def test_penalty_start_delays_the_penalty():
    true = toys.eye_generator(31, 9)
    target = toys.stretch_extrapolate(true.k1, true.k2, 1)
    key = jax.random.key(5)
    kwargs = {"lr": 0.03, "steps": 20, "noise": 0.2, "record_every": 10}
    plain = toys.fourier_sgd(key, true.k1, true.k2, target, **kwargs)
    late = toys.fourier_sgd(
        key, true.k1, true.k2, target, penalty_rate=0.25, penalty_start=10, **kwargs
    )
    # Rate 0 before the start: the same steps up to a few ulp (starting at once
    # parts them by 0.067); then k2 moves towards generic (ρ 1.02, not 1.14).
    atol = 1e-5 * float(jnp.max(jnp.abs(plain.k2)))
    np.testing.assert_allclose(plain.k2[1], late.k2[1], rtol=0, atol=atol)
    rho = [
        sdr.spectral_density_ratio(p.k1[2][None], p.k2[2], include_dc=True)
        for p in (plain, late)
    ]
    assert abs(rho[1] - 1) < 0.5 * abs(rho[0] - 1), rho


# --------------------------------------------------------------------------
# Bad input and the shape of the API


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: toys.eye_generator(30, 9), ValueError, ["prime", "30"]),
        (lambda: toys.eye_generator((12, 31), 9), ValueError, ["prime", "12"]),
        (lambda: toys.eye_generator((5, 5, 5), 1), ValueError, ["1-D", "2-D"]),
        (lambda: toys.eye_generator(31, 0), ValueError, ["`distance`", "1 … 30"]),
        (lambda: toys.eye_generator(31, 31), ValueError, ["`distance`"]),
        (
            lambda: toys.eye_generator(7, 2, eye=np.ones(7, np.float32)),
            ValueError,
            ["δ = 7", "d = 7"],
        ),
        (
            lambda: toys.eye_generator((13, 31), 9, eye=np.ones((3, 4), np.float32)),
            ValueError,
            ["square"],
        ),
        (
            lambda: toys.eye_generator(31, 9, eye=np.ones(5, np.int32)),
            TypeError,
            ["`eye`", "int32"],
        ),
        (
            lambda: toys.model1(np.ones(3), np.ones(40), np.ones((2, 31))),
            ValueError,
            ["`k2`", "larger than the grid"],
        ),
        (
            lambda: toys.model1(np.ones(3), np.ones(3), np.ones((2, 32))),
            ValueError,
            ["prime", "32"],
        ),
        (
            lambda: toys.model1(np.ones((3, 3)), np.ones(3), np.ones((2, 31))),
            ValueError,
            ["`k1`", "rank"],
        ),
        (
            lambda: toys.sample_dirac(jax.random.key(0), np.full(31, 0.1), 3),
            ValueError,
            ["`pi`", "sum to 1"],
        ),
        (
            lambda: toys.sample_dirac(jax.random.key(0), np.full(31, 1 / 31), 0),
            ValueError,
            ["`n`"],
        ),
        (
            lambda: toys.stretch_extrapolate(np.ones(6), np.ones(3), 2),
            ValueError,
            ["`k1`", "prime"],
        ),
        (
            lambda: toys.stretch_extrapolate(np.ones(7), np.ones(3), 7),
            ValueError,
            ["S_7"],
        ),
        (
            lambda: toys.extrapolation_error(
                np.ones(7), np.ones(3), np.ones(11), np.ones(3)
            ),
            ValueError,
            ["same grid", "(7,)", "(11,)"],
        ),
        (
            lambda: toys.model2(np.ones(3), np.ones(4), np.ones((2, 3))),
            ValueError,
            ["(3,)", "(4,)"],
        ),
        (
            lambda: toys.product_sgd(jax.random.key(0), 1.0, 1.0, 1.0, lr=0.1, steps=10,
                                     record_every=3),
            ValueError,
            ["multiple", "`record_every`"],
        ),
        (
            lambda: toys.product_sgd(jax.random.key(0), 1.0, 1.0, 1.0, lr=0.1, steps=10,
                                     delay=4, max_delay=2),
            ValueError,
            ["`delay`", "0 … 2"],
        ),
        (
            lambda: toys.product_sgd(jax.random.key(0), 1.0, 1.0, 1.0, lr=0.1, steps=10,
                                     delay=jnp.array(1)),
            ValueError,
            ["`max_delay`"],
        ),
        (
            lambda: toys.product_sgd(jax.random.key(0), np.ones(2), 1.0, 1.0, lr=0.1,
                                     steps=10),
            ValueError,
            ["same shape"],
        ),
        (
            lambda: toys.fourier_sgd(jax.random.key(0), np.ones(3), np.ones(3),
                                     np.ones(10), lr=0.1, steps=10),
            ValueError,
            ["prime", "10"],
        ),
        (
            lambda: toys.fourier_sgd(jax.random.key(0), np.ones(12), np.ones(3),
                                     np.ones(11), lr=0.1, steps=10),
            ValueError,
            ["`k1`", "larger than the grid"],
        ),
        (
            lambda: toys.fourier_sgd(jax.random.key(0), np.ones(3), np.ones(3),
                                     np.ones(11), lr=0.1, steps=10, penalty_steps=-1),
            ValueError,
            ["`penalty_steps`"],
        ),
    ],
)  # fmt: skip
def test_bad_input(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_public_names_are_documented_and_keyword_only():
    for name in toys.__all__:
        obj = getattr(toys, name)
        if isinstance(obj, np.ndarray):
            continue
        doc = inspect.getdoc(obj)
        assert doc and len(doc.splitlines()) >= 3, name
        if inspect.isfunction(obj):
            assert "Args:" in doc and "Returns:" in doc and "Raises:" in doc, name
            assert "Besserve et al., 2021" in doc, name
            for parameter in inspect.signature(obj).parameters.values():
                if parameter.default is not inspect.Parameter.empty:
                    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (
                        name,
                        parameter,
                    )


def test_import_sdr_leaves_the_toys_out():
    code = "import sys, sdr; assert 'sdr.toys' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
