"""Image-classification data for the design-automation papers (HAQ, AMC, ProxylessNAS).

`load_classification(source, image_size=, holdout_size=, ...)` returns a `ClassificationData`
of three random-access splits of `{"image": uint8 [h, w, 3], "label": int}`:

* `train`: the training examples left after the holdout (optionally capped by `train_size`);
* `holdout`: `holdout_size` examples drawn FROM TRAIN by a seeded permutation, disjoint from
  `train`: the search's reward set (HAQ: 10,000, scored after a 1-epoch fine-tune on a 20,000
  `train_size` subset; AMC: 3,000; ProxylessNAS: 50,000 for the architecture parameters);
* `test`: the dataset's official validation/test split, never used by a search.

Keeping the search's held-out set out of the official validation split answers HAQ's issue #14
(ImageNet-100 has 5,000 validation images, yet its search asked for `val_size` 10,000: the
reference's "val" is held out from train). A holdout that leaves no training example is a
`UserError`.

Sources (`seed` draws only the holdout; the datasets themselves never change):

* `digits`: scikit-learn's 1,797 8x8 handwritten digits (they ship with scikit-learn), scaled
  to `image_size` by `data.images.load_images` (PIL's box filter: nearest-neighbour at integer
  factors such as 8 -> 32) and replicated to 3 channels; a fixed stratified split of 1,297
  train / 500 test examples. The CPU demo's data.
* `synthetic`: `SyntheticGratings`, 10 classes of oriented gratings with random frequency,
  phase, colour and noise, made at `image_size` (tests and demos at any resolution).
* `tfds:NAME` (e.g. `tfds:cifar10`, `tfds:imagenet2012`): a catalog dataset already prepared
  as ArrayRecord under `data_dir`; `test` is its `validation` split where it has one, else
  `test`. Nothing is ever downloaded.
* `folder:PATH`: ImageNet in its usual layout, `PATH/train/<wnid>/*.JPEG` and
  `PATH/val/<wnid>/*.JPEG`, converted once into ArrayRecord under `data_dir` by the
  `ImageNetFolder` builder (labels: the sorted train wnids, as torchvision's `ImageFolder`).

`subset="imagenet100"` keeps the 100 classes of HAQ's `lib/utils/imagenet100.txt`
(`data/imagenet100.txt`) of a `folder:` or `tfds:imagenet2012` source, relabelled 0..99 in the
list's (sorted) order, as the reference's symlinked ImageNet-100 folder read by `ImageFolder`.
Their examples are found once per process from the records' labels: by binary search in a
folder's records (stored class by class), by reading every label of a tfds dataset (minutes for
ImageNet's 1.28 million training records).

`train_batches` / `eval_batches` turn splits into float32 batches normalized with the ImageNet
mean and std (see `AUGMENTATIONS` for the training policies). Score the holdout with
`eval_batches`, as the HAQ reference evaluates its held-out train images with the test
transform.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np
import sklearn.model_selection
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image
from tqdm.auto import tqdm

from data.gan_images import (IMAGE_EXTENSIONS, Example, Mapped, SeededExamples, Subset,
                             encoded_rgb, holdout_split, image_files, padded_batches,
                             prepare_folder, stack_examples, stream_seed)
from data.images import load_images
from lite_jax.core.errors import UserError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
EVAL_CROP_FRACTION = 0.875  # resize to image_size / 0.875, then center-crop (256 -> 224)
SUBSETS = {"imagenet100": os.path.join(os.path.dirname(__file__), "imagenet100.txt")}

DIGITS_COUNT, DIGITS_TEST = 1797, 500
SYNTHETIC_CLASSES = 10
# Files up to this side (CIFAR) train with "crop_flip", larger ones (ImageNet) with
# "resized_crop_flip".
SMALL_IMAGE_SIDE = 64
_FIXED_DATA_SEED = 0  # the digits test split and the synthetic images: the same for any `seed`

# Training augmentations. Digits and synthetic gratings are never flipped: a mirrored digit is
# another glyph (or none) and a mirrored grating at angle t has angle pi - t, another class.
AUGMENTATIONS = (
    "none",  # the evaluation transform
    "crop",  # random crop of the image padded by image_size // 8 (4 pixels at 32)
    "crop_flip",  # the same plus a random horizontal flip (CIFAR)
    "resized_crop_flip",  # random-resized crop (area 8-100%, aspect 3/4-4/3) + flip (ImageNet)
)


@dataclasses.dataclass(frozen=True)
class ClassificationData:
  """The splits of one classification task (see the module docstring).

  Each split is a random-access sequence of `{"image": uint8 [h, w, 3], "label": int}`;
  `digits` and `synthetic` images are `image_size` square, files keep their own size.
  """
  train: Sequence[Example]
  holdout: Sequence[Example]
  test: Sequence[Example]
  num_classes: int
  image_size: int
  source: str
  class_names: tuple[str, ...]
  augment: str  # the source's training augmentation, one of AUGMENTATIONS


# ---------------------------------------------------------------------------------------------
# Sources made in memory: digits and synthetic gratings.
# ---------------------------------------------------------------------------------------------


class ArrayExamples(Sequence):
  """Examples of in-memory arrays: `images` uint8 `[n, h, w, 3]`, `labels` int `[n]`."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self._images, self._labels = images, labels

  def __len__(self) -> int:
    return len(self._labels)

  def __getitem__(self, index: int) -> Example:
    return {"image": self._images[index], "label": int(self._labels[index])}


