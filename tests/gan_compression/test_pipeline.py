"""End to end on the tiny preset: teacher -> distill -> search -> finetune -> export -> evaluate,
exact resume of the distillation, the export round trip, FID, phase-order errors, and the
quickstart notebook on the finished pipeline. CycleGAN and the launcher have their own files, so
the test processes share the work."""

import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import gan_compress as configs
from lite_jax import core
from lite_jax.gan_compression import pipeline, resnet_recipe, standalone
from tests import tracing
from tests.notebooks.notebook_runner import count_images, execute, snapshot

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """The tiny pipeline, phase by phase, with one fine-tuning epoch: config, workdir, results,
  and a copy of the finished workdir for the notebook (later tests change the original)."""
  workdir = str(tmp_path_factory.mktemp("gan_compress"))
  config = configs.get_config("tiny")
  config.finetune.nepochs = 1
  results = {mode: pipeline.run(mode, config, workdir)
             for mode in ("train_teacher", "distill", "search", "finetune", "export", "evaluate")}
  return config, workdir, results, snapshot(
      workdir, str(tmp_path_factory.mktemp("gan_compress_notebook") / "work"))


@pytest.fixture(scope="module")
def run(finished_run):
  return finished_run[:3]


def test_pipeline_writes_everything_and_respects_the_budget(run):
  config, workdir, results = run
  for name in ("search.json", "search.png", "compare.png", "export/generator.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  searched = results["search"]
  assert searched["macs"] <= config.search.budget_macs
  with open(os.path.join(workdir, "search.json")) as f:
    record = json.load(f)
  assert all(c["macs"] <= config.search.budget_macs for c in record["evaluated"])
  assert min(c["score"] for c in record["evaluated"]) == searched["score"]
  evaluated = results["evaluate"]
  assert evaluated["channels"] == searched["channels"] == results["export"]["channels"]
  assert evaluated["macs"] == searched["macs"] and evaluated["macs_ratio"] > 2
  for key in ("l1", "psnr", "teacher_l1", "teacher_psnr", "l1_to_teacher"):
    assert np.isfinite(evaluated[key]), key
  teacher_log = core.read_metrics(os.path.join(workdir, "teacher"))
  assert teacher_log[-1]["g_recon"] < teacher_log[0]["g_recon"]  # the teacher learns


def test_distill_resumes_exactly_and_compiles_once(run, monkeypatch):
  """Kill after the step-4 checkpoint (drop the later one) and resume: the same final state;
  the 4 resumed steps sample a sub-network each inside one compiled step (the loop traces
  the step once)."""
  config, workdir, _ = run
  recipe = pipeline.recipe_for(config)
  task = recipe.load_task(workdir)
  final = pipeline.finished_state(recipe, workdir, task, "supernet")
  checkpoints = os.path.join(workdir, "supernet", "checkpoints")
  steps = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())
  assert steps[-2:] == [4, 8]
  shutil.rmtree(os.path.join(checkpoints, "8"))
  traces = tracing.count_traces(monkeypatch, resnet_recipe, "make_step")
  pipeline.distill(config, workdir)
  assert len(traces) == 1
  resumed = pipeline.finished_state(recipe, workdir, task, "supernet")
  assert int(resumed.step) == 8
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.generator),
               jax.device_get(final.generator))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.d_opt),
               jax.device_get(final.d_opt))


def test_exported_generator_runs_alone_and_matches_the_finetuned_subnet(run):
  config, workdir, results = run
  generator, variables = standalone.load_generator(os.path.join(workdir, "export"))
  channels = tuple(int(c) for c in results["search"]["channels"].split("_"))
  assert generator.channels == channels
  recipe = pipeline.recipe_for(config)
  finetuned = pipeline.finished_state(recipe, workdir, recipe.load_task(workdir), "finetune",
                                      channels)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  expected, _ = recipe.student(channels).apply({"params": finetuned.generator}, x)
  np.testing.assert_allclose(generator.apply(variables, x), expected, atol=1e-6)


