"""Synthetic run directories, as `python -m benchmarks.harness.train` writes."""

import json
import pathlib

import numpy as np

LEVELS = {
    "coarse": "decoder/deconv1",
    "intermediate": "decoder/deconv2",
    "fine": "decoder/deconv3",
    "image": "decoder/deconv4",
}
BINS = np.linspace(-2.0, 2.0, 65).tolist()


def _sdr(rng, layers):
    out = {}
    for name in layers:
        counts = rng.integers(0, 20, size=64).astype(float)
        out[name] = {
            "median": float(rng.uniform(0.8, 1.3)),
            "generic_share": float(rng.uniform(0, 1)),
            "counts": counts.tolist(),
        }
    return out


# The tiny β-VAE's derived centres: map width, centre.
CENTRES = {"coarse": (4, 1.5625), "intermediate": (8, 3.625), "fine": (16, 7.75)}
CENTRES["image"] = (32, 16.0)
VARIANTS = ("centre-0.5", "centre+0.5", "nearest", "array_centre")


def _stretch_extras(rng, stretch: dict) -> dict:
    """The eval keys of the derived stretch centres, with random errors."""
    levels = list(stretch)
    return {
        "stretch_centre": {lv: CENTRES[lv][1] for lv in levels},
        "stretch_centre_offset": {lv: c - n / 2 for lv, (n, c) in CENTRES.items()},
        "stretch_mse_sensitivity": {
            lv: {v: float(rng.uniform(0, 0.01)) for v in VARIANTS} for lv in levels
        },
        "stretch_mse_output_maps": {
            lv: (stretch[after] if after else 0.0)
            for lv, after in zip(levels, [*levels[1:], None], strict=True)
        },
    }


def make_run(
    root: pathlib.Path,
    name: str,
    *,
    dataset: str = "faces",
    penalty: str = "none",
    eval_steps=(0, 10, 20),
    train_steps=(5, 10, 15, 20),
    step_times=None,
    final_stretch_fine=None,
    final_recon=None,
    seed: int = 0,
    centres: bool = True,
) -> pathlib.Path:
    """A run directory like `python -m benchmarks.harness.train --out root/name`.

    With `centres=False`, the eval records are those of runs recorded before
    the derived stretch centres: no `stretch_centre`, `stretch_centre_offset`,
    `stretch_mse_sensitivity` or `stretch_mse_output_maps`.
    """
    rng = np.random.default_rng(seed)
    run = root / name
    (run / "images").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    args = {
        "dataset": dataset,
        "penalty": penalty,
        "config": "tiny",
        "image_size": None,
        "batch": 8,
        "seed": seed,
        "penalty_rate": 0.5,
        "penalty_steps": 1,
        "penalty_layers": ["intermediate", "fine", "image"],
        "data_dir": None,
    }
    config = {
        "args": args,
        "command": f"python -m benchmarks.harness.train --dataset {dataset} "
        f"--penalty {penalty} --out {run}",
        "model": {"image_size": 16, "latent_dim": 4},
        "levels": LEVELS,
        "penalty_layers": list(LEVELS.values())[1:] if penalty == "sdr" else None,
        "sdr_bins": BINS,
        "devices": ["TFRT_CPU_0"],
        "jax_version": "0.0.test",
    }
    (run / "config.json").write_text(json.dumps(config, indent=2))
    # The tiny config's last encoder conv has no SDR (kernel larger than its grid).
    layers = [*LEVELS.values(), "encoder/conv1", "encoder/conv2", "encoder/conv3"]
    times = step_times or [1.0] * len(train_steps)
    records = []
    for i, step in enumerate(train_steps):
        records.append(
            {
                "step": step,
                "kind": "train",
                "loss": 0.5 / (i + 1),
                "mse": 0.4 / (i + 1),
                "kl": 2.0 + i,
                "step_time_s": times[i],
            }
        )
    for j, step in enumerate(eval_steps):
        last = j == len(eval_steps) - 1
        stretch = {lv: float(rng.uniform(0, 0.01)) for lv in LEVELS}
        if last and final_stretch_fine is not None:
            stretch["fine"] = final_stretch_fine
        record = {
            "step": step,
            "kind": "eval",
            "recon_mse": final_recon if last and final_recon else 0.2 - 0.01 * j,
            "stretch_mse": stretch,
            "sdr": _sdr(rng, layers),
        }
        if centres:
            record.update(_stretch_extras(rng, stretch))
        if dataset == "faces":
            keys = ("none", "output", *LEVELS)
            record["truth_mse"] = {
                target: {k: float(rng.uniform(0.1, 0.2)) for k in keys}
                for target in ("eye_distance", "face_width")
            }
        records.append(record)
        panels = ["input", "reconstruction", "stretched_output"]
        panels += [f"stretch_{lv}" for lv in LEVELS]
        if dataset == "faces":
            panels += ["truth_eye_distance", "truth_face_width"]
        np.savez_compressed(
            run / "images" / f"step_{step:07d}.npz",
            **{k: rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8) for k in panels},
        )
    records.sort(key=lambda r: r["step"])
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def table_row(text: str, name: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == name:
            return cells[1:]
    raise AssertionError(f"no row {name!r} in the table")


def update_last_eval(run: pathlib.Path, **fields) -> dict:
    """Adds `fields` to the last record of `run`'s metrics.jsonl, an eval one;
    returns that record as it was."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["kind"] == "eval", last["kind"]
    lines[-1] = json.dumps({**last, **fields})
    path.write_text("\n".join(lines) + "\n")
    return last