def digits_splits(image_size: int) -> tuple[ArrayExamples, ArrayExamples]:
  """scikit-learn's digits at `image_size`: the fixed stratified `(train, test)` split, 1,297
  and 500 examples of uint8 `[image_size, image_size, 3]` images."""
  images, labels = load_images("digits", size=image_size, channels=3, count=DIGITS_COUNT)
  images = np.round(images * 255).astype(np.uint8)
  train, test = sklearn.model_selection.train_test_split(
      np.arange(DIGITS_COUNT), test_size=DIGITS_TEST, stratify=labels,
      random_state=_FIXED_DATA_SEED)
  train, test = np.sort(train), np.sort(test)
  return ArrayExamples(images[train], labels[train]), ArrayExamples(images[test], labels[test])


class SyntheticGratings(SeededExamples):
  """A learnable 10-class task: class k is a grating at angle k * pi / 10 (+- pi / 20).

  Each example draws its label, then the grating's angle jitter, frequency (1.5-5 cycles per
  image side), phase (+- pi / 2 at the centre, so class means keep a ridge along the angle),
  per-channel contrast (15-60 grey levels) and Gaussian pixel noise (60 levels): at 16-32
  pixels the nearest class mean scores 70-80% and logistic regression 60-75%, so a network's
  accuracy has room to react to quantization or pruning. Example i is a pure function of
  `(seed, i)`.
  """

  def __init__(self, num_examples: int, seed: int | tuple[int, ...], image_size: int):
    super().__init__(num_examples, seed)
    centres = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
    self._y, self._x = np.meshgrid(centres, centres, indexing="ij")

  def make(self, rng: np.random.Generator) -> Example:
    label = int(rng.integers(SYNTHETIC_CLASSES))
    angle = np.pi * label / SYNTHETIC_CLASSES + rng.uniform(-np.pi / 20, np.pi / 20)
    cycles, phase = rng.uniform(1.5, 5), rng.uniform(-np.pi / 2, np.pi / 2)
    along = self._x * np.cos(angle) + self._y * np.sin(angle)
    wave = np.cos(2 * np.pi * cycles * along + phase)
    contrast = rng.uniform(15, 60, 3)
    image = 128 + wave[..., None] * contrast + rng.normal(0, 60, (*wave.shape, 3))
    return {"image": np.clip(np.round(image), 0, 255).astype(np.uint8), "label": label}


# ---------------------------------------------------------------------------------------------
# Sources read from ArrayRecord: a local ImageNet folder, tfds catalog datasets.
# ---------------------------------------------------------------------------------------------


def class_folders(split_folder: str) -> list[str]:
  """The sorted names of the class folders (wnids) in `split_folder`."""
  if not os.path.isdir(split_folder):
    raise UserError(f"ImageNet folder split {split_folder!r} is not a directory.")
  names = sorted(n for n in os.listdir(split_folder)
                 if os.path.isdir(os.path.join(split_folder, n)))
  if not names:
    raise UserError(f"ImageNet folder split {split_folder!r} holds no class folders "
                    f"(<wnid>/*.JPEG).")
  return names


class ImageNetFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """`train/<wnid>/*` and `val/<wnid>/*` images -> splits `train` and `val`.

  Records are in sorted path order, class folder by class folder (so labels never decrease,
  which `_read_labels` relies on); each image is stored as its own
  bytes when it is an RGB JPEG/PNG, else re-encoded as PNG (`gan_images.encoded_rgb`), with its
  path relative to the split folder. Label i is the i-th sorted wnid of `train/`.
  """

  name = "imagenet_folder"
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding train/<wnid>/ and val/<wnid>/."

  def _info(self) -> tfds.core.DatasetInfo:
    # The label names are the folder's wnids, set in `_split_generators` and stored with it.
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(),
        "file_name": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    wnids = class_folders(os.path.join(root, "train"))
    self.info.features["label"].names = wnids
    labels = {wnid: label for label, wnid in enumerate(wnids)}
    return {split: self._generate_examples(os.path.join(root, split), labels)
            for split in ("train", "val")}

  def _generate_examples(self, folder: str, labels: dict[str, int]):
    loose = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    if loose:
      raise UserError(f"{folder!r} holds images outside class folders ({loose[0]!r}); sort "
                      f"them into <wnid>/ folders, as ImageNet's valprep.sh does for val/.")
    for wnid in class_folders(folder):  # class by class, so records are grouped by label
      if wnid not in labels:
        raise UserError(f"class folder {os.path.join(folder, wnid)!r} has no counterpart in "
                        f"train/.")
      for path in image_files(os.path.join(folder, wnid)):
        name = os.path.relpath(path, folder)
        yield name, {"image": encoded_rgb(path)[0], "label": labels[wnid], "file_name": name}


@dataclasses.dataclass(frozen=True)
class _Records:
  """A prepared ArrayRecord dataset: `open(split, decoders)` gives a `tfds` data source."""
  open: Callable[..., Sequence[Example]]
  train_split: str
  test_split: str
  class_names: tuple[str, ...]
  sorted_by_label: bool  # labels never decrease along a split (`ImageNetFolder`)


def _folder(root: str, data_dir: str | None) -> _Records:
  if not os.path.isdir(root):
    raise UserError(f"ImageNet folder {root!r} is not a directory.")
  for split in ("train", "val"):
    class_folders(os.path.join(root, split))
  builder = prepare_folder(ImageNetFolder, root, data_dir)
  return _Records(builder.as_data_source, "train", "val",
                  tuple(builder.info.features["label"].names), sorted_by_label=True)


def _tfds(name: str, data_dir: str | None) -> _Records:
  try:
    splits = tfds.data_source(name, data_dir=data_dir, download=False)
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for "not prepared"; all mean the same.
    raise UserError(f"tfds dataset {name!r} is not prepared as ArrayRecord under "
                    f"data_dir={data_dir!r} ({type(e).__name__}); build it there once with "
                    f"`tfds build {name} --data_dir={data_dir or '~/tensorflow_datasets'} "
                    f"--file_format=array_record` (nothing is downloaded at run time).") from None
  test = next((s for s in ("validation", "test") if s in splits), None)
  features = builder.info.features
  if "label" not in features or not isinstance(features["label"], tfds.features.ClassLabel):
    raise UserError(f"tfds dataset {name!r} has no class-label feature named 'label'.")
  if "train" not in splits or test is None:
    raise UserError(f"tfds dataset {name!r} needs a train split and a validation or test "
                    f"split, it has {sorted(splits)}.")
  return _Records(builder.as_data_source, "train", test, tuple(features["label"].names),
                  sorted_by_label=False)


def _label(record: Example) -> int:
  return int(record["label"])


def _example(record: Example, relabel: np.ndarray | None = None) -> Example:
  """A tfds record -> `{"image", "label"}`, the label mapped through `relabel` if given."""
  label = _label(record)
  return {"image": record["image"], "label": int(relabel[label]) if relabel is not None
          else label}


def _read_labels(records: _Records, split: str) -> np.ndarray:
  """Every label of `split`, read without decoding the images.

  Sorted splits need only each class's first index (a binary search: ImageNet's train split in
  ~21,000 reads); others are read record by record (~1.3 million reads, minutes, for ImageNet).
  """
  labels = Mapped(records.open(split, decoders={"image": tfds.decode.SkipDecoding()}), _label)
  if records.sorted_by_label:
    starts = [bisect.bisect_left(labels, k) for k in range(len(records.class_names) + 1)]
    return np.repeat(np.arange(len(records.class_names)), np.diff(starts))
  reads = tqdm(range(len(labels)), desc=f"labels of {split}", mininterval=10)
  return np.fromiter((labels[i] for i in reads), np.int64, len(labels))


