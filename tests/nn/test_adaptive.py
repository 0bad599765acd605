"""Adaptive input and adaptive softmax against a numpy construction of the full distribution."""

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.nn import AdaptiveInput, AdaptiveSoftmax
from lite_jax.nn.adaptive import band_bounds, band_dims

VOCAB, D, CUTOFFS, FACTOR = 23, 8, (6, 14), 2.0


class _Pair(nn.Module):
  """An adaptive input and a softmax, tied to it or not."""
  tied: bool
  tie_projections: bool = True
  chunk_size: int = 0
  dropout: float = 0.0

  def setup(self):
    self.embed = AdaptiveInput(VOCAB, D, CUTOFFS, FACTOR, pad_id=0)
    self.softmax = AdaptiveSoftmax(VOCAB, D, CUTOFFS, FACTOR, dropout=self.dropout,
                                   tied_input=self.embed if self.tied else None,
                                   tie_projections=self.tie_projections,
                                   chunk_size=self.chunk_size)

  def __call__(self, tokens, h, targets, deterministic=True):
    return (self.embed(tokens), self.softmax.nll(h, targets, deterministic=deterministic),
            self.softmax.log_probs(h, deterministic=deterministic))


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def setups():
  key = jax.random.PRNGKey(0)
  tokens = jnp.array([[0, 5, 6, 13, 14, 22]])
  h = jax.random.normal(jax.random.PRNGKey(1), (2, 3, D))
  targets = jnp.array([[0, 5, 6], [13, 14, 22]])
  out = {}
  for name, kwargs in {"tied": dict(tied=True), "tied_own_proj": dict(
      tied=True, tie_projections=False), "untied": dict(tied=False),
      "chunked": dict(tied=True, chunk_size=3)}.items():
    model = _Pair(**kwargs)
    params = nn.unbox(jax.jit(model.init)(key, tokens, h, targets))["params"]
    out[name] = (model, params, jax.jit(model.apply)({"params": params}, tokens, h, targets))
  return tokens, h, targets, out


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def _full_log_probs(params, h, tied, tie_projections):
  p = _np(params)
  e, s = p["embed"], p["softmax"]
  bounds = band_bounds(VOCAB, CUTOFFS)
  h = np.asarray(h, np.float64).reshape(-1, D)
  words = h @ e["embedding_0"].T if tied else h @ s["head_kernel"]
  head = _log_softmax(np.concatenate([words, h @ s["cluster_kernel"]], -1))
  out = [head[:, :bounds[0][1]]]
  for band in range(1, len(bounds)):
    proj = e[f"projection_{band}"].T if tied and tie_projections else s[
        f"tail_projection_{band}"]
    table = e[f"embedding_{band}"] if tied else s[f"tail_kernel_{band}"].T
    out.append(_log_softmax((h @ proj) @ table.T) + head[:, bounds[0][1] + band - 1, None])
  return np.concatenate(out, -1)


@pytest.mark.parametrize("name,tied,tie_projections", [
    ("tied", True, True), ("tied_own_proj", True, False), ("untied", False, False),
    ("chunked", True, True)])
def test_nll_and_log_probs_match_explicit_distribution(setups, name, tied, tie_projections):
  _, h, targets, out = setups
  _, params, (_, nll, log_probs) = out[name]
  reference = _full_log_probs(params, h, tied, tie_projections)
  np.testing.assert_allclose(np.exp(reference).sum(-1), 1.0, rtol=1e-9)
  np.testing.assert_allclose(np.asarray(log_probs).reshape(-1, VOCAB), reference, atol=2e-5)
  expected = -reference[np.arange(6), np.asarray(targets).reshape(-1)]
  np.testing.assert_allclose(np.asarray(nll).reshape(-1), expected, atol=2e-5)
  np.testing.assert_allclose(np.exp(np.asarray(log_probs)).sum(-1), 1.0, atol=1e-5)


def test_tied_softmax_adds_only_cluster_weights(setups):
  *_, out = setups
  tied, untied = out["tied"][1], out["untied"][1]
  assert set(tied["softmax"]) == {"cluster_kernel"}
  assert tied["softmax"]["cluster_kernel"].shape == (D, 2)
  assert set(untied["softmax"]) == {"cluster_kernel", "head_kernel", "tail_projection_1",
                                    "tail_projection_2", "tail_kernel_1", "tail_kernel_2"}


def test_adaptive_input_uses_each_band_table_and_projection(setups):
  tokens, _, _, out = setups
  _, params, (embedded, _, _) = out["tied"]
  e = _np(params["embed"])
  bounds = band_bounds(VOCAB, CUTOFFS)
  assert [e[f"embedding_{i}"].shape[1] for i in range(3)] == band_dims(D, 3, FACTOR) == [8, 4, 2]
  for j, token in enumerate(np.asarray(tokens)[0]):
    band = next(i for i, (s, t) in enumerate(bounds) if s <= token < t)
    row = e[f"embedding_{band}"][token - bounds[band][0]]
    np.testing.assert_allclose(np.asarray(embedded)[0, j], row @ e[f"projection_{band}"],
                               atol=1e-5)
  np.testing.assert_array_equal(np.asarray(embedded)[0, 0], 0.0)  # pad row starts at zero


def test_gradients_of_chunked_nll_match_unchunked(setups):
  tokens, h, targets, out = setups
  model, params, _ = out["tied"]
  chunked = out["chunked"][0]

  def loss(m, p):
    return jnp.sum(m.apply({"params": p}, tokens, h, targets)[1])

  grads = [jax.flatten_util.ravel_pytree(jax.jit(jax.grad(lambda p, m=m: loss(m, p)))(params))[0]
           for m in (model, chunked)]
  np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


def test_bad_cutoffs_are_rejected():
  with pytest.raises(ValueError, match="cutoffs must increase"):
    band_bounds(10, (5, 5))
  with pytest.raises(ValueError, match="cutoffs must increase"):
    band_bounds(10, (10,))
