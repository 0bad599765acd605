"""GauGAN compression end to end on the gaugan_tiny preset (teacher -> distill -> search ->
export -> evaluate, with the VGG loss on a narrow random VGG19; fine-tuning on a copy of that
run), exact resume of the distillation, the exported generator against the calibrated
super-network, and the user errors. The layers (spectral norm, VGG19) are in
`test_spade_layers.py`."""

from __future__ import annotations

import copy
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import label_maps
from experiments.configs import gan_compress as configs
from lite_jax import core, gan_compression
from lite_jax.core import export as portable
from lite_jax.gan_compression import pipeline, recipe, spade, spade_recipe, standalone, vgg
from tests import tracing
from tests.gan_compression.test_spade_layers import NARROW_VGG, _vgg_state_dict

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")



@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The tiny pipeline, phase by phase, with the VGG loss on a narrow random VGG19."""
  workdir = str(tmp_path_factory.mktemp("gaugan"))
  weights = os.path.join(workdir, "vgg19.npz")
  np.savez(weights, **_vgg_state_dict(NARROW_VGG))
  config = configs.get_config("gaugan_tiny")
  config.gaugan.vgg_weights = weights
  config.teacher_loss.lambda_vgg = config.distill_loss.lambda_vgg = 10.0
  results = {mode: pipeline.run(mode, config, workdir)
             for mode in ("train_teacher", "distill", "search", "export", "evaluate")}
  return config, workdir, results


def test_pipeline_writes_everything_and_respects_the_budget(run):
  config, workdir, results = run
  for name in ("search.json", "search.png", "compare.png", "export/generator.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  searched = results["search"]
  assert searched["macs"] <= config.search.budget_macs
  with open(os.path.join(workdir, "search.json")) as f:
    record = json.load(f)
  assert record["evaluated"] and all(c["macs"] <= config.search.budget_macs
                                     for c in record["evaluated"])
  assert min(c["score"] for c in record["evaluated"]) == searched["score"]
  evaluated = results["evaluate"]
  assert evaluated["channels"] == searched["channels"] == results["export"]["channels"]
  assert evaluated["macs"] == searched["macs"] and evaluated["macs_ratio"] > 3
  assert evaluated["teacher_macs"] == results["train_teacher"]["macs"]
  assert evaluated["num_images"] == config.data.synthetic_test
  for key in ("l1", "psnr", "teacher_l1", "teacher_psnr", "l1_to_teacher"):
    assert np.isfinite(evaluated[key]), key
  for phase, steps in (("teacher", 4), ("supernet", 8)):
    log = core.read_metrics(os.path.join(workdir, phase))
    assert log[-1]["step"] == steps
    assert all(np.isfinite(r[k]) for r in log for k in ("loss", "d_loss", "g_vgg", "g_feat"))
  assert core.read_metrics(os.path.join(workdir, "supernet"))[-1]["g_distill"] > 0


def test_distill_resumes_exactly_and_compiles_once(run, monkeypatch):
  """Kill after the step-4 checkpoint (drop the later one) and resume: the same final state,
  batch-norm statistics and spectral-norm vectors included; the 4 resumed steps sample
  sub-networks inside one compiled step (the loop traces the step once)."""
  config, workdir, _ = run
  gaugan = pipeline.recipe_for(config)
  task = gaugan.load_task(workdir)
  final = pipeline.finished_state(gaugan, workdir, task, "supernet")
  checkpoints = os.path.join(workdir, "supernet", "checkpoints")
  steps = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())
  assert steps[-2:] == [4, 8]
  shutil.rmtree(os.path.join(checkpoints, "8"))
  traces = tracing.count_traces(monkeypatch, spade_recipe, "make_step")
  pipeline.distill(config, workdir)
  assert len(traces) == 1
  resumed = pipeline.finished_state(gaugan, workdir, task, "supernet")
  assert int(resumed.step) == 8
  for part in ("generator", "d_opt", "aux"):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(getattr(resumed, part)),
                 jax.device_get(getattr(final, part)))


def test_exported_generator_equals_the_calibrated_supernet(run):
  """The standalone generator (sliced weights, its own calibration) computes what the
  super-network computes at that sub-network after the same re-calibration."""
  config, workdir, results = run
  generator, variables = standalone.load_generator(os.path.join(workdir, "export"))
  channels = spade.parse_config(results["search"]["channels"])
  assert generator.channels == channels and generator.separable
  gaugan = pipeline.recipe_for(config)
  task = gaugan.load_task(workdir)
  supernet = pipeline.finished_state(gaugan, workdir, task, "supernet")
  super_net = gaugan.compact_generator()
  calibration = gaugan.calibration_labels(task)
  super_variables = spade.calibrate(super_net,
                                    recipe.compact_variables(gaugan.generator_variables(supernet)),
                                    [calibration], channels)
  batch = next(label_maps.eval_batches(task.test, task.preprocess, 4))
  seg = spade_recipe.semantic_input(batch["label"], batch["edge"], config)
  run = jax.jit(lambda model, *args: model.apply(*args), static_argnums=0)
  np.testing.assert_allclose(run(generator, variables, seg),
                             run(super_net, super_variables, seg, jnp.asarray(channels)),
                             atol=2e-5)


def test_portable_artifacts_take_label_maps_and_match_the_generators(run):
  """`compressed.jaxexport` / `teacher.jaxexport` take the batches' `label` (int ids, 255 =
  dontcare) and `edge` maps and build the one-hot input inside: equal to the library's
  generators on that input (the symbolic batch is tested on the ResNet artifacts)."""
  config, workdir, _ = run
  gaugan = pipeline.recipe_for(config)
  task = gaugan.load_task(workdir)
  compressed = standalone.load_generator(os.path.join(workdir, "export"))
  teacher = pipeline.trained_teacher(gaugan, workdir, task)
  batch = next(label_maps.eval_batches(task.test, task.preprocess, 3))
  for name, (generator, variables) in (("compressed", compressed),
                                       ("teacher", (teacher.generator, teacher.variables))):
    model = portable.load(os.path.join(workdir, "export", f"{name}.jaxexport"))
    assert model.input_names == ["label", "edge"]
    label, edge = np.asarray(batch["label"]), np.asarray(batch["edge"])
    want = jax.jit(generator.apply)(variables, spade_recipe.semantic_input(label, edge, config))
    np.testing.assert_allclose(model(label, edge), want, atol=1e-5)


def test_finetune_starts_from_the_supernet_slice_and_is_exported(run, tmp_path):
  """On a copy of the trained teacher, super-network and search: the fine-tuning state starts
  from the leading-channel slice of the super-network (G, its batch-norm statistics and 1x1
  convs; D as it is), `--mode=finetune` trains it for one epoch, and export writes its
  weights."""
  config, source, results = run
  config = copy.deepcopy(config)
  config.finetune.nepochs = 1
  for name in ("teacher", "supernet"):
    shutil.copytree(os.path.join(source, name), tmp_path / name)
  shutil.copy(os.path.join(source, "search.json"), tmp_path)
  workdir = str(tmp_path)
  gaugan = pipeline.recipe_for(config)
  channels = spade.parse_config(results["search"]["channels"])
  task = gaugan.load_task(workdir)
  supernet = pipeline.finished_state(gaugan, workdir, task, "supernet")
  teacher = pipeline.trained_teacher(gaugan, workdir, task)
  start_g, start_d, start_aux = pipeline.initial_student(gaugan, channels, teacher,
                                                          lambda: supernet)
  # The compact student's shapes: the 1x1 convs' inputs at the sub-network's widths.
  compact = recipe.abstract_variables(gaugan.student(channels), gaugan.input_shape)

  def assert_leading_slice(sub, full, like):
    assert sub.shape == like.shape
    np.testing.assert_array_equal(sub, np.asarray(full)[tuple(slice(0, n) for n in sub.shape)])

  jax.tree.map(assert_leading_slice, start_g, supernet.generator, compact["params"])
  jax.tree.map(assert_leading_slice, start_aux["generator"], supernet.aux["generator"],
               compact["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, (start_d, start_aux["discriminator"]),
               (supernet.discriminator, supernet.aux["discriminator"]))

  result = json.loads(json.dumps(gan_compression.run("finetune", config, workdir)))
  assert (result["phase"], result["channels"], result["steps"]) == (
      "finetune", results["search"]["channels"], 2)  # 16 train1 images, batch 8, 1 epoch
  assert all(np.isfinite(result[k]) for k in ("loss", "d_loss", "g_vgg", "g_distill"))
  finetuned = pipeline.finished_state(gaugan, workdir, task, "finetune", channels)
  assert int(finetuned.step) == 2
  exported = pipeline.export(config, workdir)
  assert exported["channels"] == results["search"]["channels"]
  _, variables = standalone.load_generator(exported["path"])
  jax.tree.map(np.testing.assert_array_equal, variables["params"],
               jax.device_get(finetuned.generator["generator"]))
  assert not np.array_equal(variables["params"]["conv_img"]["conv"]["kernel"],
                            start_g["generator"]["conv_img"]["conv"]["kernel"])


def test_pipeline_fine_tunes_between_search_and_export_when_it_has_epochs(monkeypatch):
  calls = []
  for mode in ("train_teacher", "distill", "finetune", "export"):
    monkeypatch.setitem(pipeline.MODES, mode, lambda c, w, mode=mode: calls.append(mode))
  monkeypatch.setitem(pipeline.MODES, "search", lambda c, w: calls.append("search") or {
      "score": 0.5, "metric": "l1", "num_evaluated": 3})
  monkeypatch.setitem(pipeline.MODES, "evaluate",
                      lambda c, w: calls.append("evaluate") or {})
  config = configs.get_config("gaugan_tiny")
  pipeline.pipeline(config, "unused")
  assert calls == ["train_teacher", "distill", "search", "export", "evaluate"]
  calls.clear()
  config.finetune.nepochs_decay = 1
  assert pipeline.pipeline(config, "unused")["search_score"] == 0.5
  assert calls == ["train_teacher", "distill", "search", "finetune", "export", "evaluate"]


def test_semantic_input_one_hot_dontcare_and_edges():
  config = configs.get_config("gaugan_tiny")
  label = jnp.array([[[0, 3, 255]]])
  edge = jnp.array([[[1.0, 0.0, 0.0]]])
  seg = spade_recipe.semantic_input(label, edge, config)
  np.testing.assert_array_equal(seg[0, 0], [[1, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0] * 5])
  config.gaugan.contain_dontcare = True  # 255 is the extra class label_nc
  seg = spade_recipe.semantic_input(label, edge, config)
  assert seg.shape[-1] == spade_recipe.semantic_nc(config) == 6
  np.testing.assert_array_equal(seg[0, 0, 2], [0, 0, 0, 0, 1, 0])


# ---------------------------------------------------------------------------------------------
# Spectral norm.
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# VGG19.
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# User errors.
# ---------------------------------------------------------------------------------------------


def test_user_errors(tmp_path):
  config = configs.get_config("gaugan_tiny")
  config.teacher_loss.lambda_vgg = 10.0
  with pytest.raises(core.UserError, match="set config.gaugan.vgg_weights"):
    pipeline.train_teacher(config, str(tmp_path))
  with pytest.raises(core.UserError, match="VGG19 weights file .* does not exist"):
    vgg.load_vgg19(tmp_path / "missing.pth")
  state_dict = _vgg_state_dict(NARROW_VGG)
  del state_dict["features.28.bias"]
  with pytest.raises(core.UserError, match="lacks the VGG19 weight 'features.28.bias'"):
    vgg.params_from_state_dict(state_dict)
  with pytest.raises(core.UserError, match="needs a GauGAN preset"):
    spade_recipe.SpadeRecipe(configs.get_config("tiny"))
  with pytest.raises(core.UserError, match="cityscapes:/path/to/cityscapes"):
    pipeline.recipe_for(configs.get_config("gaugan_cityscapes")).load_task(str(tmp_path))
  config = configs.get_config("gaugan_tiny")
  config.gaugan.label_nc = 3
  with pytest.raises(core.UserError, match="gaugan.label_nc is 3 but synthetic has 4"):
    pipeline.recipe_for(config).load_task(str(tmp_path))
  config = configs.get_config("gaugan_tiny")
  with pytest.raises(core.UserError, match="run the search first"):
    pipeline.chosen_channels(pipeline.recipe_for(config), str(tmp_path))
  config.subnet.channels = "8_4_4_4_4_4_4_4"
  with pytest.raises(core.UserError, match="wider than the super-network"):
    pipeline.chosen_channels(pipeline.recipe_for(config), str(tmp_path))
  config.student.search_space = "channels-48"
  with pytest.raises(core.UserError, match="offers 48 channels"):
    pipeline.recipe_for(config).search_space()
  with pytest.raises(core.UserError, match="teacher/checkpoints; train the teacher"):
    pipeline.distill(configs.get_config("gaugan_tiny"), str(tmp_path))


def test_coco_preset_reads_coco_stuff_with_random_crops_and_dontcare(tmp_path):
  """`gaugan_coco`'s data path on a 3-image COCO-Stuff folder: 286 -> 256 training crops (here
  36 -> 32), label 255 as the extra dontcare channel, 182 + 1 + 1 semantic channels."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  root = tmp_path / "coco"
  for split in ("train", "val"):
    for i in range(3):
      for kind, array in (("img", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)),
                          ("label", rng.choice(np.array([3, 181, 255], np.uint8), (40, 48))),
                          ("inst", rng.integers(0, 3, (40, 48), dtype=np.uint8))):
        (root / f"{split}_{kind}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / f"{split}_{kind}" / f"{i:012d}.png")
  config = configs.get_config("gaugan_coco")
  config.data.source, config.data.holdout = f"coco:{root}", 1
  config.data.crop_size, config.gaugan.load_size = 32, 36
  gaugan = pipeline.recipe_for(config)
  task = gaugan.load_task(str(tmp_path))
  assert task.preprocess == label_maps.Preprocess(32, 32, True, 36) and task.num_labels == 182
  config.teacher_train.batch_size = 2
  batch = gaugan.train_batches(task, config.teacher_train)[0]
  seg = spade_recipe.semantic_input(jnp.asarray(batch["label"]), jnp.asarray(batch["edge"]),
                                    config)
  assert seg.shape == (2, 32, 32, 184)
  np.testing.assert_array_equal(seg[..., 182], batch["label"] == 255)  # dontcare channel
  np.testing.assert_array_equal(seg[..., 181], batch["label"] == 181)


