"""Transformations, dtypes, bad input and the shape of the API."""

import ast
import dataclasses
import inspect
import itertools
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import sdr
import sdr_flax


def test_jit_equals_eager(rng):
    # The public functions jit their own implementation, so calling them is
    # not an eager run: `jax.disable_jit()` runs every operation one by one.
    # Both run the same float32 operations, fused and ordered differently:
    # they agree to a few roundings of the sums (~1e-6 relative here).
    x = rng.normal(size=(4, 9, 9)).astype(np.float32)
    k = rng.normal(size=(3, 3)).astype(np.float32)
    maps = rng.normal(size=(3, 6, 6, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    spectra = sdr.channel_spectra(maps)
    cases = [
        (sdr.spectral_density_ratio, (x, k)),
        (sdr.spectral_independence_penalty, (x, k)),
        (lambda m, k: sdr.conv_sdr(m, k, strides=2, transpose=True), (maps, kernel)),
        (lambda s, k: sdr.conv_penalty(s, k, include_dc=True), (spectra, kernel)),
        (sdr.channel_spectra, (maps,)),
    ]
    for fn, args in cases:
        jitted = jax.jit(fn)(*args)
        with jax.disable_jit():
            eager = fn(*args)
        np.testing.assert_allclose(jitted, eager, rtol=1e-5)


def test_vmap_equals_loop(rng):
    xs = rng.normal(size=(5, 3, 11)).astype(np.float32)
    ks = rng.normal(size=(5, 4)).astype(np.float32)
    batched = jax.vmap(sdr.spectral_density_ratio)(xs, ks)
    looped = [sdr.spectral_density_ratio(x, k) for x, k in zip(xs, ks, strict=True)]
    np.testing.assert_allclose(batched, looped, rtol=1e-6)
    maps = rng.normal(size=(3, 2, 5, 5, 2)).astype(np.float32)
    kernels = rng.normal(size=(3, 3, 3, 2, 4)).astype(np.float32)
    batched = jax.vmap(sdr.conv_sdr)(maps, kernels)
    looped = [sdr.conv_sdr(m, k) for m, k in zip(maps, kernels, strict=True)]
    np.testing.assert_allclose(batched, np.stack(looped), rtol=1e-5)
    a = rng.uniform(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(
        jax.vmap(sdr.trace_ratio)(a, a[::-1]),
        [sdr.trace_ratio(u, v) for u, v in zip(a, a[::-1], strict=True)],
        rtol=1e-6,
    )


def test_gradients_numerically(rng):
    x = rng.normal(size=(3, 7)).astype(np.float32) + 1.0
    k = rng.normal(size=(3,)).astype(np.float32)
    maps = np.abs(rng.normal(size=(3, 5, 5, 2))).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    spectra = sdr.channel_spectra(maps)
    cases = [  # (function, argument, modes)
        (lambda k: sdr.spectral_density_ratio(x, k), k, ["rev"]),
        (lambda x: sdr.spectral_density_ratio(x, k), x, ["rev"]),
        (lambda k: sdr.spectral_independence_penalty(x, k), k, ["rev", "fwd"]),
        (
            lambda k: sdr.conv_penalty(spectra, k, strides=2, transpose=True),
            kernel,
            ["rev"],
        ),
        (lambda k: sdr.conv_sdr(maps, k), kernel, ["rev"]),
    ]
    for fn, argument, modes in cases:
        check_grads(fn, (argument,), order=1, modes=modes, atol=2e-2, rtol=2e-2)


def test_conv_sdr_gradient_matches_pair_gradient(rng):
    maps = np.abs(rng.normal(size=(3, 6, 6, 2))).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    got = jax.grad(lambda k: sdr.conv_sdr(maps, k)[1, 0])(kernel)
    pair = jax.grad(sdr.spectral_density_ratio, argnums=1)(
        maps[..., 1], kernel[:, :, 1, 0]
    )
    expected = np.zeros_like(kernel)
    expected[:, :, 1, 0] = pair
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)


def test_bfloat16_inputs_computed_in_float32(rng):
    x = rng.normal(size=(4, 9)).astype(np.float32)
    k = rng.normal(size=(3,)).astype(np.float32)
    xb, kb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16)
    for f in (sdr.spectral_density_ratio, sdr.spectral_independence_penalty):
        out = f(xb, kb)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(
            out, f(np.asarray(xb, np.float32), np.asarray(kb, np.float32)), rtol=1e-6
        )
    grad = jax.grad(sdr.spectral_independence_penalty, argnums=1)(xb, kb)
    assert grad.dtype == jnp.bfloat16
    assert sdr.power_contrast(xb).dtype == jnp.float32
    assert sdr.trace_ratio(kb, kb).dtype == jnp.float32


F32 = np.ones
BAD_INPUTS = [
    # (function, args, kwargs, exception, words in the message)
    (
        sdr.spectral_density_ratio,
        (F32((4,)), F32((2,))),
        {},
        ValueError,
        ["`x`", "(4,)"],
    ),
    (
        sdr.spectral_density_ratio,
        (F32((4, 9)), F32((2, 2))),
        {},
        ValueError,
        ["`kernel`", "(2, 2)", "(4, 9)"],
    ),
    (
        sdr.spectral_density_ratio,
        (F32((4, 9)), F32((10,))),
        {},
        ValueError,
        ["larger than the grid", "(10,)", "(9,)"],
    ),
    (
        sdr.spectral_density_ratio,
        (np.ones((4, 9), np.int32), F32((2,))),
        {},
        TypeError,
        ["`x`", "int32"],
    ),
    (
        sdr.spectral_density_ratio,
        (F32((4, 9)), np.ones(2, bool)),
        {},
        TypeError,
        ["`kernel`", "bool"],
    ),
    (
        sdr.spectral_density_ratio,
        (F32((4, 1)), F32((1,))),
        {},
        ValueError,
        ["two points"],
    ),
    (
        sdr.spectral_independence_penalty,
        (F32((4, 9)), F32((3, 1))),
        {},
        ValueError,
        ["`kernel`", "(3, 1)"],
    ),
    (sdr.power_contrast, (F32((5,)),), {}, ValueError, ["`x`", "(5,)"]),
    (sdr.power_contrast, (np.ones((5, 3), np.int8),), {}, TypeError, ["int8"]),
    (sdr.trace_ratio, (F32((3,)), F32((4,))), {}, ValueError, ["(3,)", "(4,)"]),
    (sdr.trace_ratio, (np.arange(3), np.arange(3)), {}, TypeError, ["`a`"]),
    (sdr.cause_spectrum, (np.ones((3, 4), np.int32),), {}, TypeError, ["`x`"]),
    (
        sdr.kernel_spectrum,
        (F32((3, 3)), (2, 8)),
        {},
        ValueError,
        ["larger than the grid"],
    ),
    (sdr.kernel_spectrum, (F32((3,)), (8, 8)), {}, ValueError, ["rank"]),
    (
        sdr.kernel_spectrum,
        (np.ones((3, 3), np.int32), (8, 8)),
        {},
        TypeError,
        ["`kernel`", "int32"],
    ),
    (sdr.nonzero_mean, (F32((1, 1)),), {}, ValueError, ["two points", "`p`"]),
    (sdr.nonzero_mean, (np.ones((3, 3), np.int32),), {}, TypeError, ["`p`", "int32"]),
    (
        sdr.circular_convolve,
        (np.ones((3, 8), np.int32), F32((3,))),
        {},
        TypeError,
        ["`x`", "int32"],
    ),
    (
        sdr.circular_convolve,
        (F32((3, 8)), np.ones(3, np.int32)),
        {},
        TypeError,
        ["`kernel`", "int32"],
    ),
    (
        sdr.circular_convolve,
        (F32((8,)), F32((3, 3))),
        {},
        ValueError,
        ["`x`", "rank of `kernel`", "(8,)", "(3, 3)"],
    ),
    (sdr.circular_convolve, (F32((8,)), F32((3,))), {}, None, []),  # no batch axis
    (
        sdr.circular_convolve,
        (F32((2, 4)), F32((5,))),
        {},
        ValueError,
        ["larger than the grid", "(5,)", "(4,)"],
    ),
    (sdr.stretch_group, (9,), {}, ValueError, ["prime", "9"]),
    (sdr.stretch_group, (1,), {}, ValueError, ["prime"]),
    (sdr.stretch, (F32((3, 8)), 3), {}, ValueError, ["prime", "8"]),
    (sdr.stretch, (F32((3, 7)), 7), {}, ValueError, ["S_7", "7"]),
    (sdr.stretch, (F32((3, 7)), 2.0), {}, TypeError, ["`g`", "float32"]),
    (sdr.stretch, (F32((3, 7)), 2), {"axes": (2,)}, ValueError, ["axes", "rank 2"]),
    (sdr.stretch_fourier, (F32((3, 10)), 3), {}, ValueError, ["prime", "10"]),
    (sdr.group_inverse, (3, 12), {}, ValueError, ["prime", "12"]),
    (
        sdr.generic_ratio,
        (lambda c, m: c.sum(), F32((3,)), None),
        {"group": np.array([], np.int32)},
        ValueError,
        ["`group`"],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 6, 6, 3)), F32((3, 3, 4, 2))),
        {},
        ValueError,
        ["Channel mismatch", "3 channels", "(3, 3, 4, 2)"],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 6, 6, 3)), F32((3, 3, 3))),
        {},
        ValueError,
        ["`kernel`", "(3, 3, 3)"],
    ),
    (
        sdr.conv_sdr,
        (F32((6, 6, 3)), F32((3, 3, 3, 2))),
        {},
        ValueError,
        ["`kernel`", "spatial rank 1"],
    ),
    (sdr.conv_sdr, (F32((6, 3)), F32((3, 3, 2))), {}, ValueError, ["`maps`", "(6, 3)"]),
    (
        sdr.conv_sdr,
        (F32((2, 4, 4, 3)), F32((5, 5, 3, 2))),
        {},
        ValueError,
        ["larger than the grid", "(4, 4)"],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 4, 4, 3)), F32((5, 5, 3, 2))),
        {"strides": 2, "transpose": True},
        None,
        [],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 6, 6, 3)), F32((3, 3, 3, 2))),
        {"kernel_dilation": 3},
        ValueError,
        ["larger than the grid", "(7, 7)"],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 6, 6, 4)), F32((3, 3, 2, 3))),
        {"feature_group_count": 2},
        ValueError,
        ["not divisible", "feature_group_count=2"],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 6, 6, 3)), F32((3, 3, 3, 2))),
        {"strides": (1, 2, 1)},
        ValueError,
        ["`strides`", "2 positive ints"],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 6, 6, 3)), F32((3, 3, 3, 2))),
        {"strides": 0},
        ValueError,
        ["`strides`"],
    ),
    (
        sdr.conv_sdr,
        (np.ones((2, 6, 6, 3), np.int32), F32((3, 3, 3, 2))),
        {},
        TypeError,
        ["`maps`", "int32"],
    ),
    (
        sdr.conv_penalty,
        (F32((3,)), F32((3, 3, 3, 2))),
        {},
        ValueError,
        ["`spectra`", "(3,)"],
    ),
    (
        sdr.conv_penalty,
        (F32((2, 6, 6)), F32((3, 3, 3, 2))),
        {},
        ValueError,
        ["Channel mismatch"],
    ),
    (
        sdr.conv_sdr,
        (F32((2, 6, 6, 3)), F32((3, 3, 3, 2))),
        {"stride": 2},
        TypeError,
        ["'stride'", "`strides`"],
    ),
    (
        sdr.conv_penalty,
        (F32((3, 6, 6)), F32((3, 3, 3, 2))),
        {"groups": 3},
        TypeError,
        ["'groups'", "`feature_group_count`"],
    ),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "error", "words"), BAD_INPUTS)
