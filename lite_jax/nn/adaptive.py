"""Adaptive input embeddings and adaptive softmax (Baevski & Auli 2019; Grave et al. 2017).

The vocabulary, sorted by frequency, is cut into bands `[0, c_0), [c_0, c_1), ..., [c_k, V)`.
Band i has embeddings of width `features // factor**i` projected to `features`, so rare words
cost fewer parameters. The adaptive softmax mirrors that: a head softmax over the words of
band 0 plus one "cluster" entry per tail band, and per tail band a softmax over its words,
entered through the cluster's probability:

    log p(w) = log p_head(w)                                 w in band 0
    log p(w) = log p_head(cluster i) + log p_tail_i(w)       w in band i > 0

Tied (fairseq `--tie-adaptive-weights --tie-adaptive-proj`): the head's word logits are
`h @ E_0^T`, tail i projects `h @ P_i^T` (the input projection, transposed) and scores it
against `E_i`, so the output layer adds only the `[features, clusters]` cluster matrix.
fairseq's adaptive-softmax dropout is applied to `h` and inside each tail (between its
projection and its word scores).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lite_jax.nn.embeddings import normal_embedding_init


def band_bounds(vocab_size: int, cutoffs: Sequence[int]) -> list[tuple[int, int]]:
  """`[(start, end)]` of each band; `cutoffs` strictly increasing inside `(0, vocab_size)`."""
  cutoffs = [int(c) for c in cutoffs]
  edges = [0, *cutoffs, vocab_size]
  if any(a >= b for a, b in zip(edges, edges[1:])):
    raise ValueError(f"cutoffs must increase strictly inside (0, vocab_size={vocab_size}), "
                     f"got {cutoffs}.")
  return list(zip(edges, edges[1:]))


def band_dims(features: int, num_bands: int, factor: float) -> list[int]:
  """Embedding width of each band: `features // factor**i` (fairseq's rounding)."""
  dims = [int(features // factor**i) for i in range(num_bands)]
  if factor < 1 or dims[-1] < 1:
    raise ValueError(f"factor={factor} leaves band {num_bands - 1} of features={features} "
                     f"with no dimensions.")
  return dims


class AdaptiveInput(nn.Module):
  """Token ids `[...]` -> embeddings `[..., features]` through per-band tables + projections.

  Attributes:
    vocab_size: V, ids in `[0, V)`.
    features: output width (the model width d).
    cutoffs: band boundaries (see the module docstring).
    factor: each band's embedding is `factor` times narrower than the previous one.
    pad_id: its band-0 row starts at zero (fairseq), or None.

  Parameters: `embedding_i: [band size, d_i]` (N(0, d_i^-1/2)) and `projection_i: [d_i, d]`
  (Xavier-uniform, no bias), which `AdaptiveSoftmax` may share.
  """

  vocab_size: int
  features: int
  cutoffs: tuple[int, ...]
  factor: float = 4.0
  pad_id: int | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    bounds = band_bounds(self.vocab_size, self.cutoffs)
    dims = band_dims(self.features, len(bounds), self.factor)
    embeddings, projections = [], []
    for i, ((start, end), dim) in enumerate(zip(bounds, dims)):
      pad = self.pad_id if self.pad_id is not None and start <= self.pad_id < end else None
      init = normal_embedding_init(dim**-0.5, None if pad is None else pad - start)
      embeddings.append(self.param(f"embedding_{i}",
                                   nn.with_logical_partitioning(init, ("vocab", None)),
                                   (end - start, dim), self.param_dtype))
      projections.append(self.param(
          f"projection_{i}", nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                          (None, "embed")),
          (dim, self.features), self.param_dtype))
    self.bounds = bounds
    self.embeddings = embeddings
    self.projections = projections

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """`tokens: [...]` int -> `[..., features]`.

    Every band's table is read at the clipped id and projected, and the band that holds the
    token is kept: static shapes, at the cost of projecting each token once per band.
    """
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"tokens must be integer ids, got {tokens.dtype}.")
    out = jnp.zeros((*tokens.shape, self.features), self.dtype)
    for (start, end), table, projection in zip(self.bounds, self.embeddings, self.projections):
      local = jnp.clip(tokens - start, 0, end - start - 1)
      vectors = jnp.take(table, local, axis=0).astype(self.dtype) @ projection.astype(self.dtype)
      in_band = (tokens >= start) & (tokens < end)
      out = jnp.where(in_band[..., None], vectors, out)
    return out

  def band_weights(self, band: int) -> tuple[jax.Array, jax.Array]:
    """`(embedding [band size, d_band], projection [d_band, features])` of `band`."""
    return self.embeddings[band], self.projections[band]


def _logsumexp_in_chunks(z: jax.Array, table: jax.Array, chunk: int) -> jax.Array:
  """`logsumexp(z @ table.T, -1)` for `z: [n, k]`, `table: [m, k]`, over vocabulary chunks.

  Only `[n, chunk]` logits exist at a time, also in the backward pass (each chunk is
  recomputed), so a 200K-word tail band needs no `[n, 200K]` buffer.
  """
  m = table.shape[0]
  padded = -(-m // chunk) * chunk
  table = jnp.pad(table, ((0, padded - m), (0, 0))).reshape(padded // chunk, chunk, -1)
  valid = (jnp.arange(padded) < m).reshape(padded // chunk, chunk)

  @jax.checkpoint
  def body(carry, xs):
    rows, keep = xs
    logits = jnp.where(keep, (z @ rows.T).astype(jnp.float32), -jnp.inf)
    high = jnp.maximum(carry[0], jnp.max(logits, axis=-1))
    total = carry[1] * jnp.exp(carry[0] - high) + jnp.sum(jnp.exp(logits - high[:, None]), -1)
    return (high, total), None

  init = (jnp.full(z.shape[:1], -jnp.inf, jnp.float32), jnp.zeros(z.shape[:1], jnp.float32))
  (high, total), _ = jax.lax.scan(body, init, (table, valid))
  return high + jnp.log(total)


class AdaptiveSoftmax(nn.Module):
  """Adaptive softmax over `vocab_size` words from hidden states `[..., features]`.

  Attributes:
    vocab_size, features, cutoffs, factor: as in `AdaptiveInput` (the same bands).
    dropout: fairseq's adaptive-softmax dropout.
    tied_input: share the embeddings (and projections) of this `AdaptiveInput`.
    tie_projections: with `tied_input`, tails project by the input projections transposed;
      otherwise each tail owns a `[features, d_i]` projection.
    chunk_size: `nll` scores tail bands larger than this in vocabulary chunks of this size
      (0 = the whole band at once).

  Methods: `log_probs(h)` -> `[..., vocab]` (generation, small vocabularies) and
  `nll(h, targets)` -> `[...]`, which never builds the full distribution.
  """

  vocab_size: int
  features: int
  cutoffs: tuple[int, ...]
  factor: float = 4.0
  dropout: float = 0.0
  tied_input: AdaptiveInput | None = None
  tie_projections: bool = True
  chunk_size: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    bounds = band_bounds(self.vocab_size, self.cutoffs)
    dims = band_dims(self.features, len(bounds), self.factor)
    if self.tied_input is not None and (
        self.tied_input.vocab_size, self.tied_input.features, tuple(self.tied_input.cutoffs),
        self.tied_input.factor) != (self.vocab_size, self.features, tuple(self.cutoffs),
                                    self.factor):
      raise ValueError("tied_input must have the same vocab_size, features, cutoffs and "
                       "factor as the adaptive softmax.")
    xavier = nn.initializers.xavier_uniform()
    clusters = len(bounds) - 1

    def param(name, shape, axes):
      return self.param(name, nn.with_logical_partitioning(xavier, axes), shape,
                        self.param_dtype)

    self.cluster_kernel = param("cluster_kernel", (self.features, clusters), ("embed", None)) \
        if clusters else None
    tied = self.tied_input is not None
    if not tied:
      self.head_word_kernel = param("head_kernel", (self.features, bounds[0][1]),
                                    ("embed", "vocab"))
    elif dims[0] != self.features:  # fairseq's TiedHeadModule projects first
      self.head_projection = param("head_projection", (self.features, dims[0]), ("embed", None))
    tail_projections, tail_kernels = [], []
    for i in range(1, len(bounds)):
      if not (tied and self.tie_projections):
        tail_projections.append(param(f"tail_projection_{i}", (self.features, dims[i]),
                                      ("embed", None)))
      if not tied:
        tail_kernels.append(param(f"tail_kernel_{i}", (dims[i], bounds[i][1] - bounds[i][0]),
                                  (None, "vocab")))
    self.tail_projections, self.tail_kernels = tail_projections, tail_kernels
    self.bounds, self.dims = bounds, dims
    self.drop = nn.Dropout(self.dropout)

  # The tail's word table as `[band size, d_i]`, and its projection as `[features, d_i]`.
  def _tail(self, band: int) -> tuple[jax.Array, jax.Array]:
    if self.tied_input is not None:
      table, input_projection = self.tied_input.band_weights(band)
    else:
      table, input_projection = self.tail_kernels[band - 1].T, None
    if self.tied_input is not None and self.tie_projections:
      projection = input_projection.T
    else:
      projection = self.tail_projections[band - 1]
    return table.astype(self.dtype), projection.astype(self.dtype)

  def _head_logits(self, h: jax.Array) -> jax.Array:
    """`[n, features]` -> `[n, band-0 words + clusters]` (float32)."""
    if self.tied_input is None:
      words = h @ self.head_word_kernel.astype(self.dtype)
    else:
      z = h @ self.head_projection.astype(self.dtype) if self.dims[0] != self.features else h
      words = z @ self.tied_input.band_weights(0)[0].astype(self.dtype).T
    parts = [words]
    if self.cluster_kernel is not None:
      parts.append(h @ self.cluster_kernel.astype(self.dtype))
    return jnp.concatenate(parts, axis=-1).astype(jnp.float32)

  def _tail_input(self, h, band, deterministic):
    table, projection = self._tail(band)
    z = self.drop(h @ projection, deterministic=deterministic)
    return z, table

  def _prepare(self, h, deterministic):
    if h.shape[-1] != self.features:
      raise ValueError(f"hidden states must end in features={self.features}, got {h.shape}.")
    flat = h.reshape(-1, self.features).astype(self.dtype)
    return self.drop(flat, deterministic=deterministic)

  def log_probs(self, h: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """Full log-distribution `[..., vocab_size]` (float32) for `h: [..., features]`."""
    flat = self._prepare(h, deterministic)
    head = jax.nn.log_softmax(self._head_logits(flat), axis=-1)
    head_words = self.bounds[0][1]
    parts = [head[:, :head_words]]
    for band in range(1, len(self.bounds)):
      z, table = self._tail_input(flat, band, deterministic)
      tail = jax.nn.log_softmax((z @ table.T).astype(jnp.float32), axis=-1)
      parts.append(tail + head[:, head_words + band - 1, None])
    return jnp.concatenate(parts, axis=-1).reshape(*h.shape[:-1], self.vocab_size)

  def nll(self, h: jax.Array, targets: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """`-log p(targets)` `[...]` (float32) for `h: [..., features]`, `targets: [...]`.

    Tail words are scored as their cluster's head log-probability plus their own logit minus
    the tail's log-normaliser; the full `[..., vocab]` distribution is never built.
    """
    if targets.shape != h.shape[:-1]:
      raise ValueError(f"targets must have shape {list(h.shape[:-1])}, got "
                       f"{list(targets.shape)}.")
    flat = self._prepare(h, deterministic)
    flat_targets = targets.reshape(-1)
    head = jax.nn.log_softmax(self._head_logits(flat), axis=-1)
    head_words = self.bounds[0][1]
    # A tail word's head entry is its cluster's.
    head_index = flat_targets
    log_prob = jnp.zeros(flat_targets.shape, jnp.float32)
    for band in range(1, len(self.bounds)):
      start, end = self.bounds[band]
      in_band = (flat_targets >= start) & (flat_targets < end)
      head_index = jnp.where(in_band, head_words + band - 1, head_index)
      z, table = self._tail_input(flat, band, deterministic)
      rows = jnp.take(table, jnp.clip(flat_targets - start, 0, end - start - 1), axis=0)
      target_logit = jnp.sum(z * rows, axis=-1).astype(jnp.float32)
      if self.chunk_size and end - start > self.chunk_size:
        normaliser = _logsumexp_in_chunks(z, table, self.chunk_size)
      else:
        normaliser = jax.nn.logsumexp((z @ table.T).astype(jnp.float32), axis=-1)
      log_prob = log_prob + jnp.where(in_band, target_logit - normaliser, 0.0)
    log_prob = log_prob + jnp.take_along_axis(head, head_index[:, None], axis=-1)[:, 0]
    return -log_prob.reshape(targets.shape)

