"""PyTorch peer of the Lite Transformer / Transformer encoder-decoder
(`lite_jax.lite_transformer.model.EncoderDecoder`), its training step and its beam search.

Built from the same `TransformerConfig`: post-LN layers; scaled token embeddings plus fairseq's
sinusoidal positions; every self-attention sub-layer an LSRA block (channels split into an
attention branch and a dynamic-conv branch: Linear -> GLU -> dynamic conv with softmax-normalised
per-step kernels and DropConnect -> Linear, conv inputs at padding zeroed; causal in the decoder;
fairseq's banded-matrix `bmm` up to 512 steps, unfolded windows beyond and in decoding)
or, without branches, full-width attention; fused-QKV multi-head attention on
`F.scaled_dot_product_attention`; ReLU FFN; output projection tied to the embedding when
shared. Training: label-smoothed cross-entropy averaged over target tokens, `torch.optim.Adam`
(betas 0.9 / 0.98, eps 1e-8), dropout as configured. Beam search: fairseq's (2 x beam
candidates, eos within the first beam finalises, length penalty, eos forced at the length limit)
with incremental decoding (key/value caches, conv input windows, cross-attention keys and
values computed once), as `lite_jax.lite_transformer.beam_search.beam_search` runs it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from flax import linen as flax_nn
import torch.nn.functional as F
from torch import nn

from benchmarks import peers
from lite_jax.lite_transformer import model as jax_model
from lite_jax.nn import sinusoidal_positions


# fairseq's dynamic conv multiplies a banded matrix for sequences up to this length (fast for
# short ones) and unfolds windows beyond it.
EXPAND_MAX_LENGTH = 512


class Attention(nn.Module):
  """Multi-head attention with one fused `[3d, d]` in-projection (fairseq layout)."""

  def __init__(self, dim: int, heads: int, dropout: float):
    super().__init__()
    self.heads, self.dropout = heads, dropout
    self.qkv = nn.Linear(dim, 3 * dim)
    self.out = nn.Linear(dim, dim)

  def _split(self, x):
    """`[b, t, d]` -> `[b, heads, t, d / heads]`."""
    return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

  def forward(self, x, memory=None, mask=None, causal=False, cache=None):
    """`x: [b, t, d]` attends itself, or `memory: [b, s, d]`; `mask: [b, 1, 1, s]` True at
    real keys. `cache` (a dict): incremental decoding, one query token per call."""
    dim = x.shape[-1]
    if memory is None:
      q, k, v = self.qkv(x).chunk(3, dim=-1)
      q, k, v = self._split(q), self._split(k), self._split(v)
      if cache is not None:
        if "k" in cache:
          k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
        cache["k"], cache["v"] = k, v
        causal = False  # one query that may see every cached key
    else:
      q = self._split(F.linear(x, self.qkv.weight[:dim], self.qkv.bias[:dim]))
      if cache is not None and "k" in cache:
        k, v = cache["k"], cache["v"]
      else:
        k, v = (self._split(t) for t in F.linear(memory, self.qkv.weight[dim:],
                                                 self.qkv.bias[dim:]).chunk(2, dim=-1))
        if cache is not None:
          cache["k"], cache["v"] = k, v
    context = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal,
        dropout_p=self.dropout if self.training else 0.0)
    return self.out(context.transpose(1, 2).flatten(2))


class DynamicConvBranch(nn.Module):
  """LSRA conv branch: Linear (+ GLU) -> dynamic conv -> Linear, `[b, t, c]` -> `[b, t, c]`."""

  def __init__(self, dim: int, heads: int, kernel_size: int, causal: bool, glu: bool,
               weight_dropout: float):
    super().__init__()
    self.heads, self.kernel_size, self.glu = heads, kernel_size, glu
    self.weight_dropout = weight_dropout
    self.padding = (kernel_size - 1, 0) if causal else (kernel_size // 2, kernel_size // 2)
    self.input_projection = nn.Linear(dim, 2 * dim if glu else dim)
    self.kernel_generator = nn.Linear(dim, heads * kernel_size, bias=False)
    self.output_projection = nn.Linear(dim, dim)

  def forward(self, x, padding_mask=None, cache=None):
    x = self.input_projection(x)
    if self.glu:
      x = F.glu(x, dim=-1)
    if padding_mask is not None:
      x = x.masked_fill(~padding_mask[..., None], 0.0)
    batch, length, channels = x.shape
    kernels = torch.softmax(self.kernel_generator(x).float().view(
        batch, length, self.heads, self.kernel_size), dim=-1).to(x.dtype)
    kernels = F.dropout(kernels, self.weight_dropout, self.training)
    if cache is not None:  # one token: the last K - 1 inputs are the window's start
      previous = cache.get("window", x.new_zeros(batch, self.kernel_size - 1, channels))
      padded = torch.cat([previous, x], dim=1)
      cache["window"] = padded[:, 1:]
    elif length <= EXPAND_MAX_LENGTH:
      return self.output_projection(self._expanded(x, kernels))
    else:
      padded = F.pad(x, (0, 0, *self.padding))
    windows = padded.unfold(1, self.kernel_size, 1)  # [b, t, c, K], a strided view
    windows = windows.reshape(batch, length, self.heads, channels // self.heads,
                              self.kernel_size)
    out = torch.matmul(windows, kernels[..., None])  # [b, t, heads, c / heads, 1]
    return self.output_projection(out.reshape(batch, length, channels))


  def _expanded(self, x, kernels):
    """fairseq's `_forward_expanded`: each head's kernels as a banded `[t, t]` matrix, one
    `bmm` with the inputs. `x: [b, t, c]`, `kernels: [b, t, heads, K]` -> `[b, t, c]`."""
    batch, length, channels = x.shape
    heads, taps = self.heads, self.kernel_size
    weights = kernels.permute(0, 2, 1, 3).reshape(batch * heads, length, taps)
    band = weights.new_zeros(batch * heads, length, length + taps - 1)
    # band[i, t, t + k] = weights[i, t, k]: a strided view over the diagonals.
    band.as_strided((batch * heads, length, taps),
                    (length * (length + taps - 1), length + taps, 1)).copy_(weights)
    band = band.narrow(2, self.padding[0], length)
    inputs = x.view(batch, length, heads, -1).transpose(1, 2).reshape(batch * heads, length, -1)
    out = torch.bmm(band, inputs).view(batch, heads, length, -1)
    return out.transpose(1, 2).reshape(batch, length, channels)


class SelfAttention(nn.Module):
  """LSRA (or full-width attention): branches over consecutive channel slices, concatenated."""

  def __init__(self, branches, causal: bool, config: jax_model.TransformerConfig):
    super().__init__()
    self.causal = causal
    self.dims = [b.dim for b in branches]
    self.branches = nn.ModuleList(
        Attention(b.dim, b.num_heads, config.attention_dropout) if b.kind == "attn" else
        DynamicConvBranch(b.dim, b.num_heads, b.kernel_size, causal, config.conv_glu,
                          config.weight_dropout) for b in branches)
    if any(b.kind == "lightweight" for b in branches):
      raise ValueError("the torch peer implements dynamic conv branches only (the WMT "
                       "presets); lightweight conv branches have no peer.")

  def forward(self, x, mask=None, valid=None, caches=None):
    outputs = []
    for i, (branch, part) in enumerate(zip(self.branches, x.split(self.dims, dim=-1))):
      cache = None if caches is None else caches[i]
      if isinstance(branch, Attention):
        outputs.append(branch(part, mask=mask, causal=self.causal, cache=cache))
      else:
        outputs.append(branch(part, padding_mask=valid, cache=cache))
    return torch.cat(outputs, dim=-1)


class FeedForward(nn.Sequential):
  def __init__(self, dim: int, hidden: int, activation_dropout: float):
    super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(activation_dropout),
                     nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
  def __init__(self, config: jax_model.TransformerConfig, layer: int):
    super().__init__()
    d = config.d_model
    self.self_attention = SelfAttention(config.layer_branches("encoder", layer), False, config)
    self.self_attention_norm = nn.LayerNorm(d, eps=1e-5)
    self.ffn = FeedForward(d, config.ffn_dim, config.activation_dropout)
    self.ffn_norm = nn.LayerNorm(d, eps=1e-5)
    self.dropout = nn.Dropout(config.dropout)

  def forward(self, x, valid):
    """`x: [b, s, d]`, `valid: [b, s]` True at real tokens."""
    h = self.self_attention(x, mask=valid[:, None, None, :], valid=valid)
    x = self.self_attention_norm(x + self.dropout(h))
    return self.ffn_norm(x + self.dropout(self.ffn(x)))


class DecoderLayer(nn.Module):
  def __init__(self, config: jax_model.TransformerConfig, layer: int):
    super().__init__()
    d = config.d_model
    self.self_attention = SelfAttention(config.layer_branches("decoder", layer), True, config)
    self.self_attention_norm = nn.LayerNorm(d, eps=1e-5)
    self.encoder_attention = Attention(d, config.encoder_attention_heads,
                                       config.attention_dropout)
    self.encoder_attention_norm = nn.LayerNorm(d, eps=1e-5)
    self.ffn = FeedForward(d, config.ffn_dim, config.activation_dropout)
    self.ffn_norm = nn.LayerNorm(d, eps=1e-5)
    self.dropout = nn.Dropout(config.dropout)

  def forward(self, x, encoded, src_mask, cache=None):
    """`x: [b, t, d]`, `encoded: [b, s, d]`, `src_mask: [b, 1, 1, s]`; `cache`: a decode
    step's per-branch and cross-attention caches."""
    h = self.self_attention(x, caches=None if cache is None else cache["self"])
    x = self.self_attention_norm(x + self.dropout(h))
    h = self.encoder_attention(x, encoded, src_mask,
                               cache=None if cache is None else cache["cross"])
    x = self.encoder_attention_norm(x + self.dropout(h))
    return self.ffn_norm(x + self.dropout(self.ffn(x)))


