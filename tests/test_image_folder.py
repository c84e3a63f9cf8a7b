"""A folder of images as training data: shapes, splits, determinism,
resumption, errors, and a short training on it.

The images are written by the tests: each is one flat colour that encodes its
index (`_colour`), which survives the crop, the resize and JPEG, so a batch
says which files it holds.
"""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from benchmarks.harness import data, image_folder, train

SIZE, CROP = 8, 16  # output side, centre crop (images are 20×24)


def _colour(i: int) -> tuple[int, int, int]:
    return 8 * (i % 30) + 8, 8 * (i // 30) + 8, 128


def _indices(batch: np.ndarray) -> list[int]:
    """The image index each image of a batch encodes (`_colour`)."""
    pixels = (batch[:, SIZE // 2, SIZE // 2, :2] + 1) * 127.5
    r, g = np.round((pixels[:, 0] - 8) / 8), np.round((pixels[:, 1] - 8) / 8)
    return [int(i) for i in r + 30 * g]


def _write(folder, names, *, shape=(20, 24)):
    """Writes image `i` of `names` (PNG or JPEG by extension) in its colour."""
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*shape, 3), _colour(i), np.uint8)).save(
            path, quality=95
        )


def _names(n):
    """Names sorting in index order, half PNG and half JPEG, some in a subfolder."""
    return [
        f"{'a' if i < n // 2 else 'b/sub'}/{i:03d}.{'png' if i % 2 else 'jpg'}"
        for i in range(n)
    ]


def _stream(folder, **kwargs):
    kwargs = {"batch_size": 4, "seed": 0, "size": SIZE, "crop": CROP, **kwargs}
    return image_folder.batches(folder, **kwargs)


def _take(it, n):
    return np.stack([next(it) for _ in range(n)])


@pytest.fixture
def folder(tmp_path):
    """20 images, no partition file: the last 2 are held out."""
    root = tmp_path / "faces"
    _write(root, _names(20))
    return root


def test_batches_shapes_range_and_held_out_images(folder, capsys):
    batches = _take(_stream(folder), 8)  # two epochs of 4 steps (18 images)
    assert batches.shape == (8, 4, SIZE, SIZE, 3) and batches.dtype == np.float32
    assert batches.min() >= -1.0 and batches.max() <= 1.0
    # Each image is flat: the crop and resize keep its colour, JPEG nearly.
    spread = batches.max(axis=(2, 3)) - batches.min(axis=(2, 3))
    assert spread.max() < 4 / 127.5
    for epoch in batches.reshape(2, 16, SIZE, SIZE, 3):
        seen = _indices(epoch)
        assert len(set(seen)) == 16 and set(seen) <= set(range(18)), seen
    assert _indices(batches[:4].reshape(16, SIZE, SIZE, 3)) != _indices(
        batches[4:].reshape(16, SIZE, SIZE, 3)
    )  # each epoch has its own order
    held = next(_stream(folder, split="eval", batch_size=2))
    assert sorted(_indices(held)) == [18, 19]  # the last 10 % by sorted path
    x = data.eval_image_folder(0, 2, SIZE, str(folder), crop=CROP)
    assert isinstance(x, jax.Array) and sorted(_indices(np.asarray(x))) == [18, 19]
    said = [ln for ln in capsys.readouterr().out.splitlines() if "held out" in ln]
    assert len(said) == 1 and "the last 2 of 20 images" in said[0], said


def test_same_batches_for_the_same_seed_and_when_resumed(folder):
    reference = _take(_stream(folder), 9)  # 2.25 epochs
    np.testing.assert_array_equal(_take(_stream(folder), 9), reference)
    for k in (1, 3, 4, 5, 8):  # within, at and across epoch boundaries
        resumed = next(_stream(folder, start_step=k))
        np.testing.assert_array_equal(resumed, reference[k], err_msg=f"step {k}")
    other = _take(_stream(folder, seed=1), 4)
    assert _indices(other.reshape(16, SIZE, SIZE, 3)) != _indices(
        reference[:4].reshape(16, SIZE, SIZE, 3)
    )


