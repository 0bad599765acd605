"""Lite Transformer encoder-decoder: Long-Short Range Attention (Wu, Liu et al., ICLR 2020).

Every self-attention sub-layer is an LSRA block: its channels are split into
branches (fairseq-style `type:kernel:dim:heads` specs), an attention branch for
global context and convolution branches (lightweight or dynamic) for local
context, whose outputs are concatenated in order. A config without branches is
the vanilla Transformer (one full-width attention branch), built by the same code.

Token ids: `pad_id` (0) pads, the decoder input is `[bos_id, y_1 .. y_m]` and its
target `[y_1 .. y_m, eos_id]` (bos 1, eos 2). Setting `bos_id = eos_id` gives
fairseq's convention of starting the decoder with eos.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lite_jax.core.errors import UserError
from lite_jax.nn import DynamicConv1D
from lite_jax.nn import LightweightConv1D
from lite_jax.nn import MultiHeadAttention
from lite_jax.nn import causal_mask
from lite_jax.nn import dense
from lite_jax.nn import key_padding_mask
from lite_jax.nn import normal_embedding_init
from lite_jax.nn import sinusoidal_positions

BRANCH_TYPES = ("attn", "dynamic", "lightweight")
# Per-layer conv kernel sizes of the reference ('default' in a branch spec).
DEFAULT_KERNEL_SIZES = (3, 7, 15, 31, 31, 31)
_CONVS = {"dynamic": DynamicConv1D, "lightweight": LightweightConv1D}


# ----------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BranchSpec:
  """One LSRA branch: `kind` over `dim` channels with `num_heads` heads.

  `kernel_size` is the conv width, or None for the layer's entry of
  `TransformerConfig.kernel_sizes` ('default' in a spec string); 'attn'
  branches ignore it.
  """

  kind: str
  kernel_size: int | None
  dim: int
  num_heads: int

  def __post_init__(self):
    if self.kind not in BRANCH_TYPES:
      raise ValueError(f"Branch type must be one of {BRANCH_TYPES}, got {self.kind!r}.")
    if self.dim < 1 or self.num_heads < 1 or self.dim % self.num_heads:
      raise ValueError(f"Branch heads ({self.num_heads}) must divide its positive dim "
                       f"({self.dim}).")
    if self.kernel_size is not None and self.kernel_size < 1:
      raise ValueError(f"Branch kernel_size must be positive, got {self.kernel_size}.")

  @classmethod
  def parse(cls, text: str) -> "BranchSpec":
    """Parses `type:kernel:dim:heads`, e.g. 'dynamic:default:248:4'."""
    fields = text.strip().split(":")
    if len(fields) != 4:
      raise ValueError(f"Branch spec {text!r} must have the form type:kernel:dim:heads.")
    kind, kernel, dim, heads = fields
    if kind not in BRANCH_TYPES:
      raise ValueError(f"Branch spec {text!r} has unknown type {kind!r}; expected one of "
                       f"{', '.join(BRANCH_TYPES)}.")
    try:
      kernel_size = None if kind == "attn" or kernel == "default" else int(kernel)
      return cls(kind, kernel_size, int(dim), int(heads))
    except ValueError as e:
      raise ValueError(f"Branch spec {text!r} is invalid: {e}") from None


def parse_branches(spec: str | Sequence[str | BranchSpec], d_model: int, *,
                   argument: str = "branches") -> tuple[BranchSpec, ...]:
  """Parses comma-separated or listed branch specs whose dims sum to `d_model`."""
  items = spec.split(",") if isinstance(spec, str) else list(spec)
  branches = tuple(b if isinstance(b, BranchSpec) else BranchSpec.parse(b) for b in items)
  total = sum(b.dim for b in branches)
  if not branches or total != d_model:
    raise ValueError(f"{argument} dims must sum to d_model={d_model}, got {total} from "
                     f"{spec!r}.")
  return branches


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Encoder-decoder hyper-parameters; branches None = vanilla Transformer.

  Attributes:
    src_vocab_size, tgt_vocab_size: vocabulary sizes.
    share_embeddings: one table for source, target and output projection
      (joined dictionary); otherwise separate tables and an own output matrix.
    d_model, ffn_dim: model width and FFN hidden width.
    num_encoder_layers, num_decoder_layers: stack depths.
    encoder_branches, decoder_branches: LSRA branch specs (strings or
      `BranchSpec`s, dims summing to d_model), or None for full-width attention
      with `num_heads` heads.
    encoder_attention_heads: heads of the full-width encoder-decoder attention.
    kernel_sizes: per-layer kernel of 'default' conv branches.
    conv_glu: Linear(c -> 2c) + GLU before dynamic convs (lightweight never).
    dropout, attention_dropout, weight_dropout, activation_dropout: residual,
      attention-probability, conv-kernel (DropConnect) and FFN-hidden dropout.
    max_len: most positions of a source or decoder input.
    pad_id, bos_id, eos_id: special token ids (see the module docstring).
    dtype, param_dtype: compute and storage dtypes.
  """

  src_vocab_size: int
  tgt_vocab_size: int
  share_embeddings: bool = False
  d_model: int = 512
  ffn_dim: int = 2048
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  encoder_branches: str | tuple[BranchSpec, ...] | None = None
  decoder_branches: str | tuple[BranchSpec, ...] | None = None
  num_heads: int = 8
  encoder_attention_heads: int = 8
  kernel_sizes: tuple[int, ...] = DEFAULT_KERNEL_SIZES
  conv_glu: bool = True
  dropout: float = 0.1
  attention_dropout: float = 0.0
  weight_dropout: float = 0.0
  activation_dropout: float = 0.0
  max_len: int = 1024
  pad_id: int = 0
  bos_id: int = 1
  eos_id: int = 2
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    # Normalise what flags and ml_collections hand over (strings, lists, dtype names)
    # so configs stay hashable and comparable.
    for name in ("encoder_branches", "decoder_branches"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, parse_branches(value, self.d_model, argument=name))
    object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
    self._validate()

  def _validate(self):
    if min(self.src_vocab_size, self.tgt_vocab_size) < 1:
      raise ValueError("src_vocab_size and tgt_vocab_size must be positive.")
    if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
      raise ValueError(f"share_embeddings needs src_vocab_size == tgt_vocab_size, got "
                       f"{self.src_vocab_size} and {self.tgt_vocab_size}.")
    ids = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
    for name, value in ids.items():
      if not 0 <= value < min(self.src_vocab_size, self.tgt_vocab_size):
        raise ValueError(f"{name}={value} is outside the vocabularies.")
    if self.pad_id in (self.bos_id, self.eos_id):
      raise ValueError(f"pad_id={self.pad_id} must differ from bos_id and eos_id.")
    if min(self.num_encoder_layers, self.num_decoder_layers) < 1:
      raise ValueError("num_encoder_layers and num_decoder_layers must be positive.")
    for name in ("num_heads", "encoder_attention_heads"):
      heads = getattr(self, name)
      if heads < 1 or self.d_model % heads:
        raise ValueError(f"{name}={heads} must divide d_model={self.d_model}.")
    for name in ("dropout", "attention_dropout", "weight_dropout", "activation_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
    if self.max_len < 2:
      raise ValueError(f"max_len must be at least 2, got {self.max_len}.")
    for stack, layers in (("encoder", self.num_encoder_layers),
                          ("decoder", self.num_decoder_layers)):
      for layer in range(layers):
        self.layer_branches(stack, layer)

  def layer_branches(self, stack: str, layer: int) -> tuple[BranchSpec, ...]:
    """Branches of layer `layer` (0-based) of the 'encoder' or 'decoder'.

    'default' kernel sizes are resolved from `kernel_sizes`; no branches
    means one full-width attention branch with `num_heads` heads.
    """
    branches = self.encoder_branches if stack == "encoder" else self.decoder_branches
    return resolve_branches(branches, self.kernel_sizes, self.d_model, self.num_heads, stack,
                            layer)


def resolve_branches(branches: tuple[BranchSpec, ...] | None, kernel_sizes: Sequence[int],
                     d_model: int, num_heads: int, stack: str,
                     layer: int) -> tuple[BranchSpec, ...]:
  """The branches of one layer with 'default' kernels taken from `kernel_sizes[layer]`.

  None means one full-width attention branch with `num_heads` heads; 'encoder' conv kernels
  must be odd (symmetric padding). Shared by every config that builds LSRA layers.
  """
  if branches is None:
    return (BranchSpec("attn", None, d_model, num_heads),)
  resolved = []
  for branch in branches:
    if branch.kind != "attn" and branch.kernel_size is None:
      if layer >= len(kernel_sizes):
        raise ValueError(f"kernel_sizes has {len(kernel_sizes)} entries but the {stack} "
                         f"has more layers; give one kernel size per layer.")
      branch = dataclasses.replace(branch, kernel_size=kernel_sizes[layer])
    if branch.kind != "attn" and stack == "encoder" and branch.kernel_size % 2 == 0:
      raise ValueError(f"Encoder conv kernel sizes must be odd (symmetric padding), got "
                       f"{branch.kernel_size} in layer {layer}.")
    resolved.append(branch)
  return tuple(resolved)


def config_branches(model: Any) -> tuple[str, str] | None:
  """The branch specs a launcher config's `model` section asks for (`kind`, `d_model`,
  `num_heads`, `conv_type`, `dtype`): 'lite' puts attention on the first half of the channels
  and a `conv_type` convolution on the rest, as the paper; 'transformer' is None (full-width
  attention). Raises `UserError` for an unknown kind or dtype."""
  if model.dtype not in ("float32", "bfloat16"):
    raise UserError(f"config.model.dtype must be 'float32' or 'bfloat16', got {model.dtype!r}.")
  if model.kind == "transformer":
    return None
  if model.kind != "lite":
    raise UserError(f"config.model.kind must be 'lite' or 'transformer', got {model.kind!r}.")
  half = model.d_model // 2
  return (f"attn:1:{half}:{model.num_heads}",
          f"{model.conv_type}:default:{model.d_model - half}:{model.num_heads}")


# ----------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------


def _layer_norm(config: TransformerConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=1e-5,  # PyTorch's default, as in the reference.
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
      name=name)


def _add_and_norm(config, residual, update, deterministic, name):
  """Post-LN residual: LayerNorm(residual + dropout(update)).

  The residual stream is constrained to `(batch, length, embed)`: under tensor parallelism
  the rules table keeps it whole on every `model` shard between the split layers (a no-op
  unless a trainer activates a mesh and rules, `core.mesh.activate`).
  """
  update = nn.Dropout(config.dropout)(update, deterministic=deterministic)
  out = _layer_norm(config, name)(residual + update)
  return nn.with_logical_constraint(out, ("batch", "length", "embed"))


class ConvBranch(nn.Module):
  """LSRA conv branch: Linear (+ GLU) -> lightweight/dynamic conv -> Linear.

  `x: [batch, length, dim]` -> `[batch, length, dim]`; `padding_mask:
  [batch, length]` (True = real token) zeroes padded conv inputs. GLU applies
  to dynamic branches only (the reference never uses it with lightweight).
  """

  spec: BranchSpec
  padding: str
  glu: bool
  weight_dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, padding_mask=None, *, deterministic=True, decode=False):
    if self.spec.kernel_size is None:
      raise ValueError("spec.kernel_size must be set; TransformerConfig.layer_branches "
                       "resolves 'default' kernels per layer.")
    channels = x.shape[-1]
    glu = self.glu and self.spec.kind == "dynamic"
    x = dense(2 * channels if glu else channels, ("embed", "mlp"), dtype=self.dtype,
              param_dtype=self.param_dtype, name="input_projection")(x)
    if glu:
      x = nn.glu(x, axis=-1)
    # Zeroing the conv input (not the branch input, whose linear bias would turn
    # padding into a constant) keeps real outputs independent of how much
    # padding a batch has, as in Wu et al.'s LightConv encoder.
    x = _CONVS[self.spec.kind](
        self.spec.num_heads, self.spec.kernel_size, padding=self.padding,
        weight_dropout=self.weight_dropout, dtype=self.dtype, param_dtype=self.param_dtype,
        name="conv")(x, padding_mask, deterministic=deterministic, decode=decode)
    return dense(channels, ("mlp", "embed"), dtype=self.dtype, param_dtype=self.param_dtype,
                 name="output_projection")(x)


