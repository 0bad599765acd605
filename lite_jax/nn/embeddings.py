"""Token and position embeddings in fairseq's conventions."""

import math

import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_positions(length: int, dim: int) -> jax.Array:
  """Fixed sinusoidal position table `[length, dim]` in fairseq's layout.

  Row p is `[sin(p f_0), ..., sin(p f_{h-1}), cos(p f_0), ..., cos(p f_{h-1})]` with
  `h = dim // 2` and `f_i = 10000 ** (-i / (h - 1))` (fairseq's frequencies, not the
  `2i / dim` of Vaswani et al.); an odd `dim` gets a zero last column. Positions count
  from 0.
  """
  if length < 0:
    raise ValueError(f"length must be non-negative, got {length}.")
  if dim < 2:
    raise ValueError(f"dim must be at least 2, got {dim}.")
  half = dim // 2
  # fairseq divides by (half - 1), which is 0 for dim < 4; 1 keeps f_0 = 1.
  frequencies = np.exp(np.arange(half) * -(math.log(10000.0) / max(half - 1, 1)))
  angles = np.arange(length)[:, None] * frequencies[None, :]
  table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  if dim % 2:
    table = np.pad(table, ((0, 0), (0, 1)))
  return jnp.asarray(table, dtype=jnp.float32)


def normal_embedding_init(stddev: float, pad_id: int | None = None):
  """Initializer N(0, stddev^2) for `[vocab, features]` with a zero `pad_id` row."""

  def init(key, shape, dtype=jnp.float32):
    table = stddev * jax.random.normal(key, shape, dtype)
    if pad_id is None:
      return table
    return table.at[pad_id].set(0)

  return init
