"""A folder of JPEG or PNG images as training data (`--dataset image_folder`).

For CelebA without tensorflow-datasets: point `--data-dir` at the folder
`img_align_celeba/` of CelebA's aligned JPEGs (or at any folder of face
images). The images are found recursively (`*.jpg`, `*.jpeg`, `*.png`, any
case) and sorted by their path relative to the folder, so that the order does
not depend on the file system.

Splits:

- with CelebA's `list_eval_partition.txt` in the folder or its parent (lines
  `000001.jpg 0`: 0 train, 1 validation, 2 test; a `list_eval_partition.csv`
  with a header line and `000001.jpg,0` lines is read alike; an image is
  matched by its path relative to the folder, else by its file name),
  training reads partition 0 and the evaluation batch comes from
  partition 1, validation, as `benchmarks.harness.data.eval_celeb_a` takes it
  from tfds's `validation` split. Images the file does not name are left out;
  the test partition is never read.
- without it, the last `HOLDOUT` (10 %, rounded up) of the sorted images are
  held out for the evaluation batch and training reads the rest. Which of
  the two applies is printed once per folder.

The images are read and decoded by tf.data on the host (parallel decoding,
`prefetch` batches ahead) and preprocessed exactly as the tfds path
(`benchmarks.harness.celeba.preprocess`: centre crop, antialiased bilinear
resize, scale to [-1, 1]); every image must be at least `crop`×`crop`.
`batches` is deterministic by `(seed, step)` as `celeba.batches` is: epoch
`e` is a permutation of the split drawn from `(seed, e)`, so a run restarted
at step `k` reads the batches an uninterrupted run reads from step `k` on.

Example:
    >>> it = batches("/data/celeba/img_align_celeba", batch_size=64, seed=0)
    >>> x = next(it)  # (64, 64, 64, 3) float32 in [-1, 1]
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from benchmarks.harness import celeba

__all__ = [
    "EXTENSIONS",
    "HOLDOUT",
    "PARTITION_FILES",
    "Split",
    "batches",
    "split_images",
]

EXTENSIONS = (".jpg", ".jpeg", ".png")
"""The file name endings read (compared in lower case)."""
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
"""CelebA's split file, looked for in the folder and in its parent."""
HOLDOUT = 0.1
"""Without a partition file: the share of the sorted images held out."""
TRAIN, VALIDATION, TEST = 0, 1, 2  # CelebA's partition numbers
_FIX = (
    "pass --data-dir a folder of JPEG or PNG images, e.g. CelebA's "
    "img_align_celeba/ (docs/harness.md, 'Getting CelebA')"
)
_announced: set[tuple[str, str]] = set()


@dataclasses.dataclass(frozen=True)
class Split:
    """The images of a folder, split for training and evaluation.

    Attributes:
      folder: the folder.
      train: the training images' paths, sorted.
      eval: the evaluation images' paths, sorted.
      source: how the split was made, one line.
    """

    folder: pathlib.Path
    train: tuple[str, ...]
    eval: tuple[str, ...]
    source: str


def _images(folder: pathlib.Path) -> list[str]:
    """The images under `folder`, as sorted POSIX paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            if name.lower().endswith(EXTENSIONS):
                found.append((pathlib.Path(root) / name).relative_to(folder))
    return sorted(p.as_posix() for p in found)


def _partition(folder: pathlib.Path) -> pathlib.Path | None:
    for place in (folder, folder.parent):
        for name in PARTITION_FILES:
            if (place / name).is_file():
                return place / name
    return None


def _read_partition(path: pathlib.Path) -> dict[str, int]:
    """Image name → partition number."""
    parts = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields or (number == 1 and fields[-1] not in ("0", "1", "2")):
            continue  # a blank line, or a header
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(
                f"{path}:{number}: expected '<image name> <0|1|2>', got {line!r}"
            )
        parts[fields[0]] = int(fields[1])
    return parts


def split_images(folder: str | os.PathLike) -> Split:
    """The training and evaluation images of a folder (see the module).

    Args:
      folder: the folder of images.

    Returns:
      The split; its `source` line is printed the first time a folder is split.

    Raises:
      FileNotFoundError: `folder` is not a directory, or holds no image.
      ValueError: the partition file is malformed or names none of the images,
        or a split is empty.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data-dir {folder}: no such directory; {_FIX}.")
    names = _images(folder)
    if not names:
        raise FileNotFoundError(
            f"--data-dir {folder}: no image found (files ending in "
            f"{', '.join(EXTENSIONS)}, searched recursively); {_FIX}."
        )
    partition = _partition(folder)
    if partition is not None:
        parts = _read_partition(partition)
        part = {n: parts.get(n, parts.get(n.rsplit("/", 1)[-1])) for n in names}
        listed = [n for n in names if part[n] is not None]
        if not listed:
            raise ValueError(
                f"{partition} names none of the {len(names):,} images of {folder} "
                f"(e.g. {names[0]!r}); move it away to hold out images instead."
            )
        train = tuple(n for n in listed if part[n] == TRAIN)
        held = tuple(n for n in listed if part[n] == VALIDATION)
        source = (
            f"image_folder {folder}: {len(train):,} training images (partition 0) "
            f"and {len(held):,} evaluation images (partition 1, validation) "
            f"from {partition}; {len(names) - len(listed):,} images it does not "
            "name left out, the test partition unused"
        )
    else:
        n_held = math.ceil(HOLDOUT * len(names))
        train, held = tuple(names[:-n_held]), tuple(names[-n_held:])
        source = (
            f"image_folder {folder}: no {PARTITION_FILES[0]} here or in the parent; "
            f"the last {n_held:,} of {len(names):,} images (by sorted path) are "
            f"held out for evaluation, training on the other {len(train):,}"
        )
    for name, part in (("training", train), ("evaluation", held)):
        if not part:
            raise ValueError(f"{source}: no {name} image; add images to {folder}.")
    if (str(folder), source) not in _announced:
        _announced.add((str(folder), source))
        print(source)
    return Split(folder, train, held, source)


