"""PSD training end to end on the tiny preset: two stages, resume, evaluate, pictures, profile.

One uninterrupted run (in this process) is the reference. A second workdir is trained the way a
time-limited job is: a run stops after 3 steps (inside stage 1), a rerun after 3 more (stage
1's last step, the dimensions, two stage-2 steps), and the launcher finishes it (the last
stage-2 step, the test metrics, the JSON line). Everything must be bit-identical to the
reference. The launcher runs with the test session's XLA flags and, like the in-process runs,
on one device (the tiny preset's mesh), so all share the session's compilation cache
(tests/conftest.py); the model's programs are compiled once.
"""

import json
import os
import types

import jax
import numpy as np
import pytest

from experiments.configs import psd as psd_config
from lite_jax import core
from lite_jax.psd import train
from tests.generated_launch import launch, tiny_config
from tests.notebooks.notebook_runner import count_images, execute

STAGE1, STAGE2 = 4, 3  # tiny's stage 1; stage 2 lengthened so a stop falls inside it


def _config(data_dir: str, **train_overrides):
  return tiny_config(psd_config.get_config, data_dir,
                     **{"stage2_steps": STAGE2, **train_overrides})


def _launch(*flags):
  return launch("experiments.psd", *flags)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("psd_data"))
  reference_dir = str(tmp_path_factory.mktemp("psd_reference"))
  workdir = str(tmp_path_factory.mktemp("psd_resumed"))
  reference = train.train_and_evaluate(_config(data_dir), reference_dir)
  stops = []
  for _ in range(2):
    with pytest.raises(core.StoppedEarly) as stopped:
      train.train_and_evaluate(_config(data_dir, steps_per_run=3), workdir)
    stops.append(str(stopped.value))
  last = _launch(f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
                 f"--config.train.stage2_steps={STAGE2}")
  pictures = train.visualize(_config(data_dir), workdir)
  return types.SimpleNamespace(data_dir=data_dir, reference_dir=reference_dir,
                               reference=reference, workdir=workdir, stops=stops, last=last,
                               pictures=pictures)


@pytest.fixture(scope="module")
def states(runs):
  """`{workdir: (stage 1's final state, stage 2's)}` of both runs, on the host."""
  s = train.setup(_config(runs.data_dir))
  return {workdir: tuple(jax.device_get(train.restore_stage(s, workdir, stage))
                         for stage in (1, 2))
          for workdir in (runs.workdir, runs.reference_dir)}


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_stopped_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(runs, states):
  assert runs.stops == [
      f"stage {stage} stopped at step {step} of {total} (train.steps_per_run); rerun the same "
      f"command to continue." for stage, step, total in ((1, 3, STAGE1), (2, 2, STAGE2))]
  assert runs.last.returncode == 0, runs.last.stderr[-3000:]
  _assert_trees_equal(states[runs.workdir], states[runs.reference_dir])
  result = json.loads(runs.last.stdout.strip().splitlines()[-1])
  assert result == json.loads(json.dumps(runs.reference))
  assert train.read_dimensions(runs.workdir) == train.read_dimensions(runs.reference_dir)
  # Each run continued where the last one stopped: stage 2 logged steps 1, 2 then 3.
  logged = [r["step"] for r in core.read_metrics(os.path.join(runs.workdir, "stage2"))
            if "loss" in r]
  assert logged == [1, 2, 3]


@pytest.mark.slow
def test_the_json_line_holds_the_test_metrics(runs):
  result = runs.reference
  for key in ("part_iou", "foreground_baseline_iou", "flow_epe", "flow_epe_zero", "image_l1",
              "image_l1_copy", "stage1_loss", "stage2_loss"):
    assert np.isfinite(result[key]), key
  assert 0 <= result["part_iou"] <= 1 and 0 < result["foreground_baseline_iou"] <= 1
  assert isinstance(result["hierarchy_correct"], bool) and isinstance(result["edges"], list)
  dims = result["active_dims"]
  assert len(dims) == 2 and len(set(dims)) == 2 and all(0 <= d < 4 for d in dims)
  assert set(result["assignment"].values()) <= set(dims)
  assert set(result["part_iou_per_object"]) == {"circle", "square", "triangle"}
  assert result["num_test"] == 8 and result["flow_epe_zero"] > 0
  with open(os.path.join(runs.reference_dir, "evaluation.json")) as f:
    assert json.load(f) == {k: v for k, v in json.loads(json.dumps(result)).items()
                            if not k.startswith("stage")}


