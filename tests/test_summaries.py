"""Undefined pairs, unmeasured layers and the one summary implementation.

A pair whose input channel has no power has no SDR (NaN); a layer that cannot
be measured is left out of `layer_sdr` with a warning and listed as
unmeasured; `sdr_flax.layer_stats` serves `summarize`, its table and the
benchmark harness; `layer_sdr` is jitted once per call signature.
"""

import json
import re
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_png_image

import sdr
import sdr_flax
from benchmarks import report
from benchmarks.harness import evaluate

BAND = np.log(1.25)


def _maps_with_dead_channels(rng, shape=(4, 7, 7, 3)):
    """Channel 0 all zero, channel 1 constant per sample, channel 2 random."""
    maps = rng.normal(size=shape).astype(np.float32)
    maps[..., 0] = 0.0
    maps[..., 1] = rng.normal(size=(shape[0], 1, 1)) * np.ones(shape[1:-1])
    return maps


# ------------------------------------------------------------- conv_sdr: NaN


@pytest.mark.parametrize("grid", [(7, 7), (8, 8), (6, 10), (5, 9)])
def test_channel_without_power_gives_nan_pairs(rng, grid):
    maps = _maps_with_dead_channels(rng, (4, *grid, 3))
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    r = np.asarray(sdr.conv_sdr(maps, kernel))
    # Dead and constant channels: NaN (not inf, not the FFT's rounding noise,
    # which gave finite values on odd grids before).
    assert np.all(np.isnan(r[:2])), r
    assert not np.any(np.isinf(r))
    # The powered channel's pairs are unchanged by its dead neighbours.
    np.testing.assert_allclose(
        r[2], sdr.conv_sdr(maps[..., 2:], kernel[:, :, 2:]).ravel(), rtol=1e-5
    )
    # With the zero frequency averaged, the constant channel has power.
    with_dc = np.asarray(sdr.conv_sdr(maps, kernel, include_dc=True))
    assert np.all(np.isnan(with_dc[0])) and np.all(np.isfinite(with_dc[1:]))
    # On a dilated grid a constant map has power on the aliases of zero.
    dilated = np.asarray(sdr.conv_sdr(maps, kernel, strides=2, transpose=True))
    assert np.all(np.isnan(dilated[0])) and np.all(np.isfinite(dilated[1:]))


def test_penalty_counts_channel_without_power_as_zero(rng):
    maps = _maps_with_dead_channels(rng)
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    spectra = sdr.channel_spectra(maps)
    gaps = np.asarray(sdr.conv_pair_gaps(spectra, kernel))
    np.testing.assert_array_equal(gaps[:2], 0.0)
    assert np.all(gaps[2] != 0.0)
    np.testing.assert_allclose(
        sdr.conv_penalty(spectra, kernel), np.sum(gaps[2] ** 2), rtol=1e-5
    )
    grad = jax.grad(sdr.conv_penalty, argnums=1)(spectra, kernel)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[:, :, :2], 0.0)


def test_nan_pairs_keep_other_gradients_finite(rng):
    maps = _maps_with_dead_channels(rng)
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    grad = jax.grad(lambda k: jnp.nansum(sdr.conv_sdr(maps, k)))(kernel)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[:, :, :2], 0.0)
    assert np.all(np.abs(grad[:, :, 2]).sum(axis=(0, 1)) > 0)


def test_grouped_conv_nan_pairs_are_in_kernel_layout(rng):
    # 2 groups of 2 input channels; channel 3 (group 1, index 1) is dead.
    maps = rng.normal(size=(4, 6, 6, 4)).astype(np.float32)
    maps[..., 3] = 0.0
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    r = np.asarray(sdr.conv_sdr(maps, kernel, feature_group_count=2))
    expected = np.zeros((2, 4), bool)
    expected[1, 2:] = True  # output channels 2, 3 belong to group 1
    np.testing.assert_array_equal(np.isnan(r), expected)


