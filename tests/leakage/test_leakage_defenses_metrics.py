"""Defenses against numpy statistics and rules; metrics against closed forms / scikit-image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax import leakage
from lite_jax.core import UserError
from lite_jax.leakage import defenses, metrics

GRADS = {"a": jnp.asarray(np.random.default_rng(0).normal(size=(200, 100)), jnp.float32),
         "b": jnp.asarray(np.random.default_rng(1).normal(size=(1000,)), jnp.float32)}


@pytest.mark.parametrize("kind", ["gaussian", "laplacian"])
def test_noise_has_the_requested_variance(kind):
  noisy = leakage.apply_defense(leakage.Defense(kind, 1e-2), GRADS, jax.random.PRNGKey(0))
  noise = np.asarray(noisy["a"] - GRADS["a"])
  assert noise.var() == pytest.approx(1e-2, rel=0.05)
  kurtosis = np.mean(noise ** 4) / noise.var() ** 2  # 3 for Gaussian, 6 for Laplace.
  assert kurtosis == pytest.approx(3.0 if kind == "gaussian" else 6.0, rel=0.15)


def test_quantisation_and_pruning_follow_their_rules():
  key = jax.random.PRNGKey(0)
  half = leakage.apply_defense(leakage.Defense("fp16"), GRADS, key)
  np.testing.assert_array_equal(half["b"], np.asarray(GRADS["b"]).astype(np.float16))
  q = leakage.apply_defense(leakage.Defense("int8"), GRADS, key)
  g = np.asarray(GRADS["a"])
  scale = np.abs(g).max() / 127
  np.testing.assert_allclose(q["a"], np.round(g / scale) * scale, rtol=1e-5, atol=1e-7)
  pruned = np.asarray(leakage.apply_defense(leakage.Defense("prune", 0.3), GRADS, key)["a"])
  assert np.mean(pruned == 0) == pytest.approx(0.3, abs=1e-4)
  kept = np.abs(g)[pruned != 0]
  assert kept.min() >= np.abs(g)[pruned == 0].max()  # The smallest magnitudes went.
  np.testing.assert_array_equal(pruned[pruned != 0], g[pruned != 0])


def test_vmapped_settings_equal_one_by_one():
  settings = [leakage.Defense.parse(s) for s in ("none", "gaussian:1e-3", "int8", "prune:0.5")]
  kinds, strengths = defenses.stack(settings)
  key = jax.random.PRNGKey(3)
  table = jax.jit(jax.vmap(lambda k, s: leakage.defend(GRADS, key, k, s)))(kinds, strengths)
  for i, setting in enumerate(settings):
    one = leakage.apply_defense(setting, GRADS, key)
    np.testing.assert_allclose(table["a"][i], one["a"], rtol=1e-5, atol=1e-6)


def test_bad_defense_specs_are_user_errors():
  for text in ("blur:1", "gaussian:x", "prune:1.5"):
    with pytest.raises(UserError):
      leakage.Defense.parse(text)


def test_mse_and_psnr_match_numpy():
  rng = np.random.default_rng(2)
  a, b = rng.uniform(size=(2, 8, 8, 3)), rng.uniform(size=(2, 8, 8, 3))
  mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(leakage.mse(a, b), mse, rtol=1e-5)
  np.testing.assert_allclose(leakage.psnr(a, b), 10 * np.log10(1 / mse), rtol=1e-5)


def test_ssim_closed_form_for_constant_images():
  # Constant images: zero (co)variances, so SSIM = (2 m1 m2 + C1) / (m1² + m2² + C1).
  a, b = jnp.full((1, 16, 16, 1), 0.2), jnp.full((1, 16, 16, 1), 0.6)
  c1 = 0.01 ** 2
  expected = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
  assert float(leakage.ssim(a, b)[0]) == pytest.approx(expected, rel=1e-4)
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(1, 16, 16, 3)))
  assert float(leakage.ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-5)


def test_ssim_matches_scikit_image():
  skm = pytest.importorskip("skimage.metrics")
  rng = np.random.default_rng(4)
  a = rng.uniform(size=(32, 32, 3))
  b = np.clip(a + 0.1 * rng.normal(size=a.shape), 0, 1)
  expected = skm.structural_similarity(a, b, data_range=1.0, channel_axis=-1,
                                       gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False)
  assert float(leakage.ssim(a[None], b[None])[0]) == pytest.approx(expected, rel=1e-4)


def test_batch_matching_and_label_accuracy_ignore_order():
  rng = np.random.default_rng(5)
  originals = rng.uniform(size=(4, 4, 4, 1))
  permutation = np.array([2, 0, 3, 1])
  reconstructed = originals[permutation] + 1e-3
  order = metrics.match_order(reconstructed, originals)
  np.testing.assert_allclose(reconstructed[order], originals, atol=2e-3)
  assert float(leakage.label_accuracy(jnp.array([3, 1, 2]), jnp.array([1, 2, 3]))) == 1.0
  assert float(leakage.label_accuracy(jnp.array([3, 1, 1]), jnp.array([1, 2, 3]))) < 1.0
