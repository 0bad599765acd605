"""data/gan_images.py: the synthetic translation task, the local-folder tfds builders (read back
through `tfds.data_source` without TensorFlow), the reference's preprocessing, the held-out
split, and the step-addressable training stream."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data import gan_images as gi
from lite_jax.core.errors import UserError

FLAT = gi.Preprocess(mode="none", flip=False)  # sources' pixels unchanged, only rescaled


def _image(seed: int, height: int, width: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(path, array: np.ndarray, mode: str | None = None) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(array)
  (image.convert(mode) if mode else image).save(path)


def _rgb(path) -> np.ndarray:
  """What the reference reads: PIL's decoding, converted to RGB."""
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def _uint8(image: np.ndarray) -> np.ndarray:
  """Undoes `x / 127.5 - 1` of uint8 pixels."""
  return np.round((image + 1) * 127.5).astype(np.uint8)


def _boundary(mask: np.ndarray) -> np.ndarray:
  """Pixels with a 4-neighbour on the other side of `mask`."""
  out = np.zeros_like(mask)
  vertical, horizontal = mask[1:] != mask[:-1], mask[:, 1:] != mask[:, :-1]
  out[1:] |= vertical
  out[:-1] |= vertical
  out[:, 1:] |= horizontal
  out[:, :-1] |= horizontal
  return out


# ---------------------------------------------------------------------------------------------
# Synthetic task.
# ---------------------------------------------------------------------------------------------


def test_synthetic_scenes_are_deterministic_images_in_range():
  scenes, again = gi.SyntheticShapes(6, seed=3, image_size=32), gi.SyntheticShapes(6, seed=3,
                                                                                  image_size=32)
  for i in range(6):
    example = scenes[i]
    assert set(example) == {"A", "B"}
    for key in "AB":
      image = example[key]
      assert image.shape == (32, 32, 3) and image.dtype == np.float32
      assert image.min() >= -1 and image.max() <= 1
      np.testing.assert_array_equal(image, again[i][key])
    assert set(np.unique(example["A"])) == {gi.EDGE, gi.BACKGROUND}
  assert not np.array_equal(scenes[0]["B"], scenes[1]["B"])
  assert not np.array_equal(scenes[0]["B"], gi.SyntheticShapes(6, seed=4, image_size=32)[0]["B"])
  assert gi.SyntheticShapes(2, seed=0, image_size=64)[1]["B"].shape == (64, 64, 3)
  with pytest.raises(IndexError):
    scenes[6]


def test_synthetic_outlines_are_the_boundaries_of_the_filled_shapes():
  scenes = gi.SyntheticShapes(20, seed=0, image_size=48)
  seen_kinds = set()
  for i in range(len(scenes)):
    a, b = scenes[i]["A"], scenes[i]["B"]
    np.testing.assert_array_equal(a[..., 0], a[..., 2])
    edges = a[..., 0] == gi.EDGE
    shapes = (b != gi.BACKGROUND).any(-1)
    assert 0.01 < shapes.mean() < 0.8
    assert (edges[_boundary(shapes)]).all()  # every silhouette edge is outlined in A ...
    near_shapes = shapes | _boundary(shapes)
    assert near_shapes[edges].all()  # ... and every outline touches a shape of B.
    # Inside a shape, B is its kind's colour (the dominant channel says which) minus a stripe.
    kinds = np.argmax(b[shapes], -1)
    darker = gi.SHAPE_COLOURS[kinds] - b[shapes]
    np.testing.assert_allclose(darker, darker[:, :1].repeat(3, 1), atol=1e-6)
    assert darker.min() >= -1e-6 and darker.max() <= 0.4 + 1e-6
    seen_kinds.update(kinds.tolist())
  assert seen_kinds == {0, 1, 2}


