"""Checks that close gaps found by mutation testing of the numerical core
(`sdr._spectra`, `sdr._ratio`, `sdr._conv`) and of the Optax transform: each
test pins a behaviour that a small change of the code would break while the
rest of the fast tests still passed."""

import numpy as np
import pytest

import sdr

F32 = np.float32


def _ints(*shape):
    return np.ones(shape, np.int32)


def _floats(*shape):
    return np.ones(shape, F32)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: sdr.cause_spectrum(_ints(2, 4)), "x"),
        (lambda: sdr.kernel_spectrum(_ints(3), (8,)), "kernel"),
        (lambda: sdr.circular_convolve(_ints(2, 8), _floats(3)), "x"),
        (lambda: sdr.circular_convolve(_floats(2, 8), _ints(3)), "kernel"),
        (lambda: sdr.nonzero_mean(_ints(4)), "p"),
    ],
    ids=[
        "cause_spectrum-x",
        "kernel_spectrum-kernel",
        "convolve-x",
        "convolve-kernel",
        "nonzero_mean-p",
    ],
)
def test_spectra_type_errors_name_the_offending_argument(call, name):
    with pytest.raises(TypeError, match=f"`{name}` must be a real floating-point"):
        call()


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: sdr.cause_spectrum(_floats(4)), "at least one spatial axis"),
        (lambda: sdr.kernel_spectrum(_floats(3), (8, 8)), "rank of the grid"),
        (lambda: sdr.kernel_spectrum(_floats(5, 5), (4, 4)), "larger than the grid"),
        (
            lambda: sdr.circular_convolve(_floats(3), _floats(2, 2)),
            "at least the rank of `kernel`",
        ),
        (
            lambda: sdr.circular_convolve(_floats(2, 4, 4), _floats(5, 5)),
            "larger than the grid",
        ),
        (lambda: sdr.nonzero_mean(_floats(1, 1)), "spatial grid of `p` must have"),
    ],
    ids=[
        "cause_spectrum-rank",
        "kernel_spectrum-rank",
        "kernel_spectrum-too-large",
        "convolve-rank",
        "convolve-too-large",
        "nonzero_mean-grid",
    ],
)
def test_spectra_value_errors_say_what_is_wrong(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_circular_convolve_takes_one_signal_without_a_batch_axis(rng):
    # x of the kernel's rank is one signal (no batch axis), not an error.
    x = rng.normal(size=(9,)).astype(F32)
    k = rng.normal(size=(3,)).astype(F32)
    expected = [sum(k[a] * x[(m - a) % 9] for a in range(3)) for m in range(9)]
    np.testing.assert_allclose(sdr.circular_convolve(x, k), expected, atol=1e-5)