class LongShortRangeAttention(nn.Module):
  """LSRA: channels split over attention and conv branches, outputs concatenated.

  Branch i takes the channels after those of branches 0..i-1 and owns its
  linears (no shared projection).

  Attributes:
    branches: the branch specs with kernel sizes resolved; dims sum to the
      input width.
    causal: causal conv padding (decoder) instead of symmetric (encoder).
    conv_glu, attention_dropout, weight_dropout: as in `TransformerConfig`.
  """

  branches: tuple[BranchSpec, ...]
  causal: bool
  conv_glu: bool = True
  attention_dropout: float = 0.0
  weight_dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, attention_mask=None, padding_mask=None, deterministic=True,
               decode=False):
    """`x: [batch, length, d]` -> `[batch, length, d]`.

    `attention_mask` goes to attention branches (see `MultiHeadAttention`),
    `padding_mask: [batch, length]` to conv branches.
    """
    if x.shape[-1] != sum(b.dim for b in self.branches):
      raise ValueError(f"x has {x.shape[-1]} channels but the branches cover "
                       f"{sum(b.dim for b in self.branches)}.")
    outputs, start = [], 0
    for i, branch in enumerate(self.branches):
      part = x[..., start:start + branch.dim]
      start += branch.dim
      if branch.kind == "attn":
        y = MultiHeadAttention(branch.num_heads, dropout_rate=self.attention_dropout,
                               dtype=self.dtype, param_dtype=self.param_dtype,
                               name=f"attn_{i}")(part, mask=attention_mask,
                                                 deterministic=deterministic, decode=decode)
      else:
        y = ConvBranch(branch, padding="causal" if self.causal else "same", glu=self.conv_glu,
                       weight_dropout=self.weight_dropout, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"{branch.kind}_{i}")(
                           part, padding_mask, deterministic=deterministic, decode=decode)
      outputs.append(y)
    return jnp.concatenate(outputs, axis=-1)


