"""data/image_classification.py: the digits and synthetic sources, the holdout drawn from train,
the ImageNet folder builder and a prepared tfds dataset (with the ImageNet-100 class subset),
the step-addressable training batches and the masked evaluation batches."""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pytest
import sklearn.datasets
import tensorflow_datasets as tfds
from PIL import Image

from data import image_classification as ic
from lite_jax.core.errors import UserError

with open(os.path.join(os.path.dirname(ic.__file__), "imagenet100.txt")) as _f:
  IMAGENET100 = [line.strip() for line in _f]
IN_LIST, NOT_IN_LIST = IMAGENET100[7], "n00000001"  # a wnid of ImageNet-100 (label 7), another


def _key(example) -> str:
  return hashlib.sha1(example["image"].tobytes()).hexdigest()


def _keys(split) -> list[str]:
  return [_key(split[i]) for i in range(len(split))]


def _labels(split) -> np.ndarray:
  return np.array([split[i]["label"] for i in range(len(split))])


def _images(split) -> np.ndarray:
  return np.stack([split[i]["image"] for i in range(len(split))])


# ---------------------------------------------------------------------------------------------
# digits and synthetic.
# ---------------------------------------------------------------------------------------------


def test_digits_is_a_fixed_stratified_split_of_nearest_upsampled_digits():
  data = ic.load_classification("digits", image_size=32, holdout_size=0)
  assert (len(data.train), len(data.holdout), len(data.test)) == (1297, 0, 500)
  assert data.num_classes == 10 and data.augment == "crop"
  # Stratified: each digit's share of the test split is its share of the whole set.
  digits = sklearn.datasets.load_digits()
  expected = np.bincount(digits.target) * 500 / len(digits.target)
  assert np.abs(np.bincount(_labels(data.test)) - expected).max() < 1
  # Every image is an 8x8 digit, each pixel repeated 4x4 and over 3 channels (x 255 / 16).
  originals = {(np.round(image * 255 / 16).astype(np.uint8).tobytes(), label)
               for image, label in zip(digits.images, digits.target)}
  for split in (data.train, data.test):
    for i in range(0, len(split), 97):
      image = split[i]["image"]
      assert image.shape == (32, 32, 3) and image.dtype == np.uint8
      small = image[::4, ::4, 0]
      np.testing.assert_array_equal(image, np.repeat(np.repeat(small, 4, 0), 4, 1)[..., None]
                                    .repeat(3, -1))
      assert (small.tobytes(), split[i]["label"]) in originals
  # The test split does not depend on the seed; the holdout does.
  other = ic.load_classification("digits", image_size=32, holdout_size=300, seed=1)
  np.testing.assert_array_equal(_images(other.test), _images(data.test))
  again = ic.load_classification("digits", image_size=32, holdout_size=300, seed=1)
  np.testing.assert_array_equal(_images(again.holdout), _images(other.holdout))
  np.testing.assert_array_equal(_labels(again.train), _labels(other.train))


def test_holdout_is_drawn_from_train_by_seed_and_train_size_caps_the_rest():
  full = ic.load_classification("synthetic", image_size=8, holdout_size=0, synthetic_train=300,
                                synthetic_test=50)
  data = ic.load_classification("synthetic", image_size=8, holdout_size=60, seed=3,
                                synthetic_train=300, synthetic_test=50)
  train, holdout, test = set(_keys(data.train)), set(_keys(data.holdout)), set(_keys(data.test))
  assert len(train) == 240 and len(holdout) == 60 and len(test) == 50  # all distinct
  assert not train & holdout and not holdout & test and not train & test
  assert train | holdout == set(_keys(full.train))
  reseeded = ic.load_classification("synthetic", image_size=8, holdout_size=60, seed=4,
                                    synthetic_train=300, synthetic_test=50)
  assert set(_keys(reseeded.holdout)) != holdout
  assert _keys(reseeded.test) == _keys(data.test)
  capped = ic.load_classification("synthetic", image_size=8, holdout_size=60, seed=3,
                                  train_size=100, synthetic_train=300, synthetic_test=50)
  assert len(capped.train) == 100 and set(_keys(capped.train)) <= train
  assert set(_keys(capped.holdout)) == holdout
  more_than_left = ic.load_classification("synthetic", image_size=8, holdout_size=60,
                                          train_size=1000, synthetic_train=300)
  assert len(more_than_left.train) == 240