class EncoderDecoder(nn.Module):
  """`(src [b, s], tgt_in [b, t])` int64 -> logits `[b, t, vocab]`."""

  def __init__(self, config: jax_model.TransformerConfig):
    super().__init__()
    self.config = c = config
    self.source_embedding = nn.Embedding(c.src_vocab_size, c.d_model)
    self.target_embedding = (self.source_embedding if c.share_embeddings
                             else nn.Embedding(c.tgt_vocab_size, c.d_model))
    self.output_projection = (None if c.share_embeddings
                              else nn.Linear(c.d_model, c.tgt_vocab_size, bias=False))
    self.encoder_layers = nn.ModuleList(EncoderLayer(c, i) for i in range(c.num_encoder_layers))
    self.decoder_layers = nn.ModuleList(DecoderLayer(c, i) for i in range(c.num_decoder_layers))
    self.register_buffer("positions", peers.host(sinusoidal_positions(c.max_len, c.d_model)),
                         persistent=False)
    self.dropout = nn.Dropout(c.dropout)

  def _embed(self, embedding, tokens, positions):
    return self.dropout(embedding(tokens) * math.sqrt(self.config.d_model) + positions)

  def encode(self, src):
    """`src: [b, s]` -> (`[b, s, d]`, key mask `[b, 1, 1, s]`)."""
    valid = src != self.config.pad_id
    x = self._embed(self.source_embedding, src, self.positions[:src.shape[1]])
    for layer in self.encoder_layers:
      x = layer(x, valid)
    return x, valid[:, None, None, :]

  def decode(self, tgt_in, encoded, src_mask, caches=None, position: int = 0):
    """Logits `[b, t, vocab]`; with `caches` (from `new_caches`), one token at `position`."""
    positions = self.positions[position:position + tgt_in.shape[1]]
    x = self._embed(self.target_embedding, tgt_in, positions)
    for i, layer in enumerate(self.decoder_layers):
      x = layer(x, encoded, src_mask, None if caches is None else caches[i])
    if self.output_projection is None:
      return F.linear(x, self.target_embedding.weight).float()
    return self.output_projection(x).float()

  def new_caches(self) -> list[dict[str, Any]]:
    return [{"self": [{} for _ in layer.self_attention.branches], "cross": {}}
            for layer in self.decoder_layers]

  def forward(self, src, tgt_in):
    encoded, src_mask = self.encode(src)
    return self.decode(tgt_in, encoded, src_mask)


