"""Test-session setup, applied before any test imports jax.

- 8 fake CPU devices, so sharding and data-parallel tests run on any machine.
- XLA:CPU without LLVM's expensive optimizations: the tests' programs are tiny, so compiling
  them is most of the suite's time, and these flags cut a GAN training step's compile from 23 s
  to 13 s while results stay within the tests' tolerances (launchers the tests start inherit
  them through the environment). Run time does not undo the gain: four of the slowest files
  (SPADE training, Lite Transformer train and compress, HAQ), each cold-cache on a shared
  2-core VM, took 712 s user CPU in all with both flags, 902 s with only the LLVM one and
  925 s with neither (each file was fastest with both), likely because XLA:CPU runs
  convolutions and matmuls as precompiled library calls that these flags do not affect.
- A persistent compilation cache shared by the tests and the launchers they start: the
  end-to-end tests compile the same tiny programs several times (fresh runs, resumed runs,
  subprocesses), and compiling dominates their time on a 2-core machine.
- End-to-end files (marked `slow`) run first. The README's `-n 2 --dist loadfile` hands out
  whole files, and pytest-xdist (3.8) by default hands out the files with the most tests
  first, which puts the few-test end-to-end files (fixtures of one to a few minutes) last.
  Longest first, the short files fill in at the end. Measured on a cold cache (2026-12-07):
  the two processes finished 16 s apart; replaying the same per-file times in xdist's
  default order gives 48 s apart, so the gain is about 12 s of a 20-minute suite, whose
  length is its total work, not its balance.
"""

import os
import tempfile

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "lite_jax_test_compile_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_configure(config):
  # Keep the order below under `--dist loadfile` (pytest-xdist's `--no-loadscope-reorder`).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  """Files with an end-to-end (`slow`) test first; files, and tests in a file, keep order."""
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)
