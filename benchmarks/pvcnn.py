r"""PVCNN speed and memory: the voxel kernels against their XLA references, and whole models.

    python -m benchmarks.pvcnn            # on the GPU machine: the issue's sizes
    python -m benchmarks.pvcnn --smoke    # tiny sizes, any machine (checks the script runs)
    python -m benchmarks.pvcnn --only=kernels --tilings=64x64x4,128x64x8   # tiles at every size
    # CPU, against PyTorch eager (issue #20): the XLA path and the torch peer at ShapeNet's size
    python -m benchmarks.pvcnn --peer=torch --sizes=8x2048x64x32 --nopallas --dtypes=float32 \
        --models=pvcnn_c0p25,pvcnn_c1 --model_backends=auto

Kernels: voxelize and devoxelize_trilinear, forward and backward (the VJP w.r.t. the
features, from saved residuals), each on the Pallas path (interpret mode off a GPU) and the XLA
reference (`segment_sum` / `take_along_axis`) on the same inputs, at B=16 N=16384 C=64 r=32 and
at the paper's sizes (ShapeNet 8 x 2048 and S3DIS 8 x 4096 points, C in 64 / 128 / 256, r in
16 / 32). The kernels run with the
default tile (`--tilings`) at every size; at the first size the tiles of `--sweep_tilings` are
timed too, which is how the default should be chosen. Each line has the median time, the achieved GB/s of the minimum bytes the op must
move (below), and that as a fraction of the device's memory bandwidth:
  voxelize    fwd: features + coords in, voxels + norm_coords out
              bwd: the occupied voxels' gradient rows + ids + 1/count in, features' grad out
  devoxelize  fwd: the distinct corner voxels' rows + norm_coords in, features out
              bwd: the points' gradient + 8 corner ids and weights in, the grid's grad out
Models: inference latency (median after warm-up, synchronized) and XLA's planned peak device
memory of the jitted forward (arguments + outputs + temporaries, from `memory_analysis`; the
paper read nvidia-smi, which adds the CUDA context and allocator slack) at 8 x 2048 points for
PVCNN 1x and 0.25x (ShapeNet), PointNet and the voxel-only 3D U-Net at 96^3.

With `--peer=torch`, the line of the path the library runs by default (`auto`: Pallas on a
GPU, XLA elsewhere; default tile) of each kernel, and each PVCNN / PointNet model line, also
time the PyTorch eager peer (`benchmarks/peers/pvcnn.py`: voxelize with `index_add_`,
devoxelize with 8 `gather`s, the ShapeNet network with our weights copied in) on the same
inputs and add `peer_ms` and `peer_ratio` (peer / ours, above 1 when we are faster).

Prints one JSON line per measurement, with the device name and the path that ran.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import peers
from benchmarks.timing import median_seconds

from experiments.configs import pvcnn_shapenet
from kernels import devoxelize as devox
from kernels import voxelize as vox
from kernels._dispatch import PALLAS, PALLAS_INTERPRET, XLA
from lite_jax.core import compiler
from lite_jax.pvcnn import models

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes and few repeats (CPU tests).")
_ONLY = flags.DEFINE_enum("only", "all", ["all", "kernels", "models"], "What to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed runs per measurement, after warm-up.")
_TILINGS = flags.DEFINE_list("tilings", [], "Pallas tiles (POINTSxCHANNELS[xWARPS]) timed at "
                             "every size; empty: the kernels' default tile.")
_SWEEP = flags.DEFINE_list("sweep_tilings", ["32x64x4", "64x64x8", "128x64x4", "128x64x8",
                                             "64x32x4"],
                           "More tiles timed at the first size only (GPU; ignored by --smoke).")
_SIZES = flags.DEFINE_list("sizes", [], "Kernel sizes BATCHxPOINTSxCHANNELSxRESOLUTION; empty: "
                           "the issue's sizes (ignored by --smoke).")
_PALLAS = flags.DEFINE_bool("pallas", True, "Also time the kernels' Pallas path (interpret "
                            "mode off a GPU, which is slow); --nopallas times XLA only.")
_PEER = peers.define_flag()
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Feature dtypes of the kernels.")
_MODELS = flags.DEFINE_list("models", ["pvcnn_c1", "pvcnn_c0p25", "pointnet", "voxel_unet"],
                            "ShapeNet presets to time.")
_MODEL_BACKENDS = flags.DEFINE_list("model_backends", ["auto", "xla"],
                                    "Voxel-op backends to time each voxel model with ('auto' "
                                    "is the Pallas kernel on GPU).")

# Peak memory bandwidth (bytes/s) by device kind: vendor datasheets.
_BANDWIDTH = (("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
              ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12),
              ("L4", 3.0e11), ("1080 Ti", 4.84e11))

_FULL_SIZES = [(16, 16384, 64, 32)] + [(8, n, c, r) for n in (2048, 4096)
                                       for c in (64, 128, 256) for r in (16, 32)]
_SMOKE_SIZES = [(2, 100, 8, 4)]


def _device() -> tuple[str, float | None]:
  kind = jax.devices()[0].device_kind
  return kind, next((bw for name, bw in _BANDWIDTH if name in kind), None)


def _emit(record: dict[str, Any]) -> None:
  print(json.dumps(record), flush=True)


def _kernel_inputs(batch, num_points, channels, r, dtype, seed=0):
  """(features `[B, N, C]`, coords `[B, N, 3]`, voxels `[B, r, r, r, C]`) of one size."""
  rng = np.random.default_rng(seed)
  features = jnp.asarray(rng.normal(size=(batch, num_points, channels)), dtype)
  coords = jnp.asarray(rng.uniform(-1, 1, (batch, num_points, 3)), jnp.float32)
  voxels_in = jnp.asarray(rng.normal(size=(batch, r, r, r, channels)), dtype)
  return features, coords, voxels_in


def _kernel_cases(batch, num_points, channels, r, dtype, seed=0):
  """`(op, direction, function, args, min_bytes)` for one size, path-independent inputs."""
  features, coords, voxels_in = _kernel_inputs(batch, num_points, channels, r, dtype, seed)
  size = jnp.dtype(dtype).itemsize
  points, rows = batch * num_points, batch * r ** 3
  norm_coords = vox.normalize_coords(coords, r, normalize=True)
  occupied = len(np.unique(np.asarray(vox.voxel_ids(norm_coords, r)
                                      + vox.batch_offsets(batch, r))))
  corner_ids, _ = devox.trilinear_corners(norm_coords, r)
  corners = len(np.unique(np.asarray(corner_ids + vox.batch_offsets(batch, r))))
  return [("voxelize", features, lambda f, **k: vox.voxelize(f, coords, r, normalize=True,
                                                            **k)[0],
           (points * channels * size + points * 12 + rows * channels * size + points * 12,
            occupied * channels * size + points * 8 + points * channels * size)),
          ("devoxelize", voxels_in, lambda v, **k: devox.devoxelize_trilinear(v, norm_coords,
                                                                              **k),
           (corners * channels * size + points * 12 + points * channels * size,
            points * channels * size + points * 64 + rows * channels * size))]


def _path_kwargs(path: str, tiling: vox.Tiling | None) -> dict[str, Any]:
  if path == XLA:
    return {"backend": "xla"}
  return {"backend": "pallas", "interpret": path == PALLAS_INTERPRET, "tiling": tiling}


def _kernel_peer(op, x, coords, r, dtype, repeats) -> dict[str, float]:
  """The torch peer's median ms per direction on the same inputs."""
  from benchmarks.peers import pvcnn as peer_lib
  forward, backward = peer_lib.kernel_fns(op, x, coords, r, normalize=True,
                                          dtype=jnp.dtype(dtype).name)
  return {"forward": peers.median_ms(forward, repeats=repeats),
          "backward": peers.median_ms(backward, repeats=repeats)}


