"""Sharded parameters: a generator's conv kernels split along their output
channels over a (data × model) = (2, 2) mesh of four CPU devices.

Inside `jax.jit`, `capture_layers`, `layer_spectra`, `penalty` (and its
gradient) and one update of `optax.chain(optax.adam(...),
spectral_independence())` give the numbers of the same program on one
device; the update keeps every parameter's sharding; and the compiled
programs hold no whole kernel on any device and never gather the batch: each
device sums the cause spectra of its own samples and the sums are
all-reduced over "data". The programs are read from their HLO text
(`jit(f).lower(...).compile().as_text()`: every computation, fusions and
loop bodies included).

The suite runs on one CPU device and the device count is fixed when JAX
starts, so the sharded runs are a subprocess on four forced CPU devices:
`python tests/test_sharded.py OUT` writes both runs' numbers, the shardings,
the compiled programs and the output of the recipe of `docs/scaling.md` (its
blocks run as the docs build runs them) to OUT, and the tests check them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import warnings
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import sdr_flax
from benchmarks.harness import launch

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 22  # no other axis of these programs has 22 entries
WIDTHS = (24, 18, 14, 10, 6)  # no c_in·c_out of a conv is half another's
CONVS = ("up1", "mix", "up2", "image")
HARNESS_BATCH = 44  # no axis of the tiny β-VAE's step has 44 or 11 entries
# Float32 reassociation: both runs add the same terms in another order (the
# batch in two partial sums then an all-reduce, the output channels of a
# conv's input gradient likewise). The longest sums (the MSE over
# 22·16·16·6 = 33,792 pixels; a gradient entry over 22·16·16 positions) have
# a relative rounding error of about √N·2⁻²⁴ ≈ 1e-5 at most; atol covers
# entries that cancel to ~1e-7 of the size of their terms (of order 1-10).
RTOL, ATOL = 1e-5, 1e-6


class Generator(nn.Module):
    """z (8) -> 4x4x24 -> 8x8x18 -> 8x8x14 -> 16x16x10 -> 16x16x6."""

    @nn.compact
    def __call__(self, z):
        c0, c1, c2, c3, c4 = WIDTHS
        h = nn.Dense(4 * 4 * c0, name="project")(z).reshape(-1, 4, 4, c0)
        h = nn.relu(nn.ConvTranspose(c1, (3, 3), strides=(2, 2), name="up1")(h))
        h = nn.relu(nn.Conv(c2, (3, 3), name="mix")(h))
        h = nn.relu(nn.ConvTranspose(c3, (3, 3), strides=(2, 2), name="up2")(h))
        return jnp.tanh(nn.Conv(c4, (3, 3), name="image")(h))


def partition(path, leaf) -> P:
    """Conv kernels (HWIO) and biases along the output channels; the dense
    projection replicated."""
    if path[0].key == "project":
        return P()
    return P(None, None, None, "model") if leaf.ndim == 4 else P("model")


def setup(mesh=None):
    """Parameters (NumPy-drawn: no compilation), latents and targets; on
    `mesh` sharded (parameters by `partition`, the batch along "data"),
    else on the first device."""
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(BATCH, 8)), jnp.float32)
    target = jnp.asarray(rng.uniform(-1, 1, (BATCH, 16, 16, WIDTHS[-1])), jnp.float32)
    shapes = jax.eval_shape(Generator().init, jax.random.key(0), z)["params"]
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), jnp.float32), shapes
    )
    if mesh is None:
        return jax.device_put((params, z, target), jax.devices()[0])
    specs = jax.tree_util.tree_map_with_path(partition, params)
    params = jax.device_put(
        params, jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    )
    batch = NamedSharding(mesh, P("data"))
    return params, jax.device_put(z, batch), jax.device_put(target, batch)


def _capture(params, z):
    return sdr_flax.capture_layers(Generator().apply, {"params": params}, z)


def train_step(params, opt_state, z, target, tx):
    """The step as users write it (docs/training.md, Linen)."""

    def loss_fn(params):
        out, taps = _capture(params, z)
        return jnp.mean((out - target) ** 2), taps

    (loss, taps), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    spectra = sdr_flax.layer_spectra(taps)
    updates, opt_state = tx.update(grads, opt_state, params, spectra=spectra)
    return optax.apply_updates(params, updates), opt_state, loss


def probe(params, opt_state, z, target, tx):
    """Every number the library computes in a step: the captured output and
    maps, the spectra, the penalty and its gradient, the transform's update."""

    def loss_fn(params):
        out, taps = _capture(params, z)
        return jnp.mean((out - target) ** 2), (out, taps)

    (loss, (out, taps)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    spectra = sdr_flax.layer_spectra(taps)
    penalty, penalty_grads = jax.value_and_grad(
        lambda p: sdr_flax.penalty(_capture(p, z)[1])
    )(params)
    updates, state = tx.update(grads, opt_state, params, spectra=spectra)
    return {
        "output": out,
        "loss": loss,
        "maps": {t.name: t.maps for t in taps},
        "spectra": {name: s.spectra for name, s in spectra.items()},
        "grads": grads,
        "penalty": penalty,
        "penalty_grads": penalty_grads,
        "params": optax.apply_updates(params, updates),
        "state": state,
    }


def forced_gather(kind: str, name: str, sharding):
    """Capture, spectra and penalty with one gather forced in, to show that
    the checks see one: the kernel of layer `name` (`kind="kernel"`) or its
    input maps (`kind="maps"`) constrained to `sharding`."""

    def fn(params, z):
        if kind == "kernel":
            kernel = jax.lax.with_sharding_constraint(params[name]["kernel"], sharding)
            params = {**params, name: {**params[name], "kernel": kernel}}
        _, taps = _capture(params, z)
        if kind == "maps":
            taps = [
                dataclasses.replace(
                    t, maps=jax.lax.with_sharding_constraint(t.maps, sharding)
                )
                if t.name == name
                else t
                for t in taps
            ]
        return sdr_flax.layer_spectra(taps), sdr_flax.penalty(taps)

    return fn


# --- Reading a compiled program ----------------------------------------------

# An instruction of HLO text: `%name = TYPE opcode(operands), attributes`,
# TYPE an array (`f32[3,3,18,7]{3,2,1,0}`) or a tuple of them.
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+) = (?P<type>.*?) "
    r"(?P<op>[a-z][\w\-]*)\((?P<rest>.*)$",
    re.M,
)
_ARRAY = re.compile(r"\b[a-z]+\d*\[(?P<dims>[\d,]*)\]")