def test_zero_kernel_pair_is_nan(rng):
    maps = rng.normal(size=(4, 6, 6, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    kernel[:, :, 1, 0] = 0.0
    r = np.asarray(sdr.conv_sdr(maps, kernel))
    np.testing.assert_array_equal(np.isnan(r), [[False, False], [True, False]])


# ---------------------------------------------------------------- summaries


def test_layer_stats_counts_undefined_and_leaves_them_out():
    r = np.asarray([[np.nan, np.nan], [1.0, 1.1], [2.0, 0.5]], np.float32)
    edges = np.linspace(-2.0, 2.0, 9)
    stats = sdr_flax.layer_stats(r, edges=edges)
    assert int(stats["pairs"]) == 6 and int(stats["undefined"]) == 2
    defined = np.asarray([1.0, 1.1, 2.0, 0.5])
    np.testing.assert_allclose(stats["median"], 1.05, rtol=1e-6)
    q25, q75 = np.quantile(defined, [0.25, 0.75])
    np.testing.assert_allclose([stats["q25"], stats["q75"]], [q25, q75], rtol=1e-6)
    np.testing.assert_allclose(stats["generic_share"], 0.5)
    counts = np.asarray(stats["counts"])
    np.testing.assert_array_equal(counts, np.histogram(np.log2(defined), bins=edges)[0])

    (s,) = sdr_flax.summarize({"layer": r})
    assert (s.pairs, s.undefined, s.reason) == (6, 2, None) and s.measured
    np.testing.assert_allclose(s.median, 1.05, rtol=1e-6)
    np.testing.assert_allclose(s.generic_share, 0.5)
    np.testing.assert_allclose(s.quartiles, [q25, q75], rtol=1e-6)


def test_layer_stats_end_bins_zero_sdr_and_empty_layers():
    edges = np.linspace(-1.0, 1.0, 5)
    stats = sdr_flax.layer_stats(
        np.asarray([0.0, 1e-3, 1.0, 50.0, np.nan]), edges=edges
    )
    # ρ = 0 and ρ = 1e-3 in the first bin, 50 in the last, NaN nowhere.
    np.testing.assert_array_equal(stats["counts"], [2, 0, 1, 1])
    np.testing.assert_allclose(stats["median"], 0.5005, rtol=1e-6)
    np.testing.assert_allclose(stats["generic_share"], 0.25)

    empty = sdr_flax.layer_stats(np.zeros((0,)), edges=edges)
    assert int(empty["pairs"]) == 0 and int(empty["undefined"]) == 0
    assert np.isnan([empty["median"], empty["q25"], empty["generic_share"]]).all()
    np.testing.assert_array_equal(empty["counts"], 0)

    all_nan = sdr_flax.layer_stats(np.full((2, 2), np.nan))
    assert int(all_nan["undefined"]) == 4 and "counts" not in all_nan
    assert np.isnan([all_nan["median"], all_nan["generic_share"]]).all()

    with pytest.raises(ValueError, match="increasing"):
        sdr_flax.layer_stats(np.ones(3), edges=[1.0, 0.0])


def test_layer_stats_under_jit_equals_eager(rng):
    r = np.exp(0.3 * rng.normal(size=(16, 8))).astype(np.float32)
    r[::3] = np.nan
    edges = evaluate.SDR_BINS
    eager = sdr_flax.layer_stats(r, edges=edges)
    jitted = jax.jit(lambda r: sdr_flax.layer_stats(r, edges=edges))(r)
    assert eager.keys() == jitted.keys()
    for k in eager:
        np.testing.assert_allclose(jitted[k], eager[k], rtol=1e-6)


def _dead_channel_model(params, x):
    """A raw-lax encoder: conv1 on 8×8, conv2 (5×5) on its 4×4 output."""
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(
        x, params["encoder"]["conv1"]["kernel"], (2, 2), "SAME", dimension_numbers=dn
    )
    h = jax.nn.relu(h) * jnp.asarray([[[[1.0, 0.0, 1.0]]]])  # channel 1 dead
    return jax.lax.conv_general_dilated(
        h, params["encoder"]["conv2"]["kernel"], (1, 1), "SAME", dimension_numbers=dn
    )


def _dead_channel_inputs(rng):
    params = {
        "encoder": {
            "conv1": {"kernel": rng.normal(size=(3, 3, 2, 3)).astype(np.float32)},
            "conv2": {"kernel": rng.normal(size=(5, 5, 3, 4)).astype(np.float32)},
        }
    }
    x = rng.normal(size=(4, 8, 8, 2)).astype(np.float32)
    x[..., 1] = 0.0  # conv1's input channel 1 dead too
    return params, x


def test_harness_stats_and_summarize_agree(rng):
    params, x = _dead_channel_inputs(rng)

    @jax.jit
    def harness(params, x):
        _, taps = sdr_flax.capture_layers(_dead_channel_model, params, x)
        return evaluate.sdr_stats(taps)

    stats = jax.device_get(harness(params, x))
    assert list(stats) == ["encoder/conv1", "encoder/conv2"]
    _, taps = sdr_flax.capture_layers(_dead_channel_model, params, x)
    unmeasured = {t.name: t.unmeasurable for t in taps if t.unmeasurable}
    assert list(unmeasured) == ["encoder/conv2"]  # 5×5 on 4×4
    with pytest.warns(UserWarning, match="encoder/conv2"):
        sdrs = sdr_flax.layer_sdr(_dead_channel_model, params, x)
    assert np.isnan(sdrs["encoder/conv1"][1]).all()
    summaries = sdr_flax.summarize(sdrs, unmeasured=unmeasured)
    assert [s.name for s in summaries] == list(stats)

    conv1, conv2 = summaries
    st = stats["encoder/conv1"]
    assert (conv1.pairs, conv1.undefined) == (int(st["pairs"]), int(st["undefined"]))
    assert conv1.undefined == 3  # one dead input channel × 3 outputs
    np.testing.assert_allclose(
        [conv1.median, *conv1.quartiles, conv1.generic_share],
        [st["median"], st["q25"], st["q75"], st["generic_share"]],
        rtol=1e-6,
    )
    finite = np.asarray(sdrs["encoder/conv1"]).ravel()
    finite = finite[~np.isnan(finite)]
    np.testing.assert_allclose(conv1.median, np.median(finite), rtol=1e-5)
    np.testing.assert_allclose(
        conv1.generic_share, np.mean(np.abs(np.log(finite)) < BAND)
    )
    assert int(np.sum(st["counts"])) == conv1.pairs - conv1.undefined

    st = stats["encoder/conv2"]
    assert int(st["pairs"]) == 0 == conv2.pairs and not conv2.measured
    assert conv2.reason == unmeasured["encoder/conv2"]
    assert np.isnan([st["median"], st["generic_share"], conv2.median]).all()
    np.testing.assert_array_equal(st["counts"], 0)


def test_table_shows_undefined_pairs_and_unmeasured_layers():
    r = np.asarray([[np.nan, 1.0], [1.1, 2.0]], np.float32)
    reason = "its kernel (5×5) is larger than the grid it acts on (4×4)"
    summaries = sdr_flax.summarize({"dec": r}, unmeasured={"enc/conv4": reason})
    assert [(s.name, s.pairs, s.undefined) for s in summaries] == [
        ("dec", 4, 1),
        ("enc/conv4", 0, 0),
    ]
    table = sdr_flax.format_table(summaries)
    header, dec, enc = table.splitlines()
    assert "undef" in header
    assert dec.split()[:4] == ["dec", "4", "1", "1.100"]
    assert enc.startswith("enc/conv4") and f"no SDR: {reason}" in enc
    with pytest.raises(ValueError, match="both measured"):
        sdr_flax.summarize({"dec": r}, unmeasured={"dec": reason})


def test_report_lists_unmeasured_layers_and_undefined_pairs(rng, tmp_path):
    from run_dirs import make_run, table_row

    params, x = _dead_channel_inputs(rng)
    _, taps = sdr_flax.capture_layers(_dead_channel_model, params, x)
    recorded = evaluate.to_python(jax.jit(evaluate.sdr_stats)(taps))
    recorded = json.loads(json.dumps(recorded))  # NaN survives the JSON round trip
    runs = []
    for name in ("a", "b"):
        run = make_run(tmp_path, name)
        path = run / "metrics.jsonl"
        lines = [json.loads(ln) for ln in path.read_text().splitlines()]
        for ln in lines:
            if ln["kind"] == "eval":
                ln["sdr"]["encoder/conv1"] = recorded["encoder/conv1"]
                ln["sdr"]["encoder/conv4"] = recorded["encoder/conv2"]
        path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
        runs.append(run)
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # matplotlib's font cache
        md = report.main([*map(str, runs), "--out", str(out)]).read_text()
    assert table_row(md, "median SDR ρ encoder/conv4") == ["no SDR", "no SDR"]
    assert table_row(md, "generic share encoder/conv4") == ["no SDR", "no SDR"]
    assert table_row(md, "undefined pairs encoder/conv1") == ["3", "3"]
    median = table_row(md, "median SDR ρ encoder/conv1")
    assert all(re.fullmatch(r"\d\.\d+", m) for m in median), median
    named = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert named and sorted(p.name for p in out.glob("*.png")) == sorted(set(named))
    for png in named:
        assert_png_image(out / png)


# -------------------------------------------------------- unmeasurable layers


class PointGenerator(nn.Module):
    """DCGAN-like: the first transposed conv acts on 1×1 maps."""

    @nn.compact
    def __call__(self, z):
        h = z.reshape(-1, 1, 1, z.shape[-1])
        h = nn.relu(nn.ConvTranspose(16, (4, 4), padding="VALID", name="up0")(h))
        h = nn.relu(nn.ConvTranspose(8, (4, 4), strides=(2, 2), name="up1")(h))
        return nn.ConvTranspose(3, (4, 4), strides=(2, 2), name="up2")(h)


class SmallEncoder(nn.Module):
    """16×16 → 8×8 → 4×4; the last conv's 5×5 kernel is larger than 4×4."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), name="conv1")(x))
        h = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), name="conv2")(h))
        return nn.Conv(4, (5, 5), name="conv3")(h)


def _no_sdr_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "has no SDR" in str(w.message)]


@pytest.mark.parametrize(
    "model, shape, skipped, kept, why",
    [
        (PointGenerator(), (4, 10), "up0", ["up1", "up2"], "1×1: one point"),
        (
            SmallEncoder(),
            (4, 16, 16, 3),
            "conv3",
            ["conv1", "conv2"],
            r"kernel \(5×5\) is larger than the grid it acts on \(4×4\)",
        ),
    ],
)
@pytest.mark.parametrize("jit", [True, False])
def test_layer_sdr_skips_unmeasurable_layer_with_one_warning(
    model, shape, skipped, kept, why, jit
):
    x = jax.random.normal(jax.random.key(0), shape)
    variables = model.init(jax.random.key(1), x)
    for _ in range(2):  # cached calls warn too
        with pytest.warns(UserWarning, match=f"'{skipped}' has no SDR.*{why}") as rec:
            sdrs = sdr_flax.layer_sdr(model.apply, variables, x, jit=jit)
        assert len(_no_sdr_warnings(rec)) == 1, _no_sdr_warnings(rec)
        assert list(sdrs) == kept
    _, taps = sdr_flax.capture_layers(model.apply, variables, x)
    for tap in taps:
        if tap.name in kept:
            np.testing.assert_allclose(sdrs[tap.name], tap.pair_sdr(), rtol=1e-5)


# ---------------------------------------------------------------------- jit


class Generator(nn.Module):
    @nn.compact
    def __call__(self, z, train: bool = False):
        h = nn.Dense(4 * 4 * 8, name="project")(z).reshape(-1, 4, 4, 8)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(h))
        h = nn.relu(nn.ConvTranspose(8, (3, 3), strides=(2, 2), name="deconv1")(h))
        return nn.ConvTranspose(3, (3, 3), strides=(2, 2), name="deconv2")(h)


def test_layer_sdr_compiles_once_per_signature():
    model = Generator()
    z = jax.random.normal(jax.random.key(0), (4, 6))
    variables = model.init(jax.random.key(1), z)
    traces = []

    def apply(variables, z, train=False, **kwargs):
        traces.append(train)
        return model.apply(variables, z, train=train, **kwargs)

    for seed in range(3):
        z = jax.random.normal(jax.random.key(seed), (4, 6))
        got = sdr_flax.layer_sdr(apply, variables, z)
        assert len(traces) == 1  # traced once, then cached
        n = len(traces)
        expected = sdr_flax.layer_sdr(apply, variables, z, jit=False)
        del traces[n:]  # the eager call is not a trace of the cached program
        assert list(got) == list(expected) == ["deconv1", "deconv2"]
        for name in got:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-5)
    # A new shape or a new static argument is a new signature.
    sdr_flax.layer_sdr(apply, variables, jnp.ones((2, 6)))
    assert len(traces) == 2
    sdr_flax.layer_sdr(apply, variables, z, train=True, mutable=["batch_stats"])
    sdr_flax.layer_sdr(apply, variables, z, train=True, mutable=["batch_stats"])
    assert traces == [False, False, True]


class NNXGenerator(nnx.Module):
    traces = 0  # calls of __call__ (traces, under jit), over all instances

    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(6, 4 * 4 * 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.up = nnx.ConvTranspose(8, 4, (3, 3), strides=(2, 2), rngs=rngs)

    def __call__(self, z):
        NNXGenerator.traces += 1
        h = nnx.relu(self.bn(self.dense(z).reshape(-1, 4, 4, 8)))
        return self.up(h)


def test_layer_sdr_nnx_jitted_once_and_updates_state_like_eager():
    NNXGenerator.traces = 0
    jitted, eager = NNXGenerator(nnx.Rngs(0)), NNXGenerator(nnx.Rngs(0))
    jitted.train(), eager.train()  # batch norm on batch statistics: state moves
    for seed in range(3):
        z = jax.random.normal(jax.random.key(seed), (8, 6))
        got = sdr_flax.layer_sdr(jitted, z)
        before = NNXGenerator.traces
        expected = sdr_flax.layer_sdr(eager, z, jit=False)
        NNXGenerator.traces = before
        np.testing.assert_allclose(got["up"], expected["up"], rtol=1e-5)
        np.testing.assert_allclose(
            jitted.bn.mean[...], eager.bn.mean[...], rtol=1e-5, atol=1e-7
        )
    assert NNXGenerator.traces == 1
    assert not np.allclose(jitted.bn.mean[...], 0.0)  # the state did move


def test_layer_sdr_unhashable_static_argument_is_refused():
    class Unhashable:
        __hash__ = None

    def fn(params, x, flag):
        return jax.lax.conv_general_dilated(
            x, params, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    k, x = jnp.ones((3, 3, 2, 2)), jnp.ones((1, 6, 6, 2))
    with pytest.raises(ValueError, match="jit=False"):
        sdr_flax.layer_sdr(fn, k, x, Unhashable())
    assert list(sdr_flax.layer_sdr(fn, k, x, Unhashable(), jit=False)) == ["conv0"]


def test_alias_free_stats_cover_the_transposed_convs_only():
    dn = ("NHWC", "HWIO", "NHWC")

    def fn(params, x):
        h = jax.lax.conv_transpose(
            x, params["up"], (2, 2), "SAME", dimension_numbers=dn
        )
        return jax.lax.conv_general_dilated(
            h, params["out"], (1, 1), "SAME", dimension_numbers=dn
        )

    k1, k2, kx = jax.random.split(jax.random.key(0), 3)
    params = {
        "up": jax.random.normal(k1, (3, 3, 4, 4)),
        "out": jax.random.normal(k2, (3, 3, 4, 4)),
    }
    x = jax.random.normal(kx, (4, 6, 6, 4))
    _, taps = sdr.capture_convs(fn, params, x)
    stats = evaluate.alias_free_stats(taps)
    up = next(t for t in taps if t.name == "up")
    assert list(stats) == ["up"]
    expected = sdr_flax.layer_stats(
        up.pair_sdr(include_aliases=False), edges=evaluate.SDR_BINS
    )
    np.testing.assert_allclose(stats["up"]["median"], expected["median"])
    with_aliases = evaluate.sdr_stats([up])["up"]["median"]
    assert abs(float(stats["up"]["median"]) - float(with_aliases)) > 1e-3
