"""Label map -> image data for GauGAN (SPADE): a synthetic task, the user's Cityscapes and
COCO-Stuff.

`load_label_map_task(source, height=, width=, ...)` returns a `LabelMapTask` of random-access
sources (sequences of dicts of numpy arrays, so training batches are a pure function of (seed,
step)): `train`, `test`, and the architecture-search split `train1` / `train2` of `train`.
An example is `{"label": [h, w] uint8 class ids, "instance": [h, w] int32 instance ids,
"image": [h, w, 3]}` (uint8 from files, float32 in [-1, 1] when synthetic). `train_batches`
and `eval_batches` turn them into network batches `{"label": [b, H, W] int32, "edge":
[b, H, W] float32, "image": [b, H, W, 3] float32 in [-1, 1]}`; the one-hot label map (and the
dontcare channel) is built on the device from `label` (see `spade_recipe.semantic_input`), so
batches stay small (a one-hot Cityscapes batch of 16 would be 300 MB).

Sources:

* `synthetic`: deterministic scenes of 3-6 discs, squares and diamonds (`SyntheticLabelMaps`),
  4 classes (background + 3 shapes) with one instance per shape. The image paints each class
  in its colour, darkened towards the boundary of its instance (by the distance to it), and
  every instance boundary dark: a local mapping of the label map and its instance edges that
  a small SPADE generator learns in a few hundred steps.
* `cityscapes:PATH`: the user's Cityscapes (`leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`,
  `gtFine/{train,val}/<city>/*_gtFine_labelIds.png` and `*_gtFine_instanceIds.png`), built
  once into ArrayRecord under `data_dir` (`CityscapesLabelMaps`; TensorFlow is not needed,
  neither to build nor to read). Images are stored as in `data.gan_images`; label and
  instance maps as their PNG bytes (instance maps are 16-bit, which tfds's numpy image decoder
  cannot read without OpenCV), decoded with PIL at load time. The test split is `val` (500
  images), as the reference's.
* `coco:PATH`: the user's COCO-Stuff in the layout the SPADE / GAN Compression loaders read
  (`{train,val}_img/*.jpg`, `{train,val}_label/*.png` with the 182 stuff+thing ids and 255
  unlabeled, `{train,val}_inst/*.png` instance maps), paired by file stem, built once the
  same way (`CocoStuffLabelMaps`). The test split is `val`.

What matches the reference (`data/cityscapes_dataset.py`, `data/spade_dataset.py`,
`models/spade_model.py`): files sorted by path and paired by their `<city>_<seq>_<frame>`
prefix; `label_nc` 35 label ids; images resized to 512x256 (`scale_width` to 512) bicubic,
label and instance maps nearest; a random horizontal flip when training, none when testing;
images to [-1, 1]; the instance edge map of `get_edges` (a pixel is an edge when a 4-neighbour
has another instance id), computed after resizing and flipping; label 255 is the dontcare
label `label_nc` (on the device). COCO-Stuff (`data/coco_dataset.py`): `label_nc` 182 with the
dontcare label, training maps resized to `load_size` (286) square and randomly cropped to 256,
test maps resized to 256. Deviations: the reference's `train1` / `train2` meta files
are replaced by a seeded permutation (`holdout` images, 200 for Cityscapes as its
`train2.meta`); every image is resized to exactly `height x width` (the same as `scale_width`
for Cityscapes' 2:1 images).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from scipy import ndimage

from data import gan_images
from lite_jax.core.errors import UserError

Example = dict[str, Any]
CITYSCAPES_LABELS = 35  # label ids 0..33 in gtFine labelIds, as the reference's label_nc 35
CITYSCAPES_SPLITS = ("train", "val")
COCO_STUFF_LABELS = 182  # stuff + thing ids 0..181 of the stuffthingmaps; 255 = unlabeled

# ---------------------------------------------------------------------------------------------
# Synthetic label maps.
# ---------------------------------------------------------------------------------------------

SYNTHETIC_CLASSES = ("background", "disc", "square", "diamond")
SYNTHETIC_COLOURS = np.array([[0.3, 0.4, 0.55], [0.9, -0.5, -0.55], [-0.45, 0.8, -0.4],
                              [-0.4, -0.3, 0.9]], np.float32)  # per class, in [-1, 1]
_EDGE_COLOUR = -0.9  # instance boundaries
_SHADE_DEPTH = 0.15  # of the image height: how far inside an instance the darkening reaches


def instance_edges(instance: np.ndarray) -> np.ndarray:
  """The reference's `get_edges`: 1 where a 4-neighbour has another id, else 0.

  Args:
    instance: `[..., h, w]` instance ids.

  Returns:
    `[..., h, w]` float32.
  """
  edge = np.zeros(instance.shape, bool)
  horizontal = instance[..., :, 1:] != instance[..., :, :-1]
  vertical = instance[..., 1:, :] != instance[..., :-1, :]
  edge[..., :, 1:] |= horizontal
  edge[..., :, :-1] |= horizontal
  edge[..., 1:, :] |= vertical
  edge[..., :-1, :] |= vertical
  return edge.astype(np.float32)


def synthetic_scene(rng: np.random.Generator, height: int, width: int) -> Example:
  """One random scene `{"label", "instance", "image"}` (see the module docstring).

  3-6 shapes (radius 12-30% of `height`, centres anywhere, so some are cut by the border) are
  painted in order, later ones occluding earlier ones; instance ids are 1.. in painting order
  (0 is the background).
  """
  count = int(rng.integers(3, 7))
  kinds = rng.integers(1, len(SYNTHETIC_CLASSES), size=count)
  radius = (rng.uniform(0.12, 0.3, count) * height)[:, None, None]
  cy = rng.uniform(0, height, count)[:, None, None]
  cx = rng.uniform(0, width, count)[:, None, None]
  dy = np.arange(height)[None, :, None] + 0.5 - cy  # [count, h, 1]
  dx = np.arange(width)[None, None, :] + 0.5 - cx  # [count, 1, w]
  inside = np.select(
      [kinds[:, None, None] == 1, kinds[:, None, None] == 2],
      [dx * dx + dy * dy <= radius * radius, np.maximum(abs(dx), abs(dy)) <= 0.85 * radius],
      abs(dx) + abs(dy) <= 1.2 * radius)  # [count, h, w]
  top = count - 1 - np.argmax(inside[::-1], axis=0)  # the last shape painted over each pixel
  covered = inside.any(axis=0)
  instance = np.where(covered, top + 1, 0).astype(np.int32)
  label = np.where(covered, kinds[top], 0).astype(np.uint8)
  depth = np.zeros((height, width), np.float32)  # distance to the own instance's boundary
  for i in range(1, count + 1):
    mask = instance == i
    if mask.any():
      depth += np.where(mask, ndimage.distance_transform_edt(mask), 0).astype(np.float32)
  shade = np.where(covered, 0.5 + 0.5 * np.minimum(depth / (_SHADE_DEPTH * height), 1), 1)
  image = -1 + (SYNTHETIC_COLOURS[label] + 1) * shade[..., None].astype(np.float32)
  image = np.where(instance_edges(instance)[..., None] > 0, np.float32(_EDGE_COLOUR), image)
  return {"label": label, "instance": instance, "image": image.astype(np.float32)}


class SyntheticLabelMaps(gan_images.SeededExamples):
  """`num_examples` deterministic synthetic scenes of `synthetic_scene` (`SeededExamples`)."""

  def __init__(self, num_examples: int, seed: int | tuple[int, ...], *, height: int,
               width: int):
    if num_examples < 1 or min(height, width) < 8:
      raise UserError(f"synthetic label maps need num_examples >= 1 and sides >= 8, got "
                      f"{num_examples} and {height}x{width}.")
    super().__init__(num_examples, seed)
    self._height, self._width = height, width

  def make(self, rng: np.random.Generator) -> Example:
    return synthetic_scene(rng, self._height, self._width)


# ---------------------------------------------------------------------------------------------
# Cityscapes (local files -> ArrayRecord).
# ---------------------------------------------------------------------------------------------


def _frame(path: str) -> str:
  """`<city>_<seq>_<frame>` of a Cityscapes file name (the reference's `paths_match` key)."""
  return "_".join(os.path.basename(path).split("_")[:3])


def _files(folder: str, suffix: str) -> list[str]:
  return sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                for name in names if name.endswith(suffix))


