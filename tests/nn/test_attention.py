"""MultiHeadAttention against a numpy reference, masks and incremental decoding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.nn import MultiHeadAttention
from lite_jax.nn import causal_mask
from lite_jax.nn import key_padding_mask

BATCH, Q_LEN, KV_LEN, FEATURES, HEADS = 2, 5, 6, 8, 2


def _random_params(rng):
  head_dim = FEATURES // HEADS
  shapes = {"qkv_kernel": (FEATURES, 3, HEADS, head_dim), "qkv_bias": (3, HEADS, head_dim),
            "out_kernel": (HEADS, head_dim, FEATURES), "out_bias": (FEATURES,)}
  return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


def _reference(params, x_q, x_kv, mask):
  """Per-head loop: softmax(q k^T / sqrt(d_h) masked) v, concatenated, projected."""
  w = params["qkv_kernel"].reshape(FEATURES, 3, FEATURES)
  b = params["qkv_bias"].reshape(3, FEATURES)
  q, k, v = x_q @ w[:, 0] + b[0], x_kv @ w[:, 1] + b[1], x_kv @ w[:, 2] + b[2]
  head_dim = FEATURES // HEADS
  heads = []
  for h in range(HEADS):
    part = slice(h * head_dim, (h + 1) * head_dim)
    logits = q[..., part] @ np.swapaxes(k[..., part], 1, 2) / np.sqrt(head_dim)
    logits = np.where(mask[:, 0], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    heads.append(probs @ v[..., part])
  return np.concatenate(heads, -1) @ params["out_kernel"].reshape(FEATURES, FEATURES) \
      + params["out_bias"]


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_self_attention_matches_reference(rng):
  params = _random_params(rng)
  x = rng.normal(size=(BATCH, Q_LEN, FEATURES)).astype(np.float32)
  valid = np.ones((BATCH, Q_LEN), bool)
  valid[1, 3:] = False
  mask = np.asarray(key_padding_mask(jnp.asarray(valid))) & np.asarray(causal_mask(Q_LEN))
  out = jax.jit(MultiHeadAttention(HEADS).apply)({"params": params}, x, mask=mask)
  np.testing.assert_allclose(out, _reference(params, x, x, mask), atol=1e-4)


def test_cross_attention_matches_reference(rng):
  params = _random_params(rng)
  x_q = rng.normal(size=(BATCH, Q_LEN, FEATURES)).astype(np.float32)
  x_kv = rng.normal(size=(BATCH, KV_LEN, FEATURES)).astype(np.float32)
  valid = np.ones((BATCH, KV_LEN), bool)
  valid[0, 4:] = False
  mask = np.asarray(key_padding_mask(jnp.asarray(valid)))
  out = jax.jit(MultiHeadAttention(HEADS).apply)({"params": params}, x_q, x_kv, mask)
  np.testing.assert_allclose(out, _reference(params, x_q, x_kv, np.broadcast_to(
      mask, (BATCH, 1, Q_LEN, KV_LEN))), atol=1e-4)


def test_decode_steps_match_full_attention(rng):
  """Self-attention through the cache, one token a step, equals causal attention;
  cross-attention reuses the keys/values projected on the cache-creating call."""
  attention = MultiHeadAttention(HEADS)
  params = {"params": _random_params(rng)}
  x = rng.normal(size=(BATCH, Q_LEN, FEATURES)).astype(np.float32)
  memory = rng.normal(size=(BATCH, KV_LEN, FEATURES)).astype(np.float32)

  @jax.jit
  def incremental(x, memory):
    # One module (one set of params) used as self- and as cross-attention; their
    # cache variables have different names, so they share its scope.
    def run(module, x, memory, decode):
      return module(x, mask=None if decode else causal_mask(Q_LEN), decode=decode), module(
          x, memory, decode=decode)

    full = nn.apply(run, attention)(params, x, memory, False)
    _, variables = nn.apply(run, attention, mutable=["cache"])(params, x, memory, True)

    def step(cache, x_t):
      outs, variables = nn.apply(run, attention, mutable=["cache"])(
          {**params, "cache": cache}, x_t[:, None], jnp.zeros_like(memory), True)
      return variables["cache"], jax.tree.map(lambda o: o[:, 0], outs)

    _, steps = jax.lax.scan(step, variables["cache"], jnp.swapaxes(x, 0, 1))
    return full, jax.tree.map(lambda o: jnp.swapaxes(o, 0, 1), steps)

  (full_self, full_cross), (step_self, step_cross) = incremental(x, memory)
  np.testing.assert_allclose(step_self, full_self, atol=1e-5)
  np.testing.assert_allclose(step_cross, full_cross, atol=1e-5)


def test_dropout_changes_output(rng):
  attention = MultiHeadAttention(HEADS, dropout_rate=0.5)
  params = {"params": _random_params(rng)}
  x = rng.normal(size=(BATCH, Q_LEN, FEATURES)).astype(np.float32)
  # An 'rbg' key: threefry's bit generator is slow to compile on CPU.
  rngs = {"dropout": jax.random.key(0, impl="rbg")}
  dropped = jax.jit(lambda p, x: attention.apply(p, x, deterministic=False, rngs=rngs))(params, x)
  assert not np.allclose(dropped, jax.jit(attention.apply)(params, x))


def test_params_carry_logical_axes():
  x = jnp.zeros((1, Q_LEN, FEATURES))
  specs = nn.get_partition_spec(
      jax.eval_shape(MultiHeadAttention(HEADS).init, jax.random.key(0), x))["params"]
  assert tuple(specs["qkv_kernel"]) == ("embed", None, "heads", "kv")
  assert tuple(specs["out_kernel"]) == ("heads", "kv", "embed")


def test_invalid_arguments_raise():
  x = jnp.zeros((BATCH, Q_LEN, FEATURES))
  key = jax.random.key(0)
  init = jax.eval_shape  # Validation happens while tracing; nothing needs to run.
  attention = MultiHeadAttention(HEADS)
  with pytest.raises(ValueError, match="mask must be a 4-d boolean array"):
    init(attention.init, key, x, mask=jnp.ones((BATCH, Q_LEN, Q_LEN), bool))
  with pytest.raises(ValueError, match="mask must be a 4-d boolean array"):
    init(attention.init, key, x, mask=jnp.ones((BATCH, 1, 1, Q_LEN + 1), bool))
  with pytest.raises(ValueError, match="mask must be a 4-d boolean array"):
    init(attention.init, key, x, mask=jnp.ones((BATCH, 1, 1, Q_LEN), jnp.int32))
  with pytest.raises(ValueError, match="num_heads=3 must divide"):
    init(MultiHeadAttention(3).init, key, x)
  with pytest.raises(ValueError, match="inputs_kv must have shape"):
    init(attention.init, key, x, jnp.zeros((BATCH, KV_LEN, FEATURES + 1)))