def test_export_without_finetuning_slices_the_supernet(run, tmp_path):
  config, workdir, results = run
  config = configs.get_config("tiny")  # finetune epochs 0: export slices the super-network
  for phase in ("teacher", "supernet"):
    shutil.copytree(os.path.join(workdir, phase), tmp_path / phase)
  channels = results["search"]["channels"]
  config.subnet.channels = channels
  pipeline.export(config, str(tmp_path))
  generator, variables = standalone.load_generator(str(tmp_path / "export"))
  recipe = pipeline.recipe_for(config)
  supernet = pipeline.finished_state(recipe, str(tmp_path), recipe.load_task(str(tmp_path)),
                                     "supernet")
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  active = jnp.asarray([int(c) for c in channels.split("_")])
  expected, _ = recipe.student().apply({"params": supernet.generator}, x, active)
  np.testing.assert_allclose(generator.apply(variables, x), expected, atol=1e-5)


def test_phase_order_and_choice_errors(tmp_path):
  config = configs.get_config("tiny")
  with pytest.raises(core.UserError, match="teacher/checkpoints; train the teacher"):
    pipeline.distill(config, str(tmp_path))
  with pytest.raises(core.UserError, match="no sub-network chosen"):
    pipeline.export(config, str(tmp_path))
  config.subnet.channels = "8_8_8_8_8_8_8_16"
  with pytest.raises(core.UserError, match="wider than the super-network"):
    pipeline.export(config, str(tmp_path))
  config.subnet.channels = "8_8_8_8_8_8_8_8"
  with pytest.raises(core.UserError, match="supernet/checkpoints; distill the super-network"):
    pipeline.export(config, str(tmp_path))
  with pytest.raises(core.UserError, match="unknown mode 'train'"):
    pipeline.run("train", config, str(tmp_path))
  with pytest.raises(core.UserError, match="not an exported generator"):
    standalone.load_generator(str(tmp_path))


def test_evaluate_reports_fid_and_kid_with_inception_weights(run, tmp_path, monkeypatch):
  """The FID path end to end on random Inception weights (the numbers mean nothing; the
  2048-d matrix square root is replaced by the diagonal formula to keep the test fast)."""
  from lite_jax.gan_compression import fid
  config, workdir, _ = run
  weights = str(tmp_path / "inception.npz")
  fid.save_npz_weights(fid.init_inception_variables(jax.random.key(0)), weights)
  diagonal = lambda mu1, s1, mu2, s2: float(
      np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2))
  monkeypatch.setattr(fid, "frechet_distance", diagonal)
  config = configs.get_config("tiny")
  config.eval.fid_weights = weights
  result = pipeline.evaluate(config, workdir)
  for key in ("fid", "kid", "kid_std", "teacher_fid", "teacher_kid"):
    assert np.isfinite(result[key]), key
  assert result["fid"] != result["teacher_fid"]


def test_fid_search_without_weights_is_a_user_error(run):
  config, workdir, _ = run
  config = configs.get_config("tiny")
  config.search.metric = "fid"
  with pytest.raises(core.UserError, match="Inception weights"):
    pipeline.search(config, workdir)


def test_pipeline_checks_weight_files_before_training(tmp_path):
  config = configs.get_config("tiny")
  config.search.metric = "fid"
  with pytest.raises(core.UserError, match="search.metric='fid' needs"):
    pipeline.pipeline(config, str(tmp_path))
  config.eval.fid_weights = str(tmp_path / "missing.pth")
  with pytest.raises(core.UserError, match="is not a file"):
    pipeline.pipeline(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "teacher")


def _exported_and_teacher(config, workdir):
  """`{"compressed": (module, variables), "teacher": ...}` as the library runs them."""
  recipe = pipeline.recipe_for(config)
  teacher = pipeline.trained_teacher(recipe, workdir, recipe.load_task(workdir))
  return {"compressed": standalone.load_generator(os.path.join(workdir, "export")),
          "teacher": (teacher.generator, teacher.variables)}