def cityscapes_files(root: str, split: str) -> list[tuple[str, str, str]]:
  """`(image, labelIds, instanceIds)` paths of one split, sorted and checked to pair up."""
  image_dir = os.path.join(root, "leftImg8bit", split)
  label_dir = os.path.join(root, "gtFine", split)
  for folder in (image_dir, label_dir):
    if not os.path.isdir(folder):
      raise UserError(f"Cityscapes folder {folder!r} is missing; pass the folder holding "
                      f"leftImg8bit/ and gtFine/.")
  images = _files(image_dir, "_leftImg8bit.png")
  labels = _files(label_dir, "_gtFine_labelIds.png")
  instances = _files(label_dir, "_gtFine_instanceIds.png")
  if not images or len(labels) != len(images) or len(instances) != len(images):
    raise UserError(f"Cityscapes {split} split has {len(images)} images, {len(labels)} "
                    f"labelIds and {len(instances)} instanceIds files; they must be equally "
                    f"many (and at least one).")
  for paths in zip(images, labels, instances):
    if len({_frame(p) for p in paths}) > 1:
      raise UserError(f"Cityscapes files {', '.join(map(repr, paths))} do not belong to the "
                      f"same frame; every image needs its labelIds and instanceIds files.")
  return list(zip(images, labels, instances))


