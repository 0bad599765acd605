"""data/label_maps.py: the synthetic label-map task, the Cityscapes and COCO-Stuff tfds builders (read back
through `tfds.data_source` without TensorFlow), the reference's preprocessing and instance
edges, the held-out split, the step-addressable training stream and the user errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from data import label_maps as lm
from lite_jax.core.errors import UserError

FLAT = lm.Preprocess(32, 64, flip=False)


def _edges_by_loop(ids: np.ndarray) -> np.ndarray:
  """The reference's `get_edges`, pixel by pixel."""
  h, w = ids.shape
  out = np.zeros((h, w), np.float32)
  for y in range(h):
    for x in range(w):
      for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        if 0 <= y + dy < h and 0 <= x + dx < w and ids[y + dy, x + dx] != ids[y, x]:
          out[y, x] = 1
  return out


# ---------------------------------------------------------------------------------------------
# Synthetic task.
# ---------------------------------------------------------------------------------------------


def test_instance_edges_match_a_pixel_loop():
  ids = np.random.default_rng(0).integers(0, 3, (2, 9, 13))
  edges = lm.instance_edges(ids)
  for image, expected in zip(ids, edges):
    np.testing.assert_array_equal(expected, _edges_by_loop(image))


def test_synthetic_scenes_are_deterministic_and_consistent():
  scenes = lm.SyntheticLabelMaps(5, seed=3, height=32, width=64)
  again = lm.SyntheticLabelMaps(5, seed=3, height=32, width=64)
  for i in range(5):
    example = scenes[i]
    for key in ("label", "instance", "image"):
      np.testing.assert_array_equal(example[key], again[i][key])
    label, instance, image = example["label"], example["instance"], example["image"]
    assert label.shape == instance.shape == (32, 64) and image.shape == (32, 64, 3)
    assert image.dtype == np.float32 and -1 <= image.min() and image.max() <= 1
    np.testing.assert_array_equal(label == 0, instance == 0)  # background has no instance
    for k in np.unique(instance[instance > 0]):
      assert len(np.unique(label[instance == k])) == 1  # one class per instance
    edge = lm.instance_edges(instance) > 0
    np.testing.assert_array_equal(image[edge], np.float32(-0.9))  # boundaries are dark
    background = (instance == 0) & ~edge
    np.testing.assert_allclose(image[background], np.broadcast_to(
        lm.SYNTHETIC_COLOURS[0], (background.sum(), 3)), atol=1e-6)
  assert not np.array_equal(scenes[0]["label"], lm.SyntheticLabelMaps(
      1, seed=4, height=32, width=64)[0]["label"])


def test_transform_flips_maps_and_image_alike_and_edges_follow():
  example = lm.SyntheticLabelMaps(1, seed=0, height=32, width=64)[0]
  plain, flipped = lm.transform(example, FLAT), lm.transform(example, FLAT, flip=True)
  for key in ("label", "edge", "image"):
    np.testing.assert_array_equal(flipped[key], plain[key][:, ::-1])
  np.testing.assert_array_equal(plain["edge"], _edges_by_loop(example["instance"]))
  assert plain["label"].dtype == np.int32 and plain["edge"].dtype == np.float32


def test_transform_resizes_labels_nearest_and_images_bicubic():
  rng = np.random.default_rng(1)
  example = {"label": rng.integers(0, 35, (64, 128), dtype=np.uint8),
             "instance": rng.integers(0, 30000, (64, 128)).astype(np.int32),
             "image": rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)}
  out = lm.transform(example, FLAT)
  nearest = lambda a: np.asarray(Image.fromarray(a).resize((64, 32), Image.NEAREST))
  np.testing.assert_array_equal(out["label"], nearest(example["label"]))
  np.testing.assert_array_equal(out["edge"], lm.instance_edges(nearest(example["instance"])))
  bicubic = np.asarray(Image.fromarray(example["image"]).resize((64, 32), Image.BICUBIC))
  np.testing.assert_allclose(out["image"], bicubic / 127.5 - 1, atol=1e-6)


def test_train_batches_are_a_function_of_the_step_and_eval_batches_pad():
  source = lm.SyntheticLabelMaps(6, seed=0, height=32, width=64)
  stream = lm.train_batches(source, lm.Preprocess(32, 64), batch_size=4, seed=1)
  later = stream.slice(slice(3, None))
  for key in ("label", "edge", "image"):
    np.testing.assert_array_equal(stream[3][key], later[0][key])
  assert stream[0]["label"].shape == (4, 32, 64) and stream[0]["image"].shape == (4, 32, 64, 3)
  batches = list(lm.eval_batches(source, FLAT, 4))
  assert [b["mask"].tolist() for b in batches] == [[True] * 4, [True, True, False, False]]
  np.testing.assert_array_equal(batches[1]["label"][3], lm.transform(source[5], FLAT)["label"])


