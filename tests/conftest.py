"""Test-session setup, applied before any test imports jax.

- 2 fake CPU devices: the end-to-end pipelines run data-parallel (sharded batches, sharded
  checkpoints, the gradient all-reduce), and the processes the tests start (launchers,
  notebook kernels) see the same 2 devices. Then a program compiled in a test is the one its
  launcher needs: the persistent cache's key holds the process's device count, so a 2-device
  program compiled in an 8-device process was never found by a 2-device launcher. XLA:CPU
  also compiles for 8 devices ~1.8x slower and runs these tiny programs ~3x slower (cold
  cache, side by side on the 2-core VM: the GauGAN pipeline fixture took 173 s of CPU on 8
  devices, 129 s on 2). The modules that need larger meshes (`tests/devices.py`, up to 4 x 2)
  are skipped here and run by `tests/test_eight_devices.py` in a child session with 8.
- XLA:CPU without LLVM's expensive optimizations (`JAX_DISABLE_MOST_OPTIMIZATIONS`: LLVM -O0
  and no expensive passes): the tests' programs are tiny, so compiling them is most of the
  suite's time, and this cuts a GAN training step's compile from 23 s to 13 s while results
  stay within the tests' tolerances (launchers the tests start inherit it through the
  environment). Run time does not undo the gain for most files: four of the slowest files
  (SPADE training, Lite Transformer train and compress, HAQ), each cold-cache on a shared
  2-core VM, took 712 s user CPU in all with both flags, 902 s with only the LLVM one and
  925 s with neither (each file was fastest with both), likely because XLA:CPU runs
  convolutions and matmuls as precompiled library calls that these flags do not affect.
  On top of that, XLA:CPU's older (non-MLIR) fusion emitters: the GauGAN teacher step
  compiled in 12.0 s and 8.4 s with them against 17.4 s and 12.5 s without (two cold runs of
  each, 2026-12-07), with the same loss to the last printed digit. Rounding does change: one
  of the four seeded batch attacks in tests/leakage/test_batched.py stalls with them.
  Run time does undo the gain for long loops of element-wise work: the vmapped 16x16 DLG
  attack (40 L-BFGS steps) ran 24.2 s unoptimized and 1.6 s optimized, for 2.0 against 3.6 s of
  compiling. Such a test compiles under `tests.devices.optimized()`. Whole notebooks and
  launchers are compile-bound even there (the leakage notebook: 39 s as is, 52 s optimized).
- A persistent compilation cache shared by the tests and the launchers they start: the
  end-to-end tests compile the same tiny programs several times (fresh runs, resumed runs,
  subprocesses), and compiling dominates their time on a 2-core machine. Its key holds the
  jitted function's name, so a test that wraps a step (to count its traces) names the wrapper
  after it (`functools.wraps`), or the launchers that follow compile it again.
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

import pytest

from tests.devices import EIGHT_DEVICE_MODULES, xla_flags

TEST_DEVICES = 2
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", xla_flags(TEST_DEVICES, FAST_COMPILE))
# XLA:CPU at LLVM -O0 without its expensive passes (`--xla_backend_optimization_level=0
# --xla_llvm_disable_expensive_passes=true`), set through jax so that `devices.optimized()` can
# lift it for the programs of a test whose time is running them.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "lite_jax_test_compile_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_configure(config):
  # Keep the order below under `--dist loadfile` (pytest-xdist's `--no-loadscope-reorder`).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  """Files with an end-to-end (`slow`) test first; files, and tests in a file, keep order.
  Without 8 devices, the `EIGHT_DEVICE_MODULES` are skipped (tests/test_eight_devices.py)."""
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)
  import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS above)
  if jax.device_count() >= 8:
    return
  skip = pytest.mark.skip(reason=f"needs 8 devices, this session has {jax.device_count()}; "
                                 f"tests/test_eight_devices.py runs it in an 8-device session")
  for item in items:
    if os.path.relpath(item.path, config.rootpath) in EIGHT_DEVICE_MODULES:
      item.add_marker(skip)