def test_synthetic_gratings_are_deterministic_and_learnable():
  data = ic.load_classification("synthetic", image_size=16, holdout_size=0,
                                synthetic_train=1000, synthetic_test=300)
  again = ic.SyntheticGratings(1000, (0, 0), 16)
  np.testing.assert_array_equal(data.train[17]["image"], again[17]["image"])
  images, labels = _images(data.train).astype(np.float32), _labels(data.train)
  assert images.shape == (1000, 16, 16, 3) and set(labels) == set(range(10))
  # The class means differ enough that the nearest mean classifies unseen examples far above
  # chance (10%).
  means = np.stack([images[labels == k].mean(0) for k in range(10)])
  test = _images(data.test).astype(np.float32)
  nearest = np.argmin(((test[:, None] - means[None]) ** 2).sum((2, 3, 4)), axis=1)
  assert (nearest == _labels(data.test)).mean() > 0.4


# ---------------------------------------------------------------------------------------------
# ImageNet folder and prepared tfds data.
# ---------------------------------------------------------------------------------------------

WNIDS = (NOT_IN_LIST, IN_LIST, "n99999999")


def _image(seed: int, height: int, width: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory):
  """`train/` (2, 3, 4 images per wnid) and `val/` (1, 2, 3) of PNG and JPEG files; returns
  the root and each split's (relative path -> (RGB pixels, wnid))."""
  root = tmp_path_factory.mktemp("imagenet")
  files = {"train": {}, "val": {}}
  for split, count in (("train", 2), ("val", 1)):
    for c, wnid in enumerate(WNIDS):
      os.makedirs(root / split / wnid)
      for j in range(count + c):  # unequal classes
        name = f"{wnid}/{wnid}_{j}.{'png' if j % 2 else 'JPEG'}"
        Image.fromarray(_image(100 * c + j, 30 + j, 40)).save(root / split / name)
        with Image.open(root / split / name) as decoded:
          files[split][name] = (np.asarray(decoded.convert("RGB")), wnid)
  return root, files


def test_folder_source_builds_imagenet_layout_once_and_reads_it_back(imagenet_tree, tmp_path):
  root, files = imagenet_tree
  data = ic.load_classification(f"folder:{root}", image_size=32, holdout_size=2,
                                data_dir=str(tmp_path))
  assert data.class_names == tuple(sorted(WNIDS)) and data.num_classes == 3
  assert (len(data.train), len(data.holdout), len(data.test)) == (7, 2, 6)
  assert data.augment == "crop_flip"  # 40-pixel files are "small images"
  expected = {split: {hashlib.sha1(pixels.tobytes()).hexdigest(): data.class_names.index(wnid)
                      for pixels, wnid in files[split].values()} for split in files}
  for split, name in ((data.train, "train"), (data.holdout, "train"), (data.test, "val")):
    for i in range(len(split)):
      assert expected[name][_key(split[i])] == split[i]["label"]  # pixels and label match
  assert set(_keys(data.train)) | set(_keys(data.holdout)) == set(expected["train"])
  assert (tmp_path / "imagenet_folder").is_dir()  # the ArrayRecord copy


