"""Fake quantization: linear (uniform) quantizers with straight-through gradients.

`fake_quant` is the primitive every quantized layer uses: values are clipped to the range
[-clip, clip] (signed) or [0, clip] (unsigned, half-wave), rounded to the grid of `bits`, and
returned in the input's dtype, so the model computes with exactly the values the integer
hardware would see. Rounding passes gradients straight through; clipping does not (values
outside the range get zero gradient, as `clamp` does in the reference).

`bits` and `clip` may be traced arrays: one compiled step serves every bit-width policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The bit width that means "not quantized" in a policy (HAQ's first layer keeps its input in
# full precision: the reference writes a = -1 for it). Cost models and quantizers both read it.
FULL_PRECISION = 32


def _round_ste(x: jax.Array) -> jax.Array:
  """round(x) forward, identity backward."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def quant_levels(bits: jax.Array | int, signed: bool) -> jax.Array:
  """The largest integer code: 2^(bits-1) - 1 signed (symmetric), 2^bits - 1 unsigned."""
  bits = jnp.asarray(bits, jnp.float32)
  return jnp.exp2(bits - 1) - 1 if signed else jnp.exp2(bits) - 1


def fake_quant(x: jax.Array, bits: jax.Array | int, clip: jax.Array | float, *,
               signed: bool) -> jax.Array:
  """`x` quantized to `bits` on [-clip, clip] (signed) or [0, clip] (unsigned).

  Signed: step clip / (2^(bits-1) - 1), codes -(2^(bits-1) - 1) .. 2^(bits-1) - 1 (symmetric,
  as the reference's weights). Unsigned: step clip / (2^bits - 1), 2^bits codes on [0, clip]
  (half-wave, as its post-ReLU activations). Signed 1-bit has no nonzero code; use >= 2.

  Args:
    x: any shape.
    bits: integer bit width (a Python int or a traced scalar).
    clip: the positive range limit (scalar or broadcastable to `x`); differentiable.
    signed: symmetric signed grid (weights, signed activations) or unsigned grid.

  Returns:
    The fake-quantized `x`, same shape and dtype.
  """
  dtype = x.dtype
  x32 = x.astype(jnp.float32)
  clip = jnp.maximum(jnp.asarray(clip, jnp.float32), 1e-8)
  levels = quant_levels(bits, signed)
  low = -clip if signed else jnp.zeros_like(clip)
  scale = clip / levels
  clipped = jnp.clip(x32, low, clip)
  return (_round_ste(clipped / scale) * scale).astype(dtype)
