"""Reconstruction metrics reported for every attack: MSE, PSNR, SSIM and label accuracy.

All take `[batch, height, width, channels]` images in [0, 1] and return one value per image,
so they `vmap` over attacks. A batch attack recovers its examples in some order; `match_order`
pairs each original with its reconstruction before scoring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize


def mse(images: jax.Array, originals: jax.Array) -> jax.Array:
  """Per-image mean squared error, `[batch]`."""
  return jnp.mean((images - originals) ** 2, axis=tuple(range(1, images.ndim)))


def psnr(images: jax.Array, originals: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Per-image peak signal-to-noise ratio in dB, `[batch]` (inf for a perfect copy)."""
  return 10.0 * jnp.log10(data_range ** 2 / mse(images, originals))


def _gaussian_window(size: int, sigma: float) -> jax.Array:
  offsets = jnp.arange(size) - (size - 1) / 2
  w = jnp.exp(-offsets ** 2 / (2 * sigma ** 2))
  return w / jnp.sum(w)


def ssim(images: jax.Array, originals: jax.Array, data_range: float = 1.0,
         window: int = 11, sigma: float = 1.5) -> jax.Array:
  """Per-image structural similarity (Wang et al. 2004), `[batch]`.

  Gaussian 11x11 window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged over the valid region and
  the channels: `skimage.metrics.structural_similarity(..., gaussian_weights=True,
  use_sample_covariance=False)`. Images smaller than the window use the largest odd window
  that fits.
  """
  height, width = images.shape[1:3]
  window = min(window, height - (1 - height % 2), width - (1 - width % 2))
  w = _gaussian_window(window, sigma)
  channels = images.shape[-1]
  kernel = jnp.tile(jnp.outer(w, w)[:, :, None, None], (1, 1, 1, channels))

  def blur(x):  # Depthwise Gaussian filter over the valid region, [b, h, w, c] -> smaller.
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=channels)

  c1 = (0.01 * data_range) ** 2
  c2 = (0.03 * data_range) ** 2
  mu_a, mu_b = blur(images), blur(originals)
  var_a = blur(images * images) - mu_a ** 2
  var_b = blur(originals * originals) - mu_b ** 2
  cov = blur(images * originals) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
       / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
  return jnp.mean(s, axis=(1, 2, 3))


def match_order(images: np.ndarray, originals: np.ndarray) -> np.ndarray:
  """The permutation of `images [batch, ...]` that best matches `originals` by MSE."""
  cost = np.mean((images[:, None] - originals[None]) ** 2,
                 axis=tuple(range(2, images.ndim + 1)))
  rows, cols = scipy.optimize.linear_sum_assignment(cost)
  order = np.empty_like(rows)
  order[cols] = rows
  return order


def label_accuracy(labels: jax.Array, true_labels: jax.Array) -> jax.Array:
  """Fraction of a batch's labels recovered, as multisets (a batch attack has no order)."""
  return jnp.mean(jnp.sort(labels, axis=-1) == jnp.sort(true_labels, axis=-1), axis=-1)
