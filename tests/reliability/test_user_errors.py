"""Every launcher answers a user's mistake with one sentence and exit status 2.

How `core.app` turns a `UserError` (also one wrapped by tfds) into that line is tested on the
toy launcher (`tests/core/test_app.py`); here each launcher is run once with a misspelled
config key, and each paper's own bad inputs are checked for their sentence in-process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from experiments.configs import dlg as dlg_configs
from experiments.configs import pvcnn_shapenet, wmt_lite
from lite_jax import leakage, lite_transformer, pvcnn
from lite_jax.pvcnn import train as pvcnn_train
from lite_jax.core import UserError
from lite_jax.core.app import read_lines
from lite_jax.core.errors import root_user_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("module,flag,suggestion", [
    ("experiments.wmt_lite", "--config.optim.learning_rte=1", "config.optim.learning_rate"),
    ("experiments.pvcnn_shapenet", "--config.train.batchsize=4", "config.train.batch_size"),
    ("experiments.dlg", "--config.num_attack=2", "config.num_attacks"),
    ("experiments.gan_compress", "--config.distill.nepoch=1", "config.distill.nepochs"),
])
def test_every_launcher_names_the_closest_key_of_a_misspelled_one(tmp_path, module, flag,
                                                                   suggestion):
  result = subprocess.run([sys.executable, "-m", module, flag, f"--workdir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  key = flag.split("=")[0][len("--config."):]
  assert result.stderr.strip().splitlines() == [
      f"error: {flag.split('=')[0]}: the config has no field {key!r}; did you mean "
      f"{suggestion}?"]


def test_translate_input_that_does_not_exist():
  with pytest.raises(UserError, match=r"^cannot read --input=/no/such/file \(No such file"):
    read_lines("/no/such/file")


def test_translate_before_training_says_train_first(tmp_path):
  config = wmt_lite.get_config("tiny")
  with pytest.raises(UserError, match="holds no trained model; train first"):
    lite_transformer.translate(config, str(tmp_path), ["a sentence"])


def test_text_dir_with_the_synthetic_source_is_refused(tmp_path):
  config = wmt_lite.get_config("tiny")
  config.data.text_dir = "/nonexistent"
  with pytest.raises(UserError, match="is set but data.source is 'synthetic'"):
    lite_transformer.train_and_evaluate(config, str(tmp_path))


def _shapenet_folder(root, *, taxonomy=True, shape="0 0 0 0 0 1 0\n"):
  (root / "train_test_split").mkdir(parents=True)
  if taxonomy:
    (root / "synsetoffset2category.txt").write_text("Airplane\t02691156\n")
  (root / "02691156").mkdir()
  for split, name in (("train", "a"), ("val", "b"), ("test", "c")):
    (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
        f'["shape_data/02691156/{name}"]')
    (root / "02691156" / f"{name}.txt").write_text(shape)


@pytest.mark.parametrize("damage,message", [
    (dict(taxonomy=False), "is not a ShapeNet Part folder: synsetoffset2category.txt is "
                           "missing"),
    (dict(shape="0 0 zero\n"), "cannot read the shape file .*a.txt"),
])
def test_a_shapenet_folder_with_a_wrong_layout(tmp_path, damage, message):
  _shapenet_folder(tmp_path / "shapenet", **damage)
  config = pvcnn_shapenet.get_config("pvcnn_c0p25")
  with config.unlocked():
    config.data.manual_dir = str(tmp_path / "shapenet")
  with pytest.raises(Exception) as raised:  # tfds wraps it; the launcher unwraps it
    pvcnn.train_and_evaluate(config, str(tmp_path / "work"))
  error = root_user_error(raised.value)
  assert error is not None, raised.value
  assert re.search(message, str(error)), error


def test_pvcnn_data_folder_with_the_synthetic_source_is_refused(tmp_path):
  config = pvcnn_shapenet.get_config("tiny")
  with config.unlocked():
    config.data.manual_dir = str(tmp_path)
  with pytest.raises(UserError, match="is set but data.source is 'synthetic'"):
    pvcnn.train_and_evaluate(config, str(tmp_path / "work"))


def test_a_changed_data_folder_is_refused_unless_rebuilt(tmp_path):
  _shapenet_folder(tmp_path / "a")
  _shapenet_folder(tmp_path / "b")
  config = pvcnn_shapenet.get_config("pvcnn_c0p25")
  with config.unlocked():
    config.data.manual_dir = str(tmp_path / "a")
  workdir = str(tmp_path / "work")
  pvcnn_train.load_data(config, workdir)
  with config.unlocked():
    config.data.manual_dir = str(tmp_path / "b")
  with pytest.raises(UserError, match=r"prepared with data.manual_dir='.*/a', not '.*/b'"):
    pvcnn_train.load_data(config, workdir)
  with config.unlocked():
    config.data.rebuild = True
  train, _ = pvcnn_train.load_data(config, workdir)
  assert len(train) == 2


def test_dlg_file_source_without_a_file(tmp_path):
  config = dlg_configs.get_config("demo")
  config.data.source = "file:"
  with pytest.raises(UserError, match="names no file"):
    leakage.attack(config, str(tmp_path))
