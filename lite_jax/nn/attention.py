"""Multi-head attention in fairseq's layout, with incremental decoding."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def causal_mask(length: int) -> jax.Array:
  """Boolean mask `[1, 1, length, length]`: query t may attend keys <= t."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def key_padding_mask(key_valid: jax.Array) -> jax.Array:
  """Boolean mask `[batch, 1, 1, kv_len]` from `key_valid: [batch, kv_len]` (True = real).

  Only keys are masked, as in fairseq: queries at padded positions still produce outputs,
  which callers ignore.
  """
  if key_valid.ndim != 2:
    raise ValueError(f"key_valid must have shape [batch, kv_len], got {key_valid.shape}.")
  return key_valid.astype(bool)[:, None, None, :]


def _check_mask(mask: jax.Array, expected: tuple[int, ...]) -> None:
  if (mask.dtype != bool or mask.ndim != 4
      or any(m not in (1, e) for m, e in zip(mask.shape, expected))):
    raise ValueError(f"mask must be a 4-d boolean array broadcastable to [batch, heads, q_len, "
                     f"kv_len] = {list(expected)}, got {mask.dtype}{list(mask.shape)}.")


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention with fused biased QKV and out projections.

  Parameters follow fairseq's `MultiheadAttention`: one in-projection for query, key and
  value (`qkv_kernel: [embed, 3, heads, kv]`, Xavier-uniform over the whole fused matrix,
  zero bias) and a biased out-projection. Cross-attention uses the query part of the same
  kernel for `inputs_q` and its key/value part for `inputs_kv`.

  Incremental decoding (`decode=True`) uses the 'cache' collection. The first `decode=True`
  call creates the cache and computes its output normally: self-attention sizes its
  key/value cache by that call's `q_len` (so make it with the full decode length),
  cross-attention stores the projected `inputs_kv`. Every later self-attention call takes
  exactly one new query token, writes its key/value at the cache index and attends to the
  filled slots; cross-attention reuses the stored projections and ignores the content of
  `inputs_kv`.

  Attributes:
    num_heads: number of heads; must divide the feature size.
    dropout_rate: dropout on the attention probabilities.
    dtype: compute dtype; param_dtype: storage dtype.
  """

  num_heads: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array | None = None,
               mask: jax.Array | None = None, *, deterministic: bool = True,
               decode: bool = False) -> jax.Array:
    """Attends `inputs_q` to `inputs_kv` (or to itself when None).

    Args:
      inputs_q: `[batch, q_len, features]`.
      inputs_kv: `[batch, kv_len, features]`, or None for self-attention.
      mask: boolean, broadcastable `[batch|1, heads|1, q_len|1, kv_len]`, True = attend. In
        self-attention decode steps `kv_len` is the cache length; the mask is combined with
        "slot <= cache index".
      deterministic: disables dropout when True; otherwise needs a 'dropout' rng.
      decode: incremental decoding through the 'cache' collection.

    Returns:
      `[batch, q_len, features]`.
    """
    if inputs_q.ndim != 3:
      raise ValueError(f"inputs_q must have shape [batch, q_len, features], got "
                       f"{inputs_q.shape}.")
    batch, q_len, features = inputs_q.shape
    if features % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the feature size {features}.")
    if inputs_kv is not None and (inputs_kv.ndim != 3 or inputs_kv.shape[0] != batch
                                  or inputs_kv.shape[2] != features):
      raise ValueError(f"inputs_kv must have shape [{batch}, kv_len, {features}], got "
                       f"{inputs_kv.shape}.")
    head_dim = features // self.num_heads

    def param(name, init, axes, shape):
      return self.param(name, nn.with_logical_partitioning(init, axes), shape,
                        self.param_dtype)

    # Fused fan_out = 3 * features: Xavier over fairseq's [3d, d] in-projection matrix.
    fused_xavier = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=0,
                                                    out_axis=(1, 2, 3))
    out_xavier = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1),
                                                  out_axis=2)
    zeros = nn.initializers.zeros_init()
    heads = (self.num_heads, head_dim)
    qkv_kernel = param("qkv_kernel", fused_xavier, ("embed", None, "heads", "kv"),
                       (features, 3, *heads))
    qkv_bias = param("qkv_bias", zeros, (None, "heads", "kv"), (3, *heads))
    out_kernel = param("out_kernel", out_xavier, ("heads", "kv", "embed"), (*heads, features))
    out_bias = param("out_bias", zeros, ("embed",), (features,))
    inputs_q, qkv_kernel, qkv_bias, out_kernel, out_bias = nn.dtypes.promote_dtype(
        inputs_q, qkv_kernel, qkv_bias, out_kernel, out_bias, dtype=self.dtype)

    def project(x, parts):
      """`x: [batch, len, features]` -> `[batch, len, len(parts), heads, head_dim]`."""
      return jnp.einsum("btd,dnhk->btnhk", x, qkv_kernel[:, parts]) + qkv_bias[parts]

    filled_cache_slots = None
    if inputs_kv is None:
      query, key, value = jnp.moveaxis(project(inputs_q, slice(0, 3)), 2, 0)
      if decode:
        key, value, filled_cache_slots = self._self_attention_cache(key, value)
    else:
      (inputs_kv,) = nn.dtypes.promote_dtype(inputs_kv, dtype=self.dtype)
      query = project(inputs_q, slice(0, 1))[:, :, 0]
      if decode:
        key_value = self.variable("cache", "cached_key_value",
                                  lambda: project(inputs_kv, slice(1, 3))).value
      else:
        key_value = project(inputs_kv, slice(1, 3))
      key, value = jnp.moveaxis(key_value, 2, 0)

    if mask is not None:
      _check_mask(mask, (batch, self.num_heads, q_len, key.shape[1]))
    if filled_cache_slots is not None:
      mask = filled_cache_slots if mask is None else mask & filled_cache_slots
    logits = jnp.einsum("bqhd,bkhd->bhqk", query * head_dim**-0.5, key)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    # Softmax in float32 so that bfloat16 compute still gets normalised probabilities.
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, value)
    return jnp.einsum("bqhd,hde->bqe", context, out_kernel) + out_bias

  def _self_attention_cache(self, key, value):
    """Writes this step's key/value into the cache.

    Returns the cached keys and values and a mask `[1, 1, 1, cache_len]` of the filled
    slots; on the cache-creating call, the inputs and None.
    """
    is_initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not is_initialized:
      return key, value, None
    if key.shape[1] != 1:
      raise ValueError(f"inputs_q must hold exactly one token per decode step, got "
                       f"q_len={key.shape[1]}.")
    index = cache_index.value
    cached_key.value = lax.dynamic_update_slice_in_dim(cached_key.value, key, index, axis=1)
    cached_value.value = lax.dynamic_update_slice_in_dim(cached_value.value, value, index,
                                                         axis=1)
    cache_index.value = index + 1
    filled = jnp.arange(cached_key.value.shape[1]) <= index
    return cached_key.value, cached_value.value, filled[None, None, None]
