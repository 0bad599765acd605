"""The modules that need meshes larger than the session's 2 devices (`devices.EIGHT_DEVICE_MODULES`:
FSDP and tensor parallelism on 4 x 2, the voxel kernels per data shard), run as one pytest
session with 8 fake CPU devices. The main session skips them (tests/conftest.py)."""

import os
import re
import subprocess
import sys

import jax
import pytest

from tests import devices

pytestmark = pytest.mark.slow  # a child pytest session (deselect with -m "not slow")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_eight_device_modules_pass_on_eight_devices():
  if jax.device_count() >= 8:
    pytest.skip("this session has 8 devices, so the modules ran in it")
  run = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *devices.EIGHT_DEVICE_MODULES],
      cwd=REPO, env=devices.environment(8), capture_output=True, text=True, timeout=900)
  summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
  assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
  # Every test ran: nothing skipped for want of devices.
  assert re.fullmatch(r"=* ?\d+ passed(, \d+ warnings?)? in .*", summary), summary
