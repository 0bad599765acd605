"""Point-cloud segmentation data: ShapeNet Part, S3DIS, and deterministic synthetic stand-ins.

Sources are random-access sequences of examples (numpy dicts), so training batches are a pure
function of (seed, step) and a resumed run reads exactly the batches it would have read:

* part segmentation (ShapeNet Part, `SyntheticPartShapes`): `points [M, 6]` (xyz, normals),
  `labels [M]` int32 global part ids, `category` int32;
* scene segmentation (S3DIS windows, `synthetic_room_windows`): `points [M, 9]`
  (x - cx, y - cy, z, r, g, b, x/x_max, y/y_max, z/z_max), `labels [M]`, `indices [M]` (point
  index in the room), `room` name, and `room_labels` (the whole room's labels; only on the
  room's first window, empty elsewhere, so evaluation needs no second dataset).

Local datasets become ArrayRecord once through the tfds builders below (TensorFlow is not
needed) and are then read with `tfds.data_source`:

* `ShapeNetPart`: the `shapenetcore_partanno_segmentation_benchmark_v0_normal` folder (one txt
  per shape, `x y z nx ny nz label`); splits `train` (= train + val lists) and `test`.
* `S3DIS`: either the raw `Stanford3dDataset_v1.2_Aligned_Version` area folders (blocked here
  exactly as the reference's `data/s3dis/prepare_data.py` does), or the reference's prepared
  `Area_N/<room>/{zero,half}_0.h5` + `label.npy` folders (needs `h5py`, which is not a
  dependency: install it to use that layout). Splits `area_1` ... `area_6`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from lite_jax.core.errors import UserError


# ---------------------------------------------------------------------------------------------
# Taxonomies.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PartTaxonomy:
  """Categories whose parts are numbered consecutively: category c owns a range of labels."""
  categories: tuple[str, ...]
  parts_per_category: tuple[int, ...]

  @property
  def num_categories(self) -> int:
    return len(self.categories)

  @property
  def num_classes(self) -> int:
    return sum(self.parts_per_category)

  @property
  def part_ranges(self) -> tuple[tuple[int, int], ...]:
    """`(start, end)` label range of each category."""
    ends = np.cumsum(self.parts_per_category)
    return tuple((int(e - n), int(e)) for e, n in zip(ends, self.parts_per_category))


# synsetoffset2category.txt order; 50 parts in all.
SHAPENET_PARTS = PartTaxonomy(
    ("Airplane", "Bag", "Cap", "Car", "Chair", "Earphone", "Guitar", "Knife", "Lamp", "Laptop",
     "Motorbike", "Mug", "Pistol", "Rocket", "Skateboard", "Table"),
    (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3))
SYNTHETIC_PARTS = PartTaxonomy(("table", "lamp", "airplane", "mug"), (2, 3, 3, 2))
# The reference's label ids (`prepare_data.py`).
S3DIS_CLASSES = ("clutter", "ceiling", "floor", "wall", "beam", "column", "door", "window",
                 "table", "chair", "sofa", "bookcase", "board")


# ---------------------------------------------------------------------------------------------
# Primitive surfaces (points and outward normals) and synthetic part shapes.
# ---------------------------------------------------------------------------------------------


def _box(rng, n, center, half):
  """Uniform points on an axis-aligned box surface."""
  half = np.asarray(half, np.float64)
  face_area = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
  face = rng.choice(6, n, p=np.repeat(face_area, 2) / (2 * face_area.sum()))
  axis, sign = face // 2, np.where(face % 2, 1.0, -1.0)
  points = rng.uniform(-1, 1, (n, 3)) * half
  points[np.arange(n), axis] = sign * half[axis]
  normals = np.zeros((n, 3))
  normals[np.arange(n), axis] = sign
  return points + center, normals


def _cylinder(rng, n, center, radius, half_height):
  """Uniform points on a closed cylinder along y."""
  side, cap = 4 * math.pi * radius * half_height, math.pi * radius ** 2
  on_side = rng.random(n) < side / (side + 2 * cap)
  theta = rng.uniform(0, 2 * math.pi, n)
  rho = np.where(on_side, radius, radius * np.sqrt(rng.random(n)))
  cap_sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
  y = np.where(on_side, rng.uniform(-half_height, half_height, n), cap_sign * half_height)
  points = np.stack([rho * np.cos(theta), y, rho * np.sin(theta)], -1)
  normals = np.where(on_side[:, None], np.stack([np.cos(theta), 0 * theta, np.sin(theta)], -1),
                     np.stack([0 * theta, cap_sign, 0 * theta], -1))
  return points + center, normals


def _ellipsoid(rng, n, center, radii):
  direction = rng.normal(size=(n, 3))
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  normals = direction / radii
  return center + direction * radii, normals / np.linalg.norm(normals, axis=-1, keepdims=True)


def _torus(rng, n, center, major, minor):
  """A ring in the xy-plane (a mug handle)."""
  theta, phi = rng.uniform(0, 2 * math.pi, (2, n))
  normals = np.stack([np.cos(phi) * np.cos(theta), np.cos(phi) * np.sin(theta), np.sin(phi)], -1)
  ring = np.stack([major * np.cos(theta), major * np.sin(theta), 0 * theta], -1)
  return center + ring + minor * normals, normals


def _area(kind, *args) -> float:
  if kind == "box":
    hx, hy, hz = args[0]
    return 8 * (hx * hy + hy * hz + hx * hz)
  if kind == "cylinder":
    radius, half_height = args
    return 4 * math.pi * radius * half_height + 2 * math.pi * radius ** 2
  if kind == "ellipsoid":
    a, b, c = args[0]
    return 4 * math.pi * (((a * b) ** 1.6 + (a * c) ** 1.6 + (b * c) ** 1.6) / 3) ** (1 / 1.6)
  major, minor = args
  return 4 * math.pi ** 2 * major * minor


_SAMPLERS = {"box": _box, "cylinder": _cylinder, "ellipsoid": _ellipsoid, "torus": _torus}


def _synthetic_parts(category: str, rng: np.random.Generator) -> list[tuple[int, str, tuple]]:
  """(local part, primitive, (center, *size)) list of one random instance of `category`."""
  s = lambda lo, hi: rng.uniform(lo, hi)
  if category == "table":
    w, d, h = s(0.6, 1.0), s(0.4, 0.8), s(0.5, 0.8)
    legs = [(1, "cylinder", ((x * (w - 0.06), h / 2, z * (d - 0.06)), s(0.03, 0.05), h / 2))
            for x in (-1, 1) for z in (-1, 1)]
    return [(0, "box", ((0, h, 0), (w, s(0.03, 0.06), d)))] + legs
  if category == "lamp":
    height, shade = s(0.8, 1.2), s(0.25, 0.4)
    return [(0, "cylinder", ((0, 0, 0), s(0.2, 0.3), 0.03)),
            (1, "cylinder", ((0, height / 2, 0), 0.03, height / 2)),
            (2, "ellipsoid", ((0, height + shade * 0.5, 0), (shade, shade * s(0.6, 0.9), shade)))]
  if category == "airplane":
    length, span = s(0.8, 1.1), s(0.7, 1.0)
    return [(0, "ellipsoid", ((0, 0, 0), (length, 0.12, 0.12))),
            (1, "box", ((s(-0.1, 0.1), 0, 0), (0.15, 0.02, span))),
            (2, "box", ((-length + 0.1, 0.18, 0), (0.1, 0.18, 0.02)))]
  radius, half_height = s(0.3, 0.45), s(0.35, 0.55)
  return [(0, "cylinder", ((0, 0, 0), radius, half_height)),
          (1, "torus", ((radius + 0.12, 0, 0), s(0.17, 0.22), 0.04))]


def synthetic_part_shape(category: int, num_points: int, rng: np.random.Generator,
                         taxonomy: PartTaxonomy = SYNTHETIC_PARTS) -> dict[str, np.ndarray]:
  """One shape of `category` made of labelled primitives, `num_points` surface points."""
  parts = _synthetic_parts(taxonomy.categories[category], rng)
  areas = np.array([_area(kind, *args[1:]) for _, kind, args in parts])
  counts = rng.multinomial(num_points, areas / areas.sum())
  points, normals, labels = [], [], []
  first_label = taxonomy.part_ranges[category][0]
  for (part, kind, (center, *size)), count in zip(parts, counts):
    p, n = _SAMPLERS[kind](rng, count, np.asarray(center, np.float64), *size)
    points.append(p)
    normals.append(n)
    labels.append(np.full(count, first_label + part, np.int32))
  yaw = rng.uniform(-0.3, 0.3)  # A little variety; the categories stay upright like ShapeNet.
  rotation = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0],
                       [-math.sin(yaw), 0, math.cos(yaw)]])
  xyz = np.concatenate(points) @ rotation.T
  nxyz = np.concatenate(normals) @ rotation.T
  return {"points": np.concatenate([xyz, nxyz], -1).astype(np.float32),
          "labels": np.concatenate(labels), "category": np.int32(category)}


class SyntheticPartShapes(Sequence):
  """A deterministic random-access set of synthetic part-segmentation shapes.

  Shape i is a function of `(seed, i)` only; categories cycle so every split is balanced.
  """

  taxonomy = SYNTHETIC_PARTS

  def __init__(self, num_shapes: int, seed: int, points_range: tuple[int, int] = (600, 1200)):
    self._num_shapes, self._seed, self._points_range = num_shapes, seed, points_range

  def __len__(self) -> int:
    return self._num_shapes

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self._num_shapes:
      raise IndexError(index)
    rng = np.random.default_rng([self._seed, index])
    num_points = int(rng.integers(self._points_range[0], self._points_range[1] + 1))
    return synthetic_part_shape(index % self.taxonomy.num_categories, num_points, rng)


# ---------------------------------------------------------------------------------------------
# S3DIS rooms and the reference's blocking into windows.
# ---------------------------------------------------------------------------------------------


def s3dis_windows(xyz: np.ndarray, rgb: np.ndarray, labels: np.ndarray, *, room: str,
                  block_size: float = 1.5, grid_size: float = 0.03, max_points: int = 8192,
                  seed: int = 0) -> Iterator[dict[str, Any]]:
  """Splits one room into windows as PVCNN's `data/s3dis/prepare_data.py` does.

  Shifts the room to a zero minimum corner; two passes (offsets 0 and block/2) of
  `block_size` x `block_size` full-height blocks; blocks under `max_points / 10` points merge
  into their first large 8-neighbour; each block is re-sampled on a `grid_size` grid (sparse
  cells repeated up to the average cell count); blocks are shuffled and cut into chunks of at
  most `max_points`.

  Args:
    xyz: `[M, 3]` metres; rgb: `[M, 3]` in 0..255; labels: `[M]` int class ids.
    room: name stored with the windows; seed: the shuffles' seed.

  Yields:
    Window dicts (see the module docstring); the first carries `room_labels`.
  """
  rng = np.random.default_rng([seed, zlib.crc32(room.encode())])
  xyz = xyz - xyz.min(axis=0)
  room_max = xyz.max(axis=0)
  colors = rgb / 255.0
  first = True
  for offset in (0.0, block_size / 2):
    cells = np.floor((xyz[:, :2] + offset) / block_size).astype(np.int64)
    blocks, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(inverse.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
    _merge_small_blocks(blocks, counts, members, max_points / 10)
    for block_points in members:
      if not len(block_points):
        continue
      block_points = _grid_resample(xyz, block_points, grid_size, rng)
      rng.shuffle(block_points)
      p = xyz[block_points]
      centre = p[:, :2].min(axis=0) + block_size / 2
      features = np.concatenate([p[:, :2] - centre, p[:, 2:], colors[block_points],
                                 p / room_max], -1).astype(np.float32)
      num_chunks = math.ceil(len(block_points) / max_points)
      chunk = math.ceil(len(block_points) / num_chunks)
      for start in range(0, len(block_points), chunk):
        window = slice(start, start + chunk)
        ids = block_points[window]
        yield {"points": features[window], "labels": labels[ids].astype(np.int32),
               "indices": ids.astype(np.int32), "room": room,
               "room_labels": (labels if first else labels[:0]).astype(np.int32)}
        first = False


_NEIGHBOURS = ((0, 1), (1, 0), (0, -1), (-1, 0), (-1, 1), (1, 1), (1, -1), (-1, -1))


def _merge_small_blocks(blocks, counts, members, threshold) -> None:
  """In place: each small block joins its first neighbour that was large to begin with."""
  index = {tuple(b): i for i, b in enumerate(blocks)}
  for i, block in enumerate(blocks):
    if counts[i] >= threshold:
      continue
    for dx, dy in _NEIGHBOURS:
      j = index.get((block[0] + dx, block[1] + dy))
      if j is not None and counts[j] >= threshold:
        members[j] = np.concatenate([members[j], members[i]])
        members[i] = members[i][:0]
        break


def _grid_resample(xyz, block_points, grid_size, rng) -> np.ndarray:
  """Repeats points of sparse `grid_size` cells up to the block's average cell count."""
  p = xyz[block_points]
  cells = np.floor((p - p.min(axis=0)) / grid_size).astype(np.int64)
  _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
  by_cell = np.split(np.argsort(inverse.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
  average = int(np.mean(counts))
  resampled = []
  for cell in by_cell:
    repeats = math.ceil(average / len(cell))
    if repeats > 1:
      cell = np.repeat(cell, repeats)
      rng.shuffle(cell)
      cell = cell[:average]
    resampled.append(block_points[cell])
  return np.concatenate(resampled)


def synthetic_room(seed: int, index: int, points_per_m2: float = 150.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A box room with furniture made of labelled primitives: `(xyz, rgb, labels)`."""
  rng = np.random.default_rng([seed, index])
  size = np.array([rng.uniform(3, 5), rng.uniform(3, 5), rng.uniform(2.6, 3.0)])
  thin = 0.01
  pieces = [("floor", (size[0] / 2, size[1] / 2, 0), (size[0] / 2, size[1] / 2, thin)),
            ("ceiling", (size[0] / 2, size[1] / 2, size[2]), (size[0] / 2, size[1] / 2, thin)),
            ("wall", (0, size[1] / 2, size[2] / 2), (thin, size[1] / 2, size[2] / 2)),
            ("wall", (size[0], size[1] / 2, size[2] / 2), (thin, size[1] / 2, size[2] / 2)),
            ("wall", (size[0] / 2, 0, size[2] / 2), (size[0] / 2, thin, size[2] / 2)),
            ("door", (rng.uniform(1, size[0] - 1), size[1], 1.0), (0.45, 0.03, 1.0)),
            ("board", (rng.uniform(1, size[0] - 1), 0, 1.5), (0.8, 0.03, 0.5)),
            ("column", (size[0] - 0.25, size[1] - 0.25, size[2] / 2), (0.2, 0.2, size[2] / 2))]
  for _ in range(rng.integers(1, 3)):
    x, y = rng.uniform(1, size[0] - 1), rng.uniform(1, size[1] - 1)
    pieces.append(("table", (x, y, 0.72), (0.6, 0.4, 0.03)))
    pieces.append(("chair", (x + 0.8, y, 0.45), (0.22, 0.22, 0.22)))
  for _ in range(rng.integers(2, 5)):
    pieces.append(("clutter", (rng.uniform(0.5, size[0] - 0.5), rng.uniform(0.5, size[1] - 0.5),
                               0.1), tuple(rng.uniform(0.05, 0.15, 3))))
  xyz, rgb, labels = [], [], []
  for name, center, half in pieces:
    count = max(8, int(points_per_m2 * _area("box", half) / 2))
    p, _ = _box(rng, count, np.asarray(center), half)
    xyz.append(p)
    # A random colour per piece, not per class: the labels must be read from the geometry.
    rgb.append(np.clip(rng.uniform(40, 220, 3) + rng.normal(0, 12, (count, 3)), 0, 255))
    labels.append(np.full(count, S3DIS_CLASSES.index(name), np.int32))
  return np.concatenate(xyz), np.concatenate(rgb), np.concatenate(labels)


def synthetic_room_windows(num_rooms: int, seed: int, *, points_per_m2: float = 150.0,
                           max_points: int = 8192) -> list[dict[str, Any]]:
  """All windows of `num_rooms` synthetic rooms (in memory; a stand-in for one S3DIS area)."""
  windows = []
  for i in range(num_rooms):
    xyz, rgb, labels = synthetic_room(seed, i, points_per_m2)
    windows.extend(s3dis_windows(xyz, rgb, labels, room=f"synthetic_{seed}/room_{i}",
                                 max_points=max_points, seed=seed))
  return windows


# ---------------------------------------------------------------------------------------------
# Readers of the users' local files.
# ---------------------------------------------------------------------------------------------


def _require_dir(path: str, what: str) -> None:
  if not path or not os.path.isdir(path):
    raise UserError(f"{what} {path!r} is not a directory; set --config.data.manual_dir to the "
                    f"folder that holds the dataset.")


_SHAPENET_LAYOUT = ("synsetoffset2category.txt, train_test_split/shuffled_{train,val,test}_"
                    "file_list.json and one folder of <shape>.txt files per synset")


def shapenet_files(root: str, split: str) -> list[tuple[str, int]]:
  """`(txt path, category)` of a ShapeNet Part split ('train' = train + val lists, 'test')."""
  _require_dir(root, "ShapeNet Part root")
  lists = [os.path.join(root, "train_test_split", f"shuffled_{name}_file_list.json")
           for name in (("train", "val") if split == "train" else ("test",))]
  taxonomy = os.path.join(root, "synsetoffset2category.txt")
  for path in (taxonomy, *lists):
    if not os.path.isfile(path):
      raise UserError(f"{root} is not a ShapeNet Part folder: {os.path.relpath(path, root)} is "
                      f"missing (it needs {_SHAPENET_LAYOUT}).")
  with open(taxonomy, encoding="utf-8") as f:
    category_of = {line.split()[1]: i for i, line in enumerate(f) if line.strip()}
  files = []
  for path in lists:
    with open(path, encoding="utf-8") as f:
      for entry in json.load(f):
        _, synset, name = entry.split("/")
        if synset not in category_of:
          raise UserError(f"{path} lists {entry}, whose synset is not in {taxonomy}.")
        files.append((os.path.join(root, synset, name + ".txt"), category_of[synset]))
  return files


def read_shapenet_shape(path: str, category: int) -> dict[str, np.ndarray]:
  try:
    data = np.loadtxt(path, dtype=np.float32, ndmin=2)
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read the shape file {path} ({str(e).splitlines()[0]}); it must "
                    f"hold rows 'x y z nx ny nz label'.") from None
  if data.shape[1] != 7 or not np.isfinite(data).all():
    raise UserError(f"{path} must hold finite rows 'x y z nx ny nz label'.")
  return {"points": data[:, :6], "labels": data[:, 6].astype(np.int32),
          "category": np.int32(category)}


def read_s3dis_raw_room(room_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(xyz, rgb, labels)` of `Area_N/<room>/Annotations/<class>_<k>.txt` files.

  Objects of other classes (e.g. 'stairs') and unreadable files are skipped with a warning,
  as in the reference.
  """
  xyz, rgb, labels = [], [], []
  for path in sorted(glob.glob(os.path.join(room_dir, "Annotations", "*.txt"))):
    name = os.path.basename(path).split("_", 1)[0]
    if name not in S3DIS_CLASSES:
      continue
    try:
      data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
      logging.warning("skipping %s: %s", path, e)
      continue
    xyz.append(data[:, :3])
    rgb.append(data[:, 3:6])
    labels.append(np.full(len(data), S3DIS_CLASSES.index(name), np.int32))
  if not xyz:
    raise UserError(f"{room_dir}/Annotations holds no S3DIS object files.")
  return np.concatenate(xyz), np.concatenate(rgb), np.concatenate(labels)


def read_s3dis_h5_room(room_dir: str, room: str) -> Iterator[dict[str, Any]]:
  """Windows of the reference's prepared `{zero,half}_0.h5` and `label.npy` of one room."""
  try:
    import h5py
  except ImportError:
    raise UserError("reading the reference's S3DIS .h5 files needs h5py (pip install h5py); "
                    "or point the builder at the raw Stanford3dDataset folders.") from None
  room_labels = np.load(os.path.join(room_dir, "label.npy")).reshape(-1).astype(np.int32)
  first = True
  for pass_name in ("zero", "half"):
    with h5py.File(os.path.join(room_dir, f"{pass_name}_0.h5"), "r") as f:
      data, labels, indices = f["data"][...], f["label_seg"][...], f["indices_split_to_full"][...]
      for w, n in enumerate(f["data_num"][...]):
        yield {"points": data[w, :n].astype(np.float32), "labels": labels[w, :n].astype(np.int32),
               "indices": indices[w, :n].astype(np.int32), "room": room,
               "room_labels": room_labels if first else room_labels[:0]}
        first = False


# ---------------------------------------------------------------------------------------------
# tfds builders (local files -> ArrayRecord).
# ---------------------------------------------------------------------------------------------


class ShapeNetPart(tfds.core.GeneratorBasedBuilder):
  """ShapeNet Part (normal-included layout) from `manual_dir`."""

  name = "shapenet_part"
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the `shapenetcore_partanno_segmentation_benchmark_v0_normal` folder as manual_dir.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "points": tfds.features.Tensor(shape=(None, 6), dtype=np.float32),
        "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "category": np.int32}))

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(shapenet_files(root, split))
            for split in ("train", "test")}

  def _generate_examples(self, files):
    for path, category in files:
      yield path, read_shapenet_shape(path, category)


class S3DIS(tfds.core.GeneratorBasedBuilder):
  """S3DIS windows per area, from raw area folders or the reference's h5 files (`manual_dir`)."""

  name = "s3dis"
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass `Stanford3dDataset_v1.2_Aligned_Version` (raw Area_N folders) or the reference's "
      "prepared folder of Area_N/<room>/{zero,half}_0.h5 as manual_dir.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "points": tfds.features.Tensor(shape=(None, 9), dtype=np.float32),
        "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "indices": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "room": tfds.features.Text(),
        "room_labels": tfds.features.Tensor(shape=(None,), dtype=np.int32)}),
        disable_shuffling=True)  # A room's windows stay together, its first window first.

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    _require_dir(root, "S3DIS root")
    return {f"area_{a}": self._generate_examples(os.path.join(root, f"Area_{a}"))
            for a in range(1, 7)}

  def _generate_examples(self, area_dir):
    _require_dir(area_dir, "S3DIS area folder")
    for room in sorted(os.listdir(area_dir)):
      room_dir = os.path.join(area_dir, room)
      name = f"{os.path.basename(area_dir)}/{room}"
      if os.path.isdir(os.path.join(room_dir, "Annotations")):
        windows = s3dis_windows(*read_s3dis_raw_room(room_dir), room=name)
      elif os.path.exists(os.path.join(room_dir, "zero_0.h5")):
        windows = read_s3dis_h5_room(room_dir, name)
      else:
        continue
      for i, window in enumerate(windows):
        yield f"{name}/{i}", window


