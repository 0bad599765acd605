"""Decoder-only Lite Transformer language model (fairseq `transformer_lm_multibranch_v2`).

The decoder layer of the translation model minus its encoder attention, pre-LN (fairseq forces
`decoder_normalize_before` for LMs): `x + dropout(LSRA(LN(x)))`, then `x + dropout(FFN(LN(x)))`.
Tokens enter through an adaptive input (`lite_jax.nn.AdaptiveInput`, scaled by sqrt(d), plus
sinusoidal positions, then dropout) and leave through an adaptive softmax tied to it.
The reference's WikiText-103 architecture (`..._wiki103_small`) sets `no_decoder_final_norm`,
so there is no LayerNorm after the last layer unless `final_norm` asks for one.

Incremental decoding reuses the translation decoder's machinery (attention key/value caches,
conv input buffers, the position counter): make the cache with `init_cache`, then call with
`decode=True`, one `[batch, 1]` token per call and `mutable=['cache']`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lite_jax.lite_transformer.model import (BranchSpec, _feed_forward, _layer_norm,
                                             _self_attention, decode_positions,
                                             parse_branches, resolve_branches)
from lite_jax.nn import AdaptiveInput, AdaptiveSoftmax, causal_mask, sinusoidal_positions

# The reference LM's per-layer kernels: [15] * 2 + [31] * 4 + [63] * 11, cut to 12 layers.
LM_KERNEL_SIZES = (15, 15, 31, 31, 31, 31, 63, 63, 63, 63, 63, 63)


@dataclasses.dataclass(frozen=True)
class LanguageModelConfig:
  """Hyper-parameters of `LanguageModel`; branches None = vanilla Transformer LM.

  Attributes:
    vocab_size: V (fairseq dictionary: `pad_id` 1).
    d_model, ffn_dim, num_layers: width, FFN hidden width, depth.
    branches: LSRA branch specs (`type:kernel:dim:heads`, dims summing to d_model), or None
      for full-width attention with `num_heads` heads.
    kernel_sizes: per-layer kernel of 'default' conv branches.
    conv_glu: Linear(c -> 2c) + GLU before dynamic convs.
    cutoffs, adaptive_factor: adaptive input/softmax bands (empty cutoffs = one band).
    tie_adaptive_weights, tie_adaptive_proj: share the softmax's tables (and projections) with
      the adaptive input.
    adaptive_softmax_dropout: dropout inside the adaptive softmax.
    softmax_chunk_size: tail bands larger than this are normalised in chunks (0 = at once).
    dropout, attention_dropout, weight_dropout, activation_dropout: residual (and embedding),
      attention-probability, conv-kernel DropConnect and FFN-hidden dropout.
    final_norm: a LayerNorm after the last layer.
    max_len: most positions of an input.
  """

  vocab_size: int
  d_model: int = 896
  ffn_dim: int = 896
  num_layers: int = 12
  branches: str | tuple[BranchSpec, ...] | None = None
  num_heads: int = 8
  kernel_sizes: tuple[int, ...] = LM_KERNEL_SIZES
  conv_glu: bool = True
  cutoffs: tuple[int, ...] = (20000, 60000)
  adaptive_factor: float = 4.0
  tie_adaptive_weights: bool = True
  tie_adaptive_proj: bool = True
  adaptive_softmax_dropout: float = 0.0
  softmax_chunk_size: int = 0
  dropout: float = 0.1
  attention_dropout: float = 0.0
  weight_dropout: float = 0.0
  activation_dropout: float = 0.0
  final_norm: bool = False
  max_len: int = 3072
  pad_id: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if self.branches is not None:
      object.__setattr__(self, "branches", parse_branches(self.branches, self.d_model))
    object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
    object.__setattr__(self, "cutoffs", tuple(int(c) for c in self.cutoffs))
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
    if self.vocab_size < 2 or self.num_layers < 1 or self.max_len < 2:
      raise ValueError("vocab_size, num_layers and max_len must be at least 2, 1 and 2.")
    if self.num_heads < 1 or self.d_model % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide d_model={self.d_model}.")
    for name in ("dropout", "attention_dropout", "weight_dropout", "activation_dropout",
                 "adaptive_softmax_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
    if not 0 <= self.pad_id < self.vocab_size:
      raise ValueError(f"pad_id={self.pad_id} is outside the vocabulary.")
    if self.tie_adaptive_proj and not self.tie_adaptive_weights:
      raise ValueError("tie_adaptive_proj needs tie_adaptive_weights.")
    for layer in range(self.num_layers):
      self.layer_branches("decoder", layer)

  def layer_branches(self, stack: str, layer: int) -> tuple[BranchSpec, ...]:
    """Branches of layer `layer` with kernel sizes resolved (the LSRA builder's interface)."""
    return resolve_branches(self.branches, self.kernel_sizes, self.d_model, self.num_heads,
                            stack, layer)


class LanguageModelLayer(nn.Module):
  """Pre-LN causal LSRA and FFN: `[batch, length, d]` -> `[batch, length, d]`."""

  config: LanguageModelConfig
  layer: int

  @nn.compact
  def __call__(self, x, *, deterministic=True, decode=False):
    cfg = self.config
    # Decode steps mask through the cache index instead of a causal mask.
    mask = None if decode else causal_mask(x.shape[1])
    h = _layer_norm(cfg, "self_attention_norm")(x)
    h = _self_attention(cfg, "decoder", self.layer)(h, attention_mask=mask,
                                                     deterministic=deterministic,
                                                     decode=decode)
    x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    h = _feed_forward(cfg)(_layer_norm(cfg, "ffn_norm")(x), deterministic=deterministic)
    x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class _Positions(nn.Module):
  """Sinusoidal positions `[length, d]`, or this decode step's `[1, d]`."""

  config: LanguageModelConfig

  @nn.compact
  def __call__(self, length: int, decode: bool) -> jax.Array:
    cfg = self.config
    positions = sinusoidal_positions(length, cfg.d_model)
    if decode:
      positions = decode_positions(self, cfg.max_len, cfg.d_model, positions)
    return positions


class LanguageModel(nn.Module):
  """Lite Transformer (or vanilla Transformer) language model with adaptive input/softmax.

  Parameters: 'embed' (adaptive input), 'softmax' (cluster weights, plus its own tables when
  untied), 'layer_i', optionally 'final_norm'.

  Methods: `__call__(inputs, targets)` -> NLL `[batch, length]`; `hidden(inputs)` -> the
  last layer's states `[batch, length, d]`; `log_probs(inputs)` -> `[batch, length, vocab]`.
  """

  config: LanguageModelConfig

  def setup(self):
    cfg = self.config
    self.embed = AdaptiveInput(cfg.vocab_size, cfg.d_model, cfg.cutoffs, cfg.adaptive_factor,
                               pad_id=cfg.pad_id, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.softmax = AdaptiveSoftmax(
        cfg.vocab_size, cfg.d_model, cfg.cutoffs, cfg.adaptive_factor,
        dropout=cfg.adaptive_softmax_dropout,
        tied_input=self.embed if cfg.tie_adaptive_weights else None,
        tie_projections=cfg.tie_adaptive_proj, chunk_size=cfg.softmax_chunk_size,
        dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.positions = _Positions(cfg)
    self.layers = [LanguageModelLayer(cfg, i, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_layer_norm = _layer_norm(cfg, "final_norm") if cfg.final_norm else None
    self.embed_dropout = nn.Dropout(cfg.dropout)

  def hidden(self, inputs: jax.Array, *, deterministic: bool = True,
             decode: bool = False) -> jax.Array:
    """`inputs: [batch, length]` int -> last-layer states `[batch, length, d]`."""
    cfg = self.config
    if inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f"inputs must be an integer array [batch, length], got "
                       f"{inputs.dtype}{list(inputs.shape)}.")
    if inputs.shape[1] > cfg.max_len:
      raise ValueError(f"inputs has length {inputs.shape[1]} > config.max_len={cfg.max_len}.")
    x = self.embed(inputs) * math.sqrt(cfg.d_model)
    x = x + self.positions(inputs.shape[1], decode).astype(cfg.dtype)
    x = self.embed_dropout(x, deterministic=deterministic)
    for layer in self.layers:
      x = layer(x, deterministic=deterministic, decode=decode)
    if self.final_layer_norm is not None:
      x = self.final_layer_norm(x)
    return x

  def __call__(self, inputs: jax.Array, targets: jax.Array, *,
               deterministic: bool = True) -> jax.Array:
    """NLL (nats) of `targets: [batch, length]` after `inputs: [batch, length]`, float32."""
    if targets.shape != inputs.shape:
      raise ValueError(f"targets must have the inputs' shape {list(inputs.shape)}, got "
                       f"{list(targets.shape)}.")
    h = self.hidden(inputs, deterministic=deterministic)
    return self.softmax.nll(h, targets, deterministic=deterministic)

  def log_probs(self, inputs: jax.Array, *, deterministic: bool = True,
                decode: bool = False) -> jax.Array:
    """Next-token log-probabilities `[batch, length, vocab]` (float32)."""
    h = self.hidden(inputs, deterministic=deterministic, decode=decode)
    return self.softmax.log_probs(h, deterministic=deterministic)


def init_cache(model: LanguageModel, params: Any, batch: int, length: int) -> Any:
  """Decode cache for up to `length` steps: one decode-mode pass over a dummy `[batch, length]`
  sizes the attention caches and creates the conv buffers and position counter."""
  if not 1 <= length <= model.config.max_len:
    raise ValueError(f"length must be in [1, config.max_len={model.config.max_len}], got "
                     f"{length}.")
  dummy = jnp.full((batch, length), model.config.pad_id, jnp.int32)
  _, variables = model.apply({"params": params}, dummy, decode=True, mutable=["cache"],
                             method=LanguageModel.hidden)
  return variables["cache"]


def generate(model: LanguageModel, params: Any, prompt: jax.Array, num_tokens: int,
             key: jax.Array, *, temperature: float = 1.0, greedy: bool = False) -> jax.Array:
  """`prompt: [batch, p]` (p >= 1) followed by `num_tokens` sampled (or greedy) tokens.

  The prompt is fed one token per step through the cache; sampling starts after its last
  token. Returns `[batch, p + num_tokens]` int32. Jit with `num_tokens`, `temperature` and
  `greedy` static.
  """
  batch, prompt_len = prompt.shape
  total = prompt_len + num_tokens
  cache = init_cache(model, params, batch, total)

  def step(carry, index):
    cache, token = carry
    log_probs, variables = model.apply(
        {"params": params, "cache": cache}, token[:, None], decode=True, mutable=["cache"],
        method=LanguageModel.log_probs)
    logits = log_probs[:, 0]
    if greedy:
      sampled = jnp.argmax(logits, axis=-1)
    else:
      sampled = jax.random.categorical(jax.random.fold_in(key, index), logits / temperature)
    following = jnp.where(index + 1 < prompt_len,
                          prompt[:, jnp.minimum(index + 1, prompt_len - 1)], sampled)
    following = following.astype(jnp.int32)
    return (variables["cache"], following), following

  _, tokens = jax.lax.scan(step, (cache, prompt[:, 0].astype(jnp.int32)),
                           jnp.arange(total - 1))
  return jnp.concatenate([prompt[:, :1].astype(jnp.int32), tokens.T], axis=1)