def test_portable_artifacts_match_the_generators_in_process_and_without_lite_jax(run):
  """`compressed.jaxexport` / `teacher.jaxexport` (symbolic batch) against the library's
  generators at two batch sizes, loaded here and run by `run_exported.py` in a plain-JAX
  subprocess (no lite_jax on its path)."""
  from lite_jax.core import export as portable
  config, workdir, results = run
  for name, (module, variables) in _exported_and_teacher(config, workdir).items():
    artifact = results["export"][f"{name}_jaxexport"]
    assert artifact == os.path.join(workdir, "export", f"{name}.jaxexport")
    model = portable.load(artifact)
    assert model.signature["metadata"]["channels"] == "_".join(map(str, module.channels))
    forward = jax.jit(module.apply)
    for batch in (1, 3):
      x = jax.random.uniform(jax.random.key(batch), (batch, 16, 16, 3), minval=-1, maxval=1)
      expected = np.asarray(forward(variables, x))
      np.testing.assert_allclose(model(images=x), expected, atol=1e-5)
    outputs = portable.run_standalone(artifact, {"images": np.asarray(x)})
    np.testing.assert_allclose(outputs["output"], expected, atol=1e-5)


def test_export_phase_writes_onnx_models_that_onnxruntime_runs(run):
  """`export.onnx`: `compressed.onnx` and `teacher.onnx`, run by onnxruntime at two batch
  sizes, within 1e-4 of JAX."""
  pytest.importorskip("jax2onnx", reason="jax2onnx is not installed (requirements-export.txt)")
  ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
  config, workdir, _ = run
  config = config.copy_and_resolve_references()  # the same export again, plus ONNX
  config.export.onnx = True
  result = pipeline.export(config, workdir)
  for name, (module, variables) in _exported_and_teacher(config, workdir).items():
    session = ort.InferenceSession(result[f"{name}_onnx"], providers=["CPUExecutionProvider"])
    forward = jax.jit(module.apply)
    for batch in (1, 3):
      x = np.asarray(jax.random.uniform(jax.random.key(batch), (batch, 16, 16, 3), minval=-1,
                                        maxval=1))
      (out,) = session.run(None, {"input": x})
      assert np.abs(out - np.asarray(forward(variables, x))).max() <= 1e-4, name


def test_the_notebook_runs_on_the_finished_pipeline_and_prints_its_results(finished_run,
                                                                         monkeypatch):
  """The quickstart's cells top to bottom on the copy of the finished workdir: its training
  phases resume, the search and export run again (deterministic), so the lines it prints hold
  the fixture's numbers; and its horse2zebra profile gives the reference's teacher size."""
  _, _, results, finished = finished_run
  text, outputs = execute("gan_compression_quickstart.ipynb", finished, monkeypatch)
  assert re.search(r"ResNet-9 teacher \(ngf 64\) +- +11\.378M +56\.83G", text)
  assert "jaxpr count of 16_16_24_16_32_64_16_24: 2.6406G MACs" in text
  s, e = results["search"], results["evaluate"]
  assert (f"search: {s['channels']} at {s['macs'] / 1e6:.3f}M MACs (budget "
          f"{s['budget_macs'] / 1e6:.3f}M), held-out l1 {s['score']:.4f}; {s['num_evaluated']} "
          f"of {s['search_space_size']} sub-networks scored") in text
  assert (f"teacher: {e['teacher_macs'] / 1e6:.3f}M MACs, {e['teacher_params']} params; test L1 "
          f"{e['teacher_l1']:.4f}, PSNR {e['teacher_psnr']:.2f} dB") in text
  assert (f"compressed {e['channels']}: {e['macs'] / 1e6:.3f}M MACs ({e['macs_ratio']:.1f}x "
          f"fewer), {e['params']} params; test L1 {e['l1']:.4f}, PSNR {e['psnr']:.2f} dB; L1 to "
          f"the teacher {e['l1_to_teacher']:.4f}") in text
  macs = results["export"]["macs"]
  assert f"{macs} MACs traced, {macs} in closed form" in text
  difference = re.search(r"artifact vs module on 3 images: max \|difference\| (\S+)", text)
  assert difference and float(difference.group(1)) <= 1e-5
  assert count_images(outputs) == 2  # compare.png and search.png