def count_params(peer: nn.Module) -> int:
  return sum(p.numel() for p in peer.parameters())


# ------------------------------------------------------------------------------------------
# Weights: JAX params -> the peer.
# ------------------------------------------------------------------------------------------


def _copy(tensor: torch.Tensor, value: Any) -> None:
  tensor.copy_(peers.host(np.asarray(value, np.float32)).reshape(tensor.shape))


def _load_linear(linear: nn.Linear, params: Any) -> None:
  _copy(linear.weight, np.asarray(params["kernel"]).T)
  if linear.bias is not None:
    _copy(linear.bias, params["bias"])


def _load_attention(attention: Attention, params: Any) -> None:
  dim = attention.out.in_features
  _copy(attention.qkv.weight, np.asarray(params["qkv_kernel"]).reshape(dim, -1).T)
  _copy(attention.qkv.bias, params["qkv_bias"])
  _copy(attention.out.weight, np.asarray(params["out_kernel"]).reshape(dim, -1).T)
  _copy(attention.out.bias, params["out_bias"])


def _load_norm(norm: nn.LayerNorm, params: Any) -> None:
  _copy(norm.weight, params["scale"])
  _copy(norm.bias, params["bias"])


def _load_self_attention(module: SelfAttention, params: Any) -> None:
  for i, branch in enumerate(module.branches):
    if isinstance(branch, Attention):
      _load_attention(branch, params[f"attn_{i}"])
    else:
      p = params[f"dynamic_{i}"]
      _load_linear(branch.input_projection, p["input_projection"])
      _load_linear(branch.kernel_generator, p["conv"]["kernel_generator"])
      _load_linear(branch.output_projection, p["output_projection"])


