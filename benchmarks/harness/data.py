"""Training batches for the harness, sharded over the local devices.

Three sources behind one interface, all deterministic by `(seed, step)` so a
resumed run sees the batches an uninterrupted run would have seen:

- `faces`: the procedural faces of `benchmarks.harness.faces`, rendered on the
  accelerator inside a jitted function (nothing to load; JAX's asynchronous
  dispatch renders the next batch while the current step runs);
- `celeb_a`: CelebA through tensorflow-datasets (`benchmarks.harness.celeba`), read by
  tf.data on the host, then put on the devices by a background thread that
  keeps `prefetch` batches ahead. The centre crop is a parameter (`crop`);
  `celeba_crop` gives each model's, that of its public reference code
  (148 for the β-VAE, 108 for the DCGAN);
- `image_folder`: a folder of JPEG or PNG images, e.g. CelebA's
  `img_align_celeba/` without tensorflow-datasets
  (`benchmarks.harness.image_folder`), read by tf.data and put on the
  devices in the same way, with the same crop and resize.

Batches are split over a one-axis mesh (`"data"`) of all devices. With
several processes each reads only its own share, the rows its devices hold
(`process_rows`): faces renders only those rows (from the factors of the
whole batch, a few numbers a face), on its own devices, and the global
array is assembled from the devices' shards
(`jax.make_array_from_single_device_arrays`); CelebA (its seed offset by the
process index) and a folder (its images split `index::count` between the
processes) read `batch_size / process_count` images on the host, assembled
with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from benchmarks.harness import faces

DATASETS = ("faces", "celeb_a", "image_folder")
# The CelebA centre crop of each model's public reference code, by `--model`
# name (`benchmarks.harness.celeba.CROPS`; here so that looking one up does not
# import TensorFlow): yzwxx/vae-celebA and tensorlayer/dcgan's `image_size`.
CELEBA_CROPS = {"vae": 148, "dcgan": 108}
# The evaluation batch of `faces` is drawn at this step, never reached in training.
EVAL_STEP = 2**31 - 1


def celeba_crop(model: str) -> int:
    """The CelebA centre crop of a model's public reference code.

    Args:
      model: a `--model` name (`vae`, `dcgan`).

    Returns:
      The side of the crop: 148 for the β-VAE, 108 for the DCGAN.

    Raises:
      ValueError: for a model without a CelebA crop.
    """
    try:
        return CELEBA_CROPS[model]
    except KeyError:
        raise ValueError(
            f"no CelebA crop for model {model!r}; known: {list(CELEBA_CROPS)}"
        ) from None


def data_mesh() -> Mesh:
    """A one-axis mesh (`"data"`) of all devices, for data parallelism.

    The axis is `AxisType.Auto`, so that `jit` propagates the batch's
    sharding through the step. Under `jax.make_mesh`'s default (`Explicit`)
    the compiled step gathered the whole batch onto every device before the
    first convolution: each device computed the global batch, and two
    devices took 2.2x one device's step
    (`python -m benchmarks.speed.bench_multiprocess`).

    Returns:
      The mesh.
    """
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises unless `batch_size` splits evenly over the mesh (and processes).

    Args:
      batch_size: the global batch size.
      mesh: the data mesh.

    Raises:
      ValueError: if it does not.
    """
    n = mesh.devices.size
    if batch_size < 1 or batch_size % n or batch_size % jax.process_count():
        raise ValueError(
            f"--batch {batch_size} must be a positive multiple of the {n} devices "
            f"({jax.process_count()} processes) it is split over."
        )


def process_rows(
    sharding: NamedSharding, shape: tuple[int, ...]
) -> tuple[np.ndarray, list[jax.Device]]:
    """The rows of a global batch that this process's devices hold.

    Args:
      sharding: the batch's sharding (split on its first axis).
      shape: the global batch's shape.

    Returns:
      `(rows, devices)`: the rows' indices, ascending, and this process's
      devices, each holding the next `len(rows) / len(devices)` of them.
    """
    spans = []
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        start, stop, _ = index[0].indices(shape[0])
        spans.append((start, stop, device))
    spans.sort(key=lambda span: span[:2])
    rows = np.concatenate([np.arange(start, stop) for start, stop, _ in spans])
    return rows, [device for _, _, device in spans]


def row_ranges(rows: np.ndarray) -> str:
    """Row indices as ranges, for people: `0–3`, `0–3, 8–11`.

    Args:
      rows: ascending indices.

    Returns:
      The text.
    """
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    runs = np.split(rows, breaks)
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