def test_shards_are_disjoint_and_cover_the_split(folder):
    seen = [_indices(next(_stream(folder, batch_size=9, shard=(i, 2)))) for i in (0, 1)]
    assert set(seen[0]).isdisjoint(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(18))


@pytest.mark.parametrize("layout", ["txt in parent", "csv nested"])
def test_partition_file_splits_train_and_evaluation(tmp_path, layout):
    n = 24
    parts = [0, 0, 1, 2] * (n // 4)  # 12 train, 6 validation, 6 test
    flat = [f"{i + 1:06d}.jpg" for i in range(n)]
    if layout == "txt in parent":
        folder = tmp_path / "img_align_celeba"
        _write(folder, flat)
        lines = [f"{name} {p}" for name, p in zip(flat, parts, strict=True)]
        (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    else:  # listed by file name, the images one folder deeper, a CSV
        folder = tmp_path / "img_align_celeba"
        _write(folder / "img_align_celeba", flat)
        lines = ["image_id,partition"]
        lines += [f"{name},{p}" for name, p in zip(flat, parts, strict=True)]
        (folder / "list_eval_partition.csv").write_text("\n".join(lines) + "\n")
    train_ids = {i for i in range(n) if parts[i] == 0}
    seen = _indices(_take(_stream(folder), 9).reshape(-1, SIZE, SIZE, 3))
    assert set(seen) == train_ids  # 3 epochs; no validation or test image
    held = _indices(next(_stream(folder, split="eval", batch_size=6)))
    assert sorted(held) == [i for i in range(n) if parts[i] == 1]
    assert image_folder.split_images(folder).source.count("partition 0") == 1


def test_errors_name_the_folder_or_file_and_the_fix(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        _stream(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"empty: no image found.*\.png"):
        _stream(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"18 train images .* fewer than a batch"):
        _stream(folder, batch_size=19)
    with pytest.raises(ValueError, match="pass a smaller --eval-batch"):
        data.eval_image_folder(0, 3, SIZE, str(folder), crop=CROP)
    with pytest.raises(ValueError, match="needs --data-dir"):
        data.eval_image_folder(0, 2, SIZE, None)
    bad = folder / "a" / "004.jpg"
    bad.write_bytes(b"not a JPEG")
    with pytest.raises(ValueError, match=rf"{bad}: cannot read it as an image"):
        _take(_stream(folder, batch_size=2), 9)  # an epoch reads all 18
    _write(folder / "a", ["004.jpg"], shape=(20, 12))
    with pytest.raises(ValueError, match=r"004.jpg: 20×12 is smaller than the 16×16"):
        _take(_stream(folder, batch_size=2), 9)
    (folder.parent / "list_eval_partition.txt").write_text("999999.jpg 0\n")
    with pytest.raises(ValueError, match="names none of the 20 images"):
        _stream(folder)


def test_training_on_an_image_folder(tmp_path):
    # CelebA-like: 150×150 images (the β-VAE's crop is 148), a partition file.
    folder = tmp_path / "img_align_celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(12)]
    _write(folder, names, shape=(150, 150))
    lines = [f"{name} {0 if i < 8 else 1}" for i, name in enumerate(names)]
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines))
    out = tmp_path / "run"
    with jax.numpy_dtype_promotion("standard"):  # optax and orbax mix scalars
        train.main(
            [
                *("--dataset", "image_folder", "--data-dir", str(folder)),
                *("--config", "tiny", "--batch", "4", "--eval-batch", "4"),
                *("--steps", "2", "--log-every", "1", "--eval-every", "2"),
                *("--no-progress", "--no-tensorboard", "--out", str(out)),
            ]
        )
    records = [
        json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()
    ]
    kinds = [(r["kind"], r["step"]) for r in records]
    assert kinds == [("eval", 0), ("train", 1), ("train", 2), ("eval", 2)]
    assert np.isfinite(records[-2]["loss"]) and np.isfinite(records[-1]["recon_mse"])
    assert json.loads((out / "config.json").read_text())["celeba_crop"] == 148
