"""End to end: `python -m experiments.pvcnn_shapenet` / `pvcnn_s3dis` on the tiny presets, and
`python -m benchmarks.pvcnn --smoke`.

Train, SIGKILL after a checkpoint, resume (continuing at the saved step), evaluate, profile,
export (checked against the model and run without lite_jax), the quickstart notebook on the
finished run, and bad input that exits non-zero with one sentence. One process per mode, as a
user runs them; they share the test session's compilation cache (tests/conftest.py), so only
the first one compiles.
"""

import json
import os
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from data import pointclouds as pc
from experiments.configs import pvcnn_s3dis, pvcnn_shapenet
from kernels import _dispatch
from kernels.devoxelize import devoxelize_path
from kernels.voxelize import voxelize_path
from lite_jax import pvcnn
from lite_jax.core import count_params, read_metrics
from lite_jax.core import export as portable
from lite_jax.pvcnn import train
from tests import devices
from tests.notebooks.notebook_runner import count_images, execute, snapshot

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPENET = "--config=experiments/configs/pvcnn_shapenet.py:tiny"
STEPS_PER_EPOCH = 4  # tiny: 32 shapes, batch 8


def subprocess_env() -> dict[str, str]:
  """The test session's environment (its compilation cache and fast-compile flags) on one CPU
  device: these tests check command lines, not sharding."""
  return devices.environment(1)


@pytest.fixture(scope="module")
def env():
  return subprocess_env()


def _run(env, module, *flags, timeout=600):
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _result(process) -> dict:
  assert process.returncode == 0, process.stderr[-3000:]
  return json.loads(process.stdout.strip().splitlines()[-1])


def _saved_steps(workdir) -> list[int]:
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(
      folder) else []


