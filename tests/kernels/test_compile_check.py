"""kernels/compile_check.py: the Pallas kernels lower for CUDA on a host without a GPU (and,
where the CUDA plugin's Triton compiler is installed, compile to PTX), and lowering for TPU
selects the XLA reference."""

import jax
import pytest

from kernels import _dispatch
from kernels import compile_check as cc
from kernels import voxelize as vox

CAN_LOWER = not cc.lowering_needs_compiler() or cc.triton_compiler_available()
needs_lowering = pytest.mark.skipif(
    not CAN_LOWER, reason="this jaxlib compiles Triton while lowering; install jax-cuda12-plugin")


def test_target_platform_selects_paths_and_restores():
  local = _dispatch.select_path("op")
  with _dispatch.target_platform("gpu"):
    assert _dispatch.select_path("op") == _dispatch.PALLAS
    with _dispatch.target_platform("tpu"):
      assert _dispatch.select_path("op") == _dispatch.XLA
      with pytest.raises(ValueError, match="needs a GPU"):
        _dispatch.select_path("op", backend="pallas")
    assert _dispatch.current_platform() == "gpu"
  assert _dispatch.select_path("op") == local
  assert _dispatch.current_platform() == jax.default_backend()
  with pytest.raises(ValueError, match="target_platform"):
    with _dispatch.target_platform("cuda"):
      pass


def test_tiling_parse():
  assert vox.Tiling.parse("32x16") == vox.Tiling(32, 16)
  assert vox.Tiling.parse("128X64x8") == vox.Tiling(128, 64, 8)
  for bad in ("64", "64x64x4x1", "64xfour", "48x64"):
    with pytest.raises(ValueError):
      vox.Tiling.parse(bad)


@needs_lowering
@pytest.mark.parametrize("op", ["voxelize", "devoxelize"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ops_lower_to_their_triton_kernels_for_cuda(op, dtype):
  # 2 x 100 points: 4 tiles of 64 (the last one partial); C = 96 -> channel tiles of 32.
  fn, args = cc.fwd_and_vjp(cc.Case(op, 2, 100, 96, 8, dtype))
  kernels = cc.triton_kernels(cc.lower(fn, args))
  assert tuple(k.name for k in kernels) == cc.EXPECTED_KERNELS[op]
  if kernels[0].ir is not None:  # jaxlib <= 0.10.2 records the launch parameters
    assert all(k.grid == (4, 3, 1) and k.num_warps == 4 for k in kernels)
  fn, args = cc.fwd_and_vjp(cc.Case(op, 2, 100, 96, 8, dtype), vox.Tiling(32, 16, 8))
  kernels = cc.triton_kernels(cc.lower(fn, args))
  if kernels[0].ir is not None:
    assert all(k.grid == (7, 6, 1) and k.num_warps == 8 for k in kernels)


def test_lowering_for_tpu_runs_the_xla_reference():
  records = cc.check([cc.Case("voxelize", 2, 50, 8, 4), cc.Case("devoxelize", 2, 50, 8, 4)],
                     None, "9.0", platform="tpu")
  assert [(r["kernels"], r["path"]) for r in records] == [(0, "xla reference")] * 2


@pytest.mark.skipif(not (CAN_LOWER and cc.triton_compiler_available()),
                    reason="needs the CUDA plugin's Triton compiler (jax-cuda12-plugin)")
def test_kernels_compile_to_ptx_with_vector_atomics():
  records = cc.check([cc.Case("devoxelize", 2, 100, 64, 8)], None, "9.0")
  by_name = {r["kernel"]: r for r in records}
  if "ptx_bytes" not in by_name["gather_rows"]:
    pytest.skip("this jaxlib compiled the kernels while lowering; no PTX to inspect")
  assert by_name["gather_rows"]["atomics"] == 0
  assert by_name["scatter_add_rows"]["atomics"] == by_name["scatter_add_rows"]["vector_atomics"]
  assert by_name["scatter_add_rows"]["atomics"] > 0
  if "registers" in by_name["gather_rows"]:
    assert all(r["spill_stores"] == r["spill_loads"] == 0 for r in records)