@pytest.mark.slow
def test_stage_two_freezes_the_motion_encoder_and_stage_one_the_structure(runs, states):
  stage1, stage2 = states[runs.reference_dir]
  _assert_trees_equal(stage1.params["motion_encoder"], stage2.params["motion_encoder"])
  _assert_trees_equal(stage1.batch_stats["motion_encoder"], stage2.batch_stats["motion_encoder"])
  np.testing.assert_array_equal(stage1.params["structure"], -10.0)
  for name in ("kernel_decoder", "image_encoder", "motion_decoder", "image_decoder"):
    changed = [not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(stage1.params[name]), jax.tree.leaves(stage2.params[name]))]
    assert all(changed), name
  dims = train.read_dimensions(runs.reference_dir)
  structure = stage2.params["structure"]
  allowed = [(i, j) for i in dims for j in dims if i != j]
  assert all(structure[i, j] != -10.0 for i, j in allowed)  # trained
  untouched = np.ones(structure.shape, bool)
  untouched[tuple(zip(*allowed))] = False
  np.testing.assert_array_equal(structure[untouched], -10.0)  # masked out: no gradient


@pytest.mark.slow
def test_dimensions_are_chosen_from_the_training_posterior_and_recorded(runs):
  with open(os.path.join(runs.reference_dir, "dimensions.json")) as f:
    record = json.load(f)
  kl = np.array(record["statistics"]["kl"])
  assert record["source"] == "posterior statistics" and record["num_examples"] == 16
  assert record["dimensions"] == list(np.argsort(-kl, kind="stable")[:2])
  bank = np.load(os.path.join(runs.reference_dir, "posterior.npz"))
  assert bank["mean"].shape == bank["log_var"].shape == (16, 4)


@pytest.mark.slow
def test_given_dimensions_override_the_choice(runs, tmp_path):
  config = _config(runs.data_dir)
  s = train.setup(config)
  stage1 = train.restore_stage(s, runs.reference_dir, 1)
  examples = train.load_split(config, runs.reference_dir, "train")
  assert train.choose_dimensions(s, str(tmp_path), stage1, examples, (3, 1)) == (3, 1)
  with open(tmp_path / "dimensions.json") as f:
    assert json.load(f)["dimensions"] == [3, 1]


@pytest.mark.slow
def test_data_without_object_ids_is_scored_without_part_metrics(runs, states, tmp_path):
  """User videos and the reference's files carry no object ids (-1): flow metrics only."""
  config = _config(runs.data_dir)
  test = train.load_split(config, runs.reference_dir, "test")
  unknown = [dict(test[i], object_ids=np.full_like(test[i]["object_ids"], -1))
             for i in range(len(test))]
  result = train.evaluate_state(train.setup(config), states[runs.reference_dir][1],
                                tuple(runs.reference["active_dims"]), unknown, str(tmp_path))
  assert "part_iou" not in result and "hierarchy_correct" not in result
  assert result["flow_epe"] == runs.reference["flow_epe"]
  assert result["active_dims"] == runs.reference["active_dims"]


@pytest.mark.slow
def test_visualize_writes_every_picture_and_the_page(runs):
  pictures = runs.pictures["pictures"]
  assert [os.path.basename(p) for p in pictures] == [
      "traversals.png", "traversals_image.png", "samples.png", "masks.png", "structure.png"]
  for path in pictures:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(runs.pictures["html"]) as f:
    page = f.read()
  assert all(os.path.basename(p) in page for p in pictures) and "part_iou" in page


@pytest.mark.slow
def test_dimensions_out_of_range_is_one_sentence(tmp_path):
  process = _launch(f"--workdir={tmp_path}", "--dimensions=0,9")
  assert process.returncode == 2
  assert process.stderr.strip().splitlines()[-1] == (
      "error: --dimensions=0,9: 9 is out of range; the model has 4 latent dimensions (0..3).")
  assert not os.path.exists(tmp_path / "stage1")  # refused before any training


