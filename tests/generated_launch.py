"""Shared by the tests of the trainers on generated data (PSD, PPD): the tiny preset on a
given data folder, and the launcher run as a user runs it."""

import os
import subprocess
import sys
from typing import Callable

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(get_config: Callable[[str], ml_collections.ConfigDict], data_dir: str,
                **train_overrides) -> ml_collections.ConfigDict:
  """`get_config("tiny")` reading (and writing) its ArrayRecord files under `data_dir`, with
  `config.train` fields overridden."""
  config = get_config("tiny")
  config.data.data_dir = data_dir
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def launch(module: str, *flags: str) -> subprocess.CompletedProcess:
  """`python -m <module> --config=experiments/configs/<paper>.py:tiny <flags>` from the repo
  root, with the test session's environment (XLA flags, compilation cache)."""
  paper = module.rsplit(".", 1)[-1]
  return subprocess.run([sys.executable, "-m", module,
                         f"--config=experiments/configs/{paper}.py:tiny", *flags], cwd=REPO,
                        env=dict(os.environ), capture_output=True, text=True, timeout=600)
