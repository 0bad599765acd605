"""Lightweight and dynamic convolutions against an explicit numpy loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.nn import DynamicConv1D
from lite_jax.nn import LightweightConv1D

BATCH, LENGTH, CHANNELS, HEADS, KERNEL = 2, 7, 6, 3, 5
CONVS = [LightweightConv1D, DynamicConv1D]


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _reference(x, valid, kernels, padding):
  """out[b, t, c] = sum_k kernels[b, t, c // (C/H), k] * x[b, t - left + k, c]."""
  batch, length, channels = x.shape
  heads, size = kernels.shape[2:]
  left = size - 1 if padding == "causal" else size // 2
  x = x * valid[..., None]
  out = np.zeros_like(x)
  for b in range(batch):
    for t in range(length):
      for c in range(channels):
        for k in range(size):
          source = t - left + k
          if 0 <= source < length:
            out[b, t, c] += kernels[b, t, c // (channels // heads), k] * x[b, source, c]
  return out


def _reference_kernels(conv_cls, params, x, valid):
  """Softmax-normalised kernels `[batch, length, heads, K]` computed in numpy."""
  if conv_cls is LightweightConv1D:
    return np.broadcast_to(_softmax(params["kernel"]), (BATCH, LENGTH, HEADS, KERNEL))
  logits = (x * valid[..., None]) @ params["kernel_generator"]["kernel"]
  return _softmax(logits.reshape(BATCH, LENGTH, HEADS, KERNEL))


def _random_params(conv_cls, rng):
  if conv_cls is LightweightConv1D:
    return {"kernel": rng.normal(size=(HEADS, KERNEL)).astype(np.float32)}
  generator = rng.normal(size=(CHANNELS, HEADS * KERNEL)).astype(np.float32)
  return {"kernel_generator": {"kernel": generator}}


@pytest.fixture
def inputs():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH, LENGTH, CHANNELS)).astype(np.float32)
  valid = np.ones((BATCH, LENGTH), bool)
  valid[0, 5:] = False
  return x, valid, rng


@pytest.mark.parametrize("padding", ["same", "causal"])
@pytest.mark.parametrize("conv_cls", CONVS)
def test_matches_loop(inputs, conv_cls, padding):
  x, valid, rng = inputs
  params = _random_params(conv_cls, rng)
  out = jax.jit(conv_cls(HEADS, KERNEL, padding=padding).apply)({"params": params}, x, valid)
  kernels = _reference_kernels(conv_cls, params, x, valid)
  np.testing.assert_allclose(out, _reference(x, valid, kernels, padding), atol=1e-5)


def test_dynamic_kernels_sum_to_one_before_dropconnect(inputs):
  x, valid, rng = inputs
  params = {"params": _random_params(DynamicConv1D, rng)}
  conv = DynamicConv1D(HEADS, KERNEL, weight_dropout=0.5)
  # An 'rbg' key: threefry's bit generator is slow to compile on CPU.
  rngs = {"dropout": jax.random.key(1, impl="rbg")}

  @jax.jit
  def dropped_and_clean(params, x, valid):
    dropped, state = conv.apply(params, x, valid, deterministic=False,
                                mutable=["intermediates"], rngs=rngs)
    return dropped, state["intermediates"]["kernels"][0], conv.apply(params, x, valid)

  dropped, kernels, clean = dropped_and_clean(params, x, valid)
  np.testing.assert_allclose(kernels, _reference_kernels(DynamicConv1D, params["params"], x,
                                                         valid), atol=1e-6)
  np.testing.assert_allclose(kernels.sum(-1), 1.0, atol=1e-6)
  assert not np.allclose(dropped, clean), "DropConnect had no effect"


@pytest.mark.parametrize("conv_cls", CONVS)
def test_causal_outputs_ignore_future_inputs(inputs, conv_cls):
  x, _, rng = inputs
  params = {"params": _random_params(conv_cls, rng)}
  t = 3
  changed = x.copy()
  changed[:, t + 1:] = rng.normal(size=changed[:, t + 1:].shape)
  out, out_changed = jax.jit(jax.vmap(conv_cls(HEADS, KERNEL, padding="causal").apply,
                                      in_axes=(None, 0)))(params, np.stack([x, changed]))
  np.testing.assert_allclose(out[:, :t + 1], out_changed[:, :t + 1], atol=1e-6)
  assert not np.allclose(out[:, t + 1:], out_changed[:, t + 1:])


@pytest.mark.parametrize("conv_cls", CONVS)
def test_decode_steps_match_full_causal_conv(inputs, conv_cls):
  x, _, rng = inputs
  conv = conv_cls(HEADS, KERNEL, padding="causal")
  params = {"params": _random_params(conv_cls, rng)}

  @jax.jit
  def full_and_incremental(params, x):
    _, variables = conv.apply(params, x, decode=True, mutable=["cache"])

    def step(cache, x_t):
      out, variables = conv.apply({**params, "cache": cache}, x_t[:, None], decode=True,
                                  mutable=["cache"])
      return variables["cache"], out[:, 0]

    _, outs = jax.lax.scan(step, variables["cache"], jnp.swapaxes(x, 0, 1))
    return conv.apply(params, x), jnp.swapaxes(outs, 0, 1)

  full, incremental = full_and_incremental(params, x)
  np.testing.assert_allclose(incremental, full, atol=1e-5)


def test_invalid_arguments_raise(inputs):
  x, valid, _ = inputs
  key = jax.random.key(0)
  init = jax.eval_shape  # Validation happens while tracing; nothing needs to run.
  with pytest.raises(ValueError, match="kernel_size must be odd"):
    init(LightweightConv1D(HEADS, 4, padding="same").init, key, x)
  with pytest.raises(ValueError, match="padding must be one of"):
    init(LightweightConv1D(HEADS, 3, padding="valid").init, key, x)
  with pytest.raises(ValueError, match="num_heads=4 must divide"):
    init(DynamicConv1D(4, 3).init, key, x)
  with pytest.raises(ValueError, match="padding_mask must have shape"):
    init(DynamicConv1D(HEADS, 3).init, key, x, valid[:, :3])
  with pytest.raises(ValueError, match="requires padding='causal'"):
    init(functools.partial(DynamicConv1D(HEADS, 3).init, decode=True), key, x)
