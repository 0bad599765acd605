"""Multi-host for real: two CPU processes on localhost join one job (`jax.distributed`, gloo
collectives), train the tiny translation preset data-parallel across their 8 devices,
checkpoint, resume, and match the same training in one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from lite_jax.core import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A constant learning rate, so that training 4 updates and resuming to 8 is the same run as
# training 8 at once.
COMMON = ["-m", "experiments.wmt_lite", "--config=experiments/configs/wmt_lite.py:tiny",
          "--config.optim.schedule=constant"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(workdir, *flags) -> tuple[dict, str]:
  """Runs the launcher as processes 0 and 1 of one job, 4 CPU devices each; returns process
  0's result line and both processes' stderr."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  processes = [subprocess.Popen(
      [sys.executable, *COMMON, f"--workdir={workdir}", *flags,
       "--config.mesh.distributed=true", "--config.mesh.cpu_collectives=gloo",
       f"--config.mesh.coordinator_address=localhost:{port}",
       "--config.mesh.num_processes=2", f"--config.mesh.process_id={i}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=900) for p in processes]
  errors = "\n".join(err[-3000:] for _, err in outputs)
  for p in processes:
    assert p.returncode == 0, errors
  # Only process 0 prints the result (gloo itself logs its connections on stdout).
  assert not [line for line in outputs[1][0].splitlines() if line.startswith("{")]
  return json.loads(outputs[0][0].strip().splitlines()[-1]), errors


def _one_process(workdir, *flags) -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, *COMMON, f"--workdir={workdir}", *flags], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_train_checkpoint_resume_and_match_one(tmp_path):
  multi = tmp_path / "multi"
  first, _ = _two_processes(multi, "--config.optim.total_updates=4")
  assert first["steps"] == 4
  assert sorted(os.listdir(multi / "checkpoints")) == ["2", "4"]
  resumed, errors = _two_processes(multi, "--config.optim.total_updates=8")
  assert "resuming from step 4" in errors
  single = _one_process(tmp_path / "single", "--config.optim.total_updates=8")
  for key in ("valid_loss", "valid_ppl"):
    assert resumed[key] == pytest.approx(single[key], rel=1e-4)
  assert resumed["bleu"] == pytest.approx(single["bleu"], abs=1e-6)
  assert resumed["test_sentences"] == single["test_sentences"]
  losses = lambda w: [r["train_loss"] for r in read_metrics(w) if "train_loss" in r]
  np.testing.assert_allclose(losses(multi), losses(tmp_path / "single"), rtol=1e-4)