class FeedForward(nn.Module):
  """Position-wise Linear -> ReLU -> dropout -> Linear, `[..., d] -> [..., d]`."""

  hidden_dim: int
  activation_dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic=True):
    h = dense(self.hidden_dim, ("embed", "mlp"), dtype=self.dtype,
              param_dtype=self.param_dtype, name="hidden")(x)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))  # split over `model` in TP
    h = nn.Dropout(self.activation_dropout)(nn.relu(h), deterministic=deterministic)
    return dense(x.shape[-1], ("mlp", "embed"), dtype=self.dtype,
                 param_dtype=self.param_dtype, name="output")(h)


def _self_attention(config, stack, layer):
  return LongShortRangeAttention(
      config.layer_branches(stack, layer), causal=stack == "decoder", conv_glu=config.conv_glu,
      attention_dropout=config.attention_dropout, weight_dropout=config.weight_dropout,
      dtype=config.dtype, param_dtype=config.param_dtype, name="self_attention")


def _feed_forward(config):
  return FeedForward(config.ffn_dim, config.activation_dropout, dtype=config.dtype,
                     param_dtype=config.param_dtype, name="ffn")


class EncoderLayer(nn.Module):
  """LSRA (symmetric conv padding) and FFN, each post-LN residual."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x, valid, *, deterministic=True):
    """`x: [batch, length, d]`, `valid: [batch, length]` (True = real token)."""
    cfg = self.config
    h = _self_attention(cfg, "encoder", self.layer)(
        x, attention_mask=key_padding_mask(valid), padding_mask=valid,
        deterministic=deterministic)
    x = _add_and_norm(cfg, x, h, deterministic, "self_attention_norm")
    h = _feed_forward(cfg)(x, deterministic=deterministic)
    return _add_and_norm(cfg, x, h, deterministic, "ffn_norm")


class DecoderLayer(nn.Module):
  """Causal LSRA, full-width encoder-decoder attention and FFN, post-LN."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x, encoded, src_valid, *, deterministic=True, decode=False):
    """`x: [batch, tgt_len, d]`, `encoded: [batch, src_len, d]`, `src_valid: [batch, src_len]`."""
    cfg = self.config
    # Decode steps mask through the cache index instead of a causal mask.
    self_mask = None if decode else causal_mask(x.shape[1])
    h = _self_attention(cfg, "decoder", self.layer)(
        x, attention_mask=self_mask, deterministic=deterministic, decode=decode)
    x = _add_and_norm(cfg, x, h, deterministic, "self_attention_norm")
    h = MultiHeadAttention(cfg.encoder_attention_heads, dropout_rate=cfg.attention_dropout,
                           dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                           name="encoder_attention")(
                               x, encoded, key_padding_mask(src_valid),
                               deterministic=deterministic, decode=decode)
    x = _add_and_norm(cfg, x, h, deterministic, "encoder_attention_norm")
    h = _feed_forward(cfg)(x, deterministic=deterministic)
    return _add_and_norm(cfg, x, h, deterministic, "ffn_norm")


