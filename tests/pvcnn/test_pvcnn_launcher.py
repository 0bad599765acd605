"""End to end: `python -m experiments.pvcnn_shapenet` / `pvcnn_s3dis` on the tiny presets, and
`python -m benchmarks.pvcnn --smoke`.

Train, SIGKILL after a checkpoint, resume (continuing at the saved step), evaluate, profile,
and bad input that exits non-zero with one sentence. One process per mode, as a user runs
them; they share the test session's compilation cache (tests/conftest.py), so only the first
one compiles.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from data import pointclouds as pc
from experiments.configs import pvcnn_s3dis
from kernels import _dispatch
from kernels.voxelize import voxelize_path
from lite_jax.core import read_metrics
from lite_jax.pvcnn import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPENET = "--config=experiments/configs/pvcnn_shapenet.py:tiny"
STEPS_PER_EPOCH = 4  # tiny: 32 shapes, batch 8


def subprocess_env() -> dict[str, str]:
  """The test session's environment (its compilation cache and fast-compile flags) on one CPU
  device: these tests check command lines, not sharding."""
  return dict(os.environ, XLA_FLAGS=os.environ["XLA_FLAGS"].replace(
      "--xla_force_host_platform_device_count=8", ""))


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


@pytest.mark.slow
def test_shapenet_train_kill_resume_eval_profile(tmp_path, env):
  workdir = str(tmp_path)
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
  stopped = _run(env, "experiments.pvcnn_shapenet", SHAPENET, f"--workdir={workdir}",
                 f"--config.train.num_epochs={total / STEPS_PER_EPOCH}",
                 "--config.train.steps_per_run=1")  # a time-limited job: no evaluation yet
  assert stopped.returncode == 0 and not stopped.stdout.strip(), stopped.stderr[-3000:]
  assert stopped.stderr.strip().splitlines()[-1] == (
      f"training stopped at step {saved + 1} of {total} (train.steps_per_run); rerun the "
      f"same command to continue.")
  resumed = _result(_run(env, "experiments.pvcnn_shapenet", SHAPENET, f"--workdir={workdir}",
                         f"--config.train.num_epochs={total / STEPS_PER_EPOCH}"))
  assert resumed["step"] == total and 0 <= resumed["miou"] <= 1
  assert resumed["voxelize_path"] == voxelize_path() and os.path.getsize(resumed["png"]) > 10_000
  steps = [r["step"] for r in read_metrics(workdir) if "loss" in r]
  assert steps[-2:] == [saved + 1, saved + 2]  # The resumed run picked up after `saved`.

  evaluated = _result(_run(env, "experiments.pvcnn_shapenet", SHAPENET, f"--workdir={workdir}",
                           f"--config.train.num_epochs={total / STEPS_PER_EPOCH}", "--mode=eval"))
  assert evaluated["step"] == total
  assert evaluated["miou"] == pytest.approx(resumed["miou"])  # Deterministic votes.

  profiled = _result(_run(env, "experiments.pvcnn_shapenet", SHAPENET, "--mode=profile"))
  assert profiled["params"] > 0 and profiled["macs"] > 0


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