def test_folder_imagenet100_subset_keeps_listed_classes_relabelled(imagenet_tree, tmp_path):
  root, files = imagenet_tree
  data = ic.load_classification(f"folder:{root}", image_size=32, holdout_size=1,
                                data_dir=str(tmp_path), subset="imagenet100")
  assert data.num_classes == 100 and data.class_names == tuple(IMAGENET100)
  assert (len(data.train), len(data.holdout), len(data.test)) == (2, 1, 2)
  for split in (data.train, data.holdout, data.test):
    assert set(_labels(split)) == {7}
  wanted = {hashlib.sha1(p.tobytes()).hexdigest() for p, w in files["val"].values()
            if w == IN_LIST}
  assert set(_keys(data.test)) == wanted


class FakeImagenet(tfds.core.GeneratorBasedBuilder):
  """A registered catalog-like dataset: wnid label names, `train` and `validation` splits."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=sorted(WNIDS))}), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0, 12), "validation": self._generate_examples(1, 6)}

  def _generate_examples(self, seed, count):
    for i in range(count):
      png = io.BytesIO()  # encoding an array would need TensorFlow
      Image.fromarray(_image(1000 * seed + i, 80, 96)).save(png, format="PNG")
      yield i, {"image": png.getvalue(), "label": i % 3}


def test_prepared_tfds_source_reads_validation_as_test_and_takes_the_subset(tmp_path):
  FakeImagenet(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  data = ic.load_classification("tfds:fake_imagenet", image_size=64, holdout_size=3,
                                data_dir=str(tmp_path))
  assert (len(data.train), len(data.holdout), len(data.test)) == (9, 3, 6)
  assert data.augment == "resized_crop_flip"  # 96-pixel files are "ImageNet sizes"
  np.testing.assert_array_equal(data.test[4]["image"], _image(1004, 80, 96))
  assert data.test[4]["label"] == 1
  subset = ic.load_classification("tfds:fake_imagenet", image_size=64, holdout_size=0,
                                  data_dir=str(tmp_path), subset="imagenet100")
  in_list = sorted(WNIDS).index(IN_LIST)
  assert len(subset.test) == 2 and set(_labels(subset.test)) == {7}
  np.testing.assert_array_equal(subset.test[1]["image"], _image(1000 + in_list + 3, 80, 96))


@pytest.mark.parametrize("source, kwargs, fragment", [
    ("folder:/no/such/imagenet", {}, "is not a directory"),
    ("tfds:cifar10", {}, "tfds build cifar10"),
    ("digits", {"holdout_size": 1297}, "holdout_size must be in 0..1296"),
    ("digits", {"subset": "imagenet100"}, "needs a folder: or tfds: source"),
    ("mnist", {}, "unknown classification source"),
])
def test_user_errors(tmp_path, source, kwargs, fragment):
  kwargs = {"holdout_size": 0, "data_dir": str(tmp_path), **kwargs}
  with pytest.raises(UserError, match=fragment):
    ic.load_classification(source, image_size=32, **kwargs)


def test_flat_val_folder_is_a_user_error(tmp_path):
  os.makedirs(tmp_path / "in" / "train" / IN_LIST)
  os.makedirs(tmp_path / "in" / "val" / IN_LIST)
  for split in ("train", "val"):
    Image.fromarray(_image(0, 8, 8)).save(tmp_path / "in" / split / IN_LIST / "a.png")
  Image.fromarray(_image(1, 8, 8)).save(tmp_path / "in" / "val" / "b.png")
  with pytest.raises(UserError, match="valprep"):
    ic.load_classification(f"folder:{tmp_path / 'in'}", image_size=8, holdout_size=0,
                           data_dir=str(tmp_path / "tfds"))


# ---------------------------------------------------------------------------------------------
# Batches.
# ---------------------------------------------------------------------------------------------


def _normalized(image: np.ndarray) -> np.ndarray:
  return (image / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])


def test_train_batches_are_pure_in_seed_and_step_and_reshuffle_every_epoch():
  data = ic.load_classification("synthetic", image_size=8, holdout_size=0, synthetic_train=40)
  make = lambda seed, augment="none": ic.train_batches(
      data.train, batch_size=8, num_steps=12, seed=seed, augment=augment, image_size=8)
  batches = make(0)
  assert len(batches) == 12
  first = batches[3]
  assert first["image"].shape == (8, 8, 8, 3) and first["image"].dtype == np.float32
  assert first["label"].dtype == np.int32
  for key in ("image", "label"):
    np.testing.assert_array_equal(make(0)[3][key], first[key])  # a fresh dataset, same batch
  assert not np.array_equal(make(1)[3]["image"], first["image"])
  # Each epoch (5 batches) holds every example once, normalized, in a new order.
  examples = {_key(data.train[i]): data.train[i] for i in range(40)}
  for epoch in range(2):
    seen = []
    for step in range(5 * epoch, 5 * epoch + 5):
      batch = batches[step]
      for image, label in zip(batch["image"], batch["label"]):
        pixels = np.round(image * np.array([0.229, 0.224, 0.225]) * 255
                          + np.array([0.485, 0.456, 0.406]) * 255).astype(np.uint8)
        np.testing.assert_allclose(image, _normalized(pixels), atol=1e-5)
        seen.append(_key({"image": pixels}))
        assert examples[seen[-1]]["label"] == label
    assert sorted(seen) == sorted(examples)
  assert not np.array_equal(batches[0]["label"], batches[5]["label"])
  # Augmented: same examples per step, other pixels, still reproducible.
  augmented = make(0, "crop")
  np.testing.assert_array_equal(augmented[3]["label"], first["label"])
  assert not np.array_equal(augmented[3]["image"], first["image"])
  np.testing.assert_array_equal(make(0, "crop")[3]["image"], augmented[3]["image"])


def test_augmentations_keep_size_and_only_resized_crop_changes_scale():
  rng = np.random.default_rng(0)
  image = _image(0, 90, 120)
  for augment in ic.AUGMENTATIONS:
    out = ic.train_transform({"image": image, "label": 3}, rng, augment=augment, image_size=32)
    assert out["image"].shape == (32, 32, 3) and out["label"] == 3
  crop = ic.padded_random_crop(_image(1, 32, 32), np.random.default_rng(1))
  padded = np.pad(_image(1, 32, 32), ((4, 4), (4, 4), (0, 0)))
  assert any(np.array_equal(crop, padded[t:t + 32, l:l + 32])
             for t in range(9) for l in range(9))
  with pytest.raises(UserError, match="augment must be one of"):
    ic.train_batches([], batch_size=1, num_steps=1, seed=0, augment="mixup", image_size=8)


def test_fit_keeps_square_images_and_center_crops_others_at_the_256_to_224_ratio():
  square = _image(2, 24, 24)
  np.testing.assert_array_equal(ic.fit(square, 24), square)
  # 448 x 512, left half black, right half white: resized to 256 x 293 and center-cropped,
  # the edge lands in the middle of the 224 columns (one blended column at 111-112).
  image = np.zeros((448, 512, 3), np.uint8)
  image[:, 256:] = 255
  out = ic.fit(image, 224)
  assert out.shape == (224, 224, 3)
  assert (out[:, :111] == 0).all() and (out[:, 113:] == 255).all()


def test_eval_batches_count_every_example_once():
  data = ic.load_classification("digits", image_size=8, holdout_size=0)
  batches = list(ic.eval_batches(data.test, batch_size=64, image_size=8))
  assert len(batches) == 8  # 7 full batches and one of 52 + 12 padding
  assert all(b["image"].shape == (64, 8, 8, 3) for b in batches)
  masks = np.concatenate([b["mask"] for b in batches])
  assert masks.sum() == len(data.test) == 500
  labels = np.concatenate([b["label"] for b in batches])[masks]
  np.testing.assert_array_equal(labels, _labels(data.test))
  np.testing.assert_allclose(batches[0]["image"][5], _normalized(data.test[5]["image"]),
                             atol=1e-5)
