"""Frame pairs with optical flow for PSD: the reference's Shapes generator and file loaders.

Every source gives random-access sequences of example dicts (one scene, no batch axis):

  image1, image2: float32 `[S, S, 3]` in [0, 1] (frame 1, frame 2)
  flow: float32 `[S, S, 2]`, frame 1 -> frame 2, channel 0 = x, 1 = y, in image-width units
  object_ids: int32 `[S, S]`: 0 background, 1 circle, 2 square, 3 triangle (the topmost object
    in frame 1); -1 everywhere for files, whose objects are unknown

with `S = data_config.image_size`. `load_split(data_config, split)` reads split "train",
"validation" or "test" of `data_config.source`:

* "shapes": the Shapes generator of the reference (zhenjia-xu/psd `data_generator.py`, the
  numbers below), built once through the tfds builder `ShapesMotion` into ArrayRecord under
  `data_dir` (None: tfds's default, `~/tensorflow_datasets`). Scene i is a pure function of
  `(seed, i)` (`np.random.default_rng([seed, i])`); train holds scenes `0 .. num_train-1`,
  validation the next `num_validation` and test the next `num_test`, so splits never overlap.
  Each (image_size, counts, seed) is its own builder config, hence its own cache folder
  (`data_dir/shapes_motion/size128_train10000_val1000_test1000_seed0/`).
* "reference": the reference's on-disk layout, a folder of `{i}_im1.png`, `{i}_im2.png` and
  `{i}_f.npy` (float32 `(2, H, W)`, x then y, image-width units).
* "pairs": the user's videos as a text file of `frame1 frame2 flow` lines (paths relative to
  the file; blank and `#` lines skipped). Flow is `.npy` (`[H, W, 2]` or `[2, H, W]`,
  image-width units) or Middlebury `.flo` (pixels: divided here by the flow's width).

Splits of files: `path` (a folder) may hold `train.txt`, `validation.txt` (or `val.txt`) and
`test.txt` lists (ids for "reference", as the reference's `train.txt`/`test.txt`; lines of
triples for "pairs"). A split without its list takes, from the pool (for "reference":
`demo.txt`, else every `{i}_f.npy` in the folder; for "pairs": `pairs.txt`, or `path` itself when
it is a file) minus the other lists' entries, those whose crc32 % 10 is 0 (test), 1
(validation) or 2-9 (train): a deterministic split that does not move when files are added.
Every split keeps at most `num_{split}` entries, in list order (the reference caps every split
at 10,000). Files of another size are resized (bilinear, as below) to `image_size` squares;
relative flow keeps its values, except that squashing a non-square frame scales y by `W / H`
(y is measured in widths). Fields a source does not read: "shapes" ignores `path`; files ignore
`seed` and `data_dir` (they are read in place).

The Shapes generator [code] (the reference's `numpy.random.randint(a, b)` draws from a..b-1):
a 512 x 512 canvas of colour `255 - U{0..74}` per channel; three object colours bluish
`(U75, U75, 255 - U75)`, greenish and reddish, shuffled over circle, square, triangle. Mode
`U{0..9}`: 0 circle only, 1-2 circle + triangle, 3-4 circle + square, 5-9 all three. Sizes
`U{102..152}` (`randint(int(.2 * 512), int(.3 * 512))`). Circle centre `256 + U{-102..101}`
per axis, motion `[r, r]`, `r ~ U{-51..50}`; square and triangle are the circle's children, at
offsets `U{-102..101}^2` from it, with relative motion `[0, r]` (square) and `[r, 0]`
(triangle); a child's absolute motion adds the circle's. Objects are drawn circle, square,
triangle (later ones occlude); a pixel's flow is its topmost object's absolute motion (0 on the
background); objects may leave the canvas. Frame 2 is rendered after every object moved by its
motion. Shapes, in canvas pixels whose integer coordinates are pixel centres (OpenCV's
convention): circle `|p - c| <= size // 2`, square `|x - cx|, |y - cy| <= size // 2`, triangle
with vertices `(cx, cy - size sqrt(3)/3)`, `(cx -+ size // 2, cy + size sqrt(3)/6)` truncated
to integers (as the reference's `np.int32`), edges included. We rasterize with these
pixel-centre tests in numpy; OpenCV's circle and polygon filling, which the reference used, may
differ from them on boundary pixels.

Resizing (both frames, the flow): bilinear without antialiasing, sampling at
`(i + 0.5) * 512 / S - 0.5` (OpenCV `cv2.resize`'s default, which the reference used), so flow
blends across object edges. Images are rounded to uint8 after resizing (the reference resized
uint8 images), so `image1 * 255` is an integer; flow is `resized pixels / 512`, bounded by
102 / 512 < 0.2. Only the canvas pixels that the resize reads are rasterized.

object_ids at size S: the shape tests evaluated at each output pixel's centre mapped onto the
canvas (`(i + 0.5) * 512 / S - 0.5`, the point the bilinear resize samples), i.e. the exact
label there; where a pixel's whole bilinear footprint lies inside one object, its flow is that
object's motion.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import zlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from ml_collections import config_dict
from PIL import Image

from data import generated
from data.generated import scene_rng
from lite_jax.core.errors import UserError

CANVAS = 512
COLOR_RANGE = 75  # the reference's c: colour channels vary by U{0..74}
SIZE_LOW, SIZE_HIGH = int(.2 * CANVAS), int(.3 * CANVAS)  # randint(102, 153): 102..152
OFFSET_RANGE = int(.2 * CANVAS)  # randint(-102, 102): -102..101
MOTION_RANGE = int(.1 * CANVAS)  # randint(-51, 51): -51..50
OBJECT_NAMES = ("circle", "square", "triangle")  # object id k + 1 is OBJECT_NAMES[k]
SPLITS = generated.SPLITS
SOURCES = ("shapes", "reference", "pairs")
FLO_MAGIC = 202021.25  # Middlebury .flo header


# ---------------------------------------------------------------------------------------------
# The Shapes generator.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scene:
  """One scene's random draws, in canvas pixels; rows follow `OBJECT_NAMES`.

  mode: the scene mode 0..9; present: bool `[3]`; colors: uint8 `[3, 3]` (RGB per object);
  background: uint8 `[3]`; centers: int `[3, 2]` (x, y) in frame 1, absolute; sizes: int `[3]`;
  motions: int `[3, 2]` absolute motion (x, y). Rows of absent objects are zeros.
  """
  mode: int
  present: np.ndarray
  colors: np.ndarray
  background: np.ndarray
  centers: np.ndarray
  sizes: np.ndarray
  motions: np.ndarray


def sample_scene(rng: np.random.Generator) -> Scene:
  """Draws one scene from the reference's distributions, in the reference's order of draws.

  (Its stream was legacy `np.random` seeded from OS entropy, so scenes cannot match its files
  one for one; only the distributions carry over.)
  """
  u = lambda: int(rng.integers(COLOR_RANGE))  # noqa: E731
  palette = [(u(), u(), 255 - u()), (u(), 255 - u(), u()), (255 - u(), u(), u())]
  colors = np.array([palette[k] for k in rng.permutation(3)], np.uint8)
  background = np.array([255 - u() for _ in range(3)], np.uint8)
  mode = int(rng.integers(10))
  present = np.array([True, mode not in (0, 1, 2), mode not in (0, 3, 4)])
  centers, motions = np.zeros((3, 2), np.int64), np.zeros((3, 2), np.int64)
  sizes = np.zeros(3, np.int64)
  r = rng.integers(-MOTION_RANGE, MOTION_RANGE)
  motions[0] = (r, r)
  centers[0] = rng.integers(-OFFSET_RANGE, OFFSET_RANGE, 2) + CANVAS // 2
  sizes[0] = rng.integers(SIZE_LOW, SIZE_HIGH)
  for k, axis in ((1, 1), (2, 0)):  # square moves along y, triangle along x (relative)
    if present[k]:
      motions[k, axis] = rng.integers(-MOTION_RANGE, MOTION_RANGE)
      motions[k] += motions[0]
      centers[k] = rng.integers(-OFFSET_RANGE, OFFSET_RANGE, 2) + centers[0]
      sizes[k] = rng.integers(SIZE_LOW, SIZE_HIGH)
  return Scene(mode, present, colors, background, centers, sizes, motions)


def _triangle(center: np.ndarray, size: int) -> np.ndarray:
  """`[3, 2]` vertices (apex up), truncated toward zero as the reference's `np.int32` cast."""
  x, y = float(center[0]), float(center[1])
  half, s3 = size // 2, size * math.sqrt(3)
  return np.trunc(np.array([[x, y - s3 / 3], [x - half, y + s3 / 6], [x + half, y + s3 / 6]]))


