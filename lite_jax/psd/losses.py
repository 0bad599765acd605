"""PSD training losses.

The reference releases no training or loss code (zhenjia-xu/psd issue #6), and the paper PDF
is not available offline, so every term below says where it comes from: [code] = implied by
the reference's model/data code, [unverified] = recalled from the paper, or our choice.

  loss = flow * flow_loss + beta * kl + image * image_loss + structure * structure_l1
         + motion_l1 * motion_l1

- `flow_loss`: mean over batch, pixels and the 2 channels of (flow_pred - 100 * flow)^2.
  The target is `flow_targets = 100 * flow` [code: data.py]; squared error [unverified: the
  paper's flow reconstruction is recalled as an L2 loss]. Mean rather than sum: our choice, so
  `beta` below means the same at every image size relative to a per-element error.
  Default weight 1.
- `kl`: KL(N(mean, exp(log_var)) || N(0, 1)), summed over the L latents and averaged over the
  batch (nats per sample) [unverified: a VAE KL is recalled; its weight is not known]. Default
  `beta` 1e-2, our choice: with a per-element mean flow loss, beta / 2 plays the role of the
  noise variance over the number of flow elements, and 1e-2 makes the posterior std of a latent
  that moves a part covering ~5% of the image ~0.05 prior stds (a motion error of ~0.3 in 100x
  units), while a dimension that lowers the flow error by nothing costs KL and collapses to the
  prior: what `select_active_dimensions` reads. In stage 2 `mean`/`log_var` are
  stop-gradient'ed, so the term is reported but has no gradient.
- `image_loss`: mean over batch, pixels and channels of (image_pred - image2)^2, our choice
  (the paper's image reconstruction term is recalled [unverified], its form is not). The U-Net
  sees the flow through `stop_gradient` [code], so this term trains only the U-Net; weight 1.
- `structure_l1`: sum over the allowed entries (`structure_mask(dimensions)`) of sigmoid(S),
  a sparsity prior on the structure [unverified: recalled as a sparsity term on S]; zero in
  stage 1 (no allowed entries). Default weight 1e-2, our choice: small against the flow term's
  pull on a true parent -> child entry (the flow error it removes is O(1) per moving pixel), so
  only entries that do not lower the flow error are pushed to zero, which matches the
  reference's learned S (two entries ~0.998, all others <= 0.0023 [code: demo page]).
- `motion_l1`: sum over layers of the mean over batch, pixels and channels of |motions_k|
  (100x units), a sparsity prior on local motions [unverified]; default weight 0 (off): our
  choice, since the KL already empties unused layers through their latents.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from lite_jax.core.errors import UserError
from lite_jax.psd.model import structure_mask

FLOW_SCALE = 100.0  # flow_targets = 100 * flow [code]


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the PSD loss terms (module docstring: each term's source and reduction)."""
  flow: float = 1.0
  beta: float = 1e-2
  image: float = 1.0
  structure: float = 1e-2
  motion_l1: float = 0.0


def loss_weights(weights: LossWeights | Mapping[str, float] | Any) -> LossWeights:
  """`LossWeights` from itself, a dict or an ml_collections ConfigDict of its fields; an
  unknown field is a `UserError` (never silently ignored). Values may be traced arrays."""
  if isinstance(weights, LossWeights):
    return weights
  items = dict(weights.items())
  known = {f.name for f in dataclasses.fields(LossWeights)}
  unknown = sorted(set(items) - known)
  if unknown:
    raise UserError(f"unknown PSD loss weights {unknown}: the known ones are {sorted(known)}.")
  return LossWeights(**items)


def kl_per_dimension(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(0, 1)) per sample and dimension, in nats.

  Args:
    mean, log_var: `[B, L]`.

  Returns:
    `[B, L]`.
  """
  mean = mean.astype(jnp.float32)
  log_var = log_var.astype(jnp.float32)
  return 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)


def psd_loss(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array],
             params: Mapping[str, Any], weights: LossWeights | Mapping[str, float], *,
             dimensions: Sequence[int] | None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted PSD loss of one batch.

  Args:
    outputs: `PSD.__call__`'s dict (`mean, log_var: [B, L]`, `flow: [B, H, W, 2]` 100x units,
      `image: [B, H, W, 3]`, `motions: [B, L, H, W, 2]`).
    batch: `flow: [B, H, W, 2]` (image-width units) and `image2: [B, H, W, 3]`.
    params: the model's params (`params["structure"]: [L, L]`, the logits S).
    weights: `LossWeights` (or a mapping of its fields).
    dimensions: the active dims (None in stage 1: no structure term).

  Returns:
    `(loss, metrics)`: scalar loss and float32 scalars `loss, flow_loss, kl, image_loss,
    structure_l1, motion_l1` (unweighted terms, `loss` the weighted sum).
  """
  w = loss_weights(weights)
  flow_pred = outputs["flow"].astype(jnp.float32)
  if flow_pred.shape != batch["flow"].shape:
    raise ValueError(f"predicted flow {flow_pred.shape} and batch flow {batch['flow'].shape} "
                     f"differ in shape.")
  flow_loss = jnp.mean(jnp.square(flow_pred - FLOW_SCALE * batch["flow"].astype(jnp.float32)))
  kl = jnp.mean(jnp.sum(kl_per_dimension(outputs["mean"], outputs["log_var"]), axis=-1))
  image_loss = jnp.mean(jnp.square(outputs["image"].astype(jnp.float32) -
                                   batch["image2"].astype(jnp.float32)))
  structure = params["structure"].astype(jnp.float32)
  allowed = jnp.asarray(structure_mask(dimensions, structure.shape[0]))
  structure_l1 = jnp.sum(allowed * jax.nn.sigmoid(structure))
  motion_l1 = jnp.sum(jnp.mean(jnp.abs(outputs["motions"].astype(jnp.float32)),
                               axis=(0, 2, 3, 4)))
  loss = (w.flow * flow_loss + w.beta * kl + w.image * image_loss
          + w.structure * structure_l1 + w.motion_l1 * motion_l1)
  metrics = {"loss": loss, "flow_loss": flow_loss, "kl": kl, "image_loss": image_loss,
             "structure_l1": structure_l1, "motion_l1": motion_l1}
  return loss, metrics
