"""CelebA for the β-VAE benchmarks, through tensorflow-datasets (`celeb_a`).

The preprocessing of the public reference code of each model (the paper
does not state one): a centre crop of the aligned 218×178 images, 148×148
for the β-VAE (yzwxx/vae-celebA, `image_size` 148) and 108×108 for the DCGAN
(tensorlayer/dcgan, `image_size` 108), bilinear (antialiased) resize to
64×64 and scale to [-1, 1] float32. `CROPS` lists the crops by model name;
`preprocess` and `batches` take one as `crop`.

`batches` is an infinite, deterministic stream of numpy batches: epoch `e` is
shuffled with seeds derived from `(seed, e)`, so a run restarted with
`start_step=k` yields exactly the batches an uninterrupted run would have
yielded from step `k` on. This is how `benchmarks.harness.train` resumes after a kill.

Nothing here downloads anything: the dataset has to be prepared beforehand
(see `DatasetNotPreparedError`).

Example:
    >>> it = batches(batch_size=64, seed=0, data_dir="/data/tfds")
    >>> x = next(it)  # (64, 64, 64, 3) float32 in [-1, 1]
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarks.harness.data import CELEBA_CROPS

__all__ = [
    "CROP",
    "CROPS",
    "DatasetNotPreparedError",
    "batches",
    "num_examples",
    "preprocess",
]

CROPS = CELEBA_CROPS
"""The centre crop of each model's public reference code, by `--model` name
(`benchmarks.harness.data.CELEBA_CROPS`): 148 for the β-VAE, 108 for the
DCGAN."""

CROP = CROPS["vae"]
"""Side of the default centre crop taken from the 218×178 aligned CelebA
images: the β-VAE's reference code's (148)."""

_NAME = "celeb_a"

# The files tfds's `celeb_a` builder downloads (its `checksums.tsv`); placed in
# `DIR/downloads/manual` under these names, they are used instead of the URLs
# (tfds still checks their sizes and SHA-256 sums).
_MANUAL_FILES = (
    "img_align_celeba.zip",
    "list_eval_partition.txt",
    "list_attr_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "identity_CelebA.txt",
)


# tfds 4.9 imports `importlib_resources` when building a dataset but declares it
# only for Python < 3.9.
_IMPORTLIB_RESOURCES_HINT = (
    "\n(Building also needs `pip install importlib_resources`, missing here.)"
    if importlib.util.find_spec("importlib_resources") is None
    else ""
)


def _hide_gpus_from_tensorflow() -> None:
    """Keeps TensorFlow off the accelerators (JAX owns them)."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices were initialised before.
        if tf.config.get_visible_devices("GPU"):
            warnings.warn(
                "TensorFlow was initialised before benchmarks.harness.celeba could "
                "hide the GPUs from it; it may hold GPU memory that JAX needs. Import "
                "benchmarks.harness.celeba before anything else that uses TensorFlow.",
                RuntimeWarning,
                stacklevel=2,
            )


_hide_gpus_from_tensorflow()


class DatasetNotPreparedError(FileNotFoundError):
    """CelebA has not been prepared in the given tensorflow-datasets directory."""


def _not_prepared_message(data_dir: str) -> str:
    files = "\n".join(f"      {name}" for name in _MANUAL_FILES)
    manual = f"{data_dir}/downloads/manual"
    return (
        f"CelebA ({_NAME}) is not prepared in the tensorflow-datasets directory "
        f"{data_dir!r}, and this module never downloads it. Prepare it once, "
        "either:\n"
        f"  1. tfds build {_NAME} --data_dir {data_dir}\n"
        "     (needs the internet; the Google Drive download is often "
        "rate-limited), or\n"
        f"  2. download these files by hand into {manual}/ :\n"
        f"{files}\n"
        f"     and run the same `tfds build {_NAME} --data_dir {data_dir}`, which "
        "takes them from there (it checks their sizes and SHA-256 sums, so they "
        "must be the original files from CelebA's Google Drive: Img/, Anno/, "
        "Eval/).\n"
        f"Then pass `--data-dir {data_dir}` to `python -m benchmarks.harness.train`."
        + _IMPORTLIB_RESOURCES_HINT
    )


