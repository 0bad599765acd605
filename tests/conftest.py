"""Test-session setup, applied before any test imports jax.

- 8 fake CPU devices, so sharding and data-parallel tests run on any machine.
- End-to-end pipelines run data-parallel over 2 of them (`PIPELINE_DEVICES`): in process (a
  config's `mesh.num_devices=0`, "all devices", means 2 here), and in the launchers and
  notebook kernels the tests start (they see 2 devices). Two devices exercise the same sharded
  batches, sharded checkpoints and collectives as eight; XLA:CPU compiles a program for 8
  devices ~1.8x slower and runs these tiny ones ~3x slower. Cold cache, side by side on the
  2-core VM: the GauGAN pipeline fixture took 173 s of CPU on 8 devices, 129 s on 2; the HAQ
  one 119 s on an 8-device process, 88 s on a 2-device one. Files marked `all_devices` keep
  all 8, and so do the processes they start: the sharding tests, and PSD and PPD, whose
  launcher must resume an in-process run bit for bit (their modules say why).
- XLA:CPU without LLVM's expensive optimizations: the tests' programs are tiny, so compiling
  them is most of the suite's time, and these flags cut a GAN training step's compile from 23 s
  to 13 s while results stay within the tests' tolerances (launchers the tests start inherit
  them through the environment). Run time does not undo the gain: four of the slowest files
  (SPADE training, Lite Transformer train and compress, HAQ), each cold-cache on a shared
  2-core VM, took 712 s user CPU in all with both flags, 902 s with only the LLVM one and
  925 s with neither (each file was fastest with both), likely because XLA:CPU runs
  convolutions and matmuls as precompiled library calls that these flags do not affect.
  On top of them, XLA:CPU's older (non-MLIR) fusion emitters: the GauGAN teacher step
  compiled in 12.0 s and 8.4 s with them against 17.4 s and 12.5 s without (two cold runs of
  each, 2026-12-07), with the same loss to the last printed digit.
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

import pytest

from tests.devices import xla_flags

TEST_PROCESS_DEVICES = 8
PIPELINE_DEVICES = 2
FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("XLA_FLAGS", xla_flags(TEST_PROCESS_DEVICES, FAST_COMPILE))
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


@pytest.fixture(scope="module", autouse=True)
def _pipelines_on_two_devices(request):
  """`mesh.num_devices=0` means `PIPELINE_DEVICES` devices in this module, and processes it
  starts see that many (unless the module is marked `all_devices`)."""
  if request.node.get_closest_marker("all_devices"):
    yield
    return
  import jax
  from lite_jax.core import mesh
  if jax.device_count() != TEST_PROCESS_DEVICES:  # XLA_FLAGS set by hand: leave it be
    yield
    return
  # This process's backend is up (8 devices); XLA_FLAGS below is read by the processes it starts.
  all_devices = mesh.from_config

  def from_config(mesh_cfg):
    if mesh_cfg.num_devices or mesh_cfg.distributed:
      return all_devices(mesh_cfg)
    count = max(PIPELINE_DEVICES, mesh_cfg.model_parallelism)
    return mesh.make_mesh(mesh_cfg.model_parallelism, jax.devices()[:count])

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(mesh, "from_config", from_config)
    patch.setenv("XLA_FLAGS", xla_flags(PIPELINE_DEVICES))
    yield