def bench_kernels(sizes, tilings, dtypes, repeats, sweep=(), with_pallas=True,
                  with_peer=False) -> None:
  """Times every size with `tilings`, and the first size also with the tiles of `sweep`; with
  `with_peer`, the default path also against the torch peer."""
  device, bandwidth = _device()
  pallas = PALLAS if jax.default_backend() == "gpu" else PALLAS_INTERPRET
  default = (vox.voxelize_path("auto"), None if vox.voxelize_path("auto") == XLA
             else tilings[0])
  for index, (batch, num_points, channels, r) in enumerate(sizes):
    size_tilings = list(tilings) + ([t for t in sweep if t not in tilings] if index == 0 else [])
    for dtype in dtypes:
      for op, x, fn, (fwd_bytes, bwd_bytes) in _kernel_cases(batch, num_points, channels, r,
                                                            dtype):
        runs = [(XLA, None)] + ([(pallas, t) for t in size_tilings] if with_pallas else [])
        peer_ms = None
        for path, tiling in runs:
          kwargs = _path_kwargs(path, tiling)
          forward = jax.jit(lambda x: fn(x, **kwargs))
          out, vjp = jax.jit(lambda x: jax.vjp(lambda x: fn(x, **kwargs), x))(x)
          backward = jax.jit(lambda vjp, g: vjp(g)[0])  # from the saved residuals only
          g = jnp.ones_like(out)
          for direction, run, args, nbytes in (("forward", forward, (x,), fwd_bytes),
                                               ("backward", backward, (vjp, g), bwd_bytes)):
            seconds = median_seconds(run, *args, repeats=repeats)
            record = {}
            if with_peer and (path, tiling) == default:
              coords = _kernel_inputs(batch, num_points, channels, r, dtype)[1]
              peer_ms = peer_ms or _kernel_peer(op, x, coords, r, dtype, repeats)
              record = peers.record(peer_ms[direction], seconds * 1e3)
            _emit({"benchmark": "kernel", "op": op, "direction": direction, "path": path,
                   "tiling": (None if tiling is None
                              else [tiling.points, tiling.channels, tiling.num_warps]),
                   "device": device, "batch": batch, "points": num_points,
                   "channels": channels, "resolution": r, "dtype": jnp.dtype(dtype).name,
                   "time_ms": seconds * 1e3, "min_bytes": nbytes,
                   "gbps": nbytes / seconds / 1e9,
                   "bandwidth_fraction": (nbytes / seconds / bandwidth if bandwidth else None),
                   **record})