def _builder(data_dir: str | None) -> tfds.core.DatasetBuilder:
    # Built from tfds's code when nothing is prepared; never downloads.
    return tfds.builder(_NAME, data_dir=data_dir)


def _read(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """The split's still-encoded JPEG images, files shuffled if a seed is given."""
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed, try_autocache=False, options=options
    )
    decoders = tfds.decode.PartialDecoding(
        {"image": True}, decoders={"image": tfds.decode.SkipDecoding()}
    )
    try:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=shuffle_seed is not None,
            read_config=read_config,
            decoders=decoders,
        )
    except AssertionError as e:
        # tfds raises AssertionError when `builder.data_dir` does not exist.
        if tf.io.gfile.exists(builder.data_dir):
            raise
        raise DatasetNotPreparedError(
            _not_prepared_message(str(builder.data_dir_root))
        ) from e
    return ds.map(lambda example: example["image"])


def num_examples(split: str, *, data_dir: str | None = None) -> int:
    """Number of images in a split of the prepared CelebA.

    Args:
        split: A tfds split: `"train"` (162,770 images), `"validation"`
            (19,867), `"test"` (19,962), or a slice such as `"train[:10%]"`.
        data_dir: The tensorflow-datasets directory; tfds's default
            (`~/tensorflow_datasets` or `$TFDS_DATA_DIR`) when None.

    Returns:
        The number of examples.

    Raises:
        DatasetNotPreparedError: CelebA is not prepared in `data_dir` (the
            message says how to prepare it).
    """
    return _num_examples(_builder(data_dir), split)


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    # The dataset's cardinality rather than `builder.info.splits`, so that
    # `tfds.testing.mock_data(num_examples=...)` is honoured.
    n = int(_read(builder, split).cardinality())
    if n < 0:  # pragma: no cover (tfds datasets know their cardinality)
        n = builder.info.splits[split].num_examples
    return n


def preprocess(
    image: tf.Tensor | np.ndarray, *, size: int = 64, crop: int = CROP
) -> tf.Tensor:
    """Centre crop, bilinear antialiased resize and scaling to [-1, 1].

    Usable inside `tf.data.Dataset.map`.

    Args:
        image: One uint8 image of shape (H, W, 3) with H, W >= `crop`
            (CelebA's aligned images are 218×178).
        size: Side of the output image.
        crop: Side of the centre crop (`CROPS`: 148 for the β-VAE, 108 for
            the DCGAN).

    Returns:
        A float32 tensor of shape (size, size, 3) with values in [-1, 1].

    Raises:
        ValueError: `image` is not a uint8 (H, W, 3) image of at least
            `crop`×`crop` (checked on the static shape), or `size` or `crop`
            is not positive.
    """
    if size < 1:
        raise ValueError(f"`size` must be a positive integer, got {size}.")
    if crop < 1:
        raise ValueError(f"`crop` must be a positive integer, got {crop}.")
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"`image` must be uint8, got {image.dtype.name}.")
    shape = image.shape
    if shape.rank != 3 or shape[-1] != 3:
        raise ValueError(f"`image` must have shape (H, W, 3), got {shape}.")
    if any(d is not None and d < crop for d in shape[:2]):
        raise ValueError(
            f"`image` must be at least {crop}×{crop} for the centre crop, got "
            f"{shape[0]}×{shape[1]}."
        )
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (height - crop) // 2, (width - crop) // 2
    image = image[top : top + crop, left : left + crop]
    image = tf.image.resize(
        tf.cast(image, tf.float32), (size, size), method="bilinear", antialias=True
    )
    # The antialiased bilinear kernel is non-negative, so this stays in [0, 255]
    # up to rounding; the clip makes [-1, 1] exact.
    return tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)


def _epoch_seeds(seed: int, epoch: int) -> tuple[int, int]:
    """Seeds for file shuffling and example shuffling of one epoch."""
    files, examples = np.random.SeedSequence((seed, epoch)).generate_state(2)
    return int(files), int(examples)