def _png_bytes(path: str) -> bytes:
  """The file's bytes, after checking that PIL reads it as a one-channel PNG."""
  try:
    with Image.open(path) as image:
      image.load()
      readable = image.format == "PNG" and image.mode in ("L", "P", "I", "I;16")
  except (OSError, SyntaxError, ValueError) as e:  # What PIL raises for broken files.
    raise UserError(f"label file {path!r} cannot be read by PIL ({type(e).__name__}).") from None
  if not readable:
    raise UserError(f"label file {path!r} must be a one-channel PNG of ids.")
  with open(path, "rb") as f:
    return f.read()


def decode_ids(encoded: bytes) -> np.ndarray:
  """A stored label or instance PNG -> `[h, w]` ids (uint8 or int32)."""
  with Image.open(io.BytesIO(encoded)) as image:
    ids = np.asarray(image)
  return ids if ids.dtype == np.uint8 else ids.astype(np.int32)


def coco_stuff_files(root: str, split: str) -> list[tuple[str, str, str]]:
  """`(image, label, instance)` paths of one COCO-Stuff split (`train`, `val`), paired by
  file stem and sorted."""
  folders = {kind: os.path.join(root, f"{split}_{kind}") for kind in ("img", "label", "inst")}
  for folder in folders.values():
    if not os.path.isdir(folder):
      raise UserError(f"COCO-Stuff folder {folder!r} is missing; pass the folder holding "
                      f"{split}_img/, {split}_label/ and {split}_inst/.")
  stems = {}
  for kind, folder in folders.items():
    suffixes = (".jpg", ".jpeg", ".png") if kind == "img" else (".png",)
    stems[kind] = {os.path.splitext(name)[0]: os.path.join(folder, name)
                   for name in os.listdir(folder) if name.lower().endswith(suffixes)}
  images = stems["img"]
  if not images:
    raise UserError(f"COCO-Stuff folder {folders['img']!r} holds no images.")
  for kind in ("label", "inst"):
    missing = sorted(set(images) ^ set(stems[kind]))
    if missing:
      raise UserError(f"COCO-Stuff {split} images and {split}_{kind} files do not pair up: "
                      f"{len(missing)} stem(s) in only one of them, e.g. {missing[0]!r}.")
  return [(images[k], stems["label"][k], stems["inst"][k]) for k in sorted(images)]