def test_synthetic_task_holdout_split():
  task = lm.load_label_map_task("synthetic", height=32, width=64, holdout=3, seed=2,
                                synthetic_train=10, synthetic_test=4)
  assert (len(task.train1), len(task.train2), len(task.test)) == (7, 3, 4)
  names = lambda split: {split[i]["label"].tobytes() for i in range(len(split))}
  assert not names(task.train1) & names(task.train2)
  assert task.num_labels == len(lm.SYNTHETIC_CLASSES)
  with pytest.raises(UserError, match="holdout must be in 0..9"):
    lm.load_label_map_task("synthetic", height=32, width=64, holdout=10, synthetic_train=10)
  with pytest.raises(UserError, match="unknown label map source 'cityscapes:'"):
    lm.load_label_map_task("cityscapes:", height=32, width=64)


def test_label_palettes_and_pictures():
  palette = lm.label_palette(8)  # pix2pixHD's labelcolormap(8)
  np.testing.assert_array_equal(palette[[0, 1, 2, 4, 7]],
                                [[0, 0, 0], [128, 0, 0], [0, 128, 0], [0, 0, 128],
                                 [128, 128, 128]])
  assert tuple(lm.label_palette(35)[7]) == (128, 64, 128)  # Cityscapes road
  picture = lm.colorize(np.array([[[1, 2, 9]]]), np.array([[[0, 1, 0]]]), 4)
  grey = 128 / 127.5 - 1  # class 1 is (128, 0, 0); an edge is white; an unknown id grey
  np.testing.assert_allclose(picture[0, 0], [[grey, -1, -1], [1, 1, 1], [grey] * 3], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Cityscapes.
# ---------------------------------------------------------------------------------------------


FRAMES = {"train": [("aachen", 0, 19), ("aachen", 1, 19), ("bochum", 0, 7)],
          "val": [("frankfurt", 0, 294), ("lindau", 0, 19)]}


def _write_cityscapes(root, rng) -> dict[str, list[dict[str, np.ndarray]]]:
  """A tiny Cityscapes tree (64x32 frames): RGB images, 8-bit labelIds, 16-bit instanceIds."""
  written = {}
  for split, frames in FRAMES.items():
    written[split] = []
    for city, seq, frame in frames:
      stem = f"{city}_{seq:06d}_{frame:06d}"
      image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
      label = rng.integers(0, 34, (32, 64), dtype=np.uint8)
      instance = (rng.integers(0, 3, (32, 64)) * 1000 + 26000).astype(np.uint16)
      for folder, name, array in (("leftImg8bit", f"{stem}_leftImg8bit.png", image),
                                  ("gtFine", f"{stem}_gtFine_labelIds.png", label),
                                  ("gtFine", f"{stem}_gtFine_instanceIds.png", instance)):
        path = os.path.join(root, folder, split, city, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(array).save(path)
      written[split].append({"image": image, "label": label, "instance": instance})
  return written


def test_cityscapes_builds_once_and_reads_back_without_tensorflow(tmp_path):
  root = str(tmp_path / "cityscapes")
  written = _write_cityscapes(root, np.random.default_rng(0))
  data_dir = str(tmp_path / "tfds")
  task = lm.load_label_map_task(f"cityscapes:{root}", height=32, width=64, data_dir=data_dir,
                                holdout=1)
  assert (len(task.train), len(task.test), len(task.train2)) == (3, 2, 1)
  assert task.num_labels == 35
  for split, source in (("train", task.train), ("val", task.test)):
    for i, expected in enumerate(written[split]):  # sorted by path, as the reference
      example = source[i]
      np.testing.assert_array_equal(example["image"], expected["image"])
      np.testing.assert_array_equal(example["label"], expected["label"])
      np.testing.assert_array_equal(example["instance"], expected["instance"])
      assert example["instance"].dtype == np.int32
  batch = next(lm.eval_batches(task.test, FLAT, 2))
  np.testing.assert_array_equal(batch["edge"][1], _edges_by_loop(written["val"][1]["instance"]))
  # Built once: later loads read the ArrayRecord copy, not the (now broken) files.
  label = os.path.join(root, "gtFine", "val", "frankfurt",
                       "frankfurt_000000_000294_gtFine_labelIds.png")
  with open(label, "wb") as f:
    f.write(b"broken")
  again = lm.load_label_map_task(f"cityscapes:{root}", height=32, width=64, data_dir=data_dir)
  np.testing.assert_array_equal(again.test[0]["label"], written["val"][0]["label"])


def test_cityscapes_errors_name_the_problem(tmp_path):
  def load(root):
    return lm.load_label_map_task(f"cityscapes:{root}", height=32, width=64,
                                  data_dir=str(tmp_path / "tfds"))

  with pytest.raises(UserError, match="is not a directory"):
    load(tmp_path / "nowhere")
  root = tmp_path / "cityscapes"
  _write_cityscapes(str(root), np.random.default_rng(0))
  os.rename(root / "gtFine" / "val", root / "gtFine" / "test")
  with pytest.raises(UserError, match=r"gtFine/val' is missing"):
    load(root)
  os.rename(root / "gtFine" / "test", root / "gtFine" / "val")
  label = root / "gtFine" / "train" / "bochum" / "bochum_000000_000007_gtFine_labelIds.png"
  os.rename(label, str(label) + ".bak")
  with pytest.raises(UserError, match="train split has 3 images, 2 labelIds and 3 instanceIds"):
    load(root)
  os.rename(str(label) + ".bak", str(label).replace("000007", "000008"))
  with pytest.raises(UserError, match="do not belong to the same frame"):
    load(root)
  os.rename(str(label).replace("000007", "000008"), label)
  label.write_bytes(b"not a png")
  with pytest.raises(UserError, match="bochum_000000_000007_gtFine_labelIds.png' cannot be read"):
    load(root)
  Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(label)
  with pytest.raises(UserError, match="must be a one-channel PNG"):
    load(root)


# ---------------------------------------------------------------------------------------------
# COCO-Stuff and resize-and-crop.
# ---------------------------------------------------------------------------------------------


def test_training_crop_resizes_to_load_size_then_cuts_the_same_window():
  rng = np.random.default_rng(2)
  example = {"label": rng.integers(0, 182, (40, 56), dtype=np.uint8),
             "instance": rng.integers(0, 5, (40, 56)).astype(np.int32),
             "image": rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)}
  crop = lm.Preprocess(32, 32, flip=False, load_size=36)
  out = lm.transform(example, crop, crop=(3, 1))
  square = lm.transform(example, lm.Preprocess(36, 36, flip=False))
  np.testing.assert_array_equal(out["label"], square["label"][3:35, 1:33])
  np.testing.assert_array_equal(out["image"], square["image"][3:35, 1:33])
  # Edges come from the cropped instance map: a window border is no edge.
  nearest = np.asarray(Image.fromarray(example["instance"]).resize((36, 36), Image.NEAREST))
  np.testing.assert_array_equal(out["edge"], lm.instance_edges(nearest[3:35, 1:33]))
  windows = {lm.train_transform(example, np.random.default_rng(s), crop)["label"].tobytes()
             for s in range(8)}
  assert len(windows) > 1  # random offsets
  assert lm.transform(example, crop)["label"].shape == (32, 32)  # test: plain resize
  with pytest.raises(UserError, match="load_size 30 is smaller"):
    lm.Preprocess(32, 32, load_size=30)


def _write_coco(root, rng) -> dict[str, list[dict[str, np.ndarray]]]:
  """A tiny COCO-Stuff tree; images as PNG (the loader takes .jpg or .png) so that they
  round-trip exactly."""
  written = {}
  for split, stems in (("train", ["000000000009", "000000000025", "000000000030"]),
                       ("val", ["000000000139", "000000000285"])):
    written[split] = []
    for stem in stems:
      image = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
      label = rng.choice(np.array([0, 5, 181, 255], np.uint8), (24, 20))
      instance = rng.integers(0, 4, (24, 20), dtype=np.uint8)
      for kind, array in (("img", image), ("label", label), ("inst", instance)):
        os.makedirs(os.path.join(root, f"{split}_{kind}"), exist_ok=True)
        Image.fromarray(array).save(os.path.join(root, f"{split}_{kind}", f"{stem}.png"))
      written[split].append({"image": image, "label": label, "instance": instance})
  return written


def test_coco_stuff_builds_and_pairs_by_stem(tmp_path):
  root = str(tmp_path / "coco")
  written = _write_coco(root, np.random.default_rng(0))
  task = lm.load_label_map_task(f"coco:{root}", height=16, width=16,
                                data_dir=str(tmp_path / "tfds"), holdout=1, load_size=18)
  assert (len(task.train), len(task.test), task.num_labels) == (3, 2, 182)
  for split, source in (("train", task.train), ("val", task.test)):
    for i, expected in enumerate(written[split]):
      for key in ("image", "label", "instance"):
        np.testing.assert_array_equal(source[i][key], expected[key])
  batch = next(iter(lm.train_batches(task.train1, task.preprocess, batch_size=2, seed=0)))
  assert batch["label"].shape == (2, 16, 16) and batch["image"].shape == (2, 16, 16, 3)
  assert set(np.unique(batch["label"])) <= {0, 5, 181, 255}  # 255: dontcare, kept for the device


def test_coco_stuff_errors_name_the_problem(tmp_path):
  root = tmp_path / "coco"
  _write_coco(str(root), np.random.default_rng(0))
  load = lambda: lm.load_label_map_task(f"coco:{root}", height=16, width=16,
                                        data_dir=str(tmp_path / "tfds"))
  os.rename(root / "val_inst", root / "val_instances")
  with pytest.raises(UserError, match="val_inst' is missing"):
    load()
  os.rename(root / "val_instances", root / "val_inst")
  os.rename(root / "train_label" / "000000000025.png", root / "train_label" / "000000000026.png")
  with pytest.raises(UserError, match="train_label files do not pair up: 2 stem"):
    load()
  with pytest.raises(UserError, match="coco:/path/to/cocostuff"):
    lm.load_label_map_task("coco:", height=16, width=16)