def test_synthetic_task_unpaired_domains_come_from_independent_scenes():
  paired = gi.load_image_task("synthetic", paired=True, synthetic_size=32, synthetic_train=8,
                              synthetic_test=4)
  unpaired = gi.load_image_task("synthetic", paired=False, synthetic_size=32, synthetic_train=8,
                                synthetic_test=4)
  assert unpaired.preprocess == gi.Preprocess(mode="none")
  assert set(unpaired.train[0]) == {"A"} and set(unpaired.train_B[0]) == {"B"}
  assert set(unpaired.test[0]) == {"A", "B"} and set(unpaired.test_B[0]) == {"B"}
  assert paired.train_B is None and paired.test_B is None
  np.testing.assert_array_equal(unpaired.train[3]["A"], paired.train[3]["A"])
  assert not np.array_equal(unpaired.train_B[3]["B"], paired.train[3]["B"])
  reverse = gi.load_image_task("synthetic", paired=False, direction="BtoA", synthetic_size=32,
                               synthetic_train=8, synthetic_test=4)
  np.testing.assert_array_equal(reverse.train[2]["A"], unpaired.train_B[2]["B"])
  np.testing.assert_array_equal(reverse.test[1]["A"], unpaired.test[1]["B"])
  reverse_pairs = gi.load_image_task("synthetic", paired=True, direction="BtoA",
                                     synthetic_size=32, synthetic_train=8, synthetic_test=4)
  np.testing.assert_array_equal(reverse_pairs.train[5]["B"], paired.train[5]["A"])


def _indices(subset, source) -> list[int]:
  return [next(i for i in range(len(source)) if np.array_equal(x["A"], source[i]["A"]))
          for x in subset]


def test_holdout_split_is_disjoint_and_fixed_by_the_data_seed():
  load = lambda seed: gi.load_image_task("synthetic", paired=True, holdout=4, seed=seed,
                                         synthetic_size=16, synthetic_train=12, synthetic_test=2)
  task = load(0)
  train1, train2 = _indices(task.train1, task.train), _indices(task.train2, task.train)
  assert len(train1) == 8 and len(train2) == 4
  assert sorted(train1 + train2) == list(range(12))
  again = load(0)
  assert _indices(again.train2, again.train) == train2
  other = load(1)
  assert _indices(other.train2, other.train) != train2
  whole = gi.load_image_task("synthetic", paired=False, synthetic_size=16, synthetic_train=5,
                             synthetic_test=2)
  assert len(whole.train1) == 5 and len(whole.train2) == 0


# ---------------------------------------------------------------------------------------------
# Preprocessing.
# ---------------------------------------------------------------------------------------------


def test_train_transform_crops_and_flips_both_images_of_a_pair_alike():
  a = _image(0, 30, 26)
  preprocess = gi.Preprocess(load_size=20, crop_size=16)
  resized = np.asarray(Image.fromarray(a).resize((20, 20), Image.BICUBIC))
  chosen = set()
  for seed in range(16):
    out = gi.train_transform({"A": a, "B": a.copy()}, np.random.default_rng(seed), preprocess)
    assert out["A"].shape == (16, 16, 3) and out["A"].dtype == np.float32
    np.testing.assert_array_equal(out["A"], out["B"])
    # An independent reading of the reference: resize, crop a window, maybe flip, rescale.
    matches = [(top, left, flip) for top in range(5) for left in range(5) for flip in (0, 1)
               if np.allclose(out["A"], (resized[top:top + 16, left:left + 16, :][
                   :, ::-1 if flip else 1] / 127.5 - 1), atol=1e-6)]
    assert len(matches) == 1
    chosen.add(matches[0])
  assert len(chosen) > 4 and {flip for _, _, flip in chosen} == {0, 1}
  float_image = gi.SyntheticShapes(1, 0, image_size=16)[0]["B"]
  out = gi.train_transform({"B": float_image}, np.random.default_rng(0), preprocess)["B"]
  assert out.shape == (16, 16, 3) and -1 <= out.min() and out.max() <= 1