def _decode(path: tf.Tensor, size: int, crop: int) -> tf.Tensor:
    """One image file, decoded and preprocessed (`celeba.preprocess`)."""
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, dtype=tf.uint8, expand_animations=False
    )
    shape = tf.shape(image)
    check = tf.debugging.assert_greater_equal(
        tf.reduce_min(shape[:2]), crop, message="image smaller than the crop"
    )
    with tf.control_dependencies([check]):
        image = tf.identity(image)
    return celeba.preprocess(image, size=size, crop=crop)


def _explain(error: tf.errors.OpError, paths: list[str], crop: int) -> Exception:
    """The error of a batch that failed to decode, naming the culprit."""
    for path in paths:
        try:
            image = tf.io.decode_image(
                tf.io.read_file(path), channels=3, expand_animations=False
            )
        except tf.errors.OpError as e:
            reason = e.message.split("}}")[-1].split("[Op:")[0].strip()
            return ValueError(
                f"{path}: cannot read it as an image ({reason}); delete or "
                "replace the file."
            )
        height, width = int(image.shape[0]), int(image.shape[1])
        if min(height, width) < crop:
            return ValueError(
                f"{path}: {height}×{width} is smaller than the {crop}×{crop} "
                "centre crop; delete it or use images of at least that size."
            )
    return error


def _epoch(paths: np.ndarray, order: np.ndarray, *, batch_size, size, crop, prefetch):
    """The batches of `paths[order]`, decoded in parallel, in order."""
    ds = tf.data.Dataset.from_tensor_slices(paths[order])
    ds = ds.map(
        lambda p: _decode(p, size, crop),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(prefetch) if prefetch else ds


def batches(
    folder: str | os.PathLike,
    *,
    split: str = "train",
    batch_size: int,
    seed: int,
    start_step: int = 0,
    size: int = 64,
    crop: int = celeba.CROP,
    prefetch: int = 2,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[np.ndarray]:
    """Infinite, deterministic stream of preprocessed batches of a folder.

    Epoch `e` reads the split's images (of this shard) in a permutation drawn
    from `(seed, e)` and drops the last incomplete batch. Starting at
    `start_step` skips whole epochs arithmetically and then the first steps
    of the current one (before reading), and yields exactly the batches an
    uninterrupted iterator yields from that step on.

    Args:
      folder: the folder of images (`split_images`).
      split: `"train"`, or `"eval"` for the held-out images.
      batch_size: images per batch.
      seed: non-negative seed of the order.
      start_step: batches already consumed.
      size: side of the output images.
      crop: side of the centre crop (`celeba.CROPS` by model).
      prefetch: batches prepared ahead by tf.data (0 for none).
      shard: `(index, count)`: read only the images `index::count` of the
        split (one share per process).

    Returns:
      An infinite iterator of float32 arrays `(batch_size, size, size, 3)` in
      [-1, 1].

    Raises:
      FileNotFoundError, ValueError: see `split_images`; also when the split's shard
        has fewer than `batch_size` images, or an argument is out of range
        (raised by this call). ValueError naming the file, by `next`, for an
        image that cannot be decoded or is smaller than the crop.
    """
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
        ("start_step", start_step, 0),
        ("prefetch", prefetch, 0),
    ):
        if value < low:
            raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    if split not in ("train", "eval"):
        raise ValueError(f"`split` must be 'train' or 'eval', got {split!r}")
    index, count = shard
    found = split_images(folder)
    names = getattr(found, split)[index::count]
    if len(names) < batch_size:
        raise ValueError(
            f"{found.folder} has {len(names):,} {split} images for this "
            f"process, fewer than a batch of {batch_size}; pass a smaller "
            f"{'--batch' if split == 'train' else '--eval-batch'} or add "
            "images to the folder."
        )
    paths = np.array([str(found.folder / n) for n in names])
    steps = len(paths) // batch_size
    options = {"batch_size": batch_size, "size": size, "crop": crop}

    def generate() -> Iterator[np.ndarray]:
        epoch, skip = divmod(start_step, steps)
        while True:
            rng = np.random.default_rng(np.random.SeedSequence((seed, epoch)))
            order = rng.permutation(len(paths))[skip * batch_size :]
            it = _epoch(paths, order, prefetch=prefetch, **options).as_numpy_iterator()
            for step in range(skip, steps):
                try:
                    yield next(it)
                except tf.errors.OpError as e:
                    first = (step - skip) * batch_size
                    batch = [str(p) for p in paths[order[first : first + batch_size]]]
                    raise _explain(e, batch, crop) from None
            epoch, skip = epoch + 1, 0

    return generate()