@dataclasses.dataclass
class Batches:
    """An iterator of global `(batch_size, size, size, 3)` arrays in [-1, 1].

    Each process makes only its rows (`rows`, see `process_rows`).

    Attributes:
      dataset: `"faces"`, `"celeb_a"` or `"image_folder"`.
      batch_size: the global batch size.
      size: image height and width.
      seed: the data seed.
      start_step: the first step's index.
      mesh: the data mesh the batches are split over.
      data_dir: the tensorflow-datasets directory (`celeb_a`), or the folder
        of images (`image_folder`, required).
      prefetch: batches kept ready ahead (not `faces`).
      crop: the side of the centre crop (`celeba_crop`); None: the β-VAE's,
        `benchmarks.harness.celeba.CROP` (not `faces`).
    """

    dataset: str
    batch_size: int
    size: int
    seed: int
    start_step: int
    mesh: Mesh
    data_dir: str | None = None
    prefetch: int = 2
    crop: int | None = None

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}; got {self.dataset!r}")
        check_batch_size(self.batch_size, self.mesh)
        self.sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.shape = (self.batch_size, self.size, self.size, 3)
        self.rows, devices = process_rows(self.sharding, self.shape)
        if self.dataset == "faces":
            local = NamedSharding(
                Mesh(np.array(devices), ("data",)), PartitionSpec("data")
            )
            self._render = jax.jit(self._render_rows, out_shardings=local)
            self._iter = self._faces()
        else:  # raises now if the data is missing
            self._iter = self._from_host()

    def __iter__(self) -> Iterator[jax.Array]:
        return self._iter

    def __next__(self) -> jax.Array:
        return next(self._iter)

    def _render_rows(self, step: jax.Array) -> jax.Array:
        """This process's rows of `faces.batch(seed, step, batch_size)`."""
        key = jax.random.fold_in(jax.random.key(self.seed), step)
        factors = faces.sample_factors(key, self.batch_size)
        mine = jax.tree.map(lambda a: a[jnp.asarray(self.rows)], factors)
        return faces.render(mine, size=self.size)

    def _faces(self) -> Iterator[jax.Array]:
        step = self.start_step
        while True:
            local = self._render(np.int32(step))
            shards = [shard.data for shard in local.addressable_shards]
            yield jax.make_array_from_single_device_arrays(
                self.shape, self.sharding, shards
            )
            step += 1

    def _from_host(self) -> Iterator[jax.Array]:
        from benchmarks.harness import celeba  # TensorFlow only when asked for

        local = self.batch_size // jax.process_count()
        options = {"start_step": self.start_step, "size": self.size}
        options["crop"] = celeba.CROP if self.crop is None else self.crop
        if self.dataset == "celeb_a":
            host = celeba.batches(
                batch_size=local,
                seed=self.seed + 1000 * jax.process_index(),
                data_dir=self.data_dir,
                **options,
            )
        else:
            host = _folder(self.data_dir).batches(
                self.data_dir,
                batch_size=local,
                seed=self.seed,
                shard=(jax.process_index(), jax.process_count()),
                **options,
            )

        def put(x: np.ndarray) -> jax.Array:
            return jax.make_array_from_process_local_data(self.sharding, x, self.shape)

        return _prefetch(map(put, host), self.prefetch)


def _folder(data_dir: str | None):
    """`benchmarks.harness.image_folder`, once `data_dir` is known to be given."""
    if data_dir is None:
        raise ValueError(
            "--dataset image_folder needs --data-dir, the folder of images (e.g. "
            "CelebA's img_align_celeba/)."
        )
    from benchmarks.harness import image_folder  # TensorFlow only when asked for

    return image_folder


def _prefetch(it: Iterator, size: int) -> Iterator:
    """Runs `it` in a background thread, `size` items ahead."""
    if size < 1:
        yield from it
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def work():
        try:
            for item in it:
                q.put(item)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def eval_faces(seed: int, n: int, size: int) -> tuple[jax.Array, faces.FaceFactors]:
    """A fixed evaluation batch of faces and their factors.

    Args:
      seed: the data seed.
      n: the number of faces.
      size: image height and width.

    Returns:
      `(images, factors)`, never seen in training.
    """
    return faces.batch(seed, EVAL_STEP, n, size=size)


def eval_celeb_a(
    seed: int, n: int, size: int, data_dir: str | None, *, crop: int | None = None
) -> jax.Array:
    """A fixed evaluation batch of CelebA's validation split.

    Args:
      seed: the data seed.
      n: the number of images.
      size: image height and width.
      data_dir: the tensorflow-datasets directory.
      crop: the side of the centre crop (`celeba_crop`); None: the β-VAE's.

    Returns:
      Images `(n, size, size, 3)` in [-1, 1].
    """
    from benchmarks.harness import celeba

    it = celeba.batches(
        split="validation",
        batch_size=n,
        seed=seed,
        data_dir=data_dir,
        size=size,
        crop=celeba.CROP if crop is None else crop,
    )
    return jax.numpy.asarray(next(it))


def eval_image_folder(
    seed: int, n: int, size: int, data_dir: str | None, *, crop: int | None = None
) -> jax.Array:
    """A fixed evaluation batch of a folder's held-out images.

    The held-out images are CelebA's validation partition where the folder
    has its `list_eval_partition.txt`, else the last tenth by sorted path
    (`benchmarks.harness.image_folder`).

    Args:
      seed: the data seed.
      n: the number of images.
      size: image height and width.
      data_dir: the folder of images.
      crop: the side of the centre crop (`celeba_crop`); None: the β-VAE's.

    Returns:
      Images `(n, size, size, 3)` in [-1, 1].

    Raises:
      FileNotFoundError, ValueError: no such folder, no images, fewer than `n`
        held-out images, or an image that cannot be read (the message says
        which and what to do).
    """
    from benchmarks.harness import celeba

    it = _folder(data_dir).batches(
        data_dir,
        split="eval",
        batch_size=n,
        seed=seed,
        size=size,
        crop=celeba.CROP if crop is None else crop,
        prefetch=0,
    )
    return jax.numpy.asarray(next(it))