def _check_at_least(**bounds: tuple[int, int]) -> None:
    """Raises ValueError naming the first argument `value` below its `low`."""
    for name, (value, low) in bounds.items():
        if value < low:
            raise ValueError(f"`{name}` must be >= {low}, got {value}.")


def _epoch(
    builder,
    split: str,
    seeds: tuple[int, int],
    skip_steps: int,
    *,
    batch_size: int,
    size: int,
    crop: int,
    prefetch: int,
    shuffle_buffer: int,
) -> tf.data.Dataset:
    """One epoch's batches (`batches`), its first `skip_steps` skipped undecoded.

    `seeds` are the file and example shuffling seeds (`_epoch_seeds`).
    """
    file_seed, example_seed = seeds
    ds = _read(builder, split, shuffle_seed=file_seed)
    ds = ds.shuffle(shuffle_buffer, seed=example_seed, reshuffle_each_iteration=False)
    ds = ds.skip(skip_steps * batch_size)
    ds = ds.map(
        lambda jpeg: preprocess(
            tf.io.decode_jpeg(jpeg, channels=3), size=size, crop=crop
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(prefetch) if prefetch else ds


def batches(
    *,
    split: str = "train",
    batch_size: int,
    seed: int,
    start_step: int = 0,
    data_dir: str | None = None,
    size: int = 64,
    crop: int = CROP,
    prefetch: int = 2,
    shuffle_buffer: int = 10_000,
) -> Iterator[np.ndarray]:
    """Infinite, deterministic stream of preprocessed CelebA batches.

    Epoch `e` reads the split with its files shuffled and its examples
    shuffled (buffer `shuffle_buffer`), both with seeds derived from
    `(seed, e)`, and drops the last incomplete batch, so every epoch has
    `num_examples(split) // batch_size` steps. Starting at global step
    `start_step` skips whole epochs arithmetically and then the first steps
    of the current epoch (before decoding), and yields exactly the batches an
    uninterrupted iterator would yield from that step on.

    The order also depends on TensorFlow's global seed, which tf.data folds
    into every shuffle seed: leave `tf.random.set_seed` alone in the trainer.

    Args:
        split: A tfds split of `celeb_a`: `"train"`, `"validation"`, `"test"`
            or a slice such as `"train[:10%]"`.
        batch_size: Images per batch.
        seed: Non-negative seed of the shuffling.
        start_step: Global step (batches already consumed) to start at.
        data_dir: The tensorflow-datasets directory; tfds's default
            (`~/tensorflow_datasets` or `$TFDS_DATA_DIR`) when None.
        size: Side of the output images.
        crop: Side of the centre crop (`preprocess`; `CROPS` by model).
        prefetch: Batches prepared ahead by tf.data (0 for none).
        shuffle_buffer: Size of the example shuffle buffer (encoded JPEGs,
            about 10 kB each).

    Returns:
        An infinite iterator of float32 numpy arrays of shape
        (batch_size, size, size, 3) with values in [-1, 1].

    Raises:
        ValueError: An argument is out of range, or the split has fewer than
            `batch_size` examples.
        DatasetNotPreparedError: CelebA is not prepared in `data_dir` (the
            message says how to prepare it). Raised by this call, not by the
            first `next`.
    """
    _check_at_least(
        batch_size=(batch_size, 1),
        seed=(seed, 0),
        start_step=(start_step, 0),
        size=(size, 1),
        crop=(crop, 1),
        prefetch=(prefetch, 0),
        shuffle_buffer=(shuffle_buffer, 1),
    )
    builder = _builder(data_dir)
    n = _num_examples(builder, split)
    if n < batch_size:
        raise ValueError(
            f"Split {split!r} has {n} examples, fewer than batch_size={batch_size}."
        )
    epoch, step = divmod(start_step, n // batch_size)
    options = {"batch_size": batch_size, "size": size, "crop": crop}
    options["prefetch"] = prefetch
    options["shuffle_buffer"] = shuffle_buffer

    def generate() -> Iterator[np.ndarray]:
        e, skip = epoch, step
        while True:
            ds = _epoch(builder, split, _epoch_seeds(seed, e), skip, **options)
            yield from ds.as_numpy_iterator()
            e, skip = e + 1, 0

    return generate()
