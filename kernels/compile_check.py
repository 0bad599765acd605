"""Checks, on any host, that the Pallas GPU kernels lower and compile for an NVIDIA GPU.

    python -m kernels.compile_check                         # lower every case for CUDA
    JAX_PLATFORMS=cpu python -m kernels.compile_check       # + PTX and registers when available

The public ops (`voxelize`, `devoxelize_trilinear`, forward and VJP) are traced with the GPU
path selected (`kernels._dispatch.target_platform`) and lowered with
`lowering_platforms=("cuda",)`, which needs no GPU. Three levels, each as far as the host allows:

  1. lowering: Pallas -> Triton IR inside the lowered StableHLO. jaxlib <= 0.10.2 embeds the IR
     for XLA to compile later; newer jaxlib compiles it to PTX while lowering and so needs the
     Triton compiler of level 2.
  2. PTX: the CUDA plugin's Triton compiler, `pip install jax-cuda12-plugin==<jaxlib version>`
     (on a host without a GPU, run with `JAX_PLATFORMS=cpu` so the plugin loads without CUDA).
  3. SASS: `ptxas -v` (from `pip install nvidia-cuda-nvcc-cu12`, on PATH, or `$PTXAS`) reports
     registers, spills and shared memory per kernel.

One JSON line per kernel: the case, the kernel's name, grid and warps, and what each level gave.
Lowering the same ops for `--platform=tpu` shows the XLA reference path (no kernel) instead.
A CPU-only host cannot time anything: speed lives in `benchmarks/pvcnn.py` on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from kernels import _dispatch
from kernels import devoxelize as devox
from kernels import voxelize as vox

TRITON_TARGET = "__gpu$xla.gpu.triton"  # jaxlib <= 0.10.2: Triton IR, compiled by XLA
TRITON_FFI_TARGET = "triton_kernel_call_ffi"  # newer jaxlib: compiled to PTX while lowering

# (op, kernels its forward then its VJP launch, in order).
EXPECTED_KERNELS = {"voxelize": ("scatter_add_rows", "gather_rows"),
                    "devoxelize": ("gather_rows", "scatter_add_rows")}


@dataclasses.dataclass(frozen=True)
class Case:
  """One op at one size: `features [batch, points, channels]` or `voxels [batch, r^3,
  channels]`, in `dtype`."""
  op: str
  batch: int
  points: int
  channels: int
  resolution: int
  dtype: str = "float32"

  def __post_init__(self):
    if self.op not in EXPECTED_KERNELS:
      raise ValueError(f"Case.op must be one of {sorted(EXPECTED_KERNELS)}, got {self.op!r}.")


# The benchmark's headline size, the paper's (ShapeNet 8 x 2048, S3DIS 8 x 4096, C 64-256,
# r 16/32), a channel count whose tile is not 64 (96 -> 32) and the largest resolution promised.
DEFAULT_CASES = tuple(
    Case(op, *size, dtype)
    for op in ("voxelize", "devoxelize")
    for size in ((16, 16384, 64, 32), (8, 2048, 256, 16), (8, 4096, 96, 32), (2, 4099, 64, 64))
    for dtype in ("float32", "bfloat16"))


@dataclasses.dataclass
class TritonKernel:
  """A Triton kernel found in a lowered module."""
  name: str
  grid: tuple[int, int, int]
  num_warps: int
  num_stages: int
  ir: bytes | None  # Triton IR bytecode (jaxlib <= 0.10.2); None when already compiled


def fwd_and_vjp(case: Case, tiling: vox.Tiling | None = None) -> tuple[Callable, list]:
  """`(fn, abstract args)`: `fn` returns the op's output and the VJP of its float input."""
  dtype = jnp.dtype(case.dtype)
  b, n, c, r = case.batch, case.points, case.channels, case.resolution
  coords = jax.ShapeDtypeStruct((b, n, 3), jnp.float32)
  if case.op == "voxelize":
    def fn(features, coords, cotangent):
      out, pullback = jax.vjp(lambda f: vox.voxelize(f, coords, r, tiling=tiling)[0], features)
      return out, pullback(cotangent)[0]
    return fn, [jax.ShapeDtypeStruct((b, n, c), dtype), coords,
                jax.ShapeDtypeStruct((b, r, r, r, c), dtype)]

  def fn(voxels, norm_coords, cotangent):
    out, pullback = jax.vjp(
        lambda v: devox.devoxelize_trilinear(v, norm_coords, tiling=tiling), voxels)
    return out, pullback(cotangent)[0]
  return fn, [jax.ShapeDtypeStruct((b, r, r, r, c), dtype), coords,
              jax.ShapeDtypeStruct((b, n, c), dtype)]