# ----------------------------------------------------------------------------------------
# Stacks and the encoder-decoder
# ----------------------------------------------------------------------------------------


def _check_tokens(tokens, name, max_len):
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array [batch, length], got "
                     f"{tokens.dtype}{list(tokens.shape)}.")
  if tokens.shape[1] > max_len:
    raise ValueError(f"{name} has length {tokens.shape[1]} > config.max_len={max_len}.")


def _embed(config, embedding, tokens, positions, deterministic):
  """Scaled token embeddings plus sinusoidal positions `[len, d]`, then dropout."""
  x = embedding(tokens) * math.sqrt(config.d_model) + positions.astype(config.dtype)
  return nn.Dropout(config.dropout)(x, deterministic=deterministic)


def decode_positions(module: nn.Module, max_len: int, d_model: int,
                     positions: jax.Array) -> jax.Array:
  """The position row `[1, d]` of this decode step, counted in `module`'s 'cache'.

  On the cache-creating call (the whole dummy sequence), `positions` unchanged.
  """
  is_initialized = module.has_variable("cache", "position")
  position = module.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
  if not is_initialized:
    return positions
  table = sinusoidal_positions(max_len, d_model)
  step = lax.dynamic_slice_in_dim(table, position.value, 1)
  position.value = position.value + 1
  return step