def _inside(kind: int, center: np.ndarray, size: int, xs: np.ndarray, ys: np.ndarray
            ) -> np.ndarray:
  """bool `[len(ys), len(xs)]`: which points (x, y) lie in the object (edges included)."""
  dx, dy = xs[None, :] - center[0], ys[:, None] - center[1]
  half = size // 2
  if kind == 0:
    return dx * dx + dy * dy <= half * half
  if kind == 1:
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)
  v = _triangle(center, size)
  edges = []
  for a, b in ((v[0], v[1]), (v[1], v[2]), (v[2], v[0])):
    edges.append((b[0] - a[0]) * (ys[:, None] - a[1]) - (b[1] - a[1]) * (xs[None, :] - a[0]))
  return (((edges[0] >= 0) & (edges[1] >= 0) & (edges[2] >= 0))
          | ((edges[0] <= 0) & (edges[1] <= 0) & (edges[2] <= 0)))


def _extent(kind: int, center: np.ndarray, size: int) -> tuple[float, float, float, float]:
  """(x_min, x_max, y_min, y_max) bounding the object."""
  if kind == 2:
    v = _triangle(center, size)
    return v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max()
  half = size // 2
  return center[0] - half, center[0] + half, center[1] - half, center[1] + half


def label_map(scene: Scene, frame: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  """int32 `[len(ys), len(xs)]`: the topmost object id (0 background) at canvas points.

  Args:
    scene: the draws; frame: 0 (frame 1) or 1 (frame 2, every object moved by its motion).
    xs, ys: increasing canvas coordinates (integers are pixel centres; fractions allowed).
  """
  labels = np.zeros((len(ys), len(xs)), np.int32)
  for kind in range(3):  # drawing order: later objects occlude earlier ones
    if not scene.present[kind]:
      continue
    center = scene.centers[kind] + frame * scene.motions[kind]
    x0, x1, y0, y1 = _extent(kind, center, int(scene.sizes[kind]))
    cols = slice(np.searchsorted(xs, x0), np.searchsorted(xs, x1, side="right"))
    rows = slice(np.searchsorted(ys, y0), np.searchsorted(ys, y1, side="right"))
    inside = _inside(kind, center, int(scene.sizes[kind]), xs[cols], ys[rows])
    labels[rows, cols] = np.where(inside, kind + 1, labels[rows, cols])
  return labels


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(i0, i1, w): output i = (1 - w) * input[i0] + w * input[i1], OpenCV's INTER_LINEAR."""
  source = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
  i0 = np.floor(source).astype(np.int64)
  return i0, np.minimum(i0 + 1, n_in - 1), source - i0


def resize_bilinear(array: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize without antialiasing (OpenCV's `cv2.resize` default).

  Args:
    array: `[H, W]` or `[H, W, C]`.

  Returns:
    float64 `[height, width(, C)]`.
  """
  rows, cols = _bilinear_taps(array.shape[0], height), _bilinear_taps(array.shape[1], width)
  return _resample(np.asarray(array, np.float64), rows, cols)


def _resample(array, rows, cols):
  (r0, r1, wr), (c0, c1, wc) = rows, cols
  extra = (1,) * (array.ndim - 2)
  wr, wc = wr.reshape((-1, 1) + extra), wc.reshape((1, -1) + extra)
  blended = array[r0] * (1 - wr) + array[r1] * wr
  return blended[:, c0] * (1 - wc) + blended[:, c1] * wc


def _render_frame(scene: Scene, frame: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 image `[size, size, 3]`, float32 flow `[size, size, 2]` in image widths)."""
  r0, r1, w = _bilinear_taps(CANVAS, size)
  # Only the canvas rows and columns the resize reads are rasterized.
  needed = np.unique(np.concatenate([r0, r1]))
  labels = label_map(scene, frame, needed, needed)
  table = np.zeros((4, 5), np.float32)
  table[0, :3] = scene.background
  table[1:, :3] = scene.colors
  table[1:, 3:] = scene.motions
  # The resize of table[labels], tap by tap: gathering [size, size] labels is cheaper than
  # resampling the whole rasterized grid.
  taps = ((np.searchsorted(needed, r0), 1 - w), (np.searchsorted(needed, r1), w))
  values = sum(table[labels[rows[:, None], cols[None, :]]]
               * (wr[:, None] * wc[None, :])[..., None].astype(np.float32)
               for rows, wr in taps for cols, wc in taps)
  image = np.floor(values[..., :3] + 0.5).astype(np.uint8)
  return image, values[..., 3:] / np.float32(CANVAS)


def _render_records(rng: np.random.Generator, size: int) -> dict[str, Any]:
  """One scene with uint8 images and ids, as the ArrayRecord files store it."""
  scene = sample_scene(rng)
  image1, flow = _render_frame(scene, 0, size)
  image2, _ = _render_frame(scene, 1, size)
  centres = (np.arange(size) + 0.5) * CANVAS / size - 0.5
  return {"image1": image1, "image2": image2, "flow": flow,
          "object_ids": label_map(scene, 0, centres, centres).astype(np.uint8),
          "mode": np.int32(scene.mode),
          "motions": (scene.motions / CANVAS).astype(np.float32),
          "present": scene.present.copy()}


def _check_size(size: int) -> None:
  if not isinstance(size, (int, np.integer)) or size < 1:
    raise UserError(f"image_size must be a positive integer, got {size!r}.")


def render_scene(rng: np.random.Generator, size: int = 128) -> dict[str, Any]:
  """One Shapes scene (see the module docstring), resized to `size`.

  Returns:
    image1, image2: float32 `[size, size, 3]`; flow: float32 `[size, size, 2]`; object_ids:
    int32 `[size, size]`; mode: int; motions: float32 `[3, 2]` absolute motion of circle,
    square, triangle in image widths (zeros when absent); present: bool `[3]`.
  """
  _check_size(size)
  record = _render_records(rng, size)
  return {**_float_example(record), "mode": int(record["mode"]), "motions": record["motions"],
          "present": record["present"]}


def _float_example(record: dict[str, Any]) -> dict[str, np.ndarray]:
  """The four model keys of a stored record, as float32 / int32."""
  return {"image1": np.asarray(record["image1"], np.float32) / 255,
          "image2": np.asarray(record["image2"], np.float32) / 255,
          "flow": np.asarray(record["flow"], np.float32),
          "object_ids": np.asarray(record["object_ids"], np.int32)}


def generate(num: int, seed: int, size: int = 128, start: int = 0) -> dict[str, np.ndarray]:
  """Scenes `start .. start + num - 1`, stacked (keys of `render_scene`, leading axis num)."""
  _check_size(size)
  generated.check_generate_args(num, start, seed)
  scenes = [render_scene(scene_rng(seed, i), size) for i in range(start, start + num)]
  return {k: np.stack([np.asarray(s[k]) for s in scenes]) for k in scenes[0]}


# ---------------------------------------------------------------------------------------------
# tfds builder: generated scenes -> ArrayRecord.
# ---------------------------------------------------------------------------------------------


def shapes_config(image_size: int = 128, num_train: int = 10000, num_validation: int = 1000,
                  num_test: int = 1000, seed: int = 0) -> generated.GeneratedConfig:
  """The builder config of a setting; its name keys the cache folder."""
  return generated.generated_config("Shapes scenes", image_size, num_train, num_validation,
                                    num_test, seed)


class ShapesMotion(generated.GeneratedBuilder):
  """The Shapes generator's scenes, example i of a split = scene `start + i` (no shuffling).

  Stored: image1, image2 uint8 `[S, S, 3]`, flow float32 `[S, S, 2]`, object_ids uint8
  `[S, S]` (raw bytes, zlib-compressed: scenes are piecewise constant, a 128 px scene takes
  about 2 KB instead of 245 KB), and per scene mode int32, motions float32 `[3, 2]`, present
  bool `[3]`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [shapes_config()]

  make_example = staticmethod(_render_records)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self, description="PSD Shapes: frame pairs, flow and object ids.",
        features=tfds.features.FeaturesDict({
            "image1": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8, encoding="zlib"),
            "image2": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8, encoding="zlib"),
            "flow": tfds.features.Tensor(shape=(s, s, 2), dtype=np.float32, encoding="zlib"),
            "object_ids": tfds.features.Tensor(shape=(s, s), dtype=np.uint8, encoding="zlib"),
            "mode": np.int32,
            "motions": tfds.features.Tensor(shape=(3, 2), dtype=np.float32),
            "present": tfds.features.Tensor(shape=(3,), dtype=np.bool_)}),
        disable_shuffling=True)

def shapes_builder(data_config: ml_collections.ConfigDict) -> ShapesMotion:
  """The prepared `ShapesMotion` builder of `data_config` (generated on first use)."""
  _check_size(data_config.image_size)
  return generated.prepare(ShapesMotion, data_config, "Shapes scenes")


# ---------------------------------------------------------------------------------------------
# Files: the reference's layout and the users' frame pairs.
# ---------------------------------------------------------------------------------------------


def read_flo(path: str) -> np.ndarray:
  """float32 `[H, W, 2]` flow in pixels from a Middlebury `.flo` file."""
  try:
    with open(path, "rb") as f:
      header = f.read(12)
      data = np.frombuffer(f.read(), np.float32)
  except FileNotFoundError:
    raise UserError(f"flow file {path} is missing.") from None
  except OSError as e:
    raise UserError(f"cannot read the flow file {path} ({e.strerror}).") from None
  if len(header) < 12 or np.frombuffer(header[:4], np.float32)[0] != FLO_MAGIC:
    raise UserError(f"flow file {path} is not a Middlebury .flo file (its header lacks the "
                    f"magic number {FLO_MAGIC}).")
  width, height = (int(v) for v in np.frombuffer(header[4:], np.int32))
  if width < 1 or height < 1 or data.size != width * height * 2:
    raise UserError(f"flow file {path} declares {width}x{height} pixels but holds "
                    f"{data.size} values, not {max(width * height * 2, 0)}.")
  return data.reshape(height, width, 2)


def _image_size(path: str) -> tuple[int, int]:
  """(height, width) of an image file, from its header."""
  try:
    with Image.open(path) as image:
      return image.height, image.width
  except FileNotFoundError:
    raise UserError(f"image file {path} is missing.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise UserError(f"image file {path} cannot be read ({type(e).__name__}).") from None


def _read_image(path: str) -> np.ndarray:
  """float32 `[H, W, 3]` in [0, 1]."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"), np.float32) / 255
  except FileNotFoundError:
    raise UserError(f"image file {path} is missing.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise UserError(f"image file {path} cannot be read ({type(e).__name__}).") from None


def _flow_layout(path: str, shape: tuple[int, ...], image_hw: tuple[int, int],
                 channels_first_only: bool) -> str:
  """'hwc' or 'chw': how the `.npy` at `path` of `shape` holds the flow of an image_hw frame."""
  expected = "(2, H, W)" if channels_first_only else "[H, W, 2] or [2, H, W]"
  if len(shape) != 3 or (shape[0] != 2 and (channels_first_only or shape[2] != 2)):
    raise UserError(f"flow file {path} has shape {tuple(shape)}, not {expected} (x then y).")
  if shape[1:] == image_hw and shape[0] == 2:
    return "chw"
  if not channels_first_only and shape[:2] == image_hw and shape[2] == 2:
    return "hwc"
  spatial = shape[1:] if shape[0] == 2 else shape[:2]
  raise UserError(f"flow file {path} is {spatial[0]}x{spatial[1]} but its frames are "
                  f"{image_hw[0]}x{image_hw[1]} (height x width).")


def _npy_shape(path: str) -> tuple[int, ...]:
  try:
    return tuple(np.load(path, mmap_mode="r").shape)
  except FileNotFoundError:
    raise UserError(f"flow file {path} is missing.") from None
  except (OSError, ValueError) as e:
    raise UserError(f"flow file {path} is not a readable .npy array ({e}).") from None


@dataclasses.dataclass(frozen=True)
class FramePair:
  """Paths of one example; `reference`: the flow is the reference's `(2, H, W)` .npy."""
  image1: str
  image2: str
  flow: str
  reference: bool


def _check_frames(pair: FramePair, hw: tuple[int, int], hw2: tuple[int, int]) -> None:
  if hw2 != hw:
    raise UserError(f"frames {pair.image1} ({hw[0]}x{hw[1]}) and {pair.image2} "
                    f"({hw2[0]}x{hw2[1]}) differ in size.")


def _check_flo(pair: FramePair, shape: tuple[int, ...], hw: tuple[int, int]) -> None:
  if shape[:2] != hw:
    raise UserError(f"flow file {pair.flow} is {shape[0]}x{shape[1]} but its frames are "
                    f"{hw[0]}x{hw[1]} (height x width).")


def check_pair(pair: FramePair) -> None:
  """Checks that a pair's files exist and their sizes agree, from the files' headers."""
  hw = _image_size(pair.image1)
  _check_frames(pair, hw, _image_size(pair.image2))
  if pair.flow.endswith(".flo"):
    _check_flo(pair, read_flo(pair.flow).shape, hw)
  elif pair.flow.endswith(".npy"):
    _flow_layout(pair.flow, _npy_shape(pair.flow), hw, pair.reference)
  else:
    raise _flow_format_error(pair)


def _flow_format_error(pair: FramePair) -> UserError:
  return UserError(f"flow file {pair.flow} must be a .npy or a Middlebury .flo file.")


def read_pair(pair: FramePair, image_size: int) -> dict[str, np.ndarray]:
  """An example dict of a pair, resized to `image_size` (object_ids all -1)."""
  image1, image2 = _read_image(pair.image1), _read_image(pair.image2)
  hw = image1.shape[:2]
  _check_frames(pair, hw, image2.shape[:2])
  if pair.flow.endswith(".flo"):
    flow = read_flo(pair.flow)
    _check_flo(pair, flow.shape, hw)
    flow = flow / hw[1]  # pixels -> image widths
  elif pair.flow.endswith(".npy"):
    flow = np.load(pair.flow)
    if _flow_layout(pair.flow, flow.shape, hw, pair.reference) == "chw":
      flow = flow.transpose(1, 2, 0)
  else:
    raise _flow_format_error(pair)
  flow = np.asarray(flow, np.float64)
  if hw != (image_size, image_size):
    image1, image2 = (np.clip(resize_bilinear(im, image_size, image_size), 0, 1)
                      for im in (image1, image2))
    flow = resize_bilinear(flow, image_size, image_size) * np.array([1.0, hw[1] / hw[0]])
  return {"image1": np.asarray(image1, np.float32), "image2": np.asarray(image2, np.float32),
          "flow": flow.astype(np.float32),
          "object_ids": np.full((image_size, image_size), -1, np.int32)}


class FramePairs(Sequence):
  """Random-access example dicts of frame pairs read from files (see `read_pair`)."""

  def __init__(self, pairs: Sequence[FramePair], image_size: int):
    self.pairs, self._image_size = list(pairs), image_size

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not -len(self) <= index < len(self):
      raise IndexError(index)
    return read_pair(self.pairs[index], self._image_size)


_LIST_NAMES = {"train": ("train.txt",), "validation": ("validation.txt", "val.txt"),
               "test": ("test.txt",)}


def _read_lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def _split_entries(folder: str, split: str, pool: list[str] | None, what: str) -> list[str]:
  """Entries of `split`: its list file in `folder`, else its crc32 share of the pool."""
  lists = {}
  for name, files in _LIST_NAMES.items():
    for file in files:
      if os.path.isfile(os.path.join(folder, file)):
        lists[name] = _read_lines(os.path.join(folder, file))
        break
  if split in lists:
    return lists[split]
  if pool is None:
    raise UserError(f"{folder} has no {' or '.join(_LIST_NAMES[split])} and no pool of "
                    f"{what} to split.")
  taken = {e for entries in lists.values() for e in entries}
  share = {0: "test", 1: "validation"}
  return [e for e in pool if e not in taken
          and share.get(zlib.crc32(e.encode()) % 10, "train") == split]


def _reference_pairs(folder: str, split: str) -> list[FramePair]:
  if not os.path.isdir(folder):
    raise UserError(f"reference data folder {folder} is not a directory.")
  if os.path.isfile(os.path.join(folder, "demo.txt")):
    pool = _read_lines(os.path.join(folder, "demo.txt"))
  else:
    ids = [m.group(1) for m in map(re.compile(r"(.+)_f\.npy$").match, os.listdir(folder)) if m]
    pool = sorted(ids, key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i))
  return [FramePair(*(os.path.join(folder, f"{i}{suffix}")
                      for suffix in ("_im1.png", "_im2.png", "_f.npy")), reference=True)
          for i in _split_entries(folder, split, pool, "{i}_f.npy files")]


def _pairs_from_lines(list_file: str, lines: list[str]) -> list[FramePair]:
  """Pairs of `frame1 frame2 flow` lines, paths relative to the list's folder."""
  base = os.path.dirname(os.path.abspath(list_file))
  pairs = []
  for line in lines:
    fields = line.split()
    if len(fields) != 3:
      raise UserError(f"{list_file} has the line {line!r}, not 'frame1 frame2 flow'.")
    pairs.append(FramePair(*(os.path.join(base, p) for p in fields), reference=False))
  return pairs


def _user_pairs(path: str, split: str) -> list[FramePair]:
  if os.path.isfile(path):
    folder, pool_file = os.path.dirname(os.path.abspath(path)), path
  elif os.path.isdir(path):
    folder, pool_file = path, os.path.join(path, "pairs.txt")
  else:
    raise UserError(f"frame-pair list {path} is missing (give a text file of 'frame1 frame2 "
                    f"flow' lines or a folder of train/validation/test.txt lists).")
  pool = _read_lines(pool_file) if os.path.isfile(pool_file) else None
  entries = _split_entries(folder, split, pool, "frame pairs (pairs.txt)")
  list_file = next((os.path.join(folder, f) for f in _LIST_NAMES[split]
                    if os.path.isfile(os.path.join(folder, f))), pool_file)
  return _pairs_from_lines(list_file, entries)


def file_pairs(data_config: ml_collections.ConfigDict, split: str) -> FramePairs:
  """A split of the "reference" or "pairs" source, checked (files exist, sizes agree)."""
  _check_size(data_config.image_size)
  if not data_config.path:
    raise UserError(f"data.path must name the {data_config.source} data (a folder or list "
                    f"file).")
  path = os.path.expanduser(data_config.path)
  pairs = (_reference_pairs(path, split) if data_config.source == "reference"
           else _user_pairs(path, split))
  limit = data_config[f"num_{split}"]
  if len(pairs) > limit:
    logging.warning("%s: keeping the first %d of %d %s examples (data.num_%s)", path, limit,
                    len(pairs), split, split)
    pairs = pairs[:limit]
  if not pairs:
    raise UserError(f"{path} holds no {split} examples (add a {_LIST_NAMES[split][0]} list).")
  for pair in pairs:
    check_pair(pair)
  return FramePairs(pairs, data_config.image_size)


# ---------------------------------------------------------------------------------------------
# Configuration and the entry point.
# ---------------------------------------------------------------------------------------------


def default_data_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The data fields (see the module docstring); defaults: 128 px Shapes, 10k/1k/1k scenes."""
  return generated.data_config({
      "source": "shapes",
      "path": config_dict.placeholder(str),  # folder or list file of "reference" / "pairs"
  }, overrides)


def load_split(data_config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
  """Split `split` of `data_config.source` as a random-access sequence of example dicts.

  Each item: image1, image2 float32 `[S, S, 3]`, flow float32 `[S, S, 2]` (image widths),
  object_ids int32 `[S, S]` (-1 for files). Shapes are generated into ArrayRecord once.
  """
  generated.check_split(split)
  if data_config.source == "shapes":
    return generated.Records(shapes_builder(data_config).as_data_source(split=split),
                             _float_example)
  if data_config.source in ("reference", "pairs"):
    return file_pairs(data_config, split)
  raise UserError(f"data.source {data_config.source!r} is not one of {', '.join(SOURCES)}.")
