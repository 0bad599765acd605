"""PSD losses: KL against the Gaussian closed form, every term against numpy, the weights'
validation, and where gradients may flow (image loss kept off the motion pathway, the motion
encoder frozen once `dimensions` are given)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.psd import losses
from tests.psd.test_model import build_tiny

DIMS = (1, 3, 5)


def test_kl_per_dimension_matches_gaussian_closed_form():
  rng = np.random.default_rng(0)
  mean, log_var = rng.standard_normal((5, 4)), rng.uniform(-3, 2, (5, 4))
  sigma = np.exp(log_var / 2)
  # KL(N(mu, s^2) || N(0, 1)) = log(1 / s) + (s^2 + mu^2) / 2 - 1/2
  expected = np.log(1 / sigma) + (sigma ** 2 + mean ** 2) / 2 - 0.5
  got = losses.kl_per_dimension(jnp.asarray(mean, jnp.float32), jnp.asarray(log_var, jnp.float32))
  assert got.shape == (5, 4)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert float(losses.kl_per_dimension(jnp.zeros(3), jnp.zeros(3)).sum()) == 0.0


def test_psd_loss_terms_match_numpy():
  rng = np.random.default_rng(1)
  f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  outputs = {"mean": f32(2, 6), "log_var": f32(2, 6), "flow": 10 * f32(2, 4, 4, 2),
             "image": f32(2, 4, 4, 3), "motions": f32(2, 6, 4, 4, 2)}
  batch = {"flow": 0.1 * f32(2, 4, 4, 2), "image2": f32(2, 4, 4, 3)}
  params = {"structure": f32(6, 6)}
  weights = losses.LossWeights(flow=2.0, beta=0.5, image=3.0, structure=0.25, motion_l1=0.125)
  loss, metrics = losses.psd_loss(outputs, batch, params, weights, dimensions=DIMS)
  flow_loss = np.mean((outputs["flow"] - 100 * batch["flow"]) ** 2)
  var = np.exp(outputs["log_var"])
  kl = np.mean(np.sum(0.5 * (outputs["mean"] ** 2 + var - 1 - outputs["log_var"]), axis=1))
  image_loss = np.mean((outputs["image"] - batch["image2"]) ** 2)
  sig = 1 / (1 + np.exp(-params["structure"]))
  structure_l1 = sum(sig[i, j] for i in DIMS for j in DIMS if i != j)
  motion_l1 = sum(np.abs(outputs["motions"][:, k]).mean() for k in range(6))
  expected = {"flow_loss": flow_loss, "kl": kl, "image_loss": image_loss,
              "structure_l1": structure_l1, "motion_l1": motion_l1,
              "loss": 2 * flow_loss + 0.5 * kl + 3 * image_loss + 0.25 * structure_l1
                      + 0.125 * motion_l1}
  assert set(metrics) == set(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, err_msg=key)
  assert float(loss) == float(metrics["loss"])
  _, stage1 = losses.psd_loss(outputs, batch, params, weights, dimensions=None)
  assert float(stage1["structure_l1"]) == 0.0


def test_loss_weights_from_mapping_and_unknown_field():
  assert losses.loss_weights({"beta": 0.5}) == losses.LossWeights(beta=0.5)
  assert losses.loss_weights(losses.LossWeights()) == losses.LossWeights()
  with pytest.raises(UserError, match="unknown PSD loss weights"):
    losses.loss_weights({"betta": 0.5})


def _nonzero(tree) -> bool:
  return any(bool(np.any(np.asarray(x) != 0)) for x in jax.tree.leaves(tree))


def test_gradients_stop_where_the_reference_detaches():
  model, variables, image1, flow = build_tiny()
  batch = {"flow": flow, "image2": jnp.roll(image1, 1, axis=1)}

  @jax.jit
  def grads(params, weights):
    def loss_fn(params):
      out, _ = model.apply({**variables, "params": params}, image1, flow, dimensions=DIMS,
                           train=True, mutable=["batch_stats"],
                           rngs={"latent": jax.random.key(3)})
      return losses.psd_loss(out, batch, params, weights, dimensions=DIMS)[0]
    return jax.grad(loss_fn)(params)

  as_arrays = lambda w: {k: jnp.float32(v) for k, v in dataclasses.asdict(w).items()}
  image_only = grads(variables["params"], as_arrays(losses.LossWeights(
      flow=0.0, beta=0.0, image=1.0, structure=0.0, motion_l1=0.0)))
  assert _nonzero(image_only["image_decoder"])
  for name in ("motion_encoder", "kernel_decoder", "image_encoder", "motion_decoder",
               "structure"):
    assert not _nonzero(image_only[name]), name  # stop_gradient on the U-Net's flow input
  full = grads(variables["params"], as_arrays(losses.LossWeights(beta=1.0, motion_l1=1.0)))
  assert all(bool(np.isfinite(g).all()) for g in jax.tree.leaves(full))
  assert not _nonzero(full["motion_encoder"])  # stage 2: encoder frozen, KL has no gradient
  for name in ("kernel_decoder", "image_encoder", "motion_decoder", "structure"):
    assert _nonzero(full[name]), name
