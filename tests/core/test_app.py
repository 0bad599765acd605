"""The shared launcher (`core.app.run`): every bad input is one sentence and exit status 2, a
misspelled config key names the closest valid one, the default workdir follows the preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lite_jax.core import app
from tests.core import toy_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CONFIG = os.path.join(ROOT, "tests", "core", "toy_config.py")


def _run(*flags, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT)  # the toy launcher from any working directory
  return subprocess.run([sys.executable, "-m", "tests.core.toy_app", *flags], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flags,message", [
    (["--config.train.log_every_stepz=3"],
     "error: --config.train.log_every_stepz: the config has no field 'train.log_every_stepz'; "
     "did you mean config.train.log_every_steps?"),
    (["--config.trian.log_every_steps=3"],
     "error: --config.trian.log_every_steps: the config has no field "
     "'trian.log_every_steps'; did you mean config.train.log_every_steps?"),
    (["--config.total_steps=many"], "error: flag --config.total_steps=many: invalid literal "
                                    "for int() with base 10: 'many'"),
    (["--mode=evaluate"], "error: flag --mode=evaluate: value should be one of <train>"),
    (["--workdir=WORKDIR/file"], "error: --workdir=WORKDIR/file is a file, not a directory; "
                                 "pass a directory."),
    (["--workdir=WORKDIR/file/sub"], "error: --workdir=WORKDIR/file/sub cannot be created "
                                     "(WORKDIR/file is not a writable directory); pass another "
                                     "--workdir."),
    (["--flagfile=WORKDIR/missing.flags"], "error: "),
    (["extra"], "error: unexpected arguments: extra; flags take the form --name=value."),
])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, flags, message):
  (tmp_path / "file").write_text("")
  flags = [f.replace("WORKDIR", str(tmp_path)) for f in flags]
  if not any(f.startswith("--workdir") for f in flags):
    flags.append(f"--workdir={tmp_path}/run")
  result = _run(*flags)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [message.replace("WORKDIR", str(tmp_path))] or (
      message == "error: " and len(result.stderr.strip().splitlines()) == 1
      and result.stderr.startswith("error: "))
  assert not result.stdout


def test_default_workdir_is_named_after_the_config_and_preset(tmp_path):
  result = _run(f"--config={TOY_CONFIG}:small",
                "--config.total_steps=2", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 2
  assert os.path.isdir(tmp_path / "runs" / "toy_config_small" / "checkpoints")


def test_config_keys_cover_nested_fields():
  keys = app.config_keys(toy_config.get_config())
  assert {"train", "train.log_every_steps", "mesh.rules.embed", "learning_rate"} <= set(keys)


def test_steps_per_run_stops_with_one_line_and_exit_0_and_the_rerun_finishes(tmp_path):
  flags = (f"--workdir={tmp_path}", "--config.train.steps_per_run=5")
  stopped = _run(*flags)
  assert stopped.returncode == 0, stopped.stderr[-2000:]
  assert stopped.stderr.strip().splitlines()[-1] == (  # after the progress bar
      "toy stopped at step 5 of 12 (train.steps_per_run); rerun the same command to continue.")
  assert not stopped.stdout
  finished = _run(f"--workdir={tmp_path}")
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert json.loads(finished.stdout.strip().splitlines()[-1])["step"] == 12