def _subset_records(records: _Records, subset: str | None
                    ) -> tuple[Sequence[Example], Sequence[Example], tuple[str, ...]]:
  """`(train, test, class_names)` of `records`, restricted to a named class subset."""
  if subset is None:
    return (Mapped(records.open(records.train_split), _example),
            Mapped(records.open(records.test_split), _example), records.class_names)
  if subset not in SUBSETS:
    raise UserError(f"unknown class subset {subset!r}; use one of {sorted(SUBSETS)}.")
  with open(SUBSETS[subset]) as f:
    kept = tuple(line.strip() for line in f if line.strip())
  index = {name: i for i, name in enumerate(kept)}
  relabel = np.array([index.get(name, -1) for name in records.class_names])
  present = int((relabel >= 0).sum())
  if not present:
    raise UserError(f"the data has none of the {len(kept)} classes of subset {subset!r} "
                    f"(its labels are not wnids, or the folder holds other classes).")
  if present < len(kept):
    logging.warning("The data holds %d of the %d classes of subset %r.", present, len(kept),
                    subset)

  def split_of(split: str) -> Sequence[Example]:
    indices = np.flatnonzero(relabel[_read_labels(records, split)] >= 0)
    return Mapped(Subset(records.open(split), indices),
                  functools.partial(_example, relabel=relabel))

  return split_of(records.train_split), split_of(records.test_split), kept


# ---------------------------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------------------------


def load_classification(source: str, *, image_size: int, holdout_size: int,
                        data_dir: str | None = None, seed: int = 0,
                        train_size: int | None = None, subset: str | None = None,
                        synthetic_train: int = 5000, synthetic_test: int = 1000
                        ) -> ClassificationData:
  """The train / holdout / test splits of a classification task (see the module docstring).

  Args:
    source: `digits`, `synthetic`, `tfds:NAME` or `folder:PATH`.
    image_size: the network's input side; `digits` and `synthetic` images are made at it.
    holdout_size: examples held out from train for the search's reward (0 for none).
    data_dir: where tfds datasets are read and folders built (tfds's default when None).
    seed: draws the holdout (and nothing else).
    train_size: at most this many of the remaining training examples are kept.
    subset: a class subset of `folder:` / `tfds:` data, e.g. `imagenet100`.
    synthetic_train, synthetic_test: split sizes of `synthetic`.
  """
  if image_size < 8:
    raise UserError(f"image_size must be at least 8, got {image_size}.")
  kind, _, argument = source.partition(":")
  if subset is not None and kind not in ("folder", "tfds"):
    raise UserError(f"a class subset needs a folder: or tfds: source, not {source!r}.")
  if kind == "digits":
    train, test = digits_splits(image_size)
    class_names, augment = tuple(str(d) for d in range(10)), "crop"
  elif kind == "synthetic":
    if synthetic_train < 1 or synthetic_test < 1:
      raise UserError(f"synthetic split sizes must be positive, got {synthetic_train} and "
                      f"{synthetic_test}.")
    train = SyntheticGratings(synthetic_train, (_FIXED_DATA_SEED, 0), image_size)
    test = SyntheticGratings(synthetic_test, (_FIXED_DATA_SEED, 1), image_size)
    class_names = tuple(f"{180 * k // SYNTHETIC_CLASSES}deg" for k in range(SYNTHETIC_CLASSES))
    augment = "crop"
  elif kind in ("folder", "tfds") and argument:
    records = _folder(argument, data_dir) if kind == "folder" else _tfds(argument, data_dir)
    train, test, class_names = _subset_records(records, subset)
    augment = ("crop_flip" if max(train[0]["image"].shape[:2]) <= SMALL_IMAGE_SIDE
               else "resized_crop_flip")
  else:
    raise UserError(f"unknown classification source {source!r}; use digits, synthetic, "
                    f"tfds:NAME or folder:PATH.")
  if train_size is not None and train_size < 1:
    raise UserError(f"train_size must be positive (or None for all), got {train_size}.")
  rest, holdout = holdout_split(train, holdout_size, seed, name="holdout_size")
  if train_size is not None and train_size < len(rest):  # a seeded sample of the rest
    rest = Subset(rest, np.sort(np.random.default_rng([seed, 1]).permutation(len(rest))[
        :train_size]))
  return ClassificationData(
      train=rest, holdout=holdout, test=test, num_classes=len(class_names), image_size=image_size, source=source,
      class_names=class_names, augment=augment)


