"""Image sources that need no download: packaged samples, prepared tfds sets, user files.

`load_images(source, size=, channels=, count=)` returns `(images [count, size, size,
channels] float32 in [0, 1], labels [count] int)`. Sources:

  * `synthetic`: deterministic smooth random images (tests, demos; no extra package).
  * `skimage`: the sample photographs shipped inside scikit-image (astronaut, chelsea, ...).
  * `lfw_skimage`: the 200 LFW face crops shipped inside scikit-image (grayscale, 25x25).
  * `digits`: scikit-learn's 8x8 handwritten digits (1,797 images, labels 0-9).
  * `tfds:NAME` (e.g. `tfds:cifar100`, `tfds:mnist`, `tfds:lfw`): a tfds dataset that the user
    has already prepared under `data_dir`; nothing is ever downloaded.
  * `file:PATH[,PATH...]`: the user's own image files.

Images are resized (area-averaged when shrinking) and converted to the requested channels;
sources without labels get label `i % num_classes`. `load_digits_task` gives a small
train/test classification set for measuring a defense's accuracy cost.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
from PIL import Image

from lite_jax.core.errors import UserError

SKIMAGE_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "retina", "clock",
                   "immunohistochemistry", "hubble_deep_field", "camera", "coins", "moon",
                   "page", "text", "brick", "grass", "gravel")


def _to_float(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  image = image.astype(np.float32)
  return image / max(float(image.max()), 1.0)  # Already in [0, 1], or 16-bit style ranges.


def _fit(image: np.ndarray, size: int, channels: int) -> np.ndarray:
  """`[h, w(, c)]` any range -> `[size, size, channels]` float32 in [0, 1], center-cropped."""
  image = _to_float(image)
  if image.ndim == 2:
    image = image[..., None]
  image = image[..., :3]
  if channels == 1 and image.shape[-1] == 3:
    image = image @ np.asarray([0.299, 0.587, 0.114], np.float32)[:, None]
  elif channels == 3 and image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  height, width = image.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  image = image[top:top + side, left:left + side]
  planes = [np.asarray(Image.fromarray(image[..., c]).resize((size, size), Image.BOX))
            for c in range(channels)]
  return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def synthetic_images(count: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
  """Deterministic smooth images: a few random 2-D sinusoids per channel, in [0, 1]."""
  rng = np.random.default_rng(seed)
  grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
  yy, xx = np.meshgrid(grid, grid, indexing="ij")
  images = np.zeros((count, size, size, channels), np.float32)
  for i in range(count):
    for c in range(channels):
      for _ in range(3):
        fy, fx = rng.uniform(0.5, 3.0, 2)
        phase = rng.uniform(0, 2 * np.pi)
        images[i, :, :, c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
  lo = images.min(axis=(1, 2, 3), keepdims=True)
  hi = images.max(axis=(1, 2, 3), keepdims=True)
  return (images - lo) / (hi - lo)


def _skimage_images(count: int) -> list[np.ndarray]:
  try:
    import skimage.data
  except ImportError:
    raise UserError("image source 'skimage' needs scikit-image (pip install scikit-image); "
                    "or use 'synthetic' or 'file:PATH'.") from None
  return [getattr(skimage.data, SKIMAGE_SAMPLES[i % len(SKIMAGE_SAMPLES)])()
          for i in range(count)]


def _lfw_skimage_images(count: int) -> list[np.ndarray]:
  try:
    import skimage.data
  except ImportError:
    raise UserError("image source 'lfw_skimage' needs scikit-image (pip install "
                    "scikit-image).") from None
  faces = skimage.data.lfw_subset()  # [200, 25, 25] in [0, 1], the first 100 are faces.
  return [faces[i % 100] for i in range(count)]


def _digits(count: int) -> tuple[list[np.ndarray], np.ndarray]:
  try:
    import sklearn.datasets
  except ImportError:
    raise UserError("image source 'digits' needs scikit-learn (pip install scikit-learn); "
                    "or use 'synthetic'.") from None
  digits = sklearn.datasets.load_digits()
  index = np.arange(count) % len(digits.images)
  return [digits.images[i] / 16.0 for i in index], digits.target[index]


def _tfds(name: str, count: int, data_dir: str | None) -> tuple[list[np.ndarray], np.ndarray]:
  import tensorflow_datasets as tfds  # Imported here: slow, and only needed for this source.
  try:
    source = tfds.data_source(name, split="train", data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"; all mean the same.
    raise UserError(f"tfds dataset {name!r} is not prepared under data_dir={data_dir!r} "
                    f"({type(e).__name__}); prepare it there first (nothing is downloaded "
                    f"at run time).") from None
  records = [source[i % len(source)] for i in range(count)]
  label_key = next((k for k in ("label", "fine_label") if k in records[0]), None)
  labels = (np.asarray([r[label_key] for r in records]) if label_key
            else np.arange(count))
  return [r["image"] for r in records], labels


def _files(paths: str, count: int) -> list[np.ndarray]:
  files = [p for p in paths.split(",") if p]
  if not files:
    raise UserError("image source 'file:' names no file; use file:PATH[,PATH...].")
  images = []
  for path in files:
    if not os.path.isfile(path):
      raise UserError(f"image file {path!r} does not exist.")
    try:
      with Image.open(path) as image:
        images.append(np.asarray(image.convert("RGB")))
    except OSError:
      raise UserError(f"{path!r} is not an image file PIL can read.") from None
  return [images[i % len(images)] for i in range(count)]


def load_images(source: str, *, size: int, channels: int, count: int, num_classes: int = 100,
                data_dir: str | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`count` images `[count, size, size, channels]` in [0, 1] and int labels `[count]`."""
  if channels not in (1, 3):
    raise UserError(f"channels must be 1 or 3, not {channels}.")
  kind, _, argument = source.partition(":")
  labels = None
  unlabeled: dict[str, Callable[[], list[np.ndarray]]] = {
      "skimage": lambda: _skimage_images(count),
      "lfw_skimage": lambda: _lfw_skimage_images(count),
      "file": lambda: _files(argument, count)}
  if kind == "synthetic":
    images = synthetic_images(count, size, channels, seed)
  elif kind in unlabeled:
    images = [_fit(image, size, channels) for image in unlabeled[kind]()]
  elif kind == "digits":
    raw, labels = _digits(count)
    images = [_fit(image, size, channels) for image in raw]
  elif kind == "tfds" and argument:
    raw, labels = _tfds(argument, count, data_dir)
    images = [_fit(image, size, channels) for image in raw]
  else:
    raise UserError(f"unknown image source {source!r}; use synthetic, skimage, lfw_skimage, "
                    f"digits, tfds:NAME or file:PATH.")
  if labels is None:
    labels = np.arange(count)
  return np.stack(images).astype(np.float32), np.asarray(labels, np.int32) % num_classes


def load_digits_task(size: int = 8, test_fraction: float = 0.25, seed: int = 0
                     ) -> dict[str, np.ndarray]:
  """A small 10-class task: `{'train_x', 'train_y', 'test_x', 'test_y'}`, images NHWC.

  scikit-learn's digits when installed, else synthetic images whose class sets the frequency
  pattern (so the task is learnable but not trivial).
  """
  try:
    import sklearn.datasets
    digits = sklearn.datasets.load_digits()
    images = digits.images.astype(np.float32)[..., None] / 16.0
    labels = digits.target.astype(np.int32)
  except ImportError:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, 1800).astype(np.int32)
    base = synthetic_images(10, 8, 1, seed)
    images = np.clip(base[labels] + 0.3 * rng.standard_normal((1800, 8, 8, 1)), 0, 1)
  if size != images.shape[1]:
    images = np.stack([_fit(image[..., 0], size, 1) for image in images])
  order = np.random.default_rng(seed).permutation(len(labels))
  split = int(len(order) * (1 - test_fraction))
  train, test = order[:split], order[split:]
  return {"train_x": images[train].astype(np.float32), "train_y": labels[train],
          "test_x": images[test].astype(np.float32), "test_y": labels[test]}