def _load_layer(layer: nn.Module, params: Any) -> None:
  _load_self_attention(layer.self_attention, params["self_attention"])
  if isinstance(layer, DecoderLayer):
    _load_attention(layer.encoder_attention, params["encoder_attention"])
    _load_norm(layer.encoder_attention_norm, params["encoder_attention_norm"])
  _load_linear(layer.ffn[0], params["ffn"]["hidden"])
  _load_linear(layer.ffn[3], params["ffn"]["output"])
  for name in ("self_attention_norm", "ffn_norm"):
    _load_norm(getattr(layer, name), params[name])


@torch.no_grad()
def load_params(peer: EncoderDecoder, params: Any) -> EncoderDecoder:
  """Copies a JAX `EncoderDecoder`'s params (boxed or not) into `peer` (float32 storage)."""
  params = flax_nn.unbox(params)
  if peer.config.share_embeddings:
    _copy(peer.source_embedding.weight, params["shared_embedding"]["embedding"])
  else:
    _copy(peer.source_embedding.weight, params["source_embedding"]["embedding"])
    _copy(peer.target_embedding.weight, params["target_embedding"]["embedding"])
    _load_linear(peer.output_projection, params["decoder"]["output_projection"])
  for stack, layers in (("encoder", peer.encoder_layers), ("decoder", peer.decoder_layers)):
    for i, layer in enumerate(layers):
      _load_layer(layer, params[stack][f"layer_{i}"])
  return peer


# ------------------------------------------------------------------------------------------
# Training step and beam search.
# ------------------------------------------------------------------------------------------


def _autocast(dtype: str):
  """bf16 compute with f32 parameters (ours: `config.model.dtype`), or nothing for f32."""
  if dtype == "bfloat16":
    return torch.autocast(peers.device().type, dtype=torch.bfloat16)
  return torch.autocast(peers.device().type, enabled=False)


def token_loss(peer: EncoderDecoder, batch: dict[str, torch.Tensor],
               label_smoothing: float) -> torch.Tensor:
  """fairseq's label-smoothed cross-entropy, summed over weighted tokens / their count."""
  logits = peer(batch["src"], batch["tgt_in"])
  log_probs = torch.log_softmax(logits.float(), dim=-1)
  nll = -log_probs.gather(-1, batch["tgt_out"][..., None])[..., 0]
  loss = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=-1)
  weights = batch["weights"]
  return (loss * weights).sum() / weights.sum().clamp(min=1.0)