class Encoder(nn.Module):
  """Embeddings and encoder layers (no final LayerNorm)."""

  config: TransformerConfig
  embedding: nn.Embed

  @nn.compact
  def __call__(self, src_tokens, *, deterministic=True):
    """`src_tokens: [batch, src_len]` -> (`[batch, src_len, d]`, valid `[batch, src_len]`)."""
    cfg = self.config
    _check_tokens(src_tokens, "src_tokens", cfg.max_len)
    valid = src_tokens != cfg.pad_id
    # The whole table, sliced: the source length may be symbolic (`export.py`).
    positions = sinusoidal_positions(cfg.max_len, cfg.d_model)[:src_tokens.shape[1]]
    x = _embed(cfg, self.embedding, src_tokens, positions, deterministic)
    for i in range(cfg.num_encoder_layers):
      x = EncoderLayer(cfg, i, name=f"layer_{i}")(x, valid, deterministic=deterministic)
    return x, valid


class Decoder(nn.Module):
  """Embeddings, decoder layers and the output projection (no final LayerNorm)."""

  config: TransformerConfig
  embedding: nn.Embed

  @nn.compact
  def __call__(self, tgt_in_tokens, encoded, src_valid, *, deterministic=True, decode=False,
               return_hidden=False):
    """`tgt_in_tokens: [batch, tgt_len]` -> logits `[batch, tgt_len, tgt_vocab]` (float32).

    With `return_hidden`, the last layer's output `[batch, tgt_len, d]` instead.
    """
    cfg = self.config
    _check_tokens(tgt_in_tokens, "tgt_in_tokens", cfg.max_len)
    positions = sinusoidal_positions(tgt_in_tokens.shape[1], cfg.d_model)
    if decode:
      positions = decode_positions(self, cfg.max_len, cfg.d_model, positions)
    x = _embed(cfg, self.embedding, tgt_in_tokens, positions, deterministic)
    for i in range(cfg.num_decoder_layers):
      x = DecoderLayer(cfg, i, name=f"layer_{i}")(x, encoded, src_valid,
                                                  deterministic=deterministic, decode=decode)
    if return_hidden:
      return x
    if cfg.share_embeddings:
      logits = self.embedding.attend(x)
    else:
      logits = dense(cfg.tgt_vocab_size, ("embed", "vocab"), use_bias=False,
                     kernel_init=nn.initializers.normal(cfg.d_model**-0.5), dtype=cfg.dtype,
                     param_dtype=cfg.param_dtype, name="output_projection")(x)
    return logits.astype(jnp.float32)


