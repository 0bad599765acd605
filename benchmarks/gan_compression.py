r"""GAN Compression generator speed: the ResNet teacher against compressed sub-networks.

    python -m benchmarks.gan_compression            # on the GPU machine: the issue's settings
    python -m benchmarks.gan_compression --smoke    # tiny sizes, any machine (checks it runs)

For each generator — the original ResNet generator (ngf 64, 56.8G MACs at 256x256) and the
reference's Fast sub-networks `16_16_24_16_32_64_16_24` (horse2zebra, 2.64G) and
`24_24_40_56_24_56_16_40` (edges2shoes, 4.86G), exported as standalone mobile generators — at
256x256 in float32 and bfloat16: latency at batch 1 and throughput at batch 16 of the jitted
forward pass (median of `--repeats` synchronized runs after warm-up), and for the compressed
ones the measured speedup over the teacher next to their MACs ratio, with each depthwise conv
implementation (`shifts`: fused shifted multiply-adds; `conv`: XLA's grouped convolution).
Weights are random: speed does not depend on their values. For scale (issue #5, eager PyTorch on an H100, ResNet teacher
at 256x256): 3.0 ms at batch 1 and 19.5 ms at batch 16 in f32, 13.5 ms at batch 16 in bf16.

Prints one JSON line per measurement with the device name.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

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


def main(argv):
  del argv
  smoke = _SMOKE.value
  size, ngf = (32, 8) if smoke else (256, 64)
  subnets = ["4_4_4_4_8_8_4_4"] if smoke else _SUBNETS.value
  repeats = 2 if smoke else _REPEATS.value
  device = jax.devices()[0].device_kind
  teacher_ms: dict[tuple[str, int], float] = {}
  for dtype in _DTYPES.value:
    for name, impl, module in _generators(ngf, subnets):
      module = module.clone(dtype=_DTYPE[dtype])
      params = _random_params(module, size)
      x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
      macs = core.count_macs(lambda p, x: module.apply(p, x), params, x,
                             convention=layers.GAN_COMPRESSION)
      forward = jax.jit(module.apply)
      for batch in (int(b) for b in _BATCHES.value):
        images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3), minval=-1,
                                    maxval=1)
        seconds = median_seconds(forward, params, images, repeats=repeats)
        record = {"benchmark": "gan_generator", "device": device, "generator": name,
                  "depthwise_impl": impl, "dtype": dtype, "batch": batch, "image_size": size, "macs": macs,
                  "params": core.count_params(params), "ms": seconds * 1e3,
                  "images_per_s": batch / seconds}
        if name.startswith("resnet"):
          teacher_ms[(dtype, batch)] = seconds * 1e3
          teacher_macs = macs
        else:
          record["macs_ratio"] = teacher_macs / macs
          record["speedup"] = teacher_ms[(dtype, batch)] / (seconds * 1e3)
          record["speedup_over_half_macs_ratio"] = record["speedup"] / (record["macs_ratio"] / 2)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
  app.run(main)
