"""No retracing: one compilation per shape and geometry, however spelt."""

import itertools

import chex
import jax
import numpy as np
from helpers import count_conv_traces

import sdr


def test_no_retracing_for_equal_shapes(rng):
    chex.clear_trace_counter()  # the counts of earlier runs of this test

    @jax.jit
    @chex.assert_max_traces(n=1)
    def measure(maps, kernel, x, k):
        return sdr.conv_sdr(maps, kernel, strides=2), sdr.spectral_density_ratio(x, k)

    for seed in range(3):
        rng = np.random.default_rng(seed)
        measure(
            rng.normal(size=(2, 6, 6, 2)).astype(np.float32),
            rng.normal(size=(3, 3, 2, 2)).astype(np.float32),
            rng.normal(size=(2, 7)).astype(np.float32),
            rng.normal(size=(3,)).astype(np.float32),
        )


# A batch size no other test uses, new at each call: the library's jit cache
# has never seen it, whatever ran before in this process.
_FRESH_BATCH = itertools.count(1001)


def test_conv_sdr_compiles_once_per_shape_and_geometry(monkeypatch):
    # The library jits its implementation with the geometry as a static
    # argument, normalised first: every spelling of one geometry must hit the
    # same cache entry.
    traces = count_conv_traces(monkeypatch)
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(next(_FRESH_BATCH), 5, 5, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    first = sdr.conv_sdr(maps, kernel, strides=(2, 2), transpose=True)
    assert len(traces) == 1  # a shape never seen: one trace
    for strides in (2, [2, 2], np.array([2, 2]), (np.int64(2), 2)):
        again = sdr.conv_sdr(maps, kernel, strides=strides, transpose=True)
        np.testing.assert_allclose(again, first, rtol=1e-6)
    geometry = sdr.ConvGeometry.of_layer(strides=2, transpose=True)
    sdr.conv_sdr(maps + 1.0, kernel, geometry=geometry)  # new values, same shape
    assert len(traces) == 1, traces
    sdr.conv_sdr(maps, kernel, strides=2)  # another geometry: one more trace
    assert len(traces) == 2, traces