class _LabelMapFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A folder of (RGB image, label ids PNG, instance ids PNG) triples per split -> ArrayRecord.

  Subclasses set `name`, `SPLITS`, `MANUAL_DOWNLOAD_INSTRUCTIONS` and `files(root, split)`.
  """

  VERSION = tfds.core.Version("1.0.0")
  SPLITS: tuple[str, ...] = ()

  @staticmethod
  def files(root: str, split: str) -> list[tuple[str, str, str]]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.Tensor(shape=(), dtype=np.object_),
        "instance": tfds.features.Tensor(shape=(), dtype=np.object_),
        "file_name": tfds.features.Text()}),
        disable_shuffling=True)  # Index i is the i-th frame in sorted order.

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(root, self.files(root, split))
            for split in self.SPLITS}

  def _generate_examples(self, root: str, files: list[tuple[str, str, str]]):
    for image, label, instance in files:
      name = os.path.relpath(image, root)
      yield name, {"image": gan_images.encoded_rgb(image)[0], "label": _png_bytes(label),
                   "instance": _png_bytes(instance), "file_name": name}


class CityscapesLabelMaps(_LabelMapFolder, skip_registration=True):
  """Cityscapes `train` / `val`: RGB image, labelIds and instanceIds PNGs, file name."""

  name = "cityscapes_label_maps"
  SPLITS = CITYSCAPES_SPLITS
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the Cityscapes folder holding leftImg8bit/ and gtFine/."
  files = staticmethod(cityscapes_files)


class CocoStuffLabelMaps(_LabelMapFolder, skip_registration=True):
  """COCO-Stuff `train` / `val`: RGB image, stuff+thing label PNG, instance PNG, file name."""

  name = "coco_stuff_label_maps"
  SPLITS = ("train", "val")
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Pass the COCO-Stuff folder holding train_img/, train_label/, "
                                  "train_inst/, val_img/, val_label/ and val_inst/.")
  files = staticmethod(coco_stuff_files)


def _decode_record(record: Example) -> Example:
  return {"label": decode_ids(record["label"]), "instance": decode_ids(record["instance"]),
          "image": record["image"]}


def _folder_splits(builder: type[_LabelMapFolder], root: str, data_dir: str | None
                   ) -> tuple[Sequence[Example], Sequence[Example]]:
  """`(train, test)` of a label-map folder, built into ArrayRecord once."""
  splits = gan_images.prepare_folder(builder, root, data_dir).as_data_source()
  train, test = (gan_images.Mapped(splits[s], _decode_record) for s in builder.SPLITS)
  return train, test


def subset(examples: Sequence[Example], indices: Sequence[int]) -> Sequence[Example]:
  """The examples of `examples` at `indices`, in that order (read lazily)."""
  return gan_images.Subset(examples, np.asarray(indices, np.int64))


# ---------------------------------------------------------------------------------------------
# Preprocessing, training stream and evaluation batches.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Every map and image is resized to `height x width` (labels and instances nearest, images
  bicubic). With `load_size`, training examples are resized to `load_size` square instead and
  a random `height x width` crop is taken (the reference's `resize_and_crop`; test examples
  are still resized to `height x width`). `flip`: random horizontal flips when training."""
  height: int
  width: int
  flip: bool = True
  load_size: int = 0

  def __post_init__(self):
    if self.load_size and self.load_size < max(self.height, self.width):
      raise UserError(f"load_size {self.load_size} is smaller than the {self.height}x"
                      f"{self.width} crop; use at least {max(self.height, self.width)} (or 0: "
                      f"no crop).")