def test_eval_transform_resizes_to_the_crop_size_and_never_flips():
  a = _image(1, 30, 26)
  out = gi.eval_transform({"A": a}, gi.Preprocess(load_size=20, crop_size=16))["A"]
  want = np.asarray(Image.fromarray(a).resize((16, 16), Image.BICUBIC)) / 127.5 - 1
  np.testing.assert_allclose(out, want, atol=1e-6)
  # `none` rounds each side to a multiple of 4 as Python's round does (26 / 4 = 6.5 -> 6).
  assert gi.eval_transform({"A": a}, FLAT)["A"].shape == (32, 24, 3)
  np.testing.assert_array_equal(_uint8(gi.eval_transform({"A": _image(2, 8, 12)}, FLAT)["A"]),
                                _image(2, 8, 12))


# ---------------------------------------------------------------------------------------------
# Training stream and evaluation batches.
# ---------------------------------------------------------------------------------------------


def test_train_batches_are_a_function_of_the_step():
  task = gi.load_image_task("synthetic", paired=True, synthetic_size=16, synthetic_train=10,
                            synthetic_test=2)
  stream = lambda seed: gi.train_batches(task.train, task.preprocess, batch_size=4, seed=seed)
  iterator = iter(stream(0))
  iterated = [next(iterator) for _ in range(6)]
  assert iterated[0]["A"].shape == (4, 16, 16, 3) and iterated[0]["B"].dtype == np.float32
  resumed = next(iter(stream(0).slice(slice(4, None))))
  for key in "AB":
    np.testing.assert_array_equal(resumed[key], iterated[4][key])
    np.testing.assert_array_equal(stream(0)[5][key], iterated[5][key])
  assert not np.array_equal(stream(1)[0]["A"], iterated[0]["A"])


def test_unpaired_batches_shuffle_each_domain_independently_per_epoch():
  ids = lambda key: [{key: np.full((4, 4, 3), i, np.uint8)} for i in range(8)]
  stream = gi.train_batches(ids("A"), FLAT, batch_size=4, seed=0, examples_B=ids("B"))
  batches = [stream[step] for step in range(4)]  # two epochs of 8
  order = {key: np.concatenate([_uint8(b[key])[:, 0, 0, 0] for b in batches]) for key in "AB"}
  for key in "AB":
    assert sorted(order[key][:8]) == list(range(8)) and sorted(order[key][8:]) == list(range(8))
    assert not np.array_equal(order[key][:8], order[key][8:])  # reshuffled each epoch
  assert not np.array_equal(order["A"], order["B"])


def test_eval_batches_pad_the_last_batch_and_mask_it():
  task = gi.load_image_task("synthetic", paired=True, synthetic_size=16, synthetic_train=4,
                            synthetic_test=5)
  batches = list(gi.eval_batches(task.test, task.preprocess, batch_size=2))
  assert len(batches) == 3
  assert [b["mask"].tolist() for b in batches] == [[True, True], [True, True], [True, False]]
  for b in batches:
    assert b["A"].shape == b["B"].shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(batches[2]["B"][1], batches[2]["B"][0])
  np.testing.assert_array_equal(batches[1]["A"][1], task.test[3]["A"])


# ---------------------------------------------------------------------------------------------
# Local folders -> ArrayRecord -> tfds.data_source (no TensorFlow installed in CI).
# ---------------------------------------------------------------------------------------------


def _write_unpaired(root, seed: int = 0) -> dict[str, list[str]]:
  """A tiny CycleGAN layout with RGB/gray/RGBA PNGs, JPEGs in a subfolder, and a BMP."""
  files = {
      "trainA": [("a0.png", None), ("a1.png", "L"), ("a2.png", "RGBA")],
      "trainB": [("b1.bmp", None), ("sub/b0.jpg", None)],
      "testA": [("t0.png", None), ("t1.png", None)], "testB": [("u0.png", None)],
      "valA": [("v0.png", None)], "valB": [("w0.png", None), ("w1.jpeg", None)]}
  written = {}
  for k, (split, names) in enumerate(files.items()):
    written[split] = []
    for j, (name, mode) in enumerate(names):
      path = os.path.join(root, split, name)
      _save(path, _image(seed * 100 + k * 10 + j, 12 + j, 10 + k), mode)
      written[split].append(path)
    with open(os.path.join(root, split, "notes.txt"), "w") as f:
      f.write("not an image; skipped")
  return written


