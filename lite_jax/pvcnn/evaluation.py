"""PVCNN's evaluation protocols (`evaluate/shapenet/eval.py`, `evaluate/s3dis/eval.py`), in numpy.

Both cover every point of a shape or room with votes: the points are tiled, shuffled and cut
into `votes * ceil(M / N)` samples of N points, and each point keeps the prediction of its most
confident vote (softmax probability; the first on ties, as the reference's strict `>`).

* ShapeNet Part: predictions are restricted to the category's own part range; a shape's IoU
  is the mean over its category's parts, a part absent from both prediction and ground truth
  scoring 1. The reported mIoU is the mean over shapes (instance mIoU); class mIoU (mean over
  categories of the per-category mean) is reported too.
* S3DIS: per-class ground-truth, prediction and true-positive counts over all points of the
  held-out area's rooms; overall accuracy = TP / points (the reference prints it as
  "meanAcc") and mIoU = mean over classes of TP / (GT + P - TP).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def vote_indices(num_points: int, sample_points: int, num_samples: int,
                 rng: np.random.Generator) -> np.ndarray:
  """`[num_samples, N]` indices tiling all `M` points (each at least once if the samples hold
  M points), shuffled. ShapeNet uses `votes * ceil(M / N)` samples per shape, S3DIS
  `votes * ceil(window_capacity / N)` per window."""
  total = num_samples * sample_points
  indices = np.tile(np.arange(num_points), math.ceil(total / num_points))[:total]
  rng.shuffle(indices)
  return indices.reshape(num_samples, sample_points)


def part_vote_samples(num_points: int, sample_points: int, votes: int) -> int:
  return votes * math.ceil(num_points / sample_points)


class VoteAccumulator:
  """Keeps, per point, the prediction of its most confident vote so far (-1: no vote yet).

  A later vote replaces an earlier one only if strictly more confident, as in the reference.
  """

  def __init__(self, num_points: int):
    self.confidence = np.zeros(num_points, np.float64)
    self.prediction = np.full(num_points, -1, np.int64)

  def add(self, indices: np.ndarray, confidence: np.ndarray, prediction: np.ndarray) -> None:
    """Votes: point `indices[v]` gets `prediction[v]` with `confidence[v]` (any equal shapes)."""
    indices, confidence, prediction = (np.ravel(a) for a in (indices, confidence, prediction))
    best = np.zeros_like(self.confidence)
    np.maximum.at(best, indices, confidence)
    winners = np.flatnonzero((confidence == best[indices]) &
                             (confidence > self.confidence[indices]))
    winners = winners[::-1]  # Among equal votes the first wins: it is written last.
    self.confidence[indices[winners]] = confidence[winners]
    self.prediction[indices[winners]] = prediction[winners]


def shape_iou(labels: np.ndarray, prediction: np.ndarray, part_range: tuple[int, int]) -> float:
  """Mean IoU over the parts of one shape's category; a part absent from both scores 1."""
  ious = []
  for part in range(*part_range):
    truth, predicted = labels == part, prediction == part
    union = np.count_nonzero(truth | predicted)
    ious.append(np.count_nonzero(truth & predicted) / union if union else 1.0)
  return float(np.mean(ious))


def part_segmentation_miou(ious: Sequence[float], categories: Sequence[int],
                           category_names: Sequence[str]) -> dict[str, float]:
  """`miou` (instance: mean over shapes), `class_miou` and per-category `iou/<name>`."""
  ious, categories = np.asarray(ious, np.float64), np.asarray(categories)
  per_category = {name: float(ious[categories == c].mean())
                  for c, name in enumerate(category_names) if np.any(categories == c)}
  result = {"miou": float(ious.mean()), "class_miou": float(np.mean(list(per_category.values())))}
  result.update({f"iou/{name}": value for name, value in per_category.items()})
  return result


class SceneConfusion:
  """Per-class counts over all evaluated points (the reference's `stats`)."""

  def __init__(self, num_classes: int):
    self.truth = np.zeros(num_classes, np.int64)
    self.predicted = np.zeros(num_classes, np.int64)
    self.true_positive = np.zeros(num_classes, np.int64)
    self.points = 0

  def update(self, labels: np.ndarray, prediction: np.ndarray) -> None:
    """Adds a room. A point no window covered (prediction -1) counts as wrong for every class;
    the reference instead counts it as a prediction of the last class (numpy's index -1)."""
    n = len(self.truth)
    self.points += len(labels)
    self.truth += np.bincount(labels, minlength=n)
    covered = prediction >= 0
    self.predicted += np.bincount(prediction[covered], minlength=n)
    self.true_positive += np.bincount(labels[prediction == labels], minlength=n)

  def result(self, class_names: Sequence[str]) -> dict[str, float]:
    """`overall_accuracy`, `miou` (mean over classes seen in truth or prediction), `iou/<c>`."""
    union = self.truth + self.predicted - self.true_positive
    seen = union > 0
    iou = self.true_positive[seen] / union[seen]
    result = {"overall_accuracy": float(self.true_positive.sum() / max(self.points, 1)),
              "miou": float(iou.mean()) if seen.any() else 0.0}
    result.update({f"iou/{name}": float(value)
                   for name, value in zip(np.asarray(class_names)[seen], iou)})
    return result
