r"""GAN Compression generator speed: the ResNet teacher against compressed sub-networks.

    python -m benchmarks.gan_compression            # on the GPU machine: the issue's settings
    python -m benchmarks.gan_compression --smoke    # tiny sizes, any machine (checks it runs)
    # CPU: onnxruntime against JAX, the teacher and the horse2zebra sub-network (issue #19;
    # needs `pip install --no-deps -r requirements-export.txt`)
    python -m benchmarks.gan_compression --runtimes=jax,onnxruntime --dtypes=float32 \
        --subnets=16_16_24_16_32_64_16_24 --depthwise_impls=shifts,conv --batches=1 --repeats=5
    # CPU: PyTorch eager beside JAX, same generators and weights (issue #20; needs
    # `pip install -r requirements-bench.txt`)
    python -m benchmarks.gan_compression --peer=torch --dtypes=float32 --batches=1 \
        --subnets=16_16_24_16_32_64_16_24 --depthwise_impls=shifts --repeats=5

For each generator — the original ResNet generator (ngf 64, 56.8G MACs at 256x256) and the
reference's Fast sub-networks `16_16_24_16_32_64_16_24` (horse2zebra, 2.64G) and
`24_24_40_56_24_56_16_40` (edges2shoes, 4.86G), exported as standalone mobile generators — at
256x256 in float32 and bfloat16: latency at batch 1 and throughput at batch 16 of the jitted
forward pass (median of `--repeats` synchronized runs after warm-up), and for the compressed
ones the measured speedup over the teacher next to their MACs ratio, with each depthwise conv
implementation (`shifts`: fused shifted multiply-adds; `conv`: XLA's grouped convolution).
Weights are random: speed does not depend on their values. For scale (issue #5, eager
PyTorch on an H100, ResNet teacher at 256x256): 3.0 ms at batch 1 and 19.5 ms at batch 16 in
f32, 13.5 ms at batch 16 in bf16.

With `--runtimes=...,onnxruntime` the same float32 generators are also exported to ONNX
(`lite_jax.gan_compression.onnx_export`, which bakes the depthwise implementation into the
graph: `shifts` as slices and multiply-adds, `conv` as grouped `Conv` nodes) and timed with
onnxruntime's CPU provider (`session.run` on numpy inputs, the same median of repeats after
warm-up); speedups are over the teacher in the same runtime.

With `--peer=torch` each JAX line also times the PyTorch eager peer
(`benchmarks/peers/gan_compression.py`: the same generator in NCHW with the same weights) on
the same input, right after ours, and adds `peer_ms` and `peer_ratio` (peer / ours, above 1
when JAX is faster); the peer does not depend on the depthwise implementation, so it is timed
once per generator, dtype and batch.

Prints one JSON line per measurement with the device name and the runtime.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import peers
from benchmarks.timing import median_seconds

from lite_jax import core
from lite_jax.gan_compression import layers, resnet

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes and few repeats (CPU tests).")
_REPEATS = flags.DEFINE_integer("repeats", 50, "Timed runs per measurement, after warm-up.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
_BATCHES = flags.DEFINE_list("batches", ["1", "16"], "Batch sizes (1: latency; 16: throughput).")
_DEPTHWISE = flags.DEFINE_list(
    "depthwise_impls", ["shifts", "conv"], "Depthwise conv implementations of the compressed "
    "(mobile) generators: fused shifted multiply-adds, or XLA's grouped convolution.")
_RUNTIMES = flags.DEFINE_list(
    "runtimes", ["jax"], "`jax`: the jitted forward pass, in every dtype; `onnxruntime`: the "
    "float32 generators as ONNX models on onnxruntime's CPU provider (requirements-export.txt).")
_ORT_THREADS = flags.DEFINE_integer(
    "ort_threads", 0, "onnxruntime intra-op threads (0: its default, one per physical core).")
_PEER = peers.define_flag()
_SUBNETS = flags.DEFINE_list("subnets", ["16_16_24_16_32_64_16_24", "24_24_40_56_24_56_16_40"],
                             "Compressed channel configs to time against the teacher.")

_DTYPE = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _random_params(generator: resnet.ResnetGenerator, size: int) -> Any:
  """Random weights of the right shapes (jitting `init` would cost more than the benchmark)."""
  shapes = jax.eval_shape(generator.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


def _generators(ngf: int, subnets: list[str]
                ) -> list[tuple[str, str, resnet.ResnetGenerator]]:
  """`(name, depthwise impl, module)`: the teacher first (it has no depthwise convs)."""
  out = [(f"resnet_ngf{ngf}", "", resnet.resnet_generator(ngf))]
  for text in subnets:
    channels = resnet.parse_config(text)
    out += [(text, impl, resnet.mobile_resnet_generator(channels, depthwise_impl=impl))
            for impl in _DEPTHWISE.value]
  return out


def _onnx_forward(module: resnet.ResnetGenerator, params: Any, size: int, directory: str
                  ) -> Callable[[Any, np.ndarray], np.ndarray]:
  """`(params, images) -> output` of `module` (with its own depthwise implementation) exported
  to ONNX and run by onnxruntime (the weights are in the model; `params` is accepted for the
  same call as JAX's)."""
  import onnxruntime as ort  # optional: only with --runtimes=onnxruntime
  from lite_jax.gan_compression import onnx_export
  path = onnx_export.export_onnx(module, params, os.path.join(directory, "generator.onnx"),
                                 height=size, width=size, depthwise_impl=None)
  options = ort.SessionOptions()
  options.intra_op_num_threads = _ORT_THREADS.value
  session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  return lambda _, images: session.run(None, {onnx_export.INPUT_NAME: images})[0]


def _peer_ms(module: resnet.ResnetGenerator, params: Any, images: jax.Array, dtype: str,
             repeats: int) -> float:
  """The PyTorch peer's median ms on `images`, with `params` copied in, computing in `dtype`."""
  from benchmarks.peers import gan_compression as peer_lib
  peer = peer_lib.load_params(peer_lib.from_jax(module), params)
  return peers.median_ms(peer_lib.forward_fn(peer, images, dtype), repeats=repeats)


def main(argv):
  del argv
  smoke = _SMOKE.value
  size, ngf = (32, 8) if smoke else (256, 64)
  subnets = ["4_4_4_4_8_8_4_4"] if smoke else _SUBNETS.value
  repeats = 2 if smoke else _REPEATS.value
  device = jax.devices()[0].device_kind
  teacher_ms: dict[tuple[str, str, int], float] = {}
  with_peer = peers.requested(_PEER.value)
  peer_ms: dict[tuple[str, str, int], float] = {}
  # ONNX models are float32 graphs; JAX runs every dtype asked for.
  settings = [(runtime, dtype) for runtime in _RUNTIMES.value
              for dtype in (_DTYPES.value if runtime == "jax" else ["float32"])]
  for runtime, dtype in settings:
    for name, impl, module in _generators(ngf, subnets):
      module = module.clone(dtype=_DTYPE[dtype])
      params = _random_params(module, size)
      x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
      macs = core.count_macs(lambda p, x: module.apply(p, x), params, x,
                             convention=layers.GAN_COMPRESSION)
      with tempfile.TemporaryDirectory() as directory:
        forward = (core.compiler.jit(module.apply) if runtime == "jax" else
                   _onnx_forward(module, params, size, directory))
        for batch in (int(b) for b in _BATCHES.value):
          images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3), minval=-1,
                                      maxval=1)
          if runtime == "onnxruntime":
            images = np.asarray(images)
          seconds = median_seconds(forward, params, images, repeats=repeats)
          record = {"benchmark": "gan_generator", "runtime": runtime,
                    "device": device if runtime == "jax" else "cpu (CPUExecutionProvider)",
                    "generator": name, "depthwise_impl": impl, "dtype": dtype, "batch": batch,
                    "image_size": size, "macs": macs, "params": core.count_params(params),
                    "repeats": repeats, "ms": seconds * 1e3, "images_per_s": batch / seconds}
          if name.startswith("resnet"):
            teacher_ms[(runtime, dtype, batch)] = seconds * 1e3
            teacher_macs = macs
          else:
            record["macs_ratio"] = teacher_macs / macs
            record["speedup"] = teacher_ms[(runtime, dtype, batch)] / (seconds * 1e3)
            record["speedup_over_half_macs_ratio"] = record["speedup"] / (
                record["macs_ratio"] / 2)
          if with_peer and runtime == "jax":
            key = (name, dtype, batch)
            if key not in peer_ms:
              peer_ms[key] = _peer_ms(module, params, images, dtype, repeats)
            record.update(peers.record(peer_ms[key], seconds * 1e3))
          print(json.dumps(record), flush=True)


if __name__ == "__main__":
  app.run(main)
