"""The shared training loop: exact resume, intervals, no broken checkpoint, interruptions and
corrupt checkpoints, on the toy trainer of `toy_app.py` (every paper trains on this loop)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax import core
from tests.core import toy_app, toy_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**overrides):
  config = toy_config.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def _restore(workdir, step):
  loop, abstract, _ = toy_app.make_loop(_config(), str(workdir))
  with core.Checkpointer(loop.checkpoint_dir) as ckpt:
    return ckpt.restore(step, abstract)[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The reference: 15 steps in one go, by step index and through an iterator."""
  return {iterator: toy_app.train(_config(total_steps=15, iterator=iterator),
                                  str(tmp_path_factory.mktemp(f"ref{iterator}")))["w"]
          for iterator in (False, True)}


@pytest.mark.parametrize("iterator", [False, True])
def test_stopped_and_resumed_runs_equal_an_uninterrupted_one(tmp_path, uninterrupted, iterator):
  config = _config(total_steps=15, iterator=iterator)
  assert toy_app.train(config, str(tmp_path), stop_after=5)["step"] == 5
  assert toy_app.train(config, str(tmp_path), stop_after=4)["step"] == 9
  assert toy_app.train(config, str(tmp_path))["w"] == uninterrupted[iterator]
  steps = [r["step"] for r in core.read_metrics(tmp_path) if "loss" in r]
  assert steps == [4, 5, 8, 9, 12, 15]  # each run logs its last step


def test_intervals_window_means_and_saved_config(tmp_path):
  config = _config(total_steps=12)
  toy_app.train(config, str(tmp_path))
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [3, 6, 9, 12]
  records = core.read_metrics(tmp_path)
  assert [r["step"] for r in records] == [4, 8, 12]
  # Each logged loss is the mean over its window's steps: SGD replayed in numpy.
  w, losses = np.zeros(4), []
  for index in range(12):
    batch = toy_app.batch_at(index)
    residual = batch["x"] @ w - batch["y"]
    losses.append(np.mean(residual ** 2))
    w = w - config.learning_rate * 2 * batch["x"].T @ residual / len(residual)
  np.testing.assert_allclose([r["loss"] for r in records],
                             np.mean(np.reshape(losses, (3, 4)), axis=1), rtol=1e-5)
  with core.Checkpointer(tmp_path / "checkpoints") as ckpt:
    assert ckpt.restore_config(12) == json.loads(json.dumps(config.to_dict()))


def test_validation_hook_runs_at_its_interval_and_at_the_end(tmp_path):
  loop, abstract, init = toy_app.make_loop(_config(total_steps=10), str(tmp_path))
  calls = []
  loop.intervals.eval_every_steps = 4
  loop.evaluate = lambda state: calls.append(int(state.step)) or {"valid": float(state.step)}
  result = core.loop.run(loop, abstract, init)
  assert calls == [4, 8, 10]
  assert result.validation == {"valid": 10.0}
  assert [r.get("valid") for r in core.read_metrics(tmp_path)] == [4.0, 8.0, 10.0]


@pytest.mark.parametrize("learning_rate,checkpoint_every,what", [
    (1e36, 2, "the loss became inf at step 2"),  # step 2's loss overflows: not saved
    (1e39, 1, "the train state holds NaN or inf after step 1"),  # finite loss, broken state
])
def test_a_non_finite_state_is_never_checkpointed(tmp_path, learning_rate, checkpoint_every,
                                                  what):
  config = _config(total_steps=12, learning_rate=learning_rate)
  config.train.log_every_steps = 6  # not aligned with the checkpoints
  config.train.checkpoint_every_steps = checkpoint_every
  with pytest.raises(core.NonFiniteError, match=what):
    toy_app.train(config, str(tmp_path))
  for step_dir in glob.glob(str(tmp_path / "checkpoints" / "*")):
    assert core.all_finite(_restore(tmp_path, int(os.path.basename(step_dir))))
  # What the error advises works: a sane learning rate resumes from a good state.
  assert toy_app.train(_config(total_steps=12), str(tmp_path))["step"] == 12


def _corrupt_data_file(step_dir):
  """Truncates the OCDBT data files, as a disk filling up mid-save would."""
  for path in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(max(1, os.path.getsize(path) // 3))


def _empty_data_metadata(step_dir):
  open(os.path.join(step_dir, "data", "metadata"), "w").close()


def _non_finite(step_dir):
  """Replaces the step with a NaN state, as an older version of the loop could save."""
  workdir = os.path.dirname(os.path.dirname(step_dir))
  state = _restore(workdir, int(os.path.basename(step_dir)))
  shutil.rmtree(step_dir)
  with core.Checkpointer(os.path.dirname(step_dir), async_save=False) as ckpt:
    ckpt.save(int(os.path.basename(step_dir)),
              state.replace(params={"w": jnp.full((4,), jnp.nan)}),
              data_state={"next_batch": int(os.path.basename(step_dir))})


@pytest.mark.parametrize("damage", [_corrupt_data_file, _empty_data_metadata, _non_finite])
def test_an_unusable_latest_checkpoint_falls_back_to_the_step_before(tmp_path, uninterrupted,
                                                                     damage, caplog):
  toy_app.train(_config(total_steps=12), str(tmp_path))
  damage(str(tmp_path / "checkpoints" / "12"))
  result = toy_app.train(_config(total_steps=15), str(tmp_path))
  assert result["w"] == uninterrupted[False]  # resumed at step 9, then as if never stopped
  assert os.path.isdir(tmp_path / "checkpoints" / "12.unusable")
  assert any("checkpoints/12" in r.getMessage() and "fell back" in r.getMessage()
             for r in caplog.records)


def _launch(workdir, *flags, **kwargs):
  return subprocess.Popen([sys.executable, "-m", "tests.core.toy_app", f"--workdir={workdir}",
                           *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kwargs)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_step_reached_and_the_rerun_finishes_identically(
    tmp_path, uninterrupted, signum):
  flags = ["--config.total_steps=15", "--config.step_sleep_s=0.3"]
  process = _launch(tmp_path, *flags)
  deadline = time.time() + 120
  while not os.path.isdir(tmp_path / "checkpoints" / "3") and time.time() < deadline:
    time.sleep(0.1)
  process.send_signal(signum)
  out, err = process.communicate(timeout=120)
  assert process.returncode == 128 + signum, err[-2000:]
  last = err.strip().splitlines()[-1]
  step = int(last.split("interrupted at step ")[1].split(";")[0])
  assert last == f"interrupted at step {step}; rerun the same command to resume."
  assert 3 <= step < 15 and str(step) in os.listdir(tmp_path / "checkpoints")
  assert "Traceback" not in err and not out
  rerun = _launch(tmp_path, "--config.total_steps=15")
  out, err = rerun.communicate(timeout=120)
  assert rerun.returncode == 0, err[-2000:]
  assert json.loads(out.strip().splitlines()[-1])["w"] == uninterrupted[False]