def _resize_nearest(ids: np.ndarray, height: int, width: int) -> np.ndarray:
  """PIL nearest resize of an id map (what torchvision's `Resize(NEAREST)` does)."""
  if ids.shape == (height, width):
    return ids
  mode_dtype = ids.dtype if ids.dtype == np.uint8 else np.int32
  resized = Image.fromarray(ids.astype(mode_dtype)).resize((width, height), Image.NEAREST)
  return np.asarray(resized)


def transform(example: Example, preprocess: Preprocess, flip: bool = False,
              crop: tuple[int, int] | None = None) -> Example:
  """An example -> `{"label": [H, W] int32, "edge": [H, W] float32, "image": [H, W, 3]
  float32 in [-1, 1]}`, flipped horizontally when `flip`. With `crop = (top, left)`, the
  example is resized to `load_size` square and cut at that corner (training only)."""
  h, w = preprocess.height, preprocess.width
  size = (preprocess.load_size,) * 2 if crop is not None else (h, w)
  label = _resize_nearest(example["label"], *size).astype(np.int32)
  instance = _resize_nearest(example["instance"], *size)
  image = gan_images.to_unit_range(gan_images.resize_bicubic(example["image"], *size))
  if crop is not None:
    window = (slice(crop[0], crop[0] + h), slice(crop[1], crop[1] + w))
    label, instance, image = label[window], instance[window], image[window]
  if flip:
    label, instance, image = label[:, ::-1], instance[:, ::-1], image[:, ::-1]
  return {"label": np.ascontiguousarray(label), "edge": instance_edges(instance),
          "image": np.ascontiguousarray(image, np.float32)}


def train_transform(example: Example, rng: np.random.Generator,
                    preprocess: Preprocess) -> Example:
  """Training preprocessing: `transform` with a random crop (if `preprocess.load_size`) and a
  random flip (if `preprocess.flip`)."""
  crop = None
  if preprocess.load_size:  # the window's top-left corner
    top, left = rng.integers(0, preprocess.load_size - np.array(
        [preprocess.height, preprocess.width]) + 1)
    crop = (int(top), int(left))
  return transform(example, preprocess, flip=preprocess.flip and rng.random() > 0.5, crop=crop)


def train_batches(examples: Sequence[Example], preprocess: Preprocess, *, batch_size: int,
                  seed: int) -> grain.MapDataset:
  """An endless stream of training batches, random-access by step (`.slice(slice(k, None))`).

  Each epoch of `examples` is reshuffled, each example preprocessed by `train_transform` with a
  generator derived from (seed, position).

  Returns:
    A `grain.MapDataset` whose item i is a batch `{"label", "edge", "image"}` of `batch_size`.
  """
  if batch_size < 1:
    raise UserError(f"batch_size must be positive, got {batch_size}.")
  return (grain.MapDataset.source(examples).seed(gan_images.stream_seed(seed, 0)).shuffle()
          .repeat(None).random_map(functools.partial(train_transform, preprocess=preprocess))
          .batch(batch_size, drop_remainder=True))


def eval_batches(examples: Sequence[Example], preprocess: Preprocess,
                 batch_size: int) -> Iterator[Example]:
  """`examples` in order, test-preprocessed (no flip), in batches of exactly `batch_size`.

  The last batch is padded by repeating its last example, so a jitted function compiles once.

  Yields:
    `{"label", "edge", "image"}` batches and `"mask": [batch_size] bool`, False on padding.
  """
  return gan_images.padded_batches(
      examples, functools.partial(transform, preprocess=preprocess), batch_size)


# ---------------------------------------------------------------------------------------------
# Pictures of label maps.
# ---------------------------------------------------------------------------------------------