def test_unpaired_folder_builds_once_and_reads_back_without_tensorflow(tmp_path):
  root, data_dir = tmp_path / "x" / "horse2zebra", str(tmp_path / "tfds")
  files = _write_unpaired(str(root))
  task = gi.load_image_task(f"folder:{root}", paired=False, data_dir=data_dir, preprocess=FLAT)
  assert (len(task.train), len(task.train_B), len(task.test), len(task.test_B)) == (3, 2, 1, 2)
  for source, key, split in ((task.train, "A", "trainA"), (task.train_B, "B", "trainB"),
                             (task.test, "A", "valA"), (task.test_B, "B", "valB")):
    for i, path in enumerate(sorted(files[split])):
      image = source[i][key]
      assert image.dtype == np.uint8 and image.shape[-1] == 3
      np.testing.assert_array_equal(image, _rgb(path))
  builder = gi.prepare_folder(gi.UnpairedImages, str(root), data_dir)
  assert set(builder.info.splits) == {"trainA", "trainB", "testA", "testB", "valA", "valB"}
  assert builder.as_data_source("trainB")[1]["file_name"] == os.path.join("sub", "b0.jpg").encode()
  reverse = gi.load_image_task(f"folder:{root}", paired=False, direction="BtoA",
                               data_dir=data_dir)
  np.testing.assert_array_equal(reverse.train[1]["A"], task.train_B[1]["B"])
  np.testing.assert_array_equal(reverse.test_B[0]["B"], task.test[0]["A"])
  # Another folder of the same name builds beside it; the first is not rebuilt or overwritten.
  other = tmp_path / "y" / "horse2zebra"
  _write_unpaired(str(other), seed=1)
  os.remove(other / "trainA" / "a2.png")
  assert len(gi.load_image_task(f"folder:{other}", paired=False, data_dir=data_dir).train) == 2
  assert len(os.listdir(os.path.join(data_dir, "unpaired_images"))) == 2
  np.testing.assert_array_equal(
      gi.load_image_task(f"folder:{root}", paired=False, data_dir=data_dir).train[0]["A"],
      task.train[0]["A"])


