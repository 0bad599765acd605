"""End to end: `python -m experiments.dlg` on the tiny preset, its errors, configs, the
benchmark's smoke run, image sources and the text attack."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import images as image_data
from experiments.configs import dlg as dlg_configs
from lite_jax import leakage
from lite_jax.core import UserError, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  # Same environment as this process (devices, compilation cache), so the launcher's programs
  # and the in-process sweep's are the same programs and compile once.
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


@pytest.mark.slow
def test_attack_mode_writes_png_metrics_and_a_final_json_line(tmp_path):
  proc = _run("-m", "experiments.dlg", "--flagfile=experiments/flags/dlg_demo.flags",
              f"--workdir={tmp_path}", "--num_attacks=3")
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert {"mse", "psnr", "label_acc", "ssim"} <= set(result)
  assert result["num_attacks"] == 3
  with open(tmp_path / "reconstructions.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  records = read_metrics(tmp_path)
  assert len(records) == 4 and records[-1]["num_attacks"] == 3


@pytest.mark.slow
def test_defense_sweep_writes_table_and_plots(tmp_path):
  config = dlg_configs.get_config("demo")
  config.num_attacks = 1  # x 3 settings: the same 3-attack program as the launcher test.
  images, labels = image_data.load_images("synthetic", size=16, channels=3, count=1,
                                          num_classes=10)
  task = image_data.load_digits_task()
  result = leakage.defense_sweep(config, images, labels, task, str(tmp_path))
  assert set(result["table"]) == {"none", "gaussian 0.01", "prune 0.5"}
  assert (tmp_path / "defense_sweep.png").exists()
  assert (tmp_path / "defense_reconstructions.png").exists()
  table = (tmp_path / "defense_table.md").read_text()
  assert table.count("\n") == 5 and "task acc" in table


def test_bad_input_exits_2_with_one_sentence(tmp_path):
  proc = _run("-m", "experiments.dlg", "--flagfile=experiments/flags/dlg_demo.flags",
              f"--workdir={tmp_path}", "--config.data.source=file:/no/such/image.png")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == \
      "error: image file '/no/such/image.png' does not exist."


def test_every_preset_loads_and_unknown_preset_is_a_user_error():
  for name in dlg_configs.PRESETS:
    config = dlg_configs.get_config(name)
    assert config.lbfgs.steps % config.num_snapshots == 0, name
  with pytest.raises(UserError, match="unknown preset"):
    dlg_configs.get_config("lenett")
  for name in os.listdir(os.path.join(ROOT, "experiments", "flags")):
    if name.startswith("dlg_"):
      text = open(os.path.join(ROOT, "experiments", "flags", name)).read()
      assert f"dlg.py:{name[4:-6]}" in text


@pytest.mark.slow
def test_benchmark_smoke_prints_one_json_line_per_measurement():
  proc = _run("-m", "benchmarks.leakage", "--smoke", "--num_attacks=2", "--repeats=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
  assert len(lines) == 1
  assert lines[0]["num_attacks"] == 2 and lines[0]["backend"] == "cpu"
  assert lines[0]["attacks_per_second"] > 0 and lines[0]["device"]


def test_image_sources_shapes_labels_and_user_files(tmp_path):
  images, labels = image_data.load_images("synthetic", size=12, channels=1, count=3)
  assert images.shape == (3, 12, 12, 1) and images.min() >= 0 and images.max() <= 1
  from PIL import Image
  path = tmp_path / "x.png"
  Image.fromarray(np.full((40, 30, 3), 255, np.uint8)).save(path)
  images, labels = image_data.load_images(f"file:{path}", size=8, channels=3, count=2)
  np.testing.assert_allclose(images, 1.0)
  np.testing.assert_array_equal(labels, [0, 1])
  with pytest.raises(UserError, match="not prepared"):
    image_data.load_images("tfds:mnist", size=28, channels=1, count=1,
                           data_dir=str(tmp_path))
  with pytest.raises(UserError, match="unknown image source"):
    image_data.load_images("imagenet", size=8, channels=3, count=1)


def test_packaged_images_when_installed():
  pytest.importorskip("skimage")
  pytest.importorskip("sklearn")
  images, _ = image_data.load_images("skimage", size=32, channels=3, count=2)
  assert images.shape == (2, 32, 32, 3) and images.std() > 0.05
  digits, labels = image_data.load_images("digits", size=28, channels=1, count=5,
                                          num_classes=10)
  assert digits.shape == (5, 28, 28, 1)
  np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4])
