"""PSD: Unsupervised Discovery of Parts, Structure, and Dynamics (Xu et al., ICLR 2019).

A conditional VAE over optical flow: `model` (the network), `losses` (the training
objective), `metrics` (active dimensions, part IoU, hierarchy, flow EPE), `visualize`
(pictures), `train` (two-stage training on the shared loop, evaluation, pictures, profile).
See `lite_jax/psd/README.md`.
"""

from lite_jax.psd.losses import LossWeights, kl_per_dimension, psd_loss
from lite_jax.psd.metrics import (dimension_statistics, flow_epe, foreground_baseline_iou,
                                  hierarchy, part_iou, select_active_dimensions)
from lite_jax.psd.model import PSD, aggregate_posterior_sample, structure_mask
# `train.visualize` is not re-exported: the name is the `visualize` module's.
from lite_jax.psd.train import evaluate, profile, train_and_evaluate

__all__ = ["LossWeights", "PSD", "aggregate_posterior_sample", "dimension_statistics",
           "evaluate", "flow_epe", "foreground_baseline_iou", "hierarchy", "kl_per_dimension",
           "part_iou", "profile", "psd_loss", "select_active_dimensions", "structure_mask",
           "train_and_evaluate"]
