"""Depthwise 2-D convolution as a sum of shifted, scaled copies of the input.

`lax.conv_general_dilated` with `feature_group_count == channels` is a poor fit for XLA:CPU
(measured on 2 cores: 16 x 66 x 66 x 256, 3x3 — 471 ms forward, 4.1 s forward + backward)
while the same contraction as k^2 shifted multiply-adds is one fused elementwise pass (25 ms /
311 ms). On GPUs a depthwise conv is memory-bound either way; `benchmarks/gan_compression.py`
times both implementations. The MACs counter sees the shifted form as one named call and
charges it like the convolution it is (`core.macs.DEPTHWISE_CALL`).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax

from lite_jax.core import macs


def _shifted_depthwise(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  size = kernel.shape[0]
  height = (x.shape[1] - size) // stride + 1
  width = (x.shape[2] - size) // stride + 1
  out = None
  for i in range(size):
    for j in range(size):
      window = x[:, i:i + (height - 1) * stride + 1:stride,
                 j:j + (width - 1) * stride + 1:stride, :]
      term = window * kernel[i, j, 0]
      out = term if out is None else out + term
  return out


_shifted_depthwise.__name__ = macs.DEPTHWISE_CALL
# `macs.counted_call` (a named jit), with the stride static.
_shifted_depthwise = jax.jit(_shifted_depthwise, static_argnames="stride")


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


def _is_plain_depthwise(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                        dimension_numbers, feature_group_count) -> bool:
  nhwc = (dimension_numbers is None or tuple(getattr(dimension_numbers, "lhs_spec", ())) ==
          (0, 3, 1, 2) or tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC"))
  return (lhs.ndim == 4 and nhwc and feature_group_count == lhs.shape[-1] == rhs.shape[-1] > 1
          and rhs.shape[0] == rhs.shape[1] and rhs.shape[2] == 1
          and not isinstance(padding, str)
          and all(d in (None, 1) for d in (lhs_dilation or (1,)) + (rhs_dilation or (1,)))
          and len(set(window_strides)) == 1)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` that runs depthwise convolutions as shifted multiply-adds on
  CPU: pass it as `nn.Conv(..., conv_general_dilated=...)`.

  On the CPU backend an NHWC depthwise conv (one filter per channel, square kernel, explicit
  padding, equal strides, no dilation) becomes k^2 strided multiply-adds (the module doc gives
  the speed-up); anything else, and every conv on GPU/TPU, is `lax.conv_general_dilated`
  unchanged. The layer stays an `nn.Conv` (its params, its name, quantizers and layer
  introspection see it as before).
  """
  if (jax.default_backend() == "cpu" and batch_group_count == 1 and preferred_element_type is None
      and _is_plain_depthwise(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                              dimension_numbers, feature_group_count)):
    x = jax.numpy.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    return _shifted_depthwise(x, rhs.astype(x.dtype), stride=int(window_strides[0]))
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