@pytest.mark.parametrize("text,message", [
    ("1,1", "--dimensions=1,1 repeats a dimension; list each one once."),
    ("2", "--dimensions=2 names 1 dimension; the structure needs at least two (a parent and a "
          "child)."),
    ("a,b", "--dimensions=a,b must be comma-separated integers, e.g. 18,9,0."),
    ("-1,2", "--dimensions=-1,2: -1 is out of range; the model has 4 latent dimensions "
             "(0..3)."),
])
def test_bad_dimensions(text, message):
  with pytest.raises(core.UserError) as error:
    train.parse_dimensions(text, 4)
  assert str(error.value) == message
  assert train.parse_dimensions(" 18,9,0 ", 32) == (18, 9, 0)
  assert train.parse_dimensions("", 32) is None


def test_profile_at_paper_size_matches_hand_counts():
  result = train.profile(psd_config.get_config("shapes"))
  assert result["image_size"] == 128 and result["num_latents"] == 32
  # Motion encoder: seven 5x5 stride-2 convs 2-16-16-32-32-64-64-64 (spec section 2), from
  # 128 to 1; the six with BatchNorm have no bias (scale + bias per channel), the last a bias.
  channels = [2, 16, 16, 32, 32, 64, 64, 64]
  pairs = list(zip(channels[:-1], channels[1:]))
  weights = sum(25 * a * b for a, b in pairs)
  assert result["params_by_module"]["motion_encoder"] == weights + 2 * sum(channels[1:-1]) + 64
  sizes = [64, 32, 16, 8, 4, 2, 1]
  assert result["macs_by_module"]["motion_encoder"] == sum(
      s * s * 25 * a * b for s, (a, b) in zip(sizes, pairs))
  # Kernel decoder: 32 MLPs 1-64-128-64-25 (BatchNorm on the hidden layers, bias last).
  mlp = 1 * 64 + 64 * 128 + 128 * 64 + 64 * 25
  assert result["params_by_module"]["kernel_decoder"] == 32 * (mlp + 2 * (64 + 128 + 64) + 25)
  assert result["macs_by_module"]["kernel_decoder"] == 32 * mlp
  # Motion decoder: x and y branches of depthwise 9, 9, 5, 5 convs over 32 layers at 128^2.
  assert result["macs_by_module"]["motion_decoder"] == 128 * 128 * 2 * 32 * (81 + 81 + 25 + 25)
  assert result["params"] == sum(result["params_by_module"].values())
  assert result["macs"] == sum(result["macs_by_module"].values())
  assert result["macs_stage2"] > result["macs"]


@pytest.mark.slow
def test_the_notebook_runs_and_prints_the_evaluation(runs, tmp_path, monkeypatch):
  """`notebooks/psd_quickstart.ipynb` top to bottom on the tiny preset in a fresh workdir (after
  the fixture, so its kernel loads the tiny programs from the session's compilation cache)."""
  text, outputs = execute("psd_quickstart.ipynb", tmp_path / "work", monkeypatch)
  assert "preset tiny: 16x16 frames, 4 latents" in text
  assert "scene 0: mode" in text and "structure matrix (4, 4)" in text
  assert "active dimensions: [" in text and "one foreground mask:" in text
  assert "hierarchy correct:" in text and "flow EPE" in text
  with open(tmp_path / "work" / "evaluation.json", encoding="utf-8") as f:
    evaluation = json.load(f)
  assert f"part IoU {evaluation['part_iou']:.3f}" in text
  assert count_images(outputs) >= 6  # the data, then the five pictures of `visualize`


def test_a_bad_layers_option_or_data_without_object_ids_is_one_sentence():
  config = psd_config.get_config("tiny")
  config.model.layers = "masks"
  with pytest.raises(core.UserError, match="model.layers must be one of image, objects, "):
    train.build_model(config)
  config.model.layers = "objects"
  with pytest.raises(core.UserError, match="needs per-pixel object ids"):
    train.given_layers(config, {"object_ids": -np.ones((1, 16, 16), np.int32)}, 1)
  squares = {"object_ids": np.full((2, 16, 16), 2, np.int32)}
  layers = train.given_layers(config, squares, 1)
  assert layers.shape == (2, 4, 4, 4) and np.all(layers[..., 1] == 1)
  assert np.all(layers[..., 0] == 0)  # 'objects': layer 0 is the circle only
  config.model.layers = "objects_staged"  # stage 1: layer 0 is every object; stage 2: the circle
  assert np.all(train.given_layers(config, squares, 1)[..., 0] == 1)
  assert np.all(train.given_layers(config, squares, 2)[..., 0] == 0)