def _write_paired(root, splits=("train", "val", "test"), width: int = 20) -> dict[str, list]:
  """Side-by-side images; returns each split's `(A, B)` halves in file order."""
  halves = {}
  for k, split in enumerate(splits):
    halves[split] = []
    for j in range(3 - k):
      ab = _image(k * 10 + j, 14, width)
      _save(os.path.join(root, split, f"{j}.png"), ab)
      halves[split].append((ab[:, :width // 2], ab[:, width // 2:]))
  return halves


def test_paired_folder_cuts_halves_at_load_time_in_either_direction(tmp_path):
  root, data_dir = tmp_path / "facades", str(tmp_path / "tfds")
  halves = _write_paired(str(root))
  task = gi.load_image_task(f"folder:{root}", paired=True, data_dir=data_dir, holdout=1)
  assert task.preprocess == gi.Preprocess()
  assert (len(task.train), len(task.test), len(task.train1), len(task.train2)) == (3, 2, 2, 1)
  for source, split in ((task.train, "train"), (task.test, "val")):  # val is the reference's
    for i, (a, b) in enumerate(halves[split]):
      np.testing.assert_array_equal(source[i]["A"], a)
      np.testing.assert_array_equal(source[i]["B"], b)
  reverse = gi.load_image_task(f"folder:{root}", paired=True, direction="BtoA", data_dir=data_dir)
  np.testing.assert_array_equal(reverse.train[2]["A"], halves["train"][2][1])
  np.testing.assert_array_equal(reverse.train[2]["B"], halves["train"][2][0])
  batch = gi.train_batches(task.train, gi.Preprocess(load_size=12, crop_size=8), batch_size=2,
                           seed=0)[0]
  assert batch["A"].shape == batch["B"].shape == (2, 8, 8, 3)
  unpaired = gi.load_image_task(f"folder:{root}", paired=False, data_dir=data_dir)
  np.testing.assert_array_equal(unpaired.train_B[1]["B"], halves["train"][1][1])
  np.testing.assert_array_equal(unpaired.test_B[0]["B"], halves["val"][0][1])


def test_tfds_cycle_gan_is_read_from_data_dir_without_download(tmp_path):
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    task = gi.load_image_task("tfds:cycle_gan/horse2zebra", paired=False,
                              data_dir=str(tmp_path), holdout=1)
    assert (len(task.train), len(task.train_B), len(task.train1)) == (3, 3, 2)
    image = task.train[0]["A"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    batch = next(gi.eval_batches(task.test, gi.Preprocess(load_size=12, crop_size=8), 4))
    assert batch["A"].shape == (4, 8, 8, 3) and batch["mask"].tolist() == [True] * 3 + [False]
  with pytest.raises(UserError, match="not prepared as ArrayRecord"):
    gi.load_image_task("tfds:cycle_gan/horse2zebra", paired=False, data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# User errors: one sentence naming the file or folder.
# ---------------------------------------------------------------------------------------------


def test_folder_errors_name_the_file_or_folder(tmp_path):
  data_dir = str(tmp_path / "tfds")
  load = lambda root, paired=False: gi.load_image_task(f"folder:{root}", paired=paired,
                                                       data_dir=data_dir)
  with pytest.raises(UserError, match="missing' is not a directory"):
    load(tmp_path / "missing")
  no_b = tmp_path / "no_b"
  _write_unpaired(str(no_b))
  os.rename(no_b / "trainB", no_b / "elsewhere")
  with pytest.raises(UserError, match="trainB' is not a directory"):
    load(no_b)
  empty = tmp_path / "empty"
  _write_unpaired(str(empty))
  for name in os.listdir(empty / "testA"):
    os.remove(empty / "testA" / name)
  with pytest.raises(UserError, match="testA' holds no .jpg"):
    load(empty)
  broken = tmp_path / "broken"
  _write_unpaired(str(broken))
  (broken / "trainA" / "bad.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(UserError, match="bad.jpg' cannot be read"):
    load(broken)
  with pytest.raises(UserError, match="has no train/ of side-by-side"):
    load(broken, paired=True)
  odd = tmp_path / "odd"
  _write_paired(str(odd), width=21)
  with pytest.raises(UserError, match="0.png' is 21 pixels wide"):
    load(odd, paired=True)
  train_only = tmp_path / "train_only"
  _write_paired(str(train_only), splits=("train",))
  with pytest.raises(UserError, match="needs train/ and val/ or test/"):
    load(train_only, paired=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(source="horses"), "unknown image source"),
    (dict(source="folder:"), "unknown image source"),
    (dict(source="synthetic", direction="AB"), "direction must be"),
    (dict(source="synthetic", holdout=8), "holdout must be in 0..7"),
    (dict(source="synthetic", synthetic_train=0), "num_examples >= 1"),
    (dict(source="tfds:cycle_gan/horse2zebra", paired=True), "use paired=False"),
])
def test_task_errors(kwargs, match):
  kwargs = {"paired": True, "synthetic_size": 16, "synthetic_train": 8, **kwargs}
  with pytest.raises(UserError, match=match):
    gi.load_image_task(kwargs.pop("source"), **kwargs)


def test_preprocess_errors():
  with pytest.raises(UserError, match="preprocess mode must be"):
    gi.Preprocess(mode="scale_width")
  with pytest.raises(UserError, match="crop_size must be in 1..load_size"):
    gi.Preprocess(load_size=256, crop_size=286)
  with pytest.raises(UserError, match="batch_size must be positive"):
    next(gi.eval_batches([], FLAT, 0))


def test_images_of_different_sizes_do_not_batch():
  items = [{"A": np.zeros((8, 8, 3))}, {"A": np.zeros((8, 12, 3))}]
  with pytest.raises(UserError, match="different sizes"):
    gi.stack_examples(items)