# ---------------------------------------------------------------------------------------------
# Preprocessing and batches.
# ---------------------------------------------------------------------------------------------


def normalize(image: np.ndarray) -> np.ndarray:
  """uint8 `[h, w, 3]` -> float32, minus the ImageNet mean, over its std (per channel)."""
  return (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD


def fit(image: np.ndarray, image_size: int) -> np.ndarray:
  """The evaluation view, uint8 `[image_size, image_size, 3]`.

  An image already `image_size` square is kept; any other has its shorter side resized
  (bilinear) to `image_size / 0.875` and is center-cropped (the standard 256 -> 224).
  """
  height, width = image.shape[:2]
  if (height, width) == (image_size, image_size):
    return image
  scale = round(image_size / EVAL_CROP_FRACTION) / min(height, width)
  resized = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
  left, top = (resized[0] - image_size) // 2, (resized[1] - image_size) // 2
  image = Image.fromarray(image).resize(resized, Image.BILINEAR)
  return np.asarray(image.crop((left, top, left + image_size, top + image_size)))


def padded_random_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random crop of the same size from `image` zero-padded by `side // 8` on every side."""
  size = image.shape[0]
  pad = max(1, size // 8)
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  top, left = rng.integers(0, 2 * pad + 1, 2)
  return padded[top:top + size, left:left + size]


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, image_size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """Inception-style crop: a random box of `scale` of the area and `ratio` aspect (10 tries,
  else the central square), resized (bilinear) to uint8 `[image_size, image_size, 3]`."""
  height, width = image.shape[:2]
  box = None
  for _ in range(10):
    area = height * width * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < w <= width and 0 < h <= height:
      top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
      box = (left, top, left + w, top + h)
      break
  if box is None:
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
  resized = Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR, box=box)
  return np.asarray(resized)


def train_transform(example: Example, rng: np.random.Generator, *, augment: str,
                    image_size: int) -> Example:
  """One augmented training example: `{"image": float32 [image_size, image_size, 3]
  normalized, "label": int32}`; `rng` is the only source of randomness."""
  image = example["image"]
  if augment == "resized_crop_flip":
    image = random_resized_crop(image, rng, image_size)
  else:
    image = fit(image, image_size)
    if augment in ("crop", "crop_flip"):
      image = padded_random_crop(image, rng)
  if augment.endswith("_flip") and rng.random() < 0.5:
    image = image[:, ::-1]
  return {"image": normalize(image), "label": np.int32(example["label"])}


def eval_transform(example: Example, image_size: int) -> Example:
  """`{"image": float32 [image_size, image_size, 3] normalized (`fit`), "label": int32}`."""
  return {"image": normalize(fit(example["image"], image_size)),
          "label": np.int32(example["label"])}


def train_batches(split: Sequence[Example], *, batch_size: int, num_steps: int, seed: int,
                  augment: str, image_size: int) -> grain.MapDataset:
  """`num_steps` training batches; batch i is a pure function of `(seed, i)`.

  The split is reshuffled every epoch (a new permutation per epoch, derived from `seed`) and
  each example augmented by `train_transform` with a generator derived from its position.

  Returns:
    A `grain.MapDataset` whose item i is `{"image": float32 [batch_size, image_size,
    image_size, 3], "label": int32 [batch_size]}`.
  """
  if augment not in AUGMENTATIONS:
    raise UserError(f"augment must be one of {AUGMENTATIONS}, not {augment!r}.")
  if batch_size < 1 or num_steps < 0:
    raise UserError(f"batch_size must be positive and num_steps non-negative, got "
                    f"{batch_size} and {num_steps}.")
  transform = functools.partial(train_transform, augment=augment, image_size=image_size)
  dataset = (grain.MapDataset.source(split).seed(stream_seed(seed, 0)).shuffle()
             .repeat(None).random_map(transform)
             .batch(batch_size, drop_remainder=True, batch_fn=stack_examples))
  return dataset[:num_steps]


def eval_batches(split: Sequence[Example], *, batch_size: int,
                 image_size: int) -> Iterator[Example]:
  """`split` in order, `eval_transform`-ed, in batches of exactly `batch_size`.

  Yields:
    `{"image": float32 [batch_size, image_size, image_size, 3], "label": int32 [batch_size],
    "mask": bool [batch_size]}`; the last batch is padded by repeating its last example and
    `mask` is False there, so summing over the mask counts every example once.
  """
  return padded_batches(split, functools.partial(eval_transform, image_size=image_size),
                        batch_size)
