"""Lightweight and dynamic depthwise 1-D convolutions (Wu et al., 2019).

Both split the `C` channels into `H` contiguous head groups (channel `c` uses head
`c // (C / H)`), normalise each head's `K` taps with a softmax and then apply DropConnect
to the normalised kernel. Neither has a bias nor the surrounding linear layers; the Lite
Transformer conv branch wraps them.

Padding: 'same' pads `K // 2` on both sides (odd `K`, encoders); 'causal' pads `K - 1` on
the left (decoders), so output t sees inputs `t - K + 1 .. t`. Incremental decoding
(`decode=True`, causal only) keeps the last `K - 1` inputs in the 'cache' collection: the
first `decode=True` call creates a zero buffer and computes its output normally, every
later call takes one token.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lite_jax.nn.linear import dense

PADDINGS = ("same", "causal")


def _padding_widths(kernel_size: int, padding: str) -> tuple[int, int]:
  if padding not in PADDINGS:
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}.")
  if kernel_size < 1:
    raise ValueError(f"kernel_size must be positive, got {kernel_size}.")
  if padding == "causal":
    return kernel_size - 1, 0
  if kernel_size % 2 == 0:
    raise ValueError(f"kernel_size must be odd for padding='same', got {kernel_size}.")
  return kernel_size // 2, kernel_size // 2


def _softmax_taps(weights, weight_softmax, dtype):
  """Normalises each head's taps (last axis); float32 keeps their sum at 1."""
  if weight_softmax:
    weights = jax.nn.softmax(weights.astype(jnp.float32), axis=-1)
  return weights.astype(dtype)


class _HeadGroupedConv1D(nn.Module):
  """What the lightweight and dynamic convolutions share.

  Attributes:
    num_heads: H, must divide the channel count.
    kernel_size: K.
    padding: 'same' (odd K) or 'causal'.
    weight_softmax: softmax the taps of each head.
    weight_dropout: DropConnect rate on the normalised kernel.
    dtype: compute dtype; param_dtype: storage dtype.

  Call: `x: [batch, length, channels]` -> `[batch, length, channels]`, with
  `padding_mask: [batch, length]` (True = real token; padded inputs are zeroed first),
  `deterministic` (False needs a 'dropout' rng) and `decode`.
  """

  num_heads: int
  kernel_size: int
  padding: str = "same"
  weight_softmax: bool = True
  weight_dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _prepare(self, x, padding_mask):
    """Validates the inputs; returns the padding widths and `x` with padding zeroed."""
    widths = _padding_widths(self.kernel_size, self.padding)
    if x.ndim != 3:
      raise ValueError(f"x must have shape [batch, length, channels], got {x.shape}.")
    if x.shape[-1] % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the channel count "
                       f"{x.shape[-1]}.")
    (x,) = nn.dtypes.promote_dtype(x, dtype=self.dtype)
    if padding_mask is None:
      return widths, x
    if padding_mask.shape != x.shape[:2]:
      raise ValueError(f"padding_mask must have shape [batch, length] = {list(x.shape[:2])}, "
                       f"got {padding_mask.shape}.")
    return widths, jnp.where(padding_mask[..., None], x, jnp.zeros((), x.dtype))

  def _drop_connect(self, kernel, deterministic):
    return nn.Dropout(self.weight_dropout)(kernel, deterministic=deterministic)

  def _decode_window(self, x):
    """The inputs `[batch, K, channels]` ending at this step's token.

    None on the call that creates the buffer of the last `K - 1` inputs (that call
    computes the whole sequence normally).
    """
    if self.padding != "causal":
      raise ValueError("decode=True requires padding='causal'.")
    batch, length, channels = x.shape
    is_initialized = self.has_variable("cache", "previous_inputs")
    previous = self.variable("cache", "previous_inputs", jnp.zeros,
                             (batch, self.kernel_size - 1, channels), x.dtype)
    if not is_initialized:
      return None
    if length != 1:
      raise ValueError(f"x must hold exactly one token per decode step, got length={length}.")
    window = jnp.concatenate([previous.value, x], axis=1)
    previous.value = window[:, 1:]
    return window


class LightweightConv1D(_HeadGroupedConv1D):
  """Depthwise conv whose `(H, K)` softmax-normalised kernel is shared within each head.

  Computed as a depthwise convolution with each head's kernel repeated over its `C / H`
  channels.
  """

  @nn.compact
  def __call__(self, x: jax.Array, padding_mask: jax.Array | None = None, *,
               deterministic: bool = True, decode: bool = False) -> jax.Array:
    (left, right), x = self._prepare(x, padding_mask)
    channels = x.shape[-1]
    weight = self.param(
        "kernel",
        nn.with_logical_partitioning(nn.initializers.xavier_uniform(in_axis=-1, out_axis=-2),
                                     (None, None)),
        (self.num_heads, self.kernel_size), self.param_dtype)
    kernel = self._drop_connect(_softmax_taps(weight, self.weight_softmax, self.dtype),
                                deterministic)
    per_channel = jnp.repeat(kernel, channels // self.num_heads, axis=0)  # [C, K]

    window = self._decode_window(x) if decode else None
    if window is not None:
      return jnp.einsum("bkc,ck->bc", window, per_channel)[:, None]
    return lax.conv_general_dilated(
        x, per_channel.T[:, None, :],  # [K, 1, C]: one input channel per group.
        window_strides=(1,), padding=[(left, right)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=channels)


class DynamicConv1D(_HeadGroupedConv1D):
  """Depthwise conv with a kernel predicted from each timestep's input.

  A bias-free linear `C -> H * K` generates the kernel of step t from `x[:, t]`. The
  normalised kernels (before DropConnect) are sown to the 'intermediates' collection as
  `kernels: [batch, length, H, K]`.
  """

  @nn.compact
  def __call__(self, x: jax.Array, padding_mask: jax.Array | None = None, *,
               deterministic: bool = True, decode: bool = False) -> jax.Array:
    (left, right), x = self._prepare(x, padding_mask)
    batch, length, channels = x.shape
    logits = dense(self.num_heads * self.kernel_size, ("embed", None), use_bias=False,
                   dtype=self.dtype, param_dtype=self.param_dtype, name="kernel_generator")(x)
    kernels = _softmax_taps(logits.reshape(batch, length, self.num_heads, self.kernel_size),
                            self.weight_softmax, self.dtype)
    self.sow("intermediates", "kernels", kernels)
    kernels = self._drop_connect(kernels, deterministic)

    window = self._decode_window(x) if decode else None
    if window is None:
      window = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
    return _tap_sum(window, kernels)


def _tap_sum(padded: jax.Array, kernels: jax.Array) -> jax.Array:
  """`out[b, t, c] = sum_k padded[b, t + k, c] * kernels[b, t, head(c), k]`.

  Args:
    padded: `[batch, length + K - 1, channels]` inputs, already padded.
    kernels: `[batch, length, H, K]` per-step kernels.

  A sum of K shifted, scaled copies: XLA fuses it into one elementwise pass. The same
  contraction written as an einsum over stacked windows materialises K copies of the input
  and runs batched matmuls with a contraction of K; on CPU that was ~20x slower forward.
  """
  batch, length, heads, taps = kernels.shape
  channels = padded.shape[-1]
  grouped = padded.reshape(batch, length + taps - 1, heads, channels // heads)
  out = sum(grouped[:, k:k + length] * kernels[..., k, None] for k in range(taps))
  return out.reshape(batch, length, channels)