def _model_peer(model, variables, inputs, repeats) -> float:
  """The torch peer's median ms of the same network with `variables` copied in."""
  from benchmarks.peers import pvcnn as peer_lib
  peer = peer_lib.load_variables(peer_lib.from_jax(model, inputs[0].shape[-1]), variables)
  return peers.median_ms(peer_lib.forward_fn(peer, *inputs), repeats=repeats)


def bench_models(presets, backends, batch, num_points, unet_resolution, resolution_scale,
                 repeats, with_peer=False) -> None:
  device, _ = _device()
  rng = np.random.default_rng(0)
  points = jnp.asarray(rng.uniform(-1, 1, (batch, num_points, 6)), jnp.float32)
  category = jnp.zeros((batch,), jnp.int32)
  for preset in presets:
    config = pvcnn_shapenet.get_config(preset)
    inputs = (points if config.data.with_normals else points[..., :3], category)
    has_voxels = config.model.name != "pointnet"
    for backend in backends if has_voxels else backends[:1]:
      model_config = config.model.copy_and_resolve_references()
      model_config.unlock()
      model_config.unet_resolution = unet_resolution
      model_config.voxel_resolution_multiplier *= resolution_scale
      model_config.kernel_backend = backend
      model = models.build_model("shapenet", model_config, 50, 16)
      variables = jax.jit(lambda key: model.init(key, *inputs, train=False))(
          jax.random.key(0, impl="rbg"))
      # The library's compiler options, as its evaluation compiles inference (`core.compiler`).
      forward = compiler.jit(lambda v, *x: model.apply(v, *x, train=False))
      memory = forward.lower(variables, *inputs).compile().memory_analysis()
      peak = None if memory is None else (
          memory.argument_size_in_bytes + memory.output_size_in_bytes
          + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
      seconds = median_seconds(forward, variables, *inputs, repeats=repeats)
      # The peer mirrors the part-segmentation networks (PVCNN, PointNet), not the U-Net; it
      # is timed beside the library's default path.
      record = (peers.record(_model_peer(model, variables, inputs, repeats), seconds * 1e3)
                if with_peer and preset != "voxel_unet" and backend == backends[0] else {})
      _emit({"benchmark": "model", "model": preset, "device": device,
             "path": vox.voxelize_path(backend) if has_voxels else None, "batch": batch,
             "points": num_points, "resolution": (unet_resolution if preset == "voxel_unet"
                                                  else None),
             "latency_ms": seconds * 1e3, "peak_memory_bytes": peak,
             "params": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])),
             **record})


def _parse_sizes(texts: list[str]) -> list[tuple[int, int, int, int]]:
  sizes = []
  for text in texts:
    try:
      batch, points, channels, r = (int(v) for v in text.split("x"))
    except ValueError:
      raise app.UsageError(f"--sizes entry {text!r} must be BATCHxPOINTSxCHANNELSxRESOLUTION, "
                           f"e.g. 8x2048x64x32.") from None
    sizes.append((batch, points, channels, r))
  return sizes


def main(argv):
  del argv
  tilings = [vox.Tiling.parse(t) for t in _TILINGS.value] or [vox.Tiling()]
  sweep = [vox.Tiling.parse(t) for t in _SWEEP.value]
  smoke = _SMOKE.value
  repeats = 2 if smoke else _REPEATS.value
  with_peer = peers.requested(_PEER.value)
  if _ONLY.value in ("all", "kernels"):
    sizes = _SMOKE_SIZES if smoke else (_parse_sizes(_SIZES.value) or _FULL_SIZES)
    if smoke:
      sweep = []
      if jax.default_backend() != "gpu":
        tilings = [vox.default_tiling(interpret=True)]  # See jax#24117 in kernels/voxelize.py.
    bench_kernels(sizes, tilings, ["float32"] if smoke else _DTYPES.value, repeats, sweep,
                  _PALLAS.value, with_peer)
  if _ONLY.value in ("all", "models"):
    # Smoke: PVConv resolutions / 4 and the U-Net at 8^3, so that CPU compiles stay short.
    batch, num_points, unet, scale = (2, 64, 8, 0.25) if smoke else (8, 2048, 96, 1.0)
    backends = ["auto"] if smoke else _MODEL_BACKENDS.value
    bench_models(_MODELS.value, backends, batch, num_points, unet, scale, repeats, with_peer)


if __name__ == "__main__":
  app.run(main)