def prepare(builder_cls, manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds `builder_cls` from `manual_dir` into `data_dir` once (ArrayRecord) and returns it.

  Once built, `manual_dir` is no longer read (the ArrayRecord copy is used).
  """
  builder = builder_cls(data_dir=data_dir, file_format="array_record")
  if not builder.data_path.exists():
    _require_dir(manual_dir, f"the {builder.name} source folder")  # Before tfds asserts.
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir))
  return builder


# ---------------------------------------------------------------------------------------------
# Per-example transforms shared by training and evaluation.
# ---------------------------------------------------------------------------------------------


def normalize_to_unit_sphere(xyz: np.ndarray) -> np.ndarray:
  """Centre on the centroid and divide by the largest norm (the ShapeNet loader's step)."""
  centred = xyz - xyz.mean(axis=0)
  return centred / max(float(np.linalg.norm(centred, axis=1).max()), 1e-12)


def jitter(xyz: np.ndarray, rng: np.random.Generator, sigma: float = 0.01,
           clip: float = 0.05) -> np.ndarray:
  return xyz + np.clip(sigma * rng.standard_normal(xyz.shape), -clip, clip)


def part_features(example: dict[str, np.ndarray], with_normals: bool) -> np.ndarray:
  """`[M, 6]` (or `[M, 3]`): xyz normalized to the unit sphere, then the normals."""
  xyz = normalize_to_unit_sphere(example["points"][:, :3])
  features = [xyz, example["points"][:, 3:6]] if with_normals else [xyz]
  return np.concatenate(features, -1).astype(np.float32)


def part_example(example: dict[str, np.ndarray], num_points: int, rng: np.random.Generator,
                 with_normals: bool, augment: bool) -> dict[str, np.ndarray]:
  """A training sample of a part shape: `num_points` drawn with replacement, xyz jittered."""
  choice = rng.choice(len(example["labels"]), num_points, replace=True)
  features = part_features(example, with_normals)[choice]
  if augment:
    features[:, :3] = jitter(features[:, :3], rng)
  return {"points": features, "labels": example["labels"][choice],
          "category": np.int32(example["category"])}


def scene_example(example: dict[str, np.ndarray], num_points: int,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A training sample of an S3DIS window: `num_points` drawn, with replacement if too few."""
  count = len(example["labels"])
  choice = rng.choice(count, num_points, replace=count < num_points)
  return {"points": example["points"][choice], "labels": example["labels"][choice]}