class EncoderDecoder(nn.Module):
  """Lite Transformer (or vanilla Transformer) for sequence-to-sequence tasks.

  Embeddings are N(0, d^-1/2) with a zero `pad_id` row and scaled by sqrt(d).
  Parameters: 'shared_embedding' (share_embeddings) or 'source_embedding' +
  'target_embedding' (+ 'decoder/output_projection'), 'encoder', 'decoder'.

  Incremental decoding: build the cache with `init_cache`, then call `decode`
  with `decode=True`, one `[batch, 1]` token per call and `mutable=['cache']`.
  """

  config: TransformerConfig

  def setup(self):
    cfg = self.config

    def embed(vocab_size):
      return nn.Embed(
          vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
          embedding_init=nn.with_logical_partitioning(
              normal_embedding_init(cfg.d_model**-0.5, cfg.pad_id), ("vocab", "embed")))

    if cfg.share_embeddings:
      self.shared_embedding = embed(cfg.src_vocab_size)
      source, target = self.shared_embedding, self.shared_embedding
    else:
      self.source_embedding = embed(cfg.src_vocab_size)
      self.target_embedding = embed(cfg.tgt_vocab_size)
      source, target = self.source_embedding, self.target_embedding
    self.encoder = Encoder(cfg, source)
    self.decoder = Decoder(cfg, target)

  def encode(self, src_tokens, *, deterministic=True):
    """Encodes `src_tokens: [batch, src_len]`.

    Returns (encoded `[batch, src_len, d]`, src_mask `[batch, src_len]`), the mask True at
    real (non-pad) tokens.
    """
    return self.encoder(src_tokens, deterministic=deterministic)

  def decode(self, encoded, src_mask, tgt_in_tokens, *, deterministic=True, decode=False,
             return_hidden=False):
    """Logits `[batch, tgt_len, tgt_vocab]` (float32) for `tgt_in_tokens: [batch, tgt_len]`.

    `encoded: [batch, src_len, d]` and `src_mask: [batch, src_len]` come from `encode`.
    `return_hidden` returns the `[batch, tgt_len, d]` states before the output projection
    instead. `decode=True`: see the class docstring.
    """
    batch = tgt_in_tokens.shape[0]
    if encoded.shape[0] != batch or encoded.shape[2:] != (self.config.d_model,):
      raise ValueError(f"encoded must have shape [{batch}, src_len, {self.config.d_model}], "
                       f"got {encoded.shape}.")
    if src_mask.shape != encoded.shape[:2] or src_mask.dtype != bool:
      raise ValueError(f"src_mask must be a boolean array of shape {list(encoded.shape[:2])}, "
                       f"got {src_mask.dtype}{list(src_mask.shape)}.")
    return self.decoder(tgt_in_tokens, encoded, src_mask, deterministic=deterministic,
                        decode=decode, return_hidden=return_hidden)

  def __call__(self, src_tokens, tgt_in_tokens, *, deterministic=True):
    """Teacher-forced logits `[batch, tgt_len, tgt_vocab]` for `[batch, src_len]` sources."""
    encoded, src_mask = self.encode(src_tokens, deterministic=deterministic)
    return self.decode(encoded, src_mask, tgt_in_tokens, deterministic=deterministic)


def init_cache(model: EncoderDecoder, params, encoded: jax.Array, src_mask: jax.Array,
               length: int):
  """Decoder cache for up to `length` decode steps over the given encoder output.

  Runs the decoder once over a `[batch, length]` dummy input in decode mode,
  which sizes the self-attention caches and stores the encoder-decoder
  attention's projected keys and values.
  """
  if not 1 <= length <= model.config.max_len:
    raise ValueError(f"length must be in [1, config.max_len={model.config.max_len}], got "
                     f"{length}.")
  dummy = jnp.full((encoded.shape[0], length), model.config.pad_id, jnp.int32)
  _, variables = model.apply({"params": params}, encoded, src_mask, dummy, decode=True,
                             mutable=["cache"], method=EncoderDecoder.decode)
  return variables["cache"]