def test_bad_input(fn, args, kwargs, error, words):
    if error is None:  # the valid neighbour of a bad case
        fn(*args, **kwargs)
        return
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_input_under_jit_and_vmap():
    with pytest.raises(ValueError, match="larger than the grid"):
        jax.jit(sdr.spectral_density_ratio)(
            np.ones((4, 9), np.float32), np.ones(10, np.float32)
        )
    with pytest.raises(ValueError, match="prime"):
        jax.vmap(lambda g: sdr.stretch(np.ones(8, np.float32), g))(np.arange(1, 4))


def test_optional_arguments_are_keyword_only():
    # As dm_pix's api test: hyper-parameters with defaults are keyword-only.
    for name in sdr.__all__:
        fn = getattr(sdr, name)
        if not callable(fn):
            continue
        signature = inspect.signature(fn)
        for parameter in signature.parameters.values():
            if parameter.default is not inspect.Parameter.empty:
                assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (
                    name,
                    parameter,
                )


def _record_type(obj):
    return inspect.isclass(obj) and (
        dataclasses.is_dataclass(obj)
        or (issubclass(obj, tuple) and hasattr(obj, "_fields"))
    )


# Every callable of sdr_flax's API except its dataclasses and NamedTuples
# (`LayerSpectra`, `LayerSummary`, `Modules`, `SpectralIndependenceState`):
# those are state and result types that the library builds and users read, so
# their fields are data, positional by construction (a NamedTuple's must be),
# not hyper-parameters.
FLAX_FUNCTIONS = [
    name
    for name in sdr_flax.__all__
    if callable(getattr(sdr_flax, name)) and not _record_type(getattr(sdr_flax, name))
]
# The one defaulted argument each of these takes positionally, by design: the
# transform's rate as Optax's optimisers take theirs (`optax.adam(1e-3)`,
# `spectral_independence(0.5)`), and the stretch factor of the paper's
# intervention (`stretch_maps(maps, 1.5)`). Every other optional argument of
# theirs must still be keyword-only.
POSITIONAL_DEFAULTS = {
    "spectral_independence": "learning_rate",
    "stretch_maps": "factor",
}


