"""PPD training end to end on the tiny preset: resume, the launcher's JSON line, a wrong voxel
grid through the evaluate mode, pictures.

The reference trains the model and its appearance-only ablation in this process, without
stopping. A second workdir stops after 3 steps (inside the first model) and the launcher
finishes it (the first model's last step, the whole ablation, the test metrics): both models
must be bit-identical to the reference. The launcher inherits the test session's XLA flags
and compilation cache (tests/conftest.py), so it reuses the programs compiled here.
"""

import json
import os
import types

import jax
import numpy as np
import pytest

from experiments.configs import ppd as ppd_config
from lite_jax import core
from lite_jax.core import app
from lite_jax.ppd import train
from tests.generated_launch import launch, tiny_config
from tests.notebooks.notebook_runner import count_images, execute

METRICS = ("shape_f1", "density_rmse", "density_top1", "traj_mae")


def _config(data_dir, **train_overrides):
  return tiny_config(ppd_config.get_config, data_dir, **train_overrides)


def _launch(*flags):
  return launch("experiments.ppd", *flags)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("ppd_data"))
  reference_dir = str(tmp_path_factory.mktemp("ppd_reference"))
  workdir = str(tmp_path_factory.mktemp("ppd_resumed"))
  reference = train.train(_config(data_dir), reference_dir)
  with pytest.raises(core.StoppedEarly) as stopped:
    train.train(_config(data_dir, steps_per_run=3), workdir)
  last = _launch(f"--workdir={workdir}", f"--config.data.data_dir={data_dir}")
  pictures = train.visualize(_config(data_dir), workdir)
  return types.SimpleNamespace(data_dir=data_dir, reference_dir=reference_dir,
                               reference=reference, workdir=workdir, stopped=str(stopped.value),
                               last=last, pictures=pictures)


def test_stopped_and_resumed_runs_are_bit_identical_to_an_uninterrupted_one(runs):
  assert runs.stopped == ("model stopped at step 3 of 4 (train.steps_per_run); rerun the same "
                          "command to continue.")
  assert runs.last.returncode == 0, runs.last.stderr[-3000:]
  config = _config(runs.data_dir)
  for folder, use_trajectory in train.runs_of(config).items():
    _, reference = train.restore(config, runs.reference_dir, folder, use_trajectory)
    _, resumed = train.restore(config, runs.workdir, folder, use_trajectory)
    assert int(resumed.step) == config.train.num_steps
    for a, b in zip(jax.tree.leaves(jax.device_get(reference)),
                    jax.tree.leaves(jax.device_get(resumed)), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_launcher_prints_the_test_metrics_of_both_models(runs):
  result = json.loads(runs.last.stdout.strip().splitlines()[-1])
  for key in METRICS:
    assert key in result and f"appearance_{key}" in result, key
    assert f"refined_{key}" in result or key == "shape_f1"
  assert result["num_test"] == 3 and result["num_steps"] == 4
  assert 0 <= result["shape_f1"] <= 1 and result["density_rmse"] >= 0
  assert result["model_validation_loss"] > 0
  # The reference's last logged numbers are the resumed run's.
  assert result["model_loss"] == pytest.approx(runs.reference["model_loss"], rel=1e-6)
  with open(os.path.join(runs.workdir, "evaluation.json"), encoding="utf-8") as f:
    assert json.load(f)["shape_f1"] == result["shape_f1"]


def test_a_voxel_grid_of_the_wrong_size_exits_2_with_one_sentence(runs, capsys):
  # The launcher's evaluate mode as `app.run` calls it (a subprocess would cost seconds of
  # imports): the data's 32^3 grids against a model configured for 16^3.
  config = _config(runs.data_dir)
  config.model.voxel_resolution = 16
  with pytest.raises(SystemExit) as exited:
    app._exit_on_user_error(train.evaluate, config, runs.workdir)
  assert exited.value.code == 2
  captured = capsys.readouterr()
  assert captured.err.splitlines() == [
      "error: voxels must be a 16x16x16 grid (trailing axes), got shape (32, 32, 32)."]
  assert captured.out == ""


def test_visualize_writes_both_pictures(runs):
  names = sorted(os.path.basename(p) for p in runs.pictures["pictures"])
  assert names == ["primitives.png", "trajectories.png"]
  assert all(os.path.getsize(p) > 1000 for p in runs.pictures["pictures"])


@pytest.mark.slow
def test_the_notebook_runs_and_prints_both_models(runs, tmp_path, monkeypatch):
  """`notebooks/ppd_quickstart.ipynb` top to bottom on the tiny preset in a fresh workdir (after
  the fixture, so its kernel loads the tiny programs from the session's compilation cache)."""
  text, outputs = execute("ppd_quickstart.ipynb", tmp_path / "work", monkeypatch)
  assert "preset tiny:" in text and "tower 0:" in text and "kg/m^3" in text
  with open(tmp_path / "work" / "evaluation.json", encoding="utf-8") as f:
    evaluation = json.load(f)
  for name, prefix in (("image + voxels + trajectories", ""), ("appearance only", "appearance_")):
    assert (f"| {name} | {evaluation[prefix + 'shape_f1']:.3f} | "
            f"{evaluation[prefix + 'density_top1']:.3f} | ") in text
  assert count_images(outputs) >= 3  # the towers, then primitives and trajectories


def test_training_batches_mirror_half_the_scenes_when_asked(runs):
  config = _config(runs.data_dir)
  scenes = train.load_split(config, runs.reference_dir, "train")
  # The ball's x at t = 0 tells a scene from its mirror image (the bottom block sits at x = 0).
  first = {int(np.round(s["ball_trajectory"][0, 0] * 1e6)) for s in scenes}
  seen = {"plain": 0, "mirrored": 0}
  for mirror in (False, True):
    config.train.mirror = mirror
    batches = train.training_batches(scenes, config, seed=0)
    for step in range(8):
      for x in batches[step]["ball_trajectory"][:, 0, 0]:
        key = int(np.round(x * 1e6))
        seen["plain" if key in first else "mirrored"] += 1
        assert key in first or -key in first
    if not mirror:
      assert seen["mirrored"] == 0
  assert seen["mirrored"] > 4 and seen["plain"] > 36  # 32 plain rows, then about half of 32
