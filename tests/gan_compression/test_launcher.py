"""The GAN Compression launcher: presets and flagfiles, `--mode=profile` on the reference
models, one-line user errors, and the benchmark's smoke run."""

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import gan_compress as configs
from lite_jax import core
from lite_jax.gan_compression import pipeline


def test_every_preset_and_flagfile_loads():
  for preset in configs.presets():
    assert configs.get_config(preset).preset == preset
  with pytest.raises(core.UserError, match="unknown preset"):
    configs.get_config("horse2zebra")
  for name in ("cyclegan_horse2zebra", "pix2pix_edges2shoes", "pix2pix_cityscapes",
               "pix2pix_map2aerial", "gaugan_cityscapes", "gan_compress_demo",
               "cyclegan_horse2zebra_gc", "pix2pix_edges2shoes_gc", "gaugan_coco"):
    assert os.path.exists(f"experiments/flags/{name}.flags"), name


def _launch(*args):
  return subprocess.run([sys.executable, "-m", "experiments.gan_compress", *args],
                        capture_output=True, text=True, timeout=300)


def test_launcher_profiles_the_reference_models():
  done = _launch("--flagfile=experiments/flags/cyclegan_horse2zebra.flags", "--mode=profile",
                 "--channels=16_16_24_16_32_64_16_24")
  assert done.returncode == 0, done.stderr
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["teacher_macs"] == 56_831_770_624 and result["teacher_params"] == 11_378_179
  assert result["macs"] < 3e9 and result["macs_ratio"] > 20
  done = _launch("--flagfile=experiments/flags/gaugan_cityscapes.flags", "--mode=profile")
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["macs"] == pytest.approx(281.4e9, rel=1e-3)
  config = configs.get_config("gaugan_coco")  # README: 191.2G / 97.5M
  config.subnet.channels = "40_32_32_40_32_40_24_24"  # the Fast COCO result, within 36e9
  result = pipeline.profile(config)
  assert (result["teacher_macs"], result["teacher_params"]) == (191_180_570_624, 97_480_899)
  assert result["macs"] <= config.search.budget_macs


@pytest.mark.parametrize("args, message", [
    (("--mode=profile", "--channels=16_16"), "8 or 6 positive entries"),
    (("--mode=distill", "--config.task=gaugan"), "GauGAN training needs a GauGAN preset"),
    (("--mode=train_teacher", "--config.data.source=folder:/nonexistent"), "/nonexistent"),
])
def test_launcher_user_errors(args, message, tmp_path):
  done = _launch("--config=experiments/configs/gan_compress.py:tiny",
                 f"--workdir={tmp_path}", *args)
  assert done.returncode != 0
  assert message in done.stderr and "Traceback" not in done.stderr


def test_benchmark_smoke():
  done = subprocess.run([sys.executable, "-m", "benchmarks.gan_compression", "--smoke",
                         "--dtypes=float32", "--batches=2"], capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  records = [json.loads(line) for line in done.stdout.splitlines()]
  assert {r["depthwise_impl"] for r in records} == {"", "shifts", "conv"}
  assert all(r["ms"] > 0 and r["macs"] > 0 for r in records)
  assert all(r["macs_ratio"] > 1 for r in records if r["depthwise_impl"])

