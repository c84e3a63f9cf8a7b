"""The VQGAN-style decoder (`benchmarks.nets.vqgan`) and its `bench_penalty`."""

import itertools
import json
import math

import jax
import numpy as np
import pytest

import sdr_flax
from benchmarks.nets import vqgan
from benchmarks.speed import bench_penalty


@pytest.fixture(scope="module")
def tiny():
    config = vqgan.VQGANConfig.tiny()
    model = vqgan.Decoder(config)
    z = np.random.default_rng(0).standard_normal((2, 4, 4, 4)).astype(np.float32)
    params = jax.jit(model.init)(jax.random.key(0), z)["params"]
    return config, model, z, params


def _kernel_paths(params):
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["/".join(k.key for k in path) for path, _ in paths]
    return sorted(n for n in names if n.endswith("/kernel"))


def test_output_shape(tiny):
    config, model, z, params = tiny
    out = jax.jit(model.apply)({"params": params}, z)
    assert out.shape == (2, 8, 8, 3) == (2, config.image_size, config.image_size, 3)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(
    ("name", "latent", "image"),
    [("small", (8, 8, 4), 32), ("paper", (16, 16, 256), 256)],
)
def test_config_shapes(name, latent, image):
    config = vqgan.config(name)
    model = vqgan.Decoder(config)
    z = jax.ShapeDtypeStruct((1, *latent), np.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), z)
    out = jax.eval_shape(model.apply, variables, z)
    assert out.shape == (1, image, image, 3)
    # conv_in, 2 convs per res block, a 1x1 shortcut where the width changes,
    # an upsampling conv between levels, conv_out.
    levels = len(config.widths)
    shortcuts = sum(a != b for a, b in itertools.pairwise(config.widths))
    blocks = config.mid_blocks + levels * config.res_blocks
    expected = 1 + 2 * blocks + shortcuts + (levels - 1) + 1
    assert len(_kernel_paths(variables["params"])) == expected


def test_every_conv_captured_with_its_parameter(tiny):
    # pytest turns warnings into errors: capture and layer_spectra warn none.
    _, model, z, params = tiny
    out, taps = jax.jit(
        lambda p, z: sdr_flax.capture_layers(model.apply, {"params": p}, z)
    )(params, z)
    assert out.shape == (2, 8, 8, 3)
    paths = _kernel_paths(params)
    assert len(paths) == 10
    assert sorted(t.param_path for t in taps) == paths
    assert all(t.unmeasurable is None for t in taps)
    assert [t.name for t in taps][:2] == ["conv_in", "mid0/conv1"]
    assert taps[-1].name == "conv_out"
    spectra = sdr_flax.layer_spectra(taps, layers=vqgan.is_decoder_layer)
    assert sorted(s.param_path for s in spectra.values()) == paths


def test_config_checks():
    with pytest.raises(ValueError, match="divisible"):
        vqgan.VQGANConfig(widths=(48, 16), groups=32)
    with pytest.raises(ValueError, match="config must be one of"):
        vqgan.config("huge")


def test_bench_penalty_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--model", "vqgan", "--config", "tiny", "--batch", "2", "--steps", "1"]
    argv += ["--compile-repeats", "1", "--component-repeats", "1", "--out", str(out)]
    # optax's bias corrections mix Python floats with int32 counts.
    with jax.numpy_dtype_promotion("standard"):
        assert bench_penalty.main(argv) == 0
    assert "ratio (b)/(a)" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["model"] == "vqgan"
    assert record["config"]["name"] == "tiny"
    assert record["batch"] == 2
    assert record["targets"] == {"step": 1.05, "memory": 1.05, "compile": 1.3}
    assert len(record["penalty"]["layers"]) == 10
    ratios = [
        record["ratio"],
        record["cpu_ratio"],
        record["capture_ratio"],
        record["compile"]["ratio"],
        record["memory_bytes"]["ratio"],
        record["components_seconds"]["estimated_ratio"],
    ]
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    assert all(math.isfinite(v) for v in record["losses"]["sdr"])
    assert record["penalty_check"]["lowered"]