def lower(fn: Callable, args: Sequence[Any], platform: str = "gpu"):
  """`jax.jit(fn)` lowered for `platform` ('gpu' lowers for CUDA) with its paths selected there."""
  target = {"gpu": "cuda", "tpu": "tpu", "cpu": "cpu"}[platform]
  with _dispatch.target_platform(platform):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=(target,))


def triton_kernels(lowered) -> list[TritonKernel]:
  """The Triton kernels of a lowered module, in program order."""
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top

  def attr(config, key, kind):
    return kind(config[key]).value if key in config else None

  found = []

  def walk(operation):
    for region in operation.regions:
      for block in region.blocks:
        for op in block.operations:
          if op.operation.name == "stablehlo.custom_call":
            target = ir.StringAttr(op.attributes["call_target_name"]).value
            if target == TRITON_TARGET:
              config = ir.DictAttr(op.attributes["mhlo.backend_config"])
              found.append(TritonKernel(
                  attr(config, "name", ir.StringAttr),
                  tuple(attr(config, f"grid_{a}", ir.IntegerAttr) for a in "xyz"),
                  attr(config, "num_warps", ir.IntegerAttr),
                  attr(config, "num_stages", ir.IntegerAttr),
                  ir.StringAttr(config["ir"]).value_bytes))
            elif target == TRITON_FFI_TARGET:
              config = ir.DictAttr(op.attributes["mhlo.backend_config"])
              found.append(TritonKernel(attr(config, "name", ir.StringAttr), (0, 0, 0), 0, 0,
                                        None))
          walk(op.operation)

  walk(lowered.compiler_ir("stablehlo").operation)
  return found


def triton_compiler_available() -> bool:
  """Whether a Triton->PTX compiler is registered (the CUDA plugin, after backend start-up)."""
  from jax._src.lib import triton  # pylint: disable=g-import-not-at-top
  jax.devices()  # Starts the backends, which registers the plugin's compiler.
  return triton.has_compilation_handler("cuda")


