"""Defenses applied to the shared gradient before the attacker sees it (DLG paper, §5).

A `Defense` is a kind and a strength: additive Gaussian or Laplacian noise of a given
*variance*, fp16 or int8 quantisation, or magnitude pruning of a given *ratio* of each tensor.
`defend` takes the kind as an index, so a whole table of settings is one `vmap` (the kinds
become a `lax.switch`, which vmap evaluates for every branch; each branch is a cheap map over
the gradient, applied once per attack).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lite_jax.core.errors import UserError
from lite_jax.leakage.victims import Params

KINDS = ("none", "gaussian", "laplacian", "fp16", "int8", "prune")


@dataclasses.dataclass(frozen=True)
class Defense:
  """One defense setting.

  Attributes:
    kind: one of `KINDS`.
    strength: the noise variance (gaussian, laplacian), the fraction of smallest-magnitude
      entries zeroed per tensor (prune, in [0, 1)); unused otherwise.
  """
  kind: str = "none"
  strength: float = 0.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise UserError(f"unknown defense {self.kind!r}; choose one of {list(KINDS)}.")
    if self.strength < 0 or (self.kind == "prune" and self.strength >= 1):
      raise UserError(f"defense strength {self.strength} is out of range for {self.kind!r} "
                      f"(a variance >= 0, or a pruning ratio in [0, 1)).")

  @property
  def name(self) -> str:
    return self.kind if self.kind in ("none", "fp16", "int8") else f"{self.kind} {self.strength:g}"

  @classmethod
  def parse(cls, text: str) -> "Defense":
    """`'gaussian:1e-2'`, `'prune:0.3'`, `'fp16'` -> a `Defense`."""
    kind, _, strength = text.partition(":")
    try:
      return cls(kind.strip(), float(strength) if strength else 0.0)
    except ValueError as e:
      if isinstance(e, UserError):
        raise
      raise UserError(f"cannot read defense {text!r}; write KIND or KIND:STRENGTH, e.g. "
                      f"'gaussian:1e-2'.") from None


def _gaussian(g, key, variance):
  return g + jnp.sqrt(variance) * jax.random.normal(key, g.shape, g.dtype)


def _laplacian(g, key, variance):
  # Laplace(0, b) has variance 2 b².
  return g + jnp.sqrt(variance / 2) * jax.random.laplace(key, g.shape, g.dtype)


def _fp16(g, key, strength):
  del key, strength
  return g.astype(jnp.float16).astype(g.dtype)


def _int8(g, key, strength):
  """Symmetric per-tensor int8: round(g / s) * s with s = max|g| / 127."""
  del key, strength
  scale = jnp.max(jnp.abs(g)) / 127.0
  safe = jnp.where(scale > 0, scale, 1.0)
  return jnp.clip(jnp.round(g / safe), -127, 127) * safe


def _prune(g, key, ratio):
  """Zeroes the `floor(ratio * size)` smallest-magnitude entries of the tensor."""
  del key
  magnitudes = jnp.abs(g).ravel()
  count = jnp.floor(ratio * magnitudes.size).astype(jnp.int32)
  threshold = jnp.sort(magnitudes)[jnp.maximum(count - 1, 0)]
  return jnp.where((count > 0) & (jnp.abs(g) <= threshold), 0.0, g)


def _identity(g, key, strength):
  del key, strength
  return g


_BRANCHES = (_identity, _gaussian, _laplacian, _fp16, _int8, _prune)


def defend(grads: Params, key: jax.Array, kind: jax.Array | int,
           strength: jax.Array | float) -> Params:
  """Applies defense `KINDS[kind]` of `strength` to every tensor of `grads` (vmappable).

  Each tensor gets its own noise key; pruning and int8 scales are per tensor.
  """
  leaves, treedef = jax.tree.flatten(grads)
  keys = jax.random.split(key, len(leaves))
  defended = [jax.lax.switch(kind, _BRANCHES, g, k, jnp.asarray(strength, g.dtype))
              for g, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, defended)


def apply_defense(defense: Defense, grads: Params, key: jax.Array) -> Params:
  """`defend` for one `Defense` setting."""
  return defend(grads, key, KINDS.index(defense.kind), defense.strength)


def stack(defenses: list[Defense]) -> tuple[jax.Array, jax.Array]:
  """`(kinds [S] int, strengths [S] float)` for `vmap(defend)` over settings."""
  return (jnp.asarray([KINDS.index(d.kind) for d in defenses], jnp.int32),
          jnp.asarray([d.strength for d in defenses], jnp.float32))