@pytest.fixture(scope="module")
def shapenet_run(tmp_path_factory, env):
  """The ShapeNet launcher on the tiny preset: train, SIGKILL after a checkpoint, a time-limited
  rerun (no evaluation), the resumed run to the end; then a copy of the finished workdir for the
  notebook (the export and eval tests add files to the original)."""
  workdir = str(tmp_path_factory.mktemp("pvcnn_shapenet"))
  long_run = subprocess.Popen(
      [sys.executable, "-m", "experiments.pvcnn_shapenet", SHAPENET, f"--workdir={workdir}",
       "--config.train.num_epochs=1000"], cwd=REPO, env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 480
  while not _saved_steps(workdir) and time.time() < deadline and long_run.poll() is None:
    time.sleep(0.5)
  long_run.send_signal(signal.SIGKILL)
  long_run.wait()
  saved = _saved_steps(workdir)[-1]
  assert saved >= 2

  total = saved + 2
  epochs = f"--config.train.num_epochs={total / STEPS_PER_EPOCH}"
  stopped = _run(env, "experiments.pvcnn_shapenet", SHAPENET, f"--workdir={workdir}", epochs,
                 "--config.train.steps_per_run=1")  # a time-limited job: no evaluation yet
  resumed = _result(_run(env, "experiments.pvcnn_shapenet", SHAPENET, f"--workdir={workdir}",
                         epochs))
  finished = snapshot(workdir, str(tmp_path_factory.mktemp("pvcnn_notebook") / "work"))
  return types.SimpleNamespace(workdir=workdir, saved=saved, total=total, epochs=epochs,
                               stopped=stopped, resumed=resumed, finished=finished)


@pytest.fixture(scope="module")
def trained(shapenet_run):
  """The finished run's model: `(config, model, variables, step)` (one device's XLA path)."""
  config = pvcnn_shapenet.get_config("tiny")
  spec = train.task_spec(config)
  variables, step = pvcnn.trained_variables(config, shapenet_run.workdir)
  model = pvcnn.build_model(spec.task, config.model, spec.num_classes, spec.num_categories)
  return config, model, variables, step


@pytest.mark.slow
def test_shapenet_train_kill_resume(shapenet_run):
  run = shapenet_run
  assert run.stopped.returncode == 0 and not run.stopped.stdout.strip(), run.stopped.stderr[-3000:]
  assert run.stopped.stderr.strip().splitlines()[-1] == (
      f"training stopped at step {run.saved + 1} of {run.total} (train.steps_per_run); rerun "
      f"the same command to continue.")
  resumed = run.resumed
  assert resumed["step"] == run.total and 0 <= resumed["miou"] <= 1
  assert resumed["voxelize_path"] == voxelize_path() and os.path.getsize(resumed["png"]) > 10_000
  steps = [r["step"] for r in read_metrics(run.workdir) if "loss" in r]
  assert steps[-2:] == [run.saved + 1, run.saved + 2]  # The resumed run picked up after `saved`.


@pytest.mark.slow
def test_shapenet_eval_and_profile(shapenet_run, env):
  run = shapenet_run
  evaluated = _result(_run(env, "experiments.pvcnn_shapenet", SHAPENET,
                           f"--workdir={run.workdir}", run.epochs, "--mode=eval"))
  assert evaluated["step"] == run.total
  assert evaluated["miou"] == pytest.approx(run.resumed["miou"])  # Deterministic votes.

  profiled = _result(_run(env, "experiments.pvcnn_shapenet", SHAPENET, "--mode=profile"))
  assert profiled["params"] > 0 and profiled["macs"] > 0


def _held_out_inputs(config, count: int) -> dict[str, np.ndarray]:
  """One sample of each of the first `count` held-out synthetic shapes (mixed categories)."""
  shapes = pc.SyntheticPartShapes(count, config.data.seed + 1, config.data.synthetic_points)
  rng = np.random.default_rng(0)
  samples = [pc.part_example(shapes[i], config.data.num_points, rng, config.data.with_normals,
                             augment=False) for i in range(count)]
  return {"points": np.stack([s["points"] for s in samples]),
          "category": np.stack([s["category"] for s in samples]).astype(np.int32)}


@pytest.mark.slow
def test_the_exported_segmenter_matches_the_model_and_runs_without_lite_jax(
    shapenet_run, trained, env):
  """`--mode=export` of the finished checkpoint: the artifact's logits are the library model's
  (eval mode) at batch 1 and 2 and at another point count (both are symbolic), in this process
  and in a fresh interpreter that cannot import lite_jax."""
  config, model, variables, step = trained
  line = _result(_run(env, "experiments.pvcnn_shapenet", SHAPENET,
                      f"--workdir={shapenet_run.workdir}", "--mode=export"))
  n = config.data.num_points
  assert line["path"] == os.path.join(shapenet_run.workdir, "export", "pvcnn_shapenet.jaxexport")
  assert line["params"] == count_params(variables["params"]) and line["step"] == step
  assert line["inputs"] == {"points": ["batch", "points", 6], "category": ["batch"]}
  assert line["outputs"] == [["batch", "points", 10]] and line["kernel_path"] == "xla"
  assert set(line["platforms"]) == {"cpu", "cuda", "tpu"}

  inputs = _held_out_inputs(config, 2)
  assert len(set(inputs["category"])) == 2
  # One batch of the model serves both sizes: in eval mode a sample's logits do not depend on
  # the others in its batch (BatchNorm uses the running statistics).
  want = np.asarray(jax.jit(lambda p, c: model.apply(variables, p, c, train=False))(
      inputs["points"], inputs["category"]))
  artifact = portable.load(line["path"])
  for batch in (1, 2):
    got = artifact(inputs["points"][:batch], inputs["category"][:batch])
    assert got.shape == (batch, n, 10)
    np.testing.assert_allclose(np.asarray(got), want[:batch], rtol=1e-5, atol=1e-5)
  fewer = inputs["points"][:, :100]
  got = artifact(fewer, inputs["category"])
  np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(
      lambda p, c: model.apply(variables, p, c, train=False))(fewer, inputs["category"])),
                             rtol=1e-5, atol=1e-5)
  standalone = portable.run_standalone(line["path"], inputs)
  np.testing.assert_allclose(standalone["output"], want, rtol=1e-5, atol=1e-5)
  assert artifact.signature["metadata"]["part_ranges"] == [
      list(r) for r in pc.SYNTHETIC_PARTS.part_ranges]


