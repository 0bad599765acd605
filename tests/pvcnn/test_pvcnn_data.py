"""data/pointclouds.py: synthetic generators, the reference's S3DIS blocking, and the tfds
builders run on small local folders written in the datasets' own layouts."""

import json
import os

import numpy as np
import pytest

from data import pointclouds as pc
from lite_jax.core import UserError


def test_synthetic_shapes_are_deterministic_and_labelled_by_category():
  shapes = pc.SyntheticPartShapes(8, seed=3)
  again = pc.SyntheticPartShapes(8, seed=3)
  for i in range(8):
    shape = shapes[i]
    np.testing.assert_array_equal(shape["points"], again[i]["points"])
    start, end = pc.SYNTHETIC_PARTS.part_ranges[int(shape["category"])]
    assert shape["category"] == i % 4
    assert start <= shape["labels"].min() and shape["labels"].max() < end
    np.testing.assert_allclose(np.linalg.norm(shape["points"][:, 3:], axis=1), 1.0, rtol=1e-5)
  assert not np.array_equal(shapes[0]["points"], pc.SyntheticPartShapes(8, seed=4)[0]["points"])
  assert pc.SHAPENET_PARTS.num_classes == 50 and pc.SHAPENET_PARTS.part_ranges[-1] == (47, 50)


def test_part_example_normalizes_samples_and_jitters_within_the_clip():
  shape = pc.SyntheticPartShapes(1, seed=0)[0]
  rng = np.random.default_rng(0)
  clean = pc.part_features(shape, with_normals=True)
  assert np.linalg.norm(clean[:, :3], axis=1).max() == pytest.approx(1.0, rel=1e-6)
  np.testing.assert_allclose(clean[:, :3].mean(0), 0, atol=1e-6)
  sample = pc.part_example(shape, 50, rng, with_normals=False, augment=True)
  assert sample["points"].shape == (50, 3) and sample["labels"].shape == (50,)


def test_s3dis_windows_follow_the_reference_layout():
  xyz, rgb, labels = pc.synthetic_room(0, 0, points_per_m2=40)
  windows = list(pc.s3dis_windows(xyz, rgb, labels, room="r", max_points=512))
  assert len(windows[0]["room_labels"]) == len(labels)
  assert all(len(w["room_labels"]) == 0 for w in windows[1:])
  covered = np.zeros(len(labels), bool)
  for w in windows:
    points = w["points"]
    assert points.shape[1] == 9 and 0 < len(points) <= 512
    np.testing.assert_array_equal(w["labels"], labels[w["indices"]])
    assert (points[:, 3:6] >= 0).all() and (points[:, 3:6] <= 1).all()  # rgb / 255
    assert (points[:, 6:] >= 0).all() and (points[:, 6:] <= 1 + 1e-6).all()  # xyz / room max
    assert (points[:, :2] >= -0.75 - 1e-5).all()  # x - (block min + 0.75)
    covered[w["indices"]] = True
  assert covered.mean() > 0.99  # Grid re-sampling may drop a few points; the two passes rarely.


def _write_shapenet(root, shapes_per_split=3):
  synsets = ["02691156", "02773838"]  # Airplane (4 parts), Bag (2 parts)
  with open(os.path.join(root, "synsetoffset2category.txt"), "w") as f:
    f.write("Airplane\t02691156\nBag\t02773838\n")
  os.makedirs(os.path.join(root, "train_test_split"))
  rng = np.random.default_rng(0)
  for split in ("train", "val", "test"):
    entries = []
    for i in range(shapes_per_split):
      synset = synsets[i % 2]
      name = f"{split}{i}"
      os.makedirs(os.path.join(root, synset), exist_ok=True)
      data = np.concatenate([rng.normal(size=(20, 6)), rng.integers(0, 2, (20, 1))], 1)
      np.savetxt(os.path.join(root, synset, name + ".txt"), data, fmt="%.5f")
      entries.append(f"shape_data/{synset}/{name}")
    with open(os.path.join(root, "train_test_split", f"shuffled_{split}_file_list.json"),
              "w") as f:
      json.dump(entries, f)


def test_shapenet_builder_reads_the_normal_included_layout(tmp_path):
  root = tmp_path / "shapenet"
  os.makedirs(root)
  _write_shapenet(str(root))
  builder = pc.prepare(pc.ShapeNetPart, str(root), str(tmp_path / "tfds"))
  train, test = builder.as_data_source("train"), builder.as_data_source("test")
  assert len(train) == 6 and len(test) == 3  # train = train + val lists
  example = test[0]
  assert example["points"].shape == (20, 6) and example["category"] in (0, 1)
  with pytest.raises(UserError, match="manual_dir"):
    pc.prepare(pc.ShapeNetPart, str(tmp_path / "missing"), str(tmp_path / "tfds2"))


def test_s3dis_builder_blocks_raw_area_folders(tmp_path):
  raw = tmp_path / "Stanford3dDataset_v1.2_Aligned_Version"
  rooms = {}
  for area in range(1, 7):
    xyz, rgb, labels = pc.synthetic_room(area, 0, points_per_m2=8)
    annotations = raw / f"Area_{area}" / "office_1" / "Annotations"
    os.makedirs(annotations)
    for k, name in enumerate(pc.S3DIS_CLASSES):
      if np.any(labels == k):
        np.savetxt(annotations / f"{name}_1.txt",
                   np.concatenate([xyz, rgb], 1)[labels == k], fmt="%.4f")
    np.savetxt(annotations / "stairs_1.txt", np.ones((3, 6)))  # Not an S3DIS class: skipped.
    rooms[area] = pc.read_s3dis_raw_room(str(raw / f"Area_{area}" / "office_1"))
  builder = pc.prepare(pc.S3DIS, str(raw), str(tmp_path / "tfds"))
  test = builder.as_data_source("area_5")
  want = list(pc.s3dis_windows(*rooms[5], room="Area_5/office_1"))
  assert len(test) == len(want)
  for i in (0, len(want) - 1):
    assert test[i]["room"] == b"Area_5/office_1"
    np.testing.assert_array_equal(test[i]["indices"], want[i]["indices"])
    np.testing.assert_array_equal(test[i]["room_labels"], want[i]["room_labels"])
  assert len(builder.as_data_source("area_1+area_2")) > 0


def test_s3dis_h5_layout_needs_h5py(tmp_path):
  try:
    import h5py
  except ImportError:
    with pytest.raises(UserError, match="needs h5py"):
      next(pc.read_s3dis_h5_room(str(tmp_path), "Area_5/room"))
    return
  np.save(tmp_path / "label.npy", np.arange(6).reshape(6, 1))
  for pass_name in ("zero", "half"):
    with h5py.File(tmp_path / f"{pass_name}_0.h5", "w") as f:
      f["data"] = np.ones((2, 4, 9), np.float32)
      f["data_num"] = np.array([3, 4])
      f["label_seg"] = np.ones((2, 4), np.int32)
      f["indices_split_to_full"] = np.arange(8).reshape(2, 4) % 6
  windows = list(pc.read_s3dis_h5_room(str(tmp_path), "Area_5/room"))
  assert [len(w["points"]) for w in windows] == [3, 4, 3, 4]
  assert len(windows[0]["room_labels"]) == 6 and len(windows[1]["room_labels"]) == 0
