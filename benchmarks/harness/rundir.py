"""The run directory: the one owner of its format, written and read.

A run directory (`python -m benchmarks.harness.train --out RUN`) holds:

- `config.json`: `{"args": {...}, "command": ..., "levels": {...},
  "roles": [...], ...}`, the training's arguments and what the report
  needs to read the rest;
- `metrics.jsonl`: one JSON object a line,
  `{"kind": "train" | "eval", "step": int, ...}`;
  a resumed run truncates it to its checkpoint first, and the last record of
  a kind and step wins;
- `images/step_<step>.npz`: the evaluation images of that step (uint8);
- `checkpoints/`: Orbax checkpoints of the training state;
- `tensorboard/`, `profile/`: TensorBoard events and a profiler trace
  (`benchmarks.harness.events`), which this module does not read.

`RunDir` writes it (only the first process does), `load_run` reads it, and
`checkpoints` opens its checkpoint manager.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

DEFAULT_LEVELS = ("coarse", "intermediate", "fine", "image")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory, read.

    Attributes:
      path: the run directory, as given.
      name: a short name, unique among the runs of a report.
      config: the contents of `config.json`.
      train: the `"train"` records of `metrics.jsonl`, by step.
      evals: the `"eval"` records of `metrics.jsonl`, by step.
      image_steps: the steps with an `images/step_<step>.npz`, ascending.
      notes: problems met while reading (e.g. a truncated last line).
    """

    path: pathlib.Path
    name: str
    config: dict[str, Any]
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    image_steps: list[int]
    notes: tuple[str, ...] = ()

    @property
    def args(self) -> dict[str, Any]:
        """The training arguments recorded in `config.json`."""
        return self.config.get("args", {})

    @property
    def dataset(self) -> str:
        """The dataset name (`faces`, `celeb_a` or `image_folder`)."""
        return str(self.args.get("dataset", "?"))

    @property
    def penalty(self) -> str:
        """The penalty (`none` or `sdr`)."""
        return str(self.args.get("penalty", "?"))

    @property
    def label(self) -> str:
        """The name and penalty, for legends and table columns."""
        return f"{self.name} (penalty {self.penalty})"

    @property
    def levels(self) -> dict[str, str]:
        """Decoder level name → decoder layer name, coarse to image."""
        levels = self.config.get("levels")
        if not levels:
            levels = {
                lv: f"decoder/deconv{i}" for i, lv in enumerate(DEFAULT_LEVELS, 1)
            }
        return dict(levels)

    @property
    def roles(self) -> tuple[str, str]:
        """The generative network and its inverse: decoder/encoder (β-VAE)
        or generator/discriminator (DCGAN)."""
        roles = self.config.get("roles") or ("decoder", "encoder")
        return str(roles[0]), str(roles[1])

    @property
    def last_step(self) -> int:
        """The last step with any record."""
        return max(r["step"] for r in [*self.train, *self.evals])


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _read_metrics(path: pathlib.Path) -> tuple[list, list, list[str]]:
    """The train and eval records of a metrics.jsonl, and reading notes."""
    text = path.read_text()
    lines = text.splitlines()
    notes = []
    records: dict[tuple[str, int], dict] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):
                # The line being written by a running training: skip it.
                notes.append(f"{path}: skipped the unfinished last line {number}")
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({e})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}:{number}: expected an object with an int 'step'")
        records[record.get("kind"), record["step"]] = record  # last one wins
    ordered = sorted(records.items(), key=lambda kv: kv[0][1])
    train = [r for (kind, _), r in ordered if kind == "train"]
    evals = [r for (kind, _), r in ordered if kind == "eval"]
    if not evals:
        raise ValueError(f"{path}: no 'eval' record (not even step 0's)")
    return train, evals, notes


