"""The fake CPU device count of XLA_FLAGS in one place: the test session's (tests/conftest.py)
and that of the processes the tests start (launchers, multi-process runs, notebook kernels)."""

from __future__ import annotations

import os
import re

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
# Modules whose meshes need 8 devices: the 2-device session skips them and
# tests/test_eight_devices.py runs them in a session of their own.
EIGHT_DEVICE_MODULES = ("tests/lite_transformer/test_sharding.py",
                        "tests/kernels/test_sharded.py")


def xla_flags(devices: int, flags: str | None = None) -> str:
  """`flags` (default: this process's XLA_FLAGS) with `devices` fake CPU devices."""
  flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
  others = re.sub(rf"{_DEVICE_FLAG}=\d+", "", flags).split()
  return " ".join([f"{_DEVICE_FLAG}={devices}", *others])


def environment(devices: int, **variables: str) -> dict[str, str]:
  """This process's environment (compilation cache, fast-compile flags) for a child process
  that sees `devices` fake CPU devices, plus `variables`."""
  return dict(os.environ, XLA_FLAGS=xla_flags(devices), **variables)