class Buffer(NamedTuple):
    """One array an instruction produces (a tuple's elements apart)."""

    name: str
    op: str
    dims: tuple[int, ...]
    source: str  # the JAX operation it comes from (`op_name`)

    def __str__(self) -> str:
        return f"%{self.name} = {self.op} {list(self.dims)} from {self.source!r}"


def buffers(hlo: str) -> list[Buffer]:
    """Every array that every instruction of a compiled module produces."""
    found = []
    for m in _INSTRUCTION.finditer(hlo):
        source = re.search(r'op_name="([^"]*)"', m["rest"])
        for array in _ARRAY.finditer(m["type"]):
            dims = tuple(int(d) for d in array["dims"].split(",") if d)
            found.append(Buffer(m["name"], m["op"], dims, source[1] if source else ""))
    return found


def _report(found: list[Buffer]) -> str:
    """The first arrays found, those made by an operation first."""
    found = sorted(found, key=lambda b: (b.op == "parameter", not b.source))
    return "\n".join(map(str, found[:10]))


def whole_kernels(hlo: str, shapes) -> list[Buffer]:
    """The arrays with as many entries as one of the whole kernels `shapes`,
    in any layout (a reshape or transpose of a gathered kernel, a padded
    all-reduce that assembles one): on a device that holds only shards of
    kernels, each is a whole kernel brought together."""
    sizes = {math.prod(s) for s in shapes}
    return [b for b in buffers(hlo) if math.prod(b.dims) in sizes]


def whole_batch(hlo: str, batch: int) -> list[Buffer]:
    """The arrays with an axis of the whole batch: on a device that holds
    1/data of each batch, the samples of other devices brought together."""
    return [b for b in buffers(hlo) if batch in b.dims]