def load_run(path: str | pathlib.Path, *, name: str | None = None) -> Run:
    """Reads a run directory written by `benchmarks.harness.train`.

    Args:
      path: the run directory.
      name: its short name (default: the directory's name).

    Returns:
      The run.

    Raises:
      FileNotFoundError: `path`, its `config.json` or its `metrics.jsonl` is
        missing (the message names the path).
      ValueError: a file is not in the expected format (the message names it).
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run directory")
    for file in ("config.json", "metrics.jsonl"):
        if not (path / file).is_file():
            raise FileNotFoundError(
                f"{path / file}: missing; {path} is not a run directory written "
                "by `python -m benchmarks.harness.train --out RUN`"
            )
    config = _read_json(path / "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("args"), dict):
        raise ValueError(f"{path / 'config.json'}: expected an object with 'args'")
    train, evals, notes = _read_metrics(path / "metrics.jsonl")
    image_steps = []
    for f in (path / "images").glob("step_*.npz"):
        match = re.fullmatch(r"step_(\d+)", f.stem)
        if match:
            image_steps.append(int(match.group(1)))
    return Run(
        path=path,
        name=name or path.resolve().name,
        config=config,
        train=train,
        evals=evals,
        image_steps=sorted(image_steps),
        notes=tuple(notes),
    )


def load_runs(paths: Sequence[str | pathlib.Path]) -> list[Run]:
    """Reads run directories and gives them unique short names.

    Args:
      paths: the run directories.

    Returns:
      The runs, named by directory name (with the parent's name where two
      directories share a name, and a number where that is not enough).

    Raises:
      FileNotFoundError: see `load_run`.
      ValueError: see `load_run`.
    """
    paths = [pathlib.Path(p) for p in paths]
    base = [p.resolve().name for p in paths]
    names = [
        f"{p.resolve().parent.name}/{b}" if base.count(b) > 1 else b
        for p, b in zip(paths, base, strict=True)
    ]
    names = [f"{n}#{i}" if names.count(n) > 1 else n for i, n in enumerate(names, 1)]
    return [load_run(p, name=n) for p, n in zip(paths, names, strict=True)]


class RunDir:
    """The files of a run directory; only the first process writes them."""

    def __init__(self, out: pathlib.Path):
        self.out = out
        self.primary = jax.process_index() == 0
        self.metrics = out / "metrics.jsonl"
        self.images = out / "images"
        self.config = out / "config.json"

    def truncate(self, step: int) -> None:
        """Drops metric lines and images written after `step`."""
        if not self.primary:
            return
        if self.metrics.exists():
            lines = self.metrics.read_text().splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= step]
            self.metrics.write_text("".join(ln + "\n" for ln in kept))
        if self.images.exists():
            for f in self.images.glob("step_*.npz"):
                if int(f.stem.split("_")[1]) > step:
                    f.unlink()

    def write_config(self, text: str) -> None:
        """Writes `config.json`, whole: the other processes may be reading it.

        Args:
          text: its contents (JSON).
        """
        if self.primary:
            partial = self.config.with_suffix(".json.partial")
            partial.write_text(text)
            partial.replace(self.config)

    def save_images(self, step: int, images: dict) -> None:
        """Writes the image grids of an evaluation, `images/step_<step>.npz`.

        Args:
          step: the training step (seven digits in the file name).
          images: panel name → array, saved compressed.
        """
        if self.primary:
            self.images.mkdir(exist_ok=True)
            np.savez_compressed(self.images / f"step_{step:07d}.npz", **images)

    def log(self, record: dict) -> None:
        """Appends one line to `metrics.jsonl` and syncs it to disk.

        Args:
          record: the metrics of one step (JSON-ready).
        """
        if not self.primary:
            return
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def checkpoints(path: pathlib.Path):
    """The run's checkpoint manager: the last two, written synchronously.

    Args:
      path: the checkpoint directory (`<run>/checkpoints`).

    Returns:
      An `orbax.checkpoint.CheckpointManager` on the absolute path.
    """
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        path.absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=False
        ),
    )
