"""`sdr.ConvGeometry`: one value for how a conv kernel meets its maps."""

import dataclasses

import jax
import numpy as np
import pytest
from helpers import count_conv_traces

import sdr

MAPS = np.abs(np.random.default_rng(0).normal(size=(3, 6, 5, 4))).astype(np.float32)
KERNEL = np.random.default_rng(1).normal(size=(3, 3, 2, 4)).astype(np.float32)


def test_fields_are_normalised_and_hashable():
    g = sdr.ConvGeometry(input_dilation=[2, np.int64(3)], kernel_dilation=np.int32(2))
    assert g.input_dilation == (2, 3) and type(g.input_dilation[1]) is int
    assert g.kernel_dilation == 2 and type(g.kernel_dilation) is int
    assert g.feature_group_count == 1
    same = sdr.ConvGeometry(input_dilation=(2, 3), kernel_dilation=2)
    assert g == same and hash(g) == hash(same)
    assert {g: 1}[same] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.input_dilation = 1
    # A pytree without leaves: it passes through jit as static structure.
    assert jax.tree_util.tree_leaves(g) == []
    assert jax.jit(lambda geometry, x: x * geometry.feature_group_count)(g, 2.0) == 2.0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"input_dilation": 0}, ["`input_dilation`", "positive"]),
        ({"input_dilation": (2, 0)}, ["`input_dilation`"]),
        ({"input_dilation": [[2]]}, ["`input_dilation`"]),
        ({"input_dilation": 1.5}, ["`input_dilation`"]),
        ({"input_dilation": True}, ["`input_dilation`"]),
        ({"input_dilation": "22"}, ["`input_dilation`"]),
        ({"kernel_dilation": -1}, ["`kernel_dilation`"]),
        ({"feature_group_count": 0}, ["`feature_group_count`", "positive int"]),
        ({"feature_group_count": (2,)}, ["`feature_group_count`"]),
        (
            {"input_dilation": (2, 2), "kernel_dilation": (1, 1, 1)},
            ["the same number", "(2, 2)", "(1, 1, 1)"],
        ),
    ],
)
def test_bad_fields(kwargs, words):
    with pytest.raises(ValueError) as info:
        sdr.ConvGeometry(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_of_layer_per_axis_grid_and_extent():
    # A strided conv is measured on its input grid: the stride does not enter.
    assert sdr.ConvGeometry.of_layer(strides=2) == sdr.ConvGeometry()
    g = sdr.ConvGeometry.of_layer(
        strides=[2, 3], transpose=True, kernel_dilation=2, feature_group_count=2
    )
    assert g == sdr.ConvGeometry(
        input_dilation=(2, 3), kernel_dilation=2, feature_group_count=2
    )
    assert g.per_axis(2).kernel_dilation == (2, 2)
    assert g.grid((6, 5)) == (12, 15)
    assert g.kernel_extent((3, 2)) == (5, 3)
    with pytest.raises(ValueError, match=r"`input_dilation`.*3 positive ints"):
        g.per_axis(3)
    with pytest.raises(ValueError, match="`strides`"):
        sdr.ConvGeometry.of_layer(strides=0)


def test_geometry_keyword_equals_layer_keywords():
    spectra = sdr.channel_spectra(MAPS)
    kwargs = {"strides": 2, "transpose": True, "feature_group_count": 2}
    g = sdr.ConvGeometry.of_layer(**kwargs)
    np.testing.assert_array_equal(
        sdr.conv_sdr(MAPS, KERNEL, geometry=g), sdr.conv_sdr(MAPS, KERNEL, **kwargs)
    )
    np.testing.assert_array_equal(
        sdr.conv_pair_gaps(spectra, KERNEL, geometry=g),
        sdr.conv_pair_gaps(spectra, KERNEL, **kwargs),
    )
    np.testing.assert_array_equal(
        sdr.conv_penalty(spectra, KERNEL, geometry=g),
        sdr.conv_penalty(spectra, KERNEL, **kwargs),
    )


def test_any_sequence_works_and_shares_one_compilation(monkeypatch):
    # Lists used to fail with "Non-hashable static arguments".
    traces = count_conv_traces(monkeypatch)
    results = []
    for s in ([3, 2], (3, 2), np.array([3, 2]), [np.int64(3), 2]):
        results.append(
            sdr.conv_sdr(MAPS, KERNEL, feature_group_count=2, strides=s, transpose=True)
        )
        # At most the first call traces (none if an earlier test compiled the
        # same shapes and geometry); the other spellings reuse its program.
        assert len(traces) <= 1, traces
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    np.testing.assert_array_equal(
        sdr.conv_sdr(MAPS, KERNEL, feature_group_count=2, strides=2, transpose=True),
        sdr.conv_sdr(MAPS, KERNEL, feature_group_count=2, strides=[2, 2], transpose=1),
    )
    # A strided conv's stride does not change what is measured.
    np.testing.assert_array_equal(
        sdr.conv_sdr(MAPS, KERNEL, feature_group_count=2, strides=[2, 3]),
        sdr.conv_sdr(MAPS, KERNEL, feature_group_count=2),
    )
    spectra = sdr.channel_spectra(MAPS)
    np.testing.assert_array_equal(
        sdr.conv_pair_gaps(
            spectra, KERNEL, feature_group_count=2, kernel_dilation=[2, 2]
        ),
        sdr.conv_pair_gaps(spectra, KERNEL, feature_group_count=2, kernel_dilation=2),
    )


@pytest.mark.parametrize("fn", [sdr.conv_sdr, sdr.conv_penalty, sdr.conv_pair_gaps])
def test_geometry_and_keywords_together_is_an_error(fn):
    x = MAPS if fn is sdr.conv_sdr else sdr.channel_spectra(MAPS)
    g = sdr.ConvGeometry(feature_group_count=2)
    for kwargs in ({"strides": 1}, {"transpose": False}, {"feature_group_count": 2}):
        with pytest.raises(ValueError, match="not both.*" + next(iter(kwargs))):
            fn(x, KERNEL, geometry=g, **kwargs)
    with pytest.raises(TypeError, match="ConvGeometry"):
        fn(x, KERNEL, geometry={"feature_group_count": 2})
    with pytest.raises(ValueError, match=r"`input_dilation`.*2 positive ints"):
        fn(x, KERNEL, geometry=sdr.ConvGeometry(input_dilation=(2, 2, 2)))


def test_tap_geometry():
    def layer(x, w):
        return jax.lax.conv_general_dilated(
            x,
            w,
            (1, 1),
            ((1, 1), (2, 2)),
            lhs_dilation=(2, 1),
            rhs_dilation=(1, 2),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=2,
        )

    _, (tap,) = sdr.capture_convs(layer, MAPS, KERNEL)
    assert tap.geometry == sdr.ConvGeometry(
        input_dilation=(2, 1), kernel_dilation=(1, 2), feature_group_count=2
    )
    np.testing.assert_array_equal(
        tap.pair_sdr(), sdr.conv_sdr(MAPS, KERNEL, geometry=tap.geometry)
    )
    np.testing.assert_array_equal(
        tap.pair_sdr(),
        sdr.conv_sdr(
            MAPS,
            KERNEL,
            strides=(2, 1),
            transpose=True,
            kernel_dilation=(1, 2),
            feature_group_count=2,
        ),
    )


def test_of_layer_defaults_to_stride_one():
    assert sdr.ConvGeometry.of_layer(transpose=True).input_dilation == 1
    assert sdr.ConvGeometry.of_layer(transpose=True, strides=2).input_dilation == 2


_KEYWORDS = "`strides`, `transpose`, `kernel_dilation`, `feature_group_count`"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"stride": 2, "dilation": 1},
            TypeError,
            "Unexpected keyword argument(s) 'stride', 'dilation'; the layer's "
            f"geometry is `geometry=` or the keywords {_KEYWORDS}.",
        ),
        (
            {"geometry": sdr.ConvGeometry(), "strides": 2, "transpose": True},
            ValueError,
            "Give the layer's geometry either as `geometry=` or as the keywords "
            f"{_KEYWORDS}, not both; got geometry=ConvGeometry(input_dilation=1, "
            "kernel_dilation=1, feature_group_count=1) and strides=2, transpose=True.",
        ),
        (
            {"geometry": (1, 1)},
            TypeError,
            "`geometry` must be an sdr.ConvGeometry; got tuple.",
        ),
        (
            {"kernel_dilation": (1, 2, 3)},
            ValueError,
            "`kernel_dilation` must be a positive int or 2 positive ints (one per "
            "spatial axis); got (1, 2, 3).",
        ),
        (
            {"feature_group_count": 0},
            ValueError,
            "`feature_group_count` must be a positive int; got 0.",
        ),
        (  # maps without a spatial axis: the shape check speaks, not the geometry
            {"geometry": sdr.ConvGeometry(), "maps": (6, 3), "kernel": (3, 2)},
            ValueError,
            "`maps` must have shape (n, *spatial, c) with at least one spatial "
            "axis; got shape (6, 3).",
        ),
        (
            {"geometry": sdr.ConvGeometry(), "maps": (6,), "kernel": (3, 2)},
            ValueError,
            "`maps` must have shape (n, *spatial, c) with at least one spatial "
            "axis; got shape (6,).",
        ),
        (
            {"feature_group_count": 2, "kernel": (3, 3, 2, 4)},
            ValueError,
            "Channel mismatch: `maps` has 6 channels but `kernel` of shape "
            "(3, 3, 2, 4) expects 2 per group × 2 group(s) = 4.",
        ),
    ],
)
def test_geometry_arguments_errors_say_what_was_given(kwargs, error, message):
    kwargs = dict(kwargs)
    kernel = np.ones(kwargs.pop("kernel", (3, 3, 6, 2)), np.float32)
    maps = np.ones(kwargs.pop("maps", (2, 6, 6, 6)), np.float32)
    with pytest.raises(error) as info:
        sdr.conv_sdr(maps, kernel, **kwargs)
    assert str(info.value) == message