@pytest.mark.slow
def test_the_notebook_runs_on_the_finished_pipeline_and_prints_its_results(
    shapenet_run, trained, env, monkeypatch):
  """The quickstart's cells top to bottom on a copy of the finished run: its training resumes
  (evaluation only), so the numbers it prints are the run's; on one device, like the launcher,
  so the kernel reuses the launcher's compiled programs."""
  monkeypatch.setenv("XLA_FLAGS", env["XLA_FLAGS"])
  _, _, variables, step = trained
  result = shapenet_run.resumed
  text, outputs = execute("pvcnn_quickstart.ipynb", shapenet_run.finished, monkeypatch)
  path = voxelize_path()
  assert f"kernel paths here: voxelize {path}, devoxelize {devoxelize_path()}" in text
  assert "r= 8:" in text
  if path == _dispatch.XLA:  # the op is its reference (a GPU's atomics may reorder the sums)
    assert "kernel vs reference max |diff| 0.0e+00" in text
  assert f"instance mIoU {result['miou']:.3f}, class mIoU {result['class_miou']:.3f}" in text
  assert "per category: " + ", ".join(
      f"{name} {result['iou/' + name]:.3f}" for name in pc.SYNTHETIC_PARTS.categories) in text
  assert f"voxel ops ran as: voxelize {result['voxelize_path']}" in text
  assert (f"exported {count_params(variables['params'])} parameters (step {step})") in text
  assert "artifact: logits (4, 64, 10), point accuracy" in text
  assert count_images(outputs) == 3  # the voxel round trip, the evaluation, the artifact's


@pytest.mark.slow
@pytest.mark.parametrize("module,flags,message", [
    ("experiments.pvcnn_shapenet", ["--config=experiments/configs/pvcnn_shapenet.py:huge"],
     "unknown preset 'huge'"),
    ("experiments.pvcnn_s3dis", ["--config.data.source=local", "--mode=eval"],
     "set --config.data.manual_dir")])
def test_launchers_reject_bad_input_with_one_sentence(tmp_path, env, module, flags, message):
  process = _run(env, module, *flags, f"--workdir={tmp_path}")
  assert process.returncode == 2
  last = process.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last and last.endswith(".")


def test_scene_protocol_with_an_oracle():
  """The S3DIS protocol end to end (windows -> votes -> rooms -> OA / mIoU) with a `run` that
  answers every sample with its true labels: every covered point is right."""
  config = pvcnn_s3dis.get_config("tiny")
  spec = train.task_spec(config)
  windows = pc.synthetic_room_windows(2, seed=0, points_per_m2=20, max_points=256)
  truth = {}  # points row bytes -> label, to answer like a perfect model would

  for w in windows:
    for point, label in zip(w["points"], w["labels"]):
      truth[point.tobytes()] = label

  def oracle(batch):
    labels = np.array([[truth[p.tobytes()] for p in sample] for sample in batch["points"]])
    return np.ones(labels.shape), labels

  result, clouds = train._evaluate_scenes(oracle, spec, windows, config)
  assert result["overall_accuracy"] > 0.99 and result["miou"] > 0.95
  assert len(clouds) == 1 and clouds[0][0] == "synthetic_0/room_0"


@pytest.mark.slow
def test_benchmark_smoke_run(env):
  process = _run(env, "benchmarks.pvcnn", "--smoke", "--models=pvcnn_c0p25")
  assert process.returncode == 0, process.stderr[-3000:]
  records = [json.loads(line) for line in process.stdout.strip().splitlines()]
  kernels = [r for r in records if r["benchmark"] == "kernel"]
  assert {(r["op"], r["direction"], r["path"]) for r in kernels} == {
      (op, direction, path) for op in ("voxelize", "devoxelize")
      for direction in ("forward", "backward")
      for path in (_dispatch.XLA, _dispatch.PALLAS if jax.default_backend() == "gpu"
                   else _dispatch.PALLAS_INTERPRET)}
  assert all(r["time_ms"] > 0 and r["gbps"] > 0 and r["device"] for r in kernels)
  (model,) = [r for r in records if r["benchmark"] == "model"]
  assert model["model"] == "pvcnn_c0p25" and model["path"] == voxelize_path()
  assert model["latency_ms"] > 0 and model["peak_memory_bytes"] > 0
