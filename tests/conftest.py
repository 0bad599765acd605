"""Test-session setup, applied before any test imports jax.

- 8 fake CPU devices, so sharding and data-parallel tests run on any machine.
- A persistent compilation cache shared by the tests and the launchers they start: the
  end-to-end tests compile the same tiny programs several times (fresh runs, resumed runs,
  subprocesses), and compiling dominates their time on a 2-core machine.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "lite_jax_test_compile_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