# --- The tests ----------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
    """The subprocess's output folder."""
    out = tmp_path_factory.mktemp("sharded")
    env = {**os.environ, "PYTHONPATH": str(ROOT), **launch.cpu_env(4)}
    done = subprocess.run(
        [sys.executable, __file__, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def record(run) -> dict:
    """The subprocess's record: devices, shardings, the docs recipe's output."""
    return json.loads((run / "record.json").read_text())


def _hlo(run, name: str) -> str:
    return (run / f"{name}.hlo").read_text()


def _kernel_shapes():
    c = WIDTHS
    return [(3, 3, c[i], c[i + 1]) for i in range(len(CONVS))]


def test_runs_on_four_cpu_devices(record):
    assert record["devices"] == ["cpu"] * 4, record["devices"]


def test_numbers_equal_the_one_device_run(run):
    sharded, single = np.load(run / "sharded.npz"), np.load(run / "single.npz")
    assert sorted(sharded.files) == sorted(single.files)
    names = {k.split("]")[0] for k in single.files}
    assert names >= {"['output'", "['maps'", "['spectra'", "['penalty'", "['params'"}
    assert len([k for k in single.files if k.startswith("['spectra']")]) == 4
    # Adam's first step is about lr·sign(g): each gradient entry must be 0 in
    # both runs or far larger than its difference, else a sign could flip.
    for key in (k for k in single.files if k.startswith("['grads']")):
        g, h = single[key], sharded[key]
        assert np.all((g == 0) == (h == 0)), key
        assert np.all(np.abs(g) >= 100 * np.abs(g - h)), key
    for key in single.files:
        np.testing.assert_allclose(
            sharded[key], single[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    assert float(single["['penalty']"]) > 0


def test_update_keeps_every_sharding(record):
    shardings = record["shardings"]
    assert len(shardings) == 2 * len(CONVS) + 2
    for path, s in shardings.items():
        assert s["params"] and s["mu"] and s["nu"], (path, s)
        if path.startswith("['project']"):
            assert s["spec"] == "P()", (path, s)
    for name, (_, _, _, c_out) in zip(CONVS, _kernel_shapes(), strict=True):
        kernel, bias = (
            shardings[f"['{name}']['kernel']"],
            shardings[f"['{name}']['bias']"],
        )
        assert kernel["spec"] == "P(None, None, None, 'model')", kernel
        assert kernel["shard_shape"][-1] == bias["shard_shape"][0] == c_out // 2


@pytest.mark.parametrize("program", ["step", "probe_sharded"])
def test_no_device_holds_a_whole_kernel(run, program):
    # The kernels' shards and whole kernels differ in size (WIDTHS), and the
    # shards are there: the check reads sizes that occur.
    shapes = _kernel_shapes()
    assert not {math.prod(s) for s in shapes} & {math.prod(s) // 2 for s in shapes}
    hlo = _hlo(run, program)
    sizes = {math.prod(b.dims) for b in buffers(hlo)}
    assert {math.prod(s) // 2 for s in shapes} <= sizes
    found = whole_kernels(hlo, shapes)
    assert not found, _report(found)
    # Nor a host callback (a custom call; on CPU, XLA runs convs itself).
    assert not [b for b in buffers(hlo) if b.op == "custom-call"]


@pytest.mark.parametrize("program", ["step", "probe_sharded"])
def test_spectra_are_all_reduced_not_the_maps_gathered(run, program):
    hlo = _hlo(run, program)
    found = whole_batch(hlo, BATCH)
    assert not found, _report(found)
    assert any(BATCH // 2 in b.dims for b in buffers(hlo))  # the local batch
    # Each layer's spectra, summed over the local samples, leave in an
    # all-reduce: (H, W // 2 + 1, c_in), c_in split over "model" after a
    # sharded conv (all but the first layer).
    grids = {"up1": 4, "mix": 8, "up2": 8, "image": 16}
    reduced = {tuple(sorted(b.dims)) for b in buffers(hlo) if b.op == "all-reduce"}
    for i, (name, grid) in enumerate(grids.items()):
        c_in = WIDTHS[i] if i == 0 else WIDTHS[i] // 2
        assert tuple(sorted((grid, grid // 2 + 1, c_in))) in reduced, name


def test_the_checks_see_a_forced_gather(run):
    hlo = _hlo(run, "gather_kernel")  # the "mix" kernel made whole
    kernels = whole_kernels(hlo, _kernel_shapes())
    assert {math.prod(b.dims) for b in kernels} == {9 * 18 * 14}, _report(kernels)
    assert any(b.op == "all-gather" for b in kernels), _report(kernels)
    assert not whole_batch(hlo, BATCH)
    maps = whole_batch(_hlo(run, "gather_maps"), BATCH)  # gathered over "data"
    assert any(b.op == "all-gather" for b in maps), _report(maps)


def test_harness_step_splits_the_batch_over_the_data_mesh(run):
    # The harness's compiled step (tiny β-VAE, penalty on) over four devices:
    # each computes its quarter of the batch; none gathers the whole batch
    # (as `jax.make_mesh`'s default Explicit axis made it do before the first
    # convolution).
    hlo = _hlo(run, "harness_step")
    found = whole_batch(hlo, HARNESS_BATCH)
    assert not found, _report(found)
    assert any(HARNESS_BATCH // 4 in b.dims for b in buffers(hlo))
    assert any(b.op == "all-reduce" for b in buffers(hlo))  # the gradients


def test_docs_recipe_runs_on_a_two_by_two_mesh(record):
    text = record["docs_recipe"]
    assert "mesh: {'data': 2, 'model': 2}" in text, text
    assert "per device (5, 5, 32, 8)" in text, text
    assert "parameters keep their shardings: True" in text, text


# --- The subprocess ----------------------------------------------------------


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def _shardings(params, new_params, opt_state) -> dict[str, dict]:
    """Per parameter: its spec, its shard's shape, and whether the updated
    parameter and Adam's two moments have a sharding equivalent to its own."""
    adam = opt_state[0][0]
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    others = [jax.tree.leaves(t) for t in (new_params, adam.mu, adam.nu)]
    out = {}
    for (path, p), *moved in zip(leaves, *others, strict=True):
        out[jax.tree_util.keystr(path)] = {
            "spec": str(p.sharding.spec),
            "shard_shape": list(p.addressable_shards[0].data.shape),
            **{
                name: x.sharding.is_equivalent_to(p.sharding, p.ndim)
                for name, x in zip(("params", "mu", "nu"), moved, strict=True)
            },
        }
    return out


def _docs_recipe() -> str:
    """Runs the Python blocks of docs/scaling.md as the docs build does (one
    namespace, JAX's default promotion rules); returns what they print."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    blocks = re.findall(r'^```python exec="on"[^\n]*\n(.*?)^```', text, re.M | re.S)
    assert blocks, "docs/scaling.md has no Python block"
    out, namespace = io.StringIO(), {}
    with (
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
        contextlib.redirect_stdout(out),
    ):
        for i, body in enumerate(blocks):
            exec(compile(body, f"docs/scaling.md, block {i + 1}", "exec"), namespace)
    return out.getvalue()


def _harness_step_hlo() -> str:
    """The harness's training step (`--config tiny --penalty sdr`, global
    batch HARNESS_BATCH), compiled over the data mesh of every device."""
    from benchmarks.harness import data, train

    flags = ["--config", "tiny", "--penalty", "sdr", "--out", "unused"]
    args = train.parse_args([*flags, "--batch", str(HARNESS_BATCH)])
    with contextlib.redirect_stdout(io.StringIO()):  # "compiled the step in …"
        _, step, _, _ = train.fresh_step(args, data.data_mesh())
    return step.as_text()


def child(out: pathlib.Path) -> None:
    """The subprocess: both runs, the shardings and the programs, to `out`."""
    warnings.simplefilter("error")  # as the suite's filterwarnings
    jax.config.update("jax_numpy_rank_promotion", "raise")
    mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    tx = optax.chain(optax.adam(1e-3), sdr_flax.spectral_independence())
    record: dict = {"devices": [d.platform for d in jax.devices()]}
    with jax.numpy_dtype_promotion("standard"):  # optax mixes Python scalars in
        for name, where in (("sharded", mesh), ("single", None)):
            params, z, target = setup(where)
            args = (params, tx.init(params), z, target)
            compiled = jax.jit(probe, static_argnums=4).lower(*args, tx).compile()
            np.savez(out / f"{name}.npz", **_flat(compiled(*args)))
            (out / f"probe_{name}.hlo").write_text(compiled.as_text())
        params, z, target = setup(mesh)
        args = (params, tx.init(params), z, target)
        compiled = jax.jit(train_step, static_argnums=4).lower(*args, tx).compile()
        (out / "step.hlo").write_text(compiled.as_text())
        record["shardings"] = _shardings(params, *compiled(*args)[:2])
        forced = {
            "gather_kernel": ("kernel", "mix", NamedSharding(mesh, P())),
            "gather_maps": (
                "maps",
                "up2",
                NamedSharding(mesh, P(*[None] * 3, "model")),
            ),
        }
        for name, how in forced.items():
            lowered = jax.jit(forced_gather(*how)).lower(params, z)
            (out / f"{name}.hlo").write_text(lowered.compile().as_text())
    record["docs_recipe"] = _docs_recipe()
    (out / "harness_step.hlo").write_text(_harness_step_hlo())
    (out / "record.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    child(pathlib.Path(sys.argv[1]))