def train_step_fn(peer: EncoderDecoder, batch: dict[str, Any], *, learning_rate: float,
                  b1: float, b2: float, eps: float, label_smoothing: float, dtype: str):
  """`() -> loss` running one training step of `peer` (dropout on) on `batch` (numpy)."""
  peer = peer.to(peers.device()).train()
  batch = {k: peers.tensor(v, torch.long if k != "weights" else torch.float32)
           for k, v in batch.items()}
  optimizer = torch.optim.Adam(peer.parameters(), lr=learning_rate, betas=(b1, b2), eps=eps)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with _autocast(dtype):
      loss = token_loss(peer, batch, label_smoothing)
    loss.backward()
    optimizer.step()
    return loss
  return step


@torch.inference_mode()
def beam_search(peer: EncoderDecoder, src: torch.Tensor, *, beam_size: int,
                length_penalty: float, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
  """fairseq beam search over `src: [batch, s]`: (tokens `[batch, max_len + 2]` with bos and
  eos, length-normalised scores `[batch]`). `max_len` tokens at most before the forced eos."""
  c = peer.config
  batch = src.shape[0]
  encoded, src_mask = peer.encode(src)
  encoded = encoded.repeat_interleave(beam_size, 0)
  src_mask = src_mask.repeat_interleave(beam_size, 0)
  caches = peer.new_caches()
  device = src.device
  seqs = torch.full((batch, beam_size, max_len + 2), c.pad_id, dtype=torch.long, device=device)
  seqs[..., 0] = c.bos_id
  alive = torch.full((batch, beam_size), -math.inf, device=device)
  alive[:, 0] = 0.0  # All beams start identical: only the first may expand at step 0.
  finished_seqs = seqs.clone()
  finished_scores = torch.full((batch, beam_size), -math.inf, device=device)
  num_finished = torch.zeros(batch, dtype=torch.long, device=device)
  rank = torch.arange(2 * beam_size, device=device)
  sentence = torch.arange(batch, device=device)[:, None]
  banned = torch.zeros(c.tgt_vocab_size, dtype=torch.bool, device=device)
  banned[c.pad_id] = True
  if c.bos_id != c.eos_id:
    banned[c.bos_id] = True
  for step in range(max_len + 1):
    logits = peer.decode(seqs.view(batch * beam_size, -1)[:, step:step + 1], encoded, src_mask,
                         caches, position=step)
    log_probs = torch.log_softmax(logits[:, 0], dim=-1).masked_fill(banned, -math.inf)
    if step >= max_len:  # only eos remains
      eos = log_probs[:, c.eos_id].clone()
      log_probs.fill_(-math.inf)
      log_probs[:, c.eos_id] = eos
    vocab = log_probs.shape[-1]
    candidates = alive[..., None] + log_probs.view(batch, beam_size, vocab)
    top_log_prob, top_index = candidates.view(batch, -1).topk(2 * beam_size)
    origin, token = top_index // vocab, top_index % vocab
    top_seqs = seqs[sentence, origin]
    top_seqs[..., step + 1] = token
    is_eos = token == c.eos_id
    finalize = (is_eos & (top_log_prob > -math.inf) & (rank < beam_size)
                & (num_finished < beam_size)[:, None])
    new_scores = torch.where(finalize, top_log_prob / (step + 1.0) ** length_penalty,
                             torch.full_like(top_log_prob, -math.inf))
    finished_scores, keep = torch.cat([finished_scores, new_scores], 1).topk(beam_size)
    finished_seqs = torch.cat([finished_seqs, top_seqs], 1)[sentence, keep]
    num_finished += finalize.sum(1)
    alive, pick = top_log_prob.masked_fill(is_eos, -math.inf).topk(beam_size)
    seqs = top_seqs[sentence, pick]
    rows = (sentence * beam_size + origin.gather(1, pick)).view(-1)
    for cache in caches:
      for branch in cache["self"]:
        for key in branch:
          branch[key] = branch[key][rows]
    if bool((num_finished >= beam_size).all()):
      break
  best = finished_scores.argmax(1)
  return finished_seqs[sentence[:, 0], best], finished_scores[sentence[:, 0], best]
