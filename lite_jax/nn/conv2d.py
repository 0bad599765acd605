"""A 2-D convolution with few output channels, as one matrix product and a sum of shifted taps.

A convolution with 3 output channels (an image generator's RGB head) makes a matrix product
only 3 columns wide, which XLA:CPU and oneDNN both run far below their speed. Contracting the
input channels against every tap's weights at once, `[b, h, w, in] x [in, k*k*out]`, is a
matrix product k*k times wider; the output is then the sum of the k*k tap planes, each shifted
by its offset (one fused elementwise pass). Measured on 2 CPU cores, 7x7 at 256x256: 64 -> 3
channels 237 ms as a convolution, 107 ms this way; 24 -> 3: 124 vs 92 ms. With many output
channels the intermediate grows k*k times the output and the convolution wins, so callers pick
this form by shape (`gan_compression.layers.Conv`). The MACs counter charges the named call
like the convolution it is (`core.macs.CONV_CALLS`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lite_jax.core import macs


def tap_sum_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1, unpadded ('VALID') convolution, `lax.conv_general_dilated`'s result.

  Args:
    x: `[batch, height, width, in]`.
    kernel: `[k, k, in, out]` (HWIO).

  Returns:
    `[batch, height - k + 1, width - k + 1, out]`.
  """
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or (
      kernel.shape[2] != x.shape[-1]):
    raise ValueError(f"tap_sum_conv2d needs x [batch, height, width, in] and a square kernel "
                     f"[k, k, in, out], got {x.shape} and {kernel.shape}.")
  return _tap_sum(x, kernel)


def _tap_sum(x: jax.Array, kernel: jax.Array) -> jax.Array:
  k, _, channels, out = kernel.shape
  taps = jnp.einsum("bhwc,cto->bhwto", x,
                    kernel.transpose(2, 0, 1, 3).reshape(channels, k * k, out))
  height, width = x.shape[1] - k + 1, x.shape[2] - k + 1
  return sum(taps[:, i:i + height, j:j + width, i * k + j] for i in range(k) for j in range(k))


_tap_sum.__name__ = macs.TAP_SUM_CALL
_tap_sum = jax.jit(_tap_sum)  # a named call (`macs.counted_call`) for the MACs counter