@pytest.mark.parametrize("name", FLAX_FUNCTIONS)
def test_flax_optional_arguments_are_keyword_only(name):
    # The same rule as `test_optional_arguments_are_keyword_only`, for sdr_flax.
    signature = inspect.signature(getattr(sdr_flax, name))
    for parameter in signature.parameters.values():
        if parameter.default is inspect.Parameter.empty:
            continue
        if parameter.name == POSITIONAL_DEFAULTS.get(name):
            assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            continue
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (name, parameter)


def _attribute_doc(package, name):
    """The docstring under `name = ...` at the top level of one of the
    package's modules, or None."""
    for path in pathlib.Path(package.__file__).parent.glob("*.py"):
        body = ast.parse(path.read_text()).body
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == name for t in node.targets)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                return after.value.value
    return None


def test_every_public_name_is_documented():
    for module in (sdr, sdr_flax):
        for name in module.__all__:
            obj = getattr(module, name)
            if not (callable(obj) or inspect.ismodule(obj)):  # a constant
                assert _attribute_doc(module, name), name
                continue
            doc = inspect.getdoc(obj)
            assert doc and len(doc.splitlines()) >= 3, name
    for name in (
        "spectral_density_ratio",
        "power_contrast",
        "trace_ratio",
        "generic_ratio",
        "spectral_independence_penalty",
        "conv_sdr",
        "conv_penalty",
    ):
        doc = inspect.getdoc(getattr(sdr, name))
        assert "References:" in doc and "Besserve et al., 2021" in doc, name
        assert "Args:" in doc and "Returns:" in doc, name


def test_generic_band_is_the_band_of_the_summaries():
    band = sdr_flax.GENERIC_BAND
    r = np.asarray([band * 0.999, 1 / (band * 0.999), band * 1.001, 1.0])
    (summary,) = sdr_flax.summarize({"layer": r})
    assert summary.generic_share == pytest.approx(0.75)


def test_sdr_flax_imports_no_private_module_of_sdr():
    for path in pathlib.Path(sdr_flax.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [
                    f"{node.module}.{a.name}" for a in node.names
                ]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                assert not (
                    parts[0] == "sdr" and any(p.startswith("_") for p in parts)
                ), (
                    path.name,
                    name,
                )


def test_import_sdr_leaves_the_toys_unimported():
    code = "import sys, sdr; print('sdr.toys' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    from sdr import toys

    assert toys.__name__ == "sdr.toys"
