"""Depthwise 2-D convolution as a sum of shifted, scaled copies of the input.

`lax.conv_general_dilated` with `feature_group_count == channels` is a poor fit for XLA:CPU
(measured on 2 cores: 16 x 66 x 66 x 256, 3x3 — 471 ms forward, 4.1 s forward + backward)
while the same contraction as k^2 shifted multiply-adds is one fused elementwise pass (25 ms /
311 ms). On GPUs a depthwise conv is memory-bound either way; `benchmarks/gan_compression.py`
times both implementations. The MACs counter sees the shifted form as one named call and
charges it like the convolution it is (`core.macs.DEPTHWISE_CALL`).
"""

from __future__ import annotations

import jax

from lite_jax.core import macs


def _shifted_depthwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
  size = kernel.shape[0]
  height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
  out = None
  for i in range(size):
    for j in range(size):
      term = x[:, i:i + height, j:j + width, :] * kernel[i, j, 0]
      out = term if out is None else out + term
  return out


_shifted_depthwise.__name__ = macs.DEPTHWISE_CALL
_shifted_depthwise = macs.counted_call(_shifted_depthwise)


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, *, impl: str = "shifts") -> jax.Array:
  """Stride-1, unpadded ('VALID') depthwise convolution.

  Args:
    x: `[batch, height, width, channels]` (pad it first for 'SAME' outputs).
    kernel: `[k, k, 1, channels]` (the HWIO layout of a grouped `nn.Conv` kernel).
    impl: `shifts` (k^2 fused multiply-adds) or `conv` (`lax.conv_general_dilated`).

  Returns:
    `[batch, height - k + 1, width - k + 1, channels]`.
  """
  size = kernel.shape[0]
  if kernel.shape != (size, size, 1, x.shape[-1]):
    raise ValueError(f"depthwise kernel must be [k, k, 1, {x.shape[-1]}], got {kernel.shape}.")
  if impl == "shifts":
    return _shifted_depthwise(x, kernel.astype(x.dtype))
  if impl == "conv":
    return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])
  raise ValueError(f"depthwise impl must be 'shifts' or 'conv', got {impl!r}.")
