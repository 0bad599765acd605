"""How XLA compiles for the test session (tests/conftest.py) and for the processes the tests
start (launchers, multi-process runs, notebook kernels), in one place: the fake CPU device
count in XLA_FLAGS, and XLA's optimizations turned back on for one test's programs.

The session compiles without XLA's optimizations, since compiling is most of its time. A
test whose time is running its programs (an attack's L-BFGS loops) turns them back on for
what it compiles, with `optimized()`.
"""

from __future__ import annotations

import contextlib
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
  """This process's environment (compilation cache, XLA settings) for a child process that
  sees `devices` fake CPU devices, plus `variables`."""
  return dict(os.environ, XLA_FLAGS=xla_flags(devices), **variables)


@contextlib.contextmanager
def optimized():
  """XLA's optimizations for the programs compiled inside (a context or a test decorator).
  A program already compiled (same function and shapes) is reused as it was compiled."""
  import jax  # pylint: disable=g-import-not-at-top  (the conftest sets XLA_FLAGS first)
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)
