"""Image-to-image translation data for GAN Compression: pix2pix (paired) and CycleGAN (unpaired).

`load_image_task(source, paired=, ...)` returns an `ImageTask` of random-access sources
(sequences of dicts of numpy arrays, so training batches are a pure function of (seed, step)):
`train` (aligned pairs `{"A", "B"}`, or domain-A images `{"A"}` when unpaired), `train_B`
(unpaired: domain-B images `{"B"}`), `test` (`{"A"}`, plus its target `"B"` where the data has
aligned targets), `test_B` (unpaired: domain-B test images, e.g. FID's real set) and the
architecture-search split `train1` / `train2` of `train`. Sources:

* `synthetic`: deterministic scenes of 2-4 circles, squares and triangles (`SyntheticShapes`).
  A is their outline map (black edges on white); B fills each shape with its kind's colour,
  darkened by stripes along the shape's own axis: a local, translation- and flip-equivariant
  mapping that a small ResNet generator learns in a few hundred steps. Images are float32 in
  [-1, 1]; unpaired domains come from independent scenes.
* `folder:PATH`: the user's files, built once into ArrayRecord under `data_dir` (TensorFlow is
  not needed, neither to build nor to read):
  - CycleGAN layout, `UnpairedImages`: `trainA/ trainB/ testA/ testB/` (and optionally
    `valA/ valB/`) -> splits of the same names;
  - pix2pix layout, `PairedImages`: `train/` and `val/` and/or `test/` of side-by-side images,
    A the left half and B the right -> splits `train`, `val`, `test`. Whole images are stored;
    the halves are cut (and `direction` applied) at load time, as the reference does.
  Files are the reference's (`.jpg .jpeg .png .ppm .bmp`, any case, searched recursively) in
  sorted path order; each is stored as its own bytes when it is an RGB JPEG/PNG, else
  re-encoded as an RGB PNG (the reference reads every image with `.convert('RGB')`), next to
  its path relative to the split folder. Each folder gets its own tfds config, named after the
  folder and a hash of its absolute path (`data_dir/paired_images/<folder>_<crc32>/1.0.0`), so
  folders never collide and a folder is read only once: delete that directory to rebuild it.
* `tfds:NAME` (e.g. `tfds:cycle_gan/horse2zebra`): a catalog dataset with splits
  `trainA/trainB/testA/testB` and an `image` feature, already prepared as ArrayRecord under
  `data_dir`; nothing is ever downloaded.

What matches the reference (mit-han-lab/gan-compression `data/`): images sorted by path; the
test set is the `val` phase where the folder has one (its test options set `phase='val'`),
else `test`; training preprocessing is bicubic resize to `load_size`, one random crop of
`crop_size` and a random horizontal flip shared by both images of a pair, then [-1, 1];
testing resizes to `crop_size` and never flips; `none` only rounds sizes to multiples of 4 (and
flips when training); unpaired domains are drawn independently. Deviation: for non-square
pix2pix halves the reference crops `crop_size x crop_size*h/w` from the square resized image;
we always crop squares (the same for the paper's square datasets). The reference's
`train1`/`train2` meta files are not public, so the held-out split is a seeded permutation.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import io
import os
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from data.pointclouds import prepare
from lite_jax.core.errors import UserError

Example = dict[str, Any]
DIRECTIONS = ("AtoB", "BtoA")
PREPROCESS_MODES = ("resize_and_crop", "none")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")

# ---------------------------------------------------------------------------------------------
# Synthetic shapes: A = outlines, B = filled and striped by kind.
# ---------------------------------------------------------------------------------------------

SHAPE_KINDS = ("circle", "square", "triangle")
SHAPE_COLOURS = np.array([[0.85, -0.55, -0.55], [-0.55, 0.75, -0.45], [-0.45, -0.35, 0.85]],
                         np.float32)  # B's fill of each kind, in [-1, 1]
BACKGROUND, EDGE = 1.0, -1.0  # white page, black lines (as in edges2shoes)
_STRIPE_DEPTH = 0.4  # how much darker B's stripes are than the kind's colour


def synthetic_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
  """One random scene: `(A, B)`, each `[size, size, 3]` float32 in [-1, 1].

  2-4 shapes (circumradius 12-24% of `size`, random rotation, fully inside the image) are
  painted in order, later ones occluding earlier ones. A marks every pixel whose 4-neighbour
  belongs to another shape or to the background (2-pixel outlines); B paints each shape's
  pixels with its kind's colour minus stripes of period `size / 8` along the shape's axis.
  """
  count = int(rng.integers(2, 5))
  kinds = rng.integers(len(SHAPE_KINDS), size=count)
  radius = rng.uniform(0.12, 0.24, count) * size
  cx, cy = rng.uniform(radius, size - radius, (2, count))
  angle = rng.uniform(0, 2 * np.pi, count)
  centres = np.arange(size, dtype=np.float32) + 0.5
  dx = centres[None, None, :] - cx[:, None, None].astype(np.float32)  # [count, 1, size]
  dy = centres[None, :, None] - cy[:, None, None].astype(np.float32)  # [count, size, 1]
  # Squares and triangles: inside 4 half-planes at the apothem (a triangle repeats one).
  sides = np.where(kinds == SHAPE_KINDS.index("triangle"), 3, 4)[:, None]
  normals = angle[:, None] + 2 * np.pi * np.minimum(np.arange(4), sides - 1) / sides
  cos = np.cos(normals).astype(np.float32)[..., None, None]
  sin = np.sin(normals).astype(np.float32)[..., None, None]
  apothem = (radius[:, None] * np.cos(np.pi / sides)).astype(np.float32)[..., None, None]
  polygon = (dx[:, None] * cos + dy[:, None] * sin <= apothem).all(axis=1)
  circle = dx * dx + dy * dy <= (radius * radius).astype(np.float32)[:, None, None]
  is_circle = (kinds == SHAPE_KINDS.index("circle"))[:, None, None]
  inside = np.where(is_circle, circle, polygon)  # [count, size, size]
  top = count - 1 - np.argmax(inside[::-1], axis=0)  # the last shape painted over each pixel
  covered = inside.any(axis=0)
  # B: the top shape's colour, minus stripes along its axis (0 on the line through its centre).
  along = ((centres[None, :] - cx[top]) * np.cos(angle)[top]
           + (centres[:, None] - cy[top]) * np.sin(angle)[top])
  stripes = (0.5 - 0.5 * np.cos(2 * np.pi / max(4.0, size / 8) * along)).astype(np.float32)
  fill = SHAPE_COLOURS[kinds][top] - _STRIPE_DEPTH * stripes[..., None]
  b = np.where(covered[..., None], fill, np.float32(BACKGROUND))
  owner = np.where(covered, top + 1, 0)
  edge = np.zeros((size, size), bool)
  for axis in (0, 1):
    change = np.diff(owner, axis=axis) != 0
    lo, hi = [slice(None)] * 2, [slice(None)] * 2
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    edge[tuple(lo)] |= change
    edge[tuple(hi)] |= change
  a = np.where(edge[..., None], EDGE, BACKGROUND).astype(np.float32)
  return np.repeat(a, 3, axis=-1), b


class SeededExamples(Sequence):
  """`num_examples` random-access examples; example i is `self.make(rng)` with `rng` seeded by
  `(*seed, i)`, so it is a pure function of `(seed, i)`. `seed` is an int or a tuple of ints
  (sources with different seeds draw independent examples)."""

  def __init__(self, num_examples: int, seed: int | tuple[int, ...]):
    self._num_examples = num_examples
    self._seed = (seed,) if isinstance(seed, int) else tuple(seed)

  def __len__(self) -> int:
    return self._num_examples

  def __getitem__(self, index: int) -> Example:
    if not 0 <= index < self._num_examples:
      raise IndexError(index)
    return self.make(np.random.default_rng([*self._seed, index]))

  @abc.abstractmethod
  def make(self, rng: np.random.Generator) -> Example:
    """One example drawn from `rng`."""


class SyntheticShapes(SeededExamples):
  """`num_examples` deterministic synthetic scenes (`SeededExamples`).

  Examples hold the requested `domains` of `synthetic_pair`: `{"A", "B"}` (aligned) by default,
  or one of them, each `[image_size, image_size, 3]` float32 in [-1, 1].
  """

  def __init__(self, num_examples: int, seed: int | tuple[int, ...], *, image_size: int = 64,
               domains: tuple[str, ...] = ("A", "B")):
    if num_examples < 1 or image_size < 8:
      raise UserError(f"synthetic images need num_examples >= 1 and image_size >= 8, got "
                      f"{num_examples} and {image_size}.")
    super().__init__(num_examples, seed)
    self._image_size, self._domains = image_size, domains

  def make(self, rng: np.random.Generator) -> Example:
    a, b = synthetic_pair(rng, self._image_size)
    return {d: {"A": a, "B": b}[d] for d in self._domains}


# ---------------------------------------------------------------------------------------------
# Views of random-access sources.
# ---------------------------------------------------------------------------------------------


class Mapped(Sequence):
  """`source` with `fn` applied to each example."""

  def __init__(self, source: Sequence, fn: Callable[[Any], Example]):
    self._source, self._fn = source, fn

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Example:
    return self._fn(self._source[index])


class Subset(Sequence):
  """The examples of `source` at `indices`, in that order."""

  def __init__(self, source: Sequence, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> Example:
    return self._source[int(self._indices[index])]


def holdout_split(train: Sequence, holdout: int, seed, *, name: str = "holdout",
                  make_subset: Callable[[Sequence, np.ndarray], Sequence] = Subset
                  ) -> tuple[Sequence, Sequence]:
  """`(rest, held_out)`: `holdout` examples of `train` drawn by a seeded permutation, and the
  others, each in their original order (a search scores on `held_out`, never on the test set).

  Args:
    train: the training examples.
    holdout: how many to hold out, 0 <= holdout < len(train).
    seed: `np.random.default_rng`'s seed (an int or a sequence of ints).
    name: the caller's name of `holdout`, for the error message.
    make_subset: `(source, indices) -> view` (a source's own subset type).
  """
  if not 0 <= holdout < len(train):
    raise UserError(f"{name} must be in 0..{len(train) - 1} (the training set has {len(train)} "
                    f"examples), got {holdout}.")
  order = np.random.default_rng(seed).permutation(len(train))
  return (make_subset(train, np.sort(order[holdout:])),
          make_subset(train, np.sort(order[:holdout])))


def _keep(example: Example, key: str) -> Example:
  return {key: example[key]}


def _swap_domains(example: Example) -> Example:
  return {{"A": "B", "B": "A"}[k]: v for k, v in example.items()}


def _as_domain(record: Example, domain: str) -> Example:
  """A tfds record `{"image": [h, w, 3] uint8, ...}` -> `{domain: image}`."""
  return {domain: record["image"]}


def _halves(record: Example) -> Example:
  """A side-by-side record -> `{"A": left half, "B": right half}`, `[h, w/2, 3]` uint8 each."""
  image = record["image"]
  half = image.shape[1] // 2
  return {"A": image[:, :half], "B": image[:, half:]}


# ---------------------------------------------------------------------------------------------
# tfds builders (local folders -> ArrayRecord).
# ---------------------------------------------------------------------------------------------


def _require_folder(path: str, what: str) -> None:
  if not os.path.isdir(path):
    raise UserError(f"{what} {path!r} is not a directory.")


def image_files(folder: str) -> list[str]:
  """The image files under `folder` (recursively), sorted by path as the reference's loader."""
  _require_folder(folder, "image folder")
  files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                 for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise UserError(f"image folder {folder!r} holds no {'/'.join(IMAGE_EXTENSIONS)} files.")
  return files


def encoded_rgb(path: str) -> tuple[bytes, int]:
  """`(bytes that decode to an RGB image, its width)`: the file itself if RGB JPEG/PNG."""
  try:
    with Image.open(path) as image:
      image.load()
      if image.format in ("JPEG", "PNG") and image.mode == "RGB":
        with open(path, "rb") as f:
          return f.read(), image.width
      buffer = io.BytesIO()
      image.convert("RGB").save(buffer, format="PNG")
      return buffer.getvalue(), image.width
  except (OSError, SyntaxError, ValueError) as e:  # What PIL raises for broken files.
    raise UserError(f"image file {path!r} cannot be read by PIL ({type(e).__name__}).") from None


class _ImageFolders(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Split folders of images, each stored whole with its path relative to its split folder."""

  VERSION = tfds.core.Version("1.0.0")
  side_by_side = False  # pix2pix images: each must have an even width

  def _info(self) -> tfds.core.DatasetInfo:
    # Images are given as encoded bytes (encoding arrays would need TensorFlow); data sources
    # decode them with PIL (or OpenCV).
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "file_name": tfds.features.Text()}),
        disable_shuffling=True)  # Index i is the i-th file in sorted order, as in the reference.

  @abc.abstractmethod
  def _splits(self, root: str) -> list[str]:
    """The split folders of `root` to build; raises `UserError` if the layout is wrong."""

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    _require_folder(root, f"{self.name} folder")
    folders = {split: os.path.join(root, split) for split in self._splits(root)}
    return {split: self._generate_examples(folder, image_files(folder))
            for split, folder in folders.items()}

  def _generate_examples(self, folder: str, files: list[str]):
    for path in files:
      encoded, width = encoded_rgb(path)
      if self.side_by_side and width % 2:
        raise UserError(f"paired image {path!r} is {width} pixels wide; a side-by-side A|B "
                        f"image needs an even width.")
      name = os.path.relpath(path, folder)
      yield name, {"image": encoded, "file_name": name}


class UnpairedImages(_ImageFolders):
  """A CycleGAN-layout folder (`trainA/ trainB/ testA/ testB/`, optional `valA/ valB/`)."""

  name = "unpaired_images"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding trainA/ trainB/ testA/ testB/."

  def _splits(self, root: str) -> list[str]:
    required = ["trainA", "trainB", "testA", "testB"]
    for split in required:
      _require_folder(os.path.join(root, split), "unpaired image folder")
    return required + [s for s in ("valA", "valB") if os.path.isdir(os.path.join(root, s))]


class PairedImages(_ImageFolders):
  """A pix2pix-layout folder: `train/` and `val/` and/or `test/` of side-by-side A|B images."""

  name = "paired_images"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding train/ and val/ or test/."
  side_by_side = True

  def _splits(self, root: str) -> list[str]:
    splits = [s for s in ("train", "val", "test") if os.path.isdir(os.path.join(root, s))]
    if "train" not in splits or len(splits) < 2:
      raise UserError(f"paired image folder {root!r} needs train/ and val/ or test/ folders of "
                      f"side-by-side A|B images.")
    return splits


def folder_config(folder: str) -> tfds.core.BuilderConfig:
  """The tfds config of one user folder: `<folder name>_<crc32 of its absolute path>`."""
  path = os.path.realpath(folder)
  base = re.sub(r"\W+", "_", os.path.basename(path)) or "root"
  return tfds.core.BuilderConfig(name=f"{base}_{zlib.crc32(path.encode()):08x}")


def prepare_folder(builder_cls: type[tfds.core.GeneratorBasedBuilder], folder: str,
                   data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Builds `folder` with `builder_cls` into `data_dir` once (ArrayRecord); returns the builder."""
  _require_folder(folder, f"{builder_cls.name} folder")
  return prepare(functools.partial(builder_cls, config=folder_config(folder)), folder, data_dir)


# ---------------------------------------------------------------------------------------------
# Preprocessing (the reference's `data/base_dataset.py:get_transform`).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How images become network inputs.

  mode: `resize_and_crop` (train: bicubic resize to `load_size` square, random `crop_size`
    crop; test: resize to `crop_size`) or `none` (sizes rounded to multiples of 4, as the
    reference does). flip: random horizontal flips when training.
  """
  mode: str = "resize_and_crop"
  load_size: int = 286
  crop_size: int = 256
  flip: bool = True

  def __post_init__(self):
    if self.mode not in PREPROCESS_MODES:
      raise UserError(f"preprocess mode must be one of {PREPROCESS_MODES}, not {self.mode!r}.")
    if self.mode == "resize_and_crop" and not 0 < self.crop_size <= self.load_size:
      raise UserError(f"crop_size must be in 1..load_size, got crop_size {self.crop_size} and "
                      f"load_size {self.load_size}.")


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """PIL bicubic resize, as the reference: uint8 RGB at once, float images per channel."""
  if image.shape[:2] == (height, width):
    return image
  if image.dtype == np.uint8:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
  planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                       .resize((width, height), Image.BICUBIC)) for c in range(image.shape[-1])]
  return np.clip(np.stack(planes, -1), -1.0, 1.0)


def _multiple_of_4(image: np.ndarray) -> np.ndarray:
  height, width = image.shape[:2]
  return resize_bicubic(image, int(round(height / 4) * 4), int(round(width / 4) * 4))


def to_unit_range(image: np.ndarray) -> np.ndarray:
  """uint8 -> x / 127.5 - 1 (the reference's ToTensor + Normalize(0.5, 0.5)); float as is."""
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 127.5 - 1.0
  return image.astype(np.float32)


def train_transform(example: Example, rng: np.random.Generator,
                    preprocess: Preprocess) -> Example:
  """Training preprocessing of every image in `example` with one shared crop and flip.

  Args:
    example: images `[h, w, 3]`, uint8 or float32 in [-1, 1]; a pair's images share a size.
    rng: the only source of randomness (the crop offset, then the flip).

  Returns:
    The same keys, `[crop_size, crop_size, 3]` (`none`: `[h', w', 3]`, multiples of 4)
    float32 in [-1, 1].
  """
  if preprocess.mode == "resize_and_crop":
    load, crop = preprocess.load_size, preprocess.crop_size
    top, left = rng.integers(0, load - crop + 1, 2)
    window = (slice(top, top + crop), slice(left, left + crop))
    fit = lambda image: resize_bicubic(image, load, load)[window]
  else:
    fit = _multiple_of_4
  flip = preprocess.flip and rng.random() > 0.5
  return {k: to_unit_range(fit(v)[:, ::-1] if flip else fit(v)) for k, v in example.items()}


def eval_transform(example: Example, preprocess: Preprocess) -> Example:
  """Test preprocessing: `resize_and_crop` resizes to `crop_size`; `none` rounds to 4; no flip."""
  if preprocess.mode == "resize_and_crop":
    fit = lambda image: resize_bicubic(image, preprocess.crop_size, preprocess.crop_size)
  else:
    fit = _multiple_of_4
  return {k: to_unit_range(fit(v)) for k, v in example.items()}


# ---------------------------------------------------------------------------------------------
# Training stream and evaluation batches.
# ---------------------------------------------------------------------------------------------


def stream_seed(seed: int, stream: int) -> int:
  return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _merge_domains(a_and_b: tuple[Example, Example]) -> Example:
  return {"A": a_and_b[0]["A"], "B": a_and_b[1]["B"]}


def train_batches(examples: Sequence[Example], preprocess: Preprocess, *, batch_size: int,
                  seed: int, examples_B: Sequence[Example] | None = None) -> grain.MapDataset:
  """An endless stream of training batches, random-access by step (`.slice(slice(k, None))`).

  Each epoch of `examples` is reshuffled, each example preprocessed by `train_transform` with a
  generator derived from (seed, position). Unpaired (`examples_B` given, e.g. `task.train_B`),
  `examples` hold `{"A"}` and `examples_B` `{"B"}`, shuffled and cropped independently (the
  reference pairs each A with a random B; its epoch is `max(len(A), len(B))` examples).

  Returns:
    A `grain.MapDataset` whose item i is `{"A": [batch_size, H, W, 3], "B": [...]}` float32.
  """
  if batch_size < 1:
    raise UserError(f"batch_size must be positive, got {batch_size}.")
  transform = functools.partial(train_transform, preprocess=preprocess)
  stream = lambda source, k: (grain.MapDataset.source(source).seed(stream_seed(seed, k))
                              .shuffle().repeat(None).random_map(transform))
  if examples_B is None:
    dataset = stream(examples, 0)
  else:
    dataset = grain.experimental.ZipMapDataset([stream(examples, 0), stream(examples_B, 1)])
    dataset = dataset.map(_merge_domains)
  return dataset.batch(batch_size, drop_remainder=True, batch_fn=stack_examples)


def stack_examples(items: Sequence[Example]) -> Example:
  """Stacks preprocessed examples into a batch; images of different sizes are a user error
  (they arise with `preprocess='none'` on folders of mixed sizes)."""
  batch = {}
  for key in items[0]:
    shapes = {np.shape(item[key]) for item in items}
    if len(shapes) > 1:
      raise UserError(f"cannot batch images of different sizes {sorted(shapes)} ({key!r}); "
                      f"use preprocess 'resize_and_crop' or resize the files to one size.")
    batch[key] = np.stack([item[key] for item in items])
  return batch


def eval_batches(examples: Sequence[Example], preprocess: Preprocess,
                 batch_size: int) -> Iterator[Example]:
  """`examples` in order, test-preprocessed, in batches of exactly `batch_size`.

  The last batch is padded by repeating its last example, so a jitted function compiles once.

  Yields:
    `{key: [batch_size, H, W, 3] float32 for each image key, "mask": [batch_size] bool}`, mask
    False on padding.
  """
  return padded_batches(examples, functools.partial(eval_transform, preprocess=preprocess),
                        batch_size)


def padded_batches(examples: Sequence[Example], transform: Callable[[Example], Example],
                   batch_size: int) -> Iterator[Example]:
  """`transform`-ed `examples` in order, in batches of exactly `batch_size`, the last padded by
  repeating its last example; `"mask": [batch_size] bool` is False on padding."""
  if batch_size < 1:
    raise UserError(f"batch_size must be positive, got {batch_size}.")
  for start in range(0, len(examples), batch_size):
    items = [transform(examples[i]) for i in range(start, min(start + batch_size, len(examples)))]
    count = len(items)
    items += items[-1:] * (batch_size - count)
    batch = stack_examples(items)
    batch["mask"] = np.arange(batch_size) < count
    yield batch


# ---------------------------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageTask:
  """Random-access sources of one translation task, oriented by `direction` (see module doc).

  Images are `[h, w, 3]`: uint8 from files, float32 in [-1, 1] when synthetic; pass them
  through `train_batches` / `eval_batches` (or `train_transform` / `eval_transform`).
  """
  paired: bool
  train: Sequence[Example]  # paired: {"A", "B"} aligned; unpaired: {"A"}
  train_B: Sequence[Example] | None  # unpaired: {"B"}
  test: Sequence[Example]  # {"A"} and, where the data has aligned targets, "B"
  test_B: Sequence[Example] | None  # unpaired: {"B"}
  train1: Sequence[Example]  # `train` minus the held-out examples: trains the supernet
  train2: Sequence[Example]  # the held-out examples of `train`, scored during the search
  preprocess: Preprocess


@dataclasses.dataclass(frozen=True)
class _Sources:
  """A source's data in the AtoB orientation: aligned pairs and/or one source per domain."""
  train_pairs: Sequence[Example] | None = None
  test_pairs: Sequence[Example] | None = None
  train_domains: tuple[Sequence[Example], Sequence[Example]] | None = None
  test_domains: tuple[Sequence[Example], Sequence[Example]] | None = None


def _synthetic(seed: int, size: int, num_train: int, num_test: int) -> _Sources:
  scenes = lambda n, stream, domains=("A", "B"): SyntheticShapes(
      n, (seed, stream), image_size=size, domains=domains)
  return _Sources(train_pairs=scenes(num_train, 0), test_pairs=scenes(num_test, 2),
                  train_domains=(scenes(num_train, 0, ("A",)), scenes(num_train, 1, ("B",))))


def _folder(root: str, paired: bool, data_dir: str | None) -> _Sources:
  _require_folder(root, "image folder")
  if not paired and os.path.isdir(os.path.join(root, "trainA")):
    splits = prepare_folder(UnpairedImages, root, data_dir).as_data_source()
    domain = lambda name, key: Mapped(splits[name], functools.partial(_as_domain, domain=key))
    test = lambda key: f"val{key}" if f"val{key}" in splits else f"test{key}"
    return _Sources(train_domains=(domain("trainA", "A"), domain("trainB", "B")),
                    test_domains=(domain(test("A"), "A"), domain(test("B"), "B")))
  if not os.path.isdir(os.path.join(root, "train")):
    layout = "train/ of side-by-side A|B images" + ("" if paired else " or trainA/ and trainB/")
    raise UserError(f"image folder {root!r} has no {layout}.")
  splits = prepare_folder(PairedImages, root, data_dir).as_data_source()
  return _Sources(train_pairs=Mapped(splits["train"], _halves),
                  test_pairs=Mapped(splits["val" if "val" in splits else "test"], _halves))


def _tfds(name: str, paired: bool, data_dir: str | None) -> _Sources:
  if paired:
    raise UserError(f"tfds:{name} holds unpaired domains (trainA/trainB); use paired=False.")
  try:
    splits = {split: tfds.data_source(name, split=split, data_dir=data_dir, download=False)
              for split in ("trainA", "trainB", "testA", "testB")}
  except Exception as e:  # tfds raises several types for "not prepared"; all mean the same.
    raise UserError(f"tfds dataset {name!r} with splits trainA/trainB/testA/testB is not "
                    f"prepared as ArrayRecord under data_dir={data_dir!r} ({type(e).__name__}); "
                    f"build it there once with `tfds build {name} --file_format=array_record` "
                    f"(which needs TensorFlow); nothing is downloaded at run time.") from None
  domain = lambda split: Mapped(splits[split], functools.partial(_as_domain, domain=split[-1]))
  return _Sources(train_domains=(domain("trainA"), domain("trainB")),
                  test_domains=(domain("testA"), domain("testB")))


def load_image_task(source: str, *, paired: bool, data_dir: str | None = None,
                    direction: str = "AtoB", preprocess: Preprocess | None = None,
                    holdout: int = 0, seed: int = 0, synthetic_size: int = 64,
                    synthetic_train: int = 1000, synthetic_test: int = 100) -> ImageTask:
  """The sources of a translation task (see the module docstring for `source` strings).

  Args:
    source: `synthetic`, `folder:PATH` or `tfds:NAME`.
    paired: pix2pix (aligned pairs) or CycleGAN (independent domains). A pix2pix folder or the
      synthetic task also serve unpaired training (A and B halves shuffled independently).
    data_dir: where tfds datasets are built and read (tfds's default when None).
    direction: `AtoB`, or `BtoA` to swap the domains (applied at load time).
    preprocess: defaults to the reference's `resize_and_crop` 286 -> 256 for files and to
      `none` (flips only) for synthetic images, which are made at their final size.
    holdout: size of `train2`, the search's held-out split (the reference's: horse2zebra 120,
      edges2shoes-r 2048, cityscapes 200, maps 300, COCO 500); 0 leaves `train1 = train`.
    seed: the data seed: synthetic scenes and the held-out split (not the training order).
    synthetic_size, synthetic_train, synthetic_test: synthetic image side and split sizes.
  """
  if direction not in DIRECTIONS:
    raise UserError(f"direction must be one of {DIRECTIONS}, not {direction!r}.")
  kind, _, argument = source.partition(":")
  if kind == "synthetic":
    sources = _synthetic(seed, synthetic_size, synthetic_train, synthetic_test)
    preprocess = preprocess or Preprocess(mode="none")
  elif kind == "folder" and argument:
    sources = _folder(argument, paired, data_dir)
  elif kind == "tfds" and argument:
    sources = _tfds(argument, paired, data_dir)
  else:
    raise UserError(f"unknown image source {source!r}; use synthetic, folder:PATH or tfds:NAME.")
  swap = direction == "BtoA"
  orient = lambda s: Mapped(s, _swap_domains) if swap else s
  if paired:
    train, test = orient(sources.train_pairs), orient(sources.test_pairs)
    train_B = test_B = None
  else:
    a, b = sources.train_domains or tuple(
        Mapped(sources.train_pairs, functools.partial(_keep, key=k)) for k in "AB")
    train, train_B = (orient(b), orient(a)) if swap else (a, b)
    if sources.test_domains:
      test_a, test_b = sources.test_domains
      test, test_B = (orient(test_b), orient(test_a)) if swap else (test_a, test_b)
    else:
      test = orient(sources.test_pairs)
      test_B = Mapped(test, functools.partial(_keep, key="B"))
  train1, train2 = holdout_split(train, holdout, [seed, 3])
  return ImageTask(paired=paired, train=train, train_B=train_B, test=test, test_B=test_B,
                   train1=train1, train2=train2, preprocess=preprocess or Preprocess())