def test_geometry_keywords_and_geometry_agree_on_one_spatial_axis(rng):
    # 1-D maps (one spatial axis); `transpose` alone means stride 1.
    maps = rng.normal(size=(3, 11, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 4, 2)).astype(np.float32)
    by_geometry = sdr.conv_sdr(maps, kernel, geometry=sdr.ConvGeometry())
    np.testing.assert_array_equal(sdr.conv_sdr(maps, kernel), by_geometry)
    np.testing.assert_array_equal(
        sdr.conv_sdr(maps, kernel, transpose=True), by_geometry
    )


def test_kernel_extent_is_the_dilated_kernel():
    assert sdr.ConvGeometry(kernel_dilation=(1, 2)).kernel_extent((3, 3)) == (3, 5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (  # per-axis fields that do not fit the rank
            lambda: sdr.ConvGeometry(input_dilation=(2, 2)).grid((4, 4, 4)),
            "`input_dilation` must be a positive int or 3 positive ints (one per "
            "spatial axis); got (2, 2).",
        ),
        (
            lambda: sdr.ConvGeometry(kernel_dilation=(1, 2)).per_axis(3),
            "`kernel_dilation` must be a positive int or 3 positive ints (one per "
            "spatial axis); got (1, 2).",
        ),
        (
            lambda: sdr.ConvGeometry(kernel_dilation=(1, 2)).kernel_extent((3, 3, 3)),
            "`kernel_dilation` must be a positive int or 3 positive ints (one per "
            "spatial axis); got (1, 2).",
        ),
        (
            lambda: sdr.ConvGeometry(input_dilation=(1, 0)),
            "`input_dilation` must be a positive int or a sequence of positive "
            "ints (one per spatial axis); got (1, 0).",
        ),
        (
            lambda: sdr.ConvGeometry(kernel_dilation=np.array([1, 0])),
            "`kernel_dilation` must be a positive int or a sequence of positive "
            "ints (one per spatial axis); got [1, 0].",
        ),
        (
            lambda: sdr.ConvGeometry(feature_group_count=0),
            "`feature_group_count` must be a positive int; got 0.",
        ),
        (
            lambda: sdr.ConvGeometry(input_dilation=(1, 1), kernel_dilation=(1, 1, 1)),
            "`input_dilation` and `kernel_dilation` must have one entry per "
            "spatial axis each (the same number); got (1, 1) and (1, 1, 1).",
        ),
        (
            lambda: sdr.conv_sdr(np.ones((2, 3, 3, 2)), np.ones((5, 3, 2, 2))),
            "`kernel` with spatial extent (5, 3) (shape (5, 3, 2, 2)) is larger "
            "than the grid (3, 3) it is measured on.",
        ),
        (
            lambda: sdr.conv_sdr(np.ones((2, 1, 1, 2)), np.ones((1, 1, 2, 2))),
            "The spatial grid of `maps` must have at least two points and no "
            "empty axis; got spatial shape (1, 1).",
        ),
    ],
)
def test_geometry_and_grid_errors_name_the_argument(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


@pytest.mark.parametrize("spatial", [(1, 2), (2, 1), (2,)])
def test_a_grid_of_two_points_is_measured(spatial, rng):
    # An axis of length 1 is allowed; two points in all are enough.
    maps = rng.normal(size=(4, *spatial, 2)).astype(np.float32)
    kernel = np.ones((*(1,) * len(spatial), 2, 2), np.float32)
    assert sdr.conv_sdr(maps, kernel).shape == (2, 2)


def test_geometry_fields_are_normalised_to_python_ints():
    # NumPy integers become Python ints: equal geometries hash alike and
    # share one compilation as static arguments.
    geometry = sdr.ConvGeometry(
        input_dilation=np.array([2, 1]), feature_group_count=np.int64(2)
    )
    assert geometry.input_dilation == (2, 1)
    assert type(geometry.feature_group_count) is int
    assert geometry == sdr.ConvGeometry(input_dilation=(2, 1), feature_group_count=2)
    assert hash(geometry) == hash(
        sdr.ConvGeometry(input_dilation=(2, 1), feature_group_count=2)
    )
