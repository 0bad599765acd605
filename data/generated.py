"""Datasets drawn by a seeded scene generator and stored once as ArrayRecord through tfds.

A generated dataset (PSD's Shapes, PPD's block towers) is a function `make(rng, image_size)`
of one scene's random generator: scene i of a setting uses `scene_rng(seed, i)`, the splits
are consecutive, disjoint ranges of scene indices (train, then validation, then test), so a
scene never depends on how many others are drawn, and a setting is one builder config whose
name keys its cache folder. A paper's data module subclasses `GeneratedBuilder` with its
features and its `make_example`, and reads splits through `prepare` + `Records`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from ml_collections import config_dict

from lite_jax.core.errors import UserError

SPLITS = ("train", "validation", "test")
COUNT_FIELDS = ("num_train", "num_validation", "num_test")


def scene_rng(seed: int, index: int) -> np.random.Generator:
  """The generator of scene `index` under `seed`."""
  return np.random.default_rng([seed, index])


@dataclasses.dataclass
class GeneratedConfig(tfds.core.BuilderConfig):
  """One generator setting; scenes of every split come from one (seed, index) space."""
  image_size: int = 128
  num_train: int = 10000
  num_validation: int = 1000
  num_test: int = 1000
  seed: int = 0

  def split_ranges(self) -> dict[str, tuple[int, int]]:
    """`{split: (first scene, count)}`: consecutive, disjoint ranges."""
    counts = (self.num_train, self.num_validation, self.num_test)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return {s: (int(a), int(n)) for s, a, n in zip(SPLITS, starts, counts)}


def generated_config(what: str, image_size: int = 128, num_train: int = 10000,
                     num_validation: int = 1000, num_test: int = 1000, seed: int = 0
                     ) -> GeneratedConfig:
  """The builder config of a setting (`what` describes the scenes); its name keys the cache."""
  return GeneratedConfig(
      name=f"size{image_size}_train{num_train}_val{num_validation}_test{num_test}_seed{seed}",
      description=f"{what} at {image_size}x{image_size}, seed {seed}.",
      image_size=image_size, num_train=num_train, num_validation=num_validation,
      num_test=num_test, seed=seed)


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A tfds builder whose example i of a split is scene `start + i` (no shuffling).

  Subclasses set `VERSION`, `BUILDER_CONFIGS`, `_info` and `make_example(rng, image_size)`
  (one stored record).
  """

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls) -> None:
    return None  # nothing is downloaded

  @staticmethod
  def make_example(rng: np.random.Generator, image_size: int) -> dict[str, Any]:
    raise NotImplementedError

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # everything is generated
    return {split: self._generate_examples(*span)
            for split, span in self.builder_config.split_ranges().items()}

  def _generate_examples(self, start: int, num: int):
    config = self.builder_config
    for i in range(start, start + num):
      yield i, self.make_example(scene_rng(config.seed, i), config.image_size)


def check_generate_args(num: int, start: int, seed: int) -> None:
  if num < 1 or start < 0 or seed < 0:
    raise UserError(f"generate needs num >= 1, start >= 0 and seed >= 0, got num={num}, "
                    f"start={start}, seed={seed}.")


def prepare(builder_class: type[GeneratedBuilder], data_config: ml_collections.ConfigDict,
            what: str) -> GeneratedBuilder:
  """The prepared builder of `data_config`'s setting (generated into ArrayRecord on first use).

  `data_config` fields: `image_size`, `num_train`, `num_validation`, `num_test`, `seed`,
  `data_dir` (None: tfds's default folder).
  """
  size = data_config.image_size
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
    raise UserError(f"data.image_size must be a positive integer, got {size!r}.")
  counts = {k: data_config[k] for k in COUNT_FIELDS}
  for name, value in {**counts, "seed": data_config.seed}.items():
    if not isinstance(value, (int, np.integer)) or value < (0 if name == "seed" else 1):
      raise UserError(f"data.{name} must be a {'non-negative' if name == 'seed' else 'positive'}"
                      f" integer, got {value!r}.")
  config = generated_config(what, size, seed=data_config.seed, **counts)
  # tfds refuses a config object named like a predefined one; pass those by name.
  builder = builder_class(
      config=config.name if config.name in builder_class.builder_configs else config,
      data_dir=data_config.data_dir and os.path.expanduser(data_config.data_dir),
      file_format="array_record")
  if not builder.is_prepared():
    logging.info("generating %s into %s", config.name, builder.data_dir)
    builder.download_and_prepare()
  return builder


class Records(Sequence):
  """A split of a prepared builder, each stored record mapped by `fn` (e.g. to float32)."""

  def __init__(self, source: Sequence[dict[str, Any]],
               fn: Callable[[dict[str, Any]], dict[str, np.ndarray]]):
    self._source, self._fn = source, fn

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not -len(self) <= index < len(self):
      raise IndexError(index)
    return self._fn(self._source[index % len(self)])


def data_config(fields: dict[str, Any], overrides: dict[str, Any]
                ) -> ml_collections.ConfigDict:
  """The generated-data fields (image_size 128, 10k / 1k / 1k scenes, seed 0, `data_dir`) plus
  a module's own `fields`, then `overrides`; an unknown override is a `UserError`."""
  config = ml_collections.ConfigDict({
      "data_dir": config_dict.placeholder(str),  # ArrayRecord cache; None: tfds's default
      "image_size": 128,
      "num_train": 10000,  # our choice; neither paper's count is public
      "num_validation": 1000,
      "num_test": 1000,
      "seed": 0,
      **fields,
  })
  for key, value in overrides.items():
    if key not in config:
      raise UserError(f"{key!r} is not a data config field (fields: {', '.join(config)}).")
    config[key] = value
  return config


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}.")


def under_workdir(data_config: ml_collections.ConfigDict, workdir: str
                  ) -> ml_collections.ConfigDict:
  """`data_config` with its ArrayRecord cache in `<workdir>/data` when it names none."""
  if data_config.data_dir is None:
    with data_config.unlocked():
      data_config.data_dir = os.path.join(workdir, "data")
  return data_config
