"""Linear quantization: fake_quant, KL calibration, policies, quantized_apply and costs, each
against a numpy reference or a hand count."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo
from lite_jax.nn.quant import (FULL_PRECISION, bitops, bits_arrays, calibrate, calibrate_clip,
                               fake_quant, kl_threshold, model_size_bits, quantized_apply,
                               validate_policy)

# --------------------------------------------------------------------------------------------
# numpy references
# --------------------------------------------------------------------------------------------


def np_fake_quant(x, bits, clip, signed):
  levels = 2.0 ** (bits - 1) - 1 if signed else 2.0 ** bits - 1
  step = clip / levels
  return np.round(np.clip(x, -clip if signed else 0.0, clip) / step) * step


def np_conv_valid(x, kernel, stride):
  """x: [n, h, w, c_in], kernel: [k, k, c_in, c_out], VALID padding."""
  k = kernel.shape[0]
  out_h = (x.shape[1] - k) // stride + 1
  out_w = (x.shape[2] - k) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
  for i in range(out_h):
    for j in range(out_w):
      patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
      out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, kernel)
  return out


def np_kl_threshold(values, bits, num_bins):
  """The TensorRT recipe written out literally, one candidate at a time."""
  magnitudes = np.abs(values).ravel()
  hist, edges = np.histogram(magnitudes, bins=num_bins, range=(0, magnitudes.max()))
  groups = 2 ** (bits - 1)
  best_kl, best_edge = np.inf, None
  for i in range(groups, num_bins + 1):
    p = hist[:i].astype(np.float64)
    p[-1] += hist[i:].sum()
    q = np.zeros(i)
    for k in range(groups):
      lo, hi = -(-k * i // groups), -(-(k + 1) * i // groups)
      nonzero = p[lo:hi] > 0
      if nonzero.any():
        q[lo:hi][nonzero] = hist[lo:hi].sum() / nonzero.sum()
    p, q = p / p.sum(), q / q.sum()
    if np.any((p > 0) & (q == 0)):
      continue
    kl = np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0]))
    if kl < best_kl:
      best_kl, best_edge = kl, edges[i]
  return best_edge


# --------------------------------------------------------------------------------------------
# fake_quant
# --------------------------------------------------------------------------------------------


@jax.jit
def _fake_quant_both(x, bits, clip, cotangent):
  """Values and VJPs (w.r.t. x and clip) of the signed and the unsigned quantizer."""
  results = []
  for signed in (True, False):
    out, vjp = jax.vjp(lambda v, c: fake_quant(v, bits, c, signed=signed), x, clip)
    results += [out, *vjp(cotangent)]
  return results


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quant_values_and_straight_through_gradients(bits):
  rng = np.random.default_rng(bits)
  x = rng.normal(0, 1, 64).astype(np.float32)
  cotangent = rng.normal(0, 1, 64).astype(np.float32)
  clip = np.float32(0.9)
  out_s, gx_s, gc_s, out_u, gx_u, gc_u = _fake_quant_both(x, bits, clip, cotangent)
  np.testing.assert_allclose(out_s, np_fake_quant(x, bits, clip, True), atol=1e-6)
  np.testing.assert_allclose(out_u, np_fake_quant(x, bits, clip, False), atol=1e-6)
  # d/dx: 1 inside the range; d/dclip: +1 above, -1 below -clip (signed), 0 inside (PACT).
  np.testing.assert_allclose(gx_s, cotangent * (np.abs(x) <= clip), atol=1e-6)
  np.testing.assert_allclose(gx_u, cotangent * ((x >= 0) & (x <= clip)), atol=1e-6)
  np.testing.assert_allclose(gc_s, cotangent[x > clip].sum() - cotangent[x < -clip].sum(),
                             rtol=1e-5)
  np.testing.assert_allclose(gc_u, cotangent[x > clip].sum(), rtol=1e-5)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_grid_clip_maps_to_max_code_and_unsigned_has_2_pow_b_levels(bits):
  clip = np.float32(1.5)
  x = np.linspace(-2, 2, 4001, dtype=np.float32)
  out_s, _, _, out_u, _, _ = _fake_quant_both(x, bits, clip, np.zeros_like(x))
  signed_step = clip / (2 ** (bits - 1) - 1)
  codes = np.asarray(out_s) / signed_step
  np.testing.assert_allclose([codes.min(), codes.max()],
                             [-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1], atol=1e-4)
  assert len(np.unique(np.round(codes))) == 2 ** bits - 1
  unsigned = np.unique(np.asarray(out_u))
  assert len(unsigned) == 2 ** bits
  np.testing.assert_allclose([unsigned.min(), unsigned.max()], [0, clip], atol=1e-6)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kl_threshold_matches_the_literal_recipe(bits):
  values = np.random.default_rng(bits).standard_t(4, size=3000)
  np.testing.assert_allclose(kl_threshold(values, bits, num_bins=96),
                             np_kl_threshold(values, bits, 96), rtol=1e-9)


def test_kl_threshold_ignores_outliers_and_high_bits_take_the_max():
  rng = np.random.default_rng(0)
  values = np.concatenate([rng.normal(0, 1, 20000), [40.0, -45.0, 50.0]])
  threshold = kl_threshold(values, 4)
  assert 1.5 < threshold < 6.0, threshold            # a few sigma, far below max = 50
  # calibrate_clip histograms with ~16 samples per bin (1250 bins here): about the same.
  assert calibrate_clip(values, 4, signed=True) == pytest.approx(threshold, rel=0.05)
  assert calibrate_clip(values, 8, signed=True) == 50.0
  assert calibrate_clip(values, 8, signed=False, cap=6.0) == 6.0
  assert calibrate_clip(-np.abs(values), 8, signed=False) == 0.0   # [0, c] sees no mass
  assert kl_threshold(np.zeros(5), 4) == 0.0


def test_calibration_is_not_fooled_by_relu_zeros_small_tensors_or_few_values():
  rng = np.random.default_rng(1)
  relu = np.maximum(rng.normal(0, 1, 50000), 0)  # half the samples are exactly 0
  assert kl_threshold(relu, 2) < 0.05                  # the raw KL search degenerates here
  assert 2.0 < calibrate_clip(relu, 2, signed=False) < 4.0
  kernel = rng.normal(0, 1, 144)  # a 3x3 depthwise kernel of 16 channels
  assert calibrate_clip(kernel, 3, signed=True) >= np.percentile(np.abs(kernel), 99)
  background = np.concatenate([np.full(9000, 2.1), rng.uniform(0, 2.6, 1000)])
  assert calibrate_clip(background, 4, signed=True) >= 2.1  # the spike is not clipped away


# --------------------------------------------------------------------------------------------
# policies
# --------------------------------------------------------------------------------------------

PATHS = ["stem/conv", "blocks_1/expand/conv", "head"]


@pytest.mark.parametrize("policy, fragment", [
    ({"blocks_1/expnad/conv": (4, 4)}, "'blocks_1/expnad/conv' is not a conv or dense layer "
                                       "of the model; closest: blocks_1/expand/conv"),
    ({"head": (9, 4)}, "policy['head'] w_bits is 9; bits must be an integer in 1-8"),
    ({"head": (4, 0)}, "policy['head'] a_bits is 0"),
    ({"head": (4, 4.0)}, "each entry must be a pair (w_bits, a_bits) of integers"),
    ({"head": (4, 4, 4)}, "each entry must be a pair"),
    ({"head": 4}, "policy['head'] is 4"),
    ({"head": (1, 4)}, "w_bits is 1; a symmetric signed grid has no nonzero code"),
    ([("head", (4, 4))], "policy must map layer paths"),
])
def test_policy_errors(policy, fragment):
  with pytest.raises(UserError) as error:
    validate_policy(policy, PATHS, linear=True)
  assert fragment in str(error.value)


def test_policy_accepts_full_precision_and_1_bit_outside_linear_grids():
  validate_policy({"stem/conv": (8, FULL_PRECISION), "head": (2, 1)}, PATHS, linear=True)
  validate_policy({"head": (1, 8)}, PATHS)
  with pytest.raises(UserError, match="a_bits \\(a signed input\\) is 1"):
    bits_arrays({"head": (2, 1)}, PATHS, signed_inputs={"head"})
  with pytest.raises(UserError, match="w_bits is 1"):
    bits_arrays({"head": (1, 8)}, PATHS)
  bits = bits_arrays({"head": (3, 5)}, PATHS)
  assert list(bits) == PATHS
  assert all(b.dtype == jnp.int32 for b in bits.values())
  np.testing.assert_array_equal(bits["head"], [3, 5])
  np.testing.assert_array_equal(bits["stem/conv"], [FULL_PRECISION, FULL_PRECISION])


# --------------------------------------------------------------------------------------------
# quantized_apply and calibrate on a tiny conv + dense model
# --------------------------------------------------------------------------------------------


class _ConvDense(nn.Module):

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(nn.Conv(4, (3, 3), strides=2, padding="VALID", use_bias=False, name="conv")(x))
    return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


SIGNED = frozenset({"conv"})                     # the image input is signed
POLICY_A = {"conv": (3, 4), "head": (6, 3)}      # conv below 5 bits: calibrated w_clip
POLICY_B = {"conv": (FULL_PRECISION, FULL_PRECISION), "head": (2, 2)}


@pytest.fixture(scope="module")
def setup():
  model = _ConvDense()
  rng = np.random.default_rng(0)
  x = rng.normal(0, 1, (2, 7, 7, 2)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda v: v + 0.05, variables)     # a nonzero bias
  cotangent = rng.normal(0, 1, (2, 3)).astype(np.float32)
  qstate = {"conv": {"w_clip": jnp.float32(0.2531), "a_clip": jnp.float32(1.2317)},
            "head": {"w_clip": jnp.float32(0.01), "a_clip": jnp.float32(0.3137)}}
  apply = quantized_apply(model, SIGNED)
  traces = []

  @jax.jit
  def step(variables, qstate, bits):
    traces.append(None)

    def loss(params, qstate):
      out = apply({"params": params}, qstate, bits, x)
      return jnp.sum(out * cotangent), out

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], qstate)

  return model, x, variables, cotangent, qstate, step, traces


def _numpy_forward(x, params, qstate, policy):
  """Forward and the pieces the gradients need, quantizing as documented."""
  (wc, ac), (wh, ah) = policy["conv"], policy["head"]
  conv_k = np.asarray(params["conv"]["kernel"], np.float64)
  head_k = np.asarray(params["head"]["kernel"], np.float64)
  clip = lambda path, name: float(qstate[path][name])
  x_q = x if ac == FULL_PRECISION else np_fake_quant(x, ac, clip("conv", "a_clip"), True)
  conv_clip = clip("conv", "w_clip") if wc < 5 else np.abs(conv_k).max()
  conv_q = conv_k if wc == FULL_PRECISION else np_fake_quant(conv_k, wc, conv_clip, True)
  z = np_conv_valid(x_q, conv_q, 2)
  h = np.maximum(z, 0).reshape(2, -1)
  h_q = np_fake_quant(h, ah, clip("head", "a_clip"), False)
  head_clip = clip("head", "w_clip") if wh < 5 else np.abs(head_k).max()
  head_q = np_fake_quant(head_k, wh, head_clip, True)
  out = h_q @ head_q + np.asarray(params["head"]["bias"])
  return dict(out=out, x_q=x_q, conv_clip=conv_clip, z=z, h=h, h_q=h_q, head_q=head_q)


@pytest.mark.parametrize("policy", [POLICY_A, POLICY_B])
def test_quantized_apply_forward_and_gradients_match_numpy(setup, policy):
  model, x, variables, cotangent, qstate, step, _ = setup
  (grads, qgrads), out = step(variables, qstate, bits_arrays(policy, ["conv", "head"],
                                                              signed_inputs=SIGNED))
  ref = _numpy_forward(x, variables["params"], qstate, policy)
  np.testing.assert_allclose(out, ref["out"], rtol=1e-4, atol=1e-5)

  # head: straight through to the kernel (all of |W| <= live max at 6 bits; at 2 bits the
  # calibrated 0.01 clips most weights, which get no gradient).
  head_k = np.asarray(variables["params"]["head"]["kernel"])
  head_clip = np.abs(head_k).max() if policy["head"][0] >= 5 else 0.01
  np.testing.assert_allclose(grads["head"]["kernel"],
                             (ref["h_q"].T @ cotangent) * (np.abs(head_k) <= head_clip),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads["head"]["bias"], cotangent.sum(0), rtol=1e-5)
  # head a_clip: PACT, the upstream gradient of the inputs clipped at c.
  upstream = cotangent @ ref["head_q"].T
  a_clip = float(qstate["head"]["a_clip"])
  np.testing.assert_allclose(qgrads["head"]["a_clip"], upstream[ref["h"] > a_clip].sum(),
                             rtol=1e-4, atol=1e-6)
  # conv kernel: back through the quantized input, ReLU and the conv, masked by the clip.
  g_z = (upstream * (ref["h"] <= a_clip) * (ref["h"] > 0)).reshape(ref["z"].shape)
  g_kernel = np.zeros((3, 3, 2, 4))
  for i in range(3):
    for j in range(3):
      patch = ref["x_q"][:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
      g_kernel += np.einsum("nhwc,no->hwco", patch, g_z[:, i, j, :])
  conv_k = np.asarray(variables["params"]["conv"]["kernel"])
  if policy["conv"][0] != FULL_PRECISION:
    g_kernel *= np.abs(conv_k) <= ref["conv_clip"]
    assert 0 < np.sum(np.abs(conv_k) > ref["conv_clip"])      # the mask matters
  np.testing.assert_allclose(grads["conv"]["kernel"], g_kernel, rtol=1e-4, atol=1e-5)
  # Weight clips are fixed; a full-precision input's clip gets no gradient.
  assert float(qgrads["conv"]["w_clip"]) == 0 and float(qgrads["head"]["w_clip"]) == 0
  if policy["conv"][1] == FULL_PRECISION:
    assert float(qgrads["conv"]["a_clip"]) == 0


def test_one_compile_serves_every_policy(setup):
  _, _, variables, _, qstate, step, traces = setup
  outs = [step(variables, qstate, bits_arrays(p, ["conv", "head"], signed_inputs=SIGNED))[1]
          for p in (POLICY_A, POLICY_B, {"head": (4, 8)})]
  assert len(traces) == 1
  assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])


def test_calibrate_uses_the_layer_inputs_and_kernels(setup):
  model, x, variables, _, _, _, _ = setup
  qstate = calibrate(model, variables, (x,), {"conv": (3, 4), "head": (8, 3)},
                     signed_inputs=SIGNED, cap=6.0)
  conv_k = np.asarray(variables["params"]["conv"]["kernel"])
  head_k = np.asarray(variables["params"]["head"]["kernel"])
  h = np.maximum(np_conv_valid(x.astype(np.float64), conv_k, 2), 0)
  assert float(qstate["conv"]["w_clip"]) == pytest.approx(
      calibrate_clip(conv_k, 3, signed=True), rel=1e-6)
  assert float(qstate["conv"]["a_clip"]) == pytest.approx(
      min(calibrate_clip(x, 4, signed=True), 6.0), rel=1e-6)
  assert float(qstate["head"]["w_clip"]) == pytest.approx(np.abs(head_k).max(), rel=1e-6)
  assert float(qstate["head"]["a_clip"]) == pytest.approx(
      calibrate_clip(h, 3, signed=False), rel=1e-4)
  # Layers outside the policy still get (maximum) clips: one qstate structure for all.
  partial = calibrate(model, variables, (x,), {"head": (4, 4)}, cap=0.5)
  assert set(partial) == {"conv", "head"}
  assert float(partial["conv"]["a_clip"]) == pytest.approx(0.5)
  with pytest.raises(UserError, match="closest: head"):
    calibrate(model, variables, (x,), {"haed": (4, 4)})


# --------------------------------------------------------------------------------------------
# costs
# --------------------------------------------------------------------------------------------

LAYERS = [LayerInfo("conv", "conv", 2, 4, 3, 2, 1, 49, 9, 72, 648, 0),
          LayerInfo("head", "dense", 36, 3, 1, 0, 1, 1, 1, 108, 108, 1)]


def test_model_size_and_bitops_by_hand():
  policy = {"conv": (3, FULL_PRECISION), "head": (6, 3)}
  assert model_size_bits(LAYERS, policy) == 72 * 3 + 108 * 6
  assert bitops(LAYERS, policy) == 648 * 3 * 32 + 108 * 6 * 3
  assert model_size_bits(LAYERS, {"head": (2, 2)}) == 72 * 32 + 108 * 2
  assert bitops(LAYERS, {"head": (2, 2)}) == 648 * 32 * 32 + 108 * 2 * 2
  # A layer called twice is stored once but computes twice.
  twice = LAYERS + [LayerInfo("head", "dense", 36, 3, 1, 0, 1, 1, 1, 108, 108, 2)]
  assert model_size_bits(twice, {"head": (2, 2)}) == 72 * 32 + 108 * 2
  assert bitops(twice, {"head": (2, 2)}) == 648 * 32 * 32 + 2 * 108 * 2 * 2