def lowering_needs_compiler() -> bool:
  """Newer jaxlib compiles Triton to PTX while lowering (no compiler: lowering fails)."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  return tuple(int(p) for p in re.findall(r"\d+", jaxlib.__version__)[:3]) > (0, 10, 2)


def compile_ptx(kernel: TritonKernel, arch: str) -> tuple[str, int]:
  """`(PTX, shared memory bytes)` of a kernel for compute capability `arch` ('9.0')."""
  from jax._src.lib import triton  # pylint: disable=g-import-not-at-top
  result = triton.compile("cuda", kernel.ir, arch, num_warps=kernel.num_warps, num_ctas=1,
                          num_stages=kernel.num_stages)
  return result.asm, result.smem_bytes


def find_ptxas() -> str | None:
  """`$PTXAS`, `ptxas` on PATH, or the one in the `nvidia-cuda-nvcc-cu12` wheel."""
  if os.environ.get("PTXAS"):
    return os.environ["PTXAS"]
  if shutil.which("ptxas"):
    return shutil.which("ptxas")
  try:
    import nvidia.cuda_nvcc  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  for root in nvidia.cuda_nvcc.__path__:
    path = os.path.join(root, "bin", "ptxas")
    if os.path.isfile(path):
      return path
  return None


def ptxas_info(ptx: str, arch: str, ptxas: str) -> dict[str, int]:
  """Registers, spill bytes and shared memory that `ptxas -v` reports for a one-kernel PTX."""
  sm = "sm_" + arch.replace(".", "") + ("a" if arch == "9.0" else "")
  with tempfile.TemporaryDirectory() as tmp:
    source = os.path.join(tmp, "kernel.ptx")
    with open(source, "w") as f:
      f.write(ptx)
    run = subprocess.run([ptxas, f"-arch={sm}", "-v", source, "-o", os.path.join(tmp, "k.cubin")],
                         capture_output=True, text=True, check=False)
  if run.returncode:
    raise RuntimeError(f"ptxas failed on the kernel's PTX:\n{run.stderr}")
  info = {"registers": r"Used (\d+) registers", "spill_stores": r"(\d+) bytes spill stores",
          "spill_loads": r"(\d+) bytes spill loads", "smem_static": r"(\d+) bytes smem"}
  out = {}
  for key, pattern in info.items():
    match = re.search(pattern, run.stderr)
    out[key] = int(match.group(1)) if match else 0
  return out


def ptx_summary(ptx: str) -> dict[str, int]:
  """Counts of the instructions that matter for these memory-bound kernels."""
  return {"atomics": len(re.findall(r"\batom\.global\.", ptx)),
          "vector_atomics": len(re.findall(r"\batom\.global\.[\w.]*\.v[248]\.", ptx)),
          "vector_loads": len(re.findall(r"\bld\.global\.[\w.]*v[248]\.", ptx))}


def check(cases: Sequence[Case], tiling: vox.Tiling | None, arch: str, ptx: bool = True,
          platform: str = "gpu") -> list[dict[str, Any]]:
  """One record per kernel of every case (per case on TPU/CPU: the path and kernel count)."""
  compiler = ptx and platform == "gpu" and triton_compiler_available()
  ptxas = find_ptxas() if compiler else None
  records = []
  for case in cases:
    fn, args = fwd_and_vjp(case, tiling)
    kernels = triton_kernels(lower(fn, args, platform))
    base = {**dataclasses.asdict(case), "platform": platform}
    if platform != "gpu":
      records.append({**base, "kernels": len(kernels),
                      "path": "xla reference" if not kernels else "pallas"})
      continue
    names = tuple(k.name for k in kernels)
    if names != EXPECTED_KERNELS[case.op]:
      raise RuntimeError(f"{case.op} lowered to kernels {names}, expected "
                         f"{EXPECTED_KERNELS[case.op]}.")
    for kernel in kernels:
      record = {**base, "kernel": kernel.name, "grid": list(kernel.grid),
                "num_warps": kernel.num_warps, "lowered": True}
      if compiler and kernel.ir is not None:
        text, smem = compile_ptx(kernel, arch)
        record.update(arch=arch, ptx_bytes=len(text), smem_bytes=smem, **ptx_summary(text))
        if ptxas:
          record.update(ptxas_info(text, arch, ptxas))
      records.append(record)
  return records


_ARCH = flags.DEFINE_string("arch", "9.0", "Compute capability to compile PTX for (9.0 = H100).")
_PLATFORM = flags.DEFINE_enum("platform", "gpu", ["gpu", "tpu"], "Platform to lower for.")
_TILING = flags.DEFINE_string("tiling", "", "POINTSxCHANNELSxWARPS tiles (default: the ops').")


def main(argv: Sequence[str]) -> None:
  del argv
  tiling = None
  if _TILING.value:
    tiling = vox.Tiling.parse(_TILING.value)
  if _PLATFORM.value == "gpu":
    compiler = triton_compiler_available()
    if lowering_needs_compiler() and not compiler:
      raise app.UsageError("this jaxlib compiles Triton while lowering: install "
                           "jax-cuda12-plugin matching jaxlib and run with JAX_PLATFORMS=cpu.")
    if not compiler:
      logging.warning("lowering only: no Triton compiler registered, so no PTX (install "
                      "jax-cuda12-plugin matching jaxlib; run with JAX_PLATFORMS=cpu).")
    elif not find_ptxas():
      logging.warning("PTX only: no ptxas found for registers and spills (pip install "
                      "nvidia-cuda-nvcc-cu12, or set $PTXAS).")
  for record in check(DEFAULT_CASES, tiling, _ARCH.value, platform=_PLATFORM.value):
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
  app.run(main)