# Colours of the 35 Cityscapes label ids (cityscapesScripts' `labels.py`, as pix2pixHD's
# `labelcolormap(35)`, which the reference's `tensor2label` draws with).
CITYSCAPES_COLOURS = np.array(
    [(0, 0, 0)] * 5 + [(111, 74, 0), (81, 0, 81), (128, 64, 128), (244, 35, 232),
     (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
     (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153),
     (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180),
     (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90),
     (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 142)], np.uint8)


def label_palette(num_classes: int) -> np.ndarray:
  """`[num_classes, 3]` uint8 colours: Cityscapes' for 35 classes, else pix2pixHD's
  `labelcolormap` (the bits of the id spread over R, G, B from the top bit down)."""
  if num_classes == CITYSCAPES_LABELS:
    return CITYSCAPES_COLOURS
  ids = np.arange(num_classes)
  palette = np.zeros((num_classes, 3), np.int64)
  for bit in range(8):
    for channel in range(3):
      palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
  return palette.astype(np.uint8)


def colorize(label: np.ndarray, edge: np.ndarray, num_classes: int) -> np.ndarray:
  """Label maps as pictures: `[n, h, w]` ids and edges -> `[n, h, w, 3]` float32 in [-1, 1],
  each class in its `label_palette` colour, instance edges white, unknown ids grey."""
  palette = np.concatenate([label_palette(num_classes), [[128, 128, 128]]]).astype(np.float32)
  rgb = palette[np.where((label >= 0) & (label < num_classes), label, num_classes)]
  rgb = np.where(edge[..., None] > 0, 255.0, rgb)
  return (rgb / 127.5 - 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelMapTask:
  """Random-access sources of a label map -> image task (see the module docstring)."""
  train: Sequence[Example]
  test: Sequence[Example]
  train1: Sequence[Example]  # `train` minus the held-out examples: trains the networks
  train2: Sequence[Example]  # the held-out examples of `train`, scored during the search
  preprocess: Preprocess
  num_labels: int  # label ids of the data are in [0, num_labels) (255 = dontcare)


def load_label_map_task(source: str, *, height: int, width: int, data_dir: str | None = None,
                        flip: bool = True, holdout: int = 0, seed: int = 0,
                        synthetic_train: int = 1000, synthetic_test: int = 100,
                        load_size: int = 0) -> LabelMapTask:
  """The sources of a label map -> image task.

  Args:
    source: `synthetic`, `cityscapes:PATH` or `coco:PATH`.
    height, width: network input size (Cityscapes: 256 x 512; COCO-Stuff: 256 x 256).
    data_dir: where the ArrayRecord copy of a folder is built and read (tfds's default if None).
    flip: random horizontal flips of training examples.
    load_size: training resize before a random `height x width` crop (COCO-Stuff: 286); 0
      resizes straight to `height x width`.
    holdout: size of `train2`, the search's held-out split (the reference's: Cityscapes 200).
    seed: the data seed: synthetic scenes and the held-out split (not the training order).
    synthetic_train, synthetic_test: synthetic split sizes.
  """
  kind, _, argument = source.partition(":")
  if kind == "synthetic":
    train = SyntheticLabelMaps(synthetic_train, (seed, 0), height=height, width=width)
    test = SyntheticLabelMaps(synthetic_test, (seed, 1), height=height, width=width)
    num_labels = len(SYNTHETIC_CLASSES)
  elif kind == "cityscapes" and argument:
    train, test = _folder_splits(CityscapesLabelMaps, argument, data_dir)
    num_labels = CITYSCAPES_LABELS
  elif kind == "coco" and argument:
    train, test = _folder_splits(CocoStuffLabelMaps, argument, data_dir)
    num_labels = COCO_STUFF_LABELS
  else:
    raise UserError(f"unknown label map source {source!r}; use synthetic, "
                    f"cityscapes:/path/to/cityscapes or coco:/path/to/cocostuff.")
  train1, train2 = gan_images.holdout_split(train, holdout, [seed, 3], make_subset=subset)
  return LabelMapTask(train=train, test=test, train1=train1, train2=train2,
                      preprocess=Preprocess(height, width, flip, load_size),
                      num_labels=num_labels)
