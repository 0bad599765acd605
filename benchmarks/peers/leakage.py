"""PyTorch peer of DLG on the sigmoid LeNet (`lite_jax.leakage`), as the DLG reference runs it.

The victim is the reference's LeNet (three 5x5 convs with padding 2 and strides 2, 2, 1, sigmoid
after each, a linear classifier on the NCHW flatten). The attack optimises dummy images and
label logits with `torch.optim.LBFGS(lr=1, max_iter=20, history_size=100)` (no line search)
on DLG's gradient-matching loss: the squared L2 distance between the victim's parameter
gradient at `(x', softmax(y'))` (soft cross-entropy, `create_graph=True`) and the observed one.
One L-BFGS iteration is one evaluation of that loss and its gradient (double backprop) plus the
quasi-Newton update, as in `lite_jax.leakage.lbfgs`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks import peers


class LeNet(nn.Module):
  """`[b, c, h, w]` -> logits `[b, num_classes]`; `flat` is the flatten width (768 at 32x32)."""

  def __init__(self, channels: int, flat: int, num_classes: int, width: int = 12):
    super().__init__()
    self.convs = nn.ModuleList(nn.Conv2d(channels if i == 0 else width, width, 5, stride=s,
                                         padding=2) for i, s in enumerate((2, 2, 1)))
    self.classifier = nn.Linear(flat, num_classes)

  def forward(self, x):
    for conv in self.convs:
      x = torch.sigmoid(conv(x))
    return self.classifier(x.flatten(1))


@torch.no_grad()
def from_jax(params: Any) -> LeNet:
  """The peer with the JAX LeNet's parameters (`victim.params`)."""
  kernel = np.asarray(params["classifier"]["kernel"])
  width = np.asarray(params["Conv_0"]["kernel"]).shape[-1]
  peer = LeNet(np.asarray(params["Conv_0"]["kernel"]).shape[2], kernel.shape[0],
               kernel.shape[1], width)
  for i, conv in enumerate(peer.convs):
    conv.weight.copy_(peers.host(np.asarray(params[f"Conv_{i}"]["kernel"]).transpose(3, 2, 0, 1)))
    conv.bias.copy_(peers.host(params[f"Conv_{i}"]["bias"]))
  peer.classifier.weight.copy_(peers.host(kernel.T))
  peer.classifier.bias.copy_(peers.host(params["classifier"]["bias"]))
  return peer.to(peers.device())


def gradients_from_jax(peer: LeNet, grads: Any) -> list[torch.Tensor]:
  """The observed JAX gradient as torch tensors in `peer.parameters()` order and layouts."""
  out = []
  for i in range(len(peer.convs)):
    out += [peers.tensor(np.asarray(grads[f"Conv_{i}"]["kernel"]).transpose(3, 2, 0, 1)),
            peers.tensor(grads[f"Conv_{i}"]["bias"])]
  return out + [peers.tensor(np.asarray(grads["classifier"]["kernel"]).T),
                peers.tensor(grads["classifier"]["bias"])]


def matching_loss(peer: LeNet, target: list[torch.Tensor], images: torch.Tensor,
                  label_logits: torch.Tensor) -> torch.Tensor:
  """DLG's cost `sum_layers |grad(x', softmax(y')) - target|^2`, differentiable in x', y'.

  Args:
    images: `[b, c, h, w]` dummy images; label_logits: `[b, num_classes]`.
  """
  logits = peer(images)
  loss = torch.mean(torch.sum(-torch.softmax(label_logits, -1)
                              * torch.log_softmax(logits, -1), -1))
  grads = torch.autograd.grad(loss, tuple(peer.parameters()), create_graph=True)
  return sum(((g - t) ** 2).sum() for g, t in zip(grads, target))


def iteration_ms(peer: LeNet, target: list[torch.Tensor], batch: int, size: int, steps: int,
                 max_iter: int = 20, seed: int = 0) -> float:
  """Median ms per L-BFGS iteration over `steps` timed `optimizer.step()` calls of `max_iter`
  iterations each, after one untimed step (warm-up), from N(0, 1) dummy images
  `[batch, c, size, size]` (NCHW, as the peer takes them) and label logits.
  """
  torch.manual_seed(seed)
  shape = (batch, peer.convs[0].in_channels, size, size)
  images = torch.randn(shape, device=peers.device(), requires_grad=True)
  labels = torch.randn((batch, peer.classifier.out_features), device=peers.device(),
                       requires_grad=True)
  optimizer = torch.optim.LBFGS([images, labels], lr=1, max_iter=max_iter, history_size=100)
  evaluations = [0]

  def closure():
    optimizer.zero_grad()
    cost = matching_loss(peer, target, images, labels)
    cost.backward()
    evaluations[0] += 1
    return cost

  optimizer.step(closure)
  per_iteration = []
  for _ in range(steps):
    evaluations[0] = 0
    start = time.perf_counter()
    optimizer.step(closure)
    if torch.cuda.is_available():
      torch.cuda.synchronize()
    # PyTorch's early exits (tiny change, tiny gradient) shorten a step: divide by the
    # iterations it ran.
    per_iteration.append((time.perf_counter() - start) / max(evaluations[0], 1))
  return 1e3 * statistics.median(per_iteration)

