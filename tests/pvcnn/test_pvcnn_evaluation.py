"""lite_jax.pvcnn.evaluation and the vote batching of the trainer, against hand counts and
plain loops over the reference's rules."""

import numpy as np
import pytest

from lite_jax.pvcnn import evaluation
from lite_jax.pvcnn.train import _predict_votes


def test_vote_indices_cover_every_point():
  rng = np.random.default_rng(0)
  samples = evaluation.part_vote_samples(1000, 256, votes=3)
  indices = evaluation.vote_indices(1000, 256, samples, rng)
  assert samples == 12 and indices.shape == (12, 256)
  assert np.bincount(indices.ravel(), minlength=1000).min() >= 3


def test_vote_accumulator_keeps_the_first_most_confident_vote():
  rng = np.random.default_rng(1)
  indices = rng.integers(0, 20, 200)
  confidence = rng.choice([0.2, 0.5, 0.9], 200)
  prediction = rng.integers(0, 5, 200)
  votes = evaluation.VoteAccumulator(25)
  votes.add(indices[:120], confidence[:120], prediction[:120])
  votes.add(indices[120:], confidence[120:], prediction[120:])
  best_conf, best_pred = np.zeros(25), np.full(25, -1)  # The reference's sequential loop.
  for i, c, p in zip(indices, confidence, prediction):
    if c > best_conf[i]:
      best_conf[i], best_pred[i] = c, p
  np.testing.assert_array_equal(votes.prediction, best_pred)
  assert (votes.prediction[20:] == -1).all()


def test_part_iou_and_instance_vs_class_miou():
  labels = np.array([4, 4, 5, 5])
  assert evaluation.shape_iou(labels, np.array([4, 4, 5, 5]), (4, 7)) == 1.0  # part 6 absent
  assert evaluation.shape_iou(labels, np.array([4, 5, 5, 5]), (4, 6)) == pytest.approx(
      (1 / 2 + 2 / 3) / 2)
  result = evaluation.part_segmentation_miou([1.0, 0.5, 0.0], [0, 0, 1], ("a", "b", "c"))
  assert result["miou"] == pytest.approx(0.5)  # over shapes
  assert result["class_miou"] == pytest.approx((0.75 + 0.0) / 2)  # over categories present
  assert result["iou/a"] == 0.75 and "iou/c" not in result


def test_scene_confusion():
  confusion = evaluation.SceneConfusion(3)
  confusion.update(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, -1]))
  result = confusion.result(("x", "y", "z"))
  assert result["overall_accuracy"] == pytest.approx(3 / 5)
  # IoU: x 1/(2+1-1)=1/2, y 2/(2+3-2)=2/3, z 0/(1+0-0)=0.
  assert result["miou"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


def test_predict_votes_batches_across_jobs_in_order():
  calls = []

  def run(batch):
    calls.append(len(batch["points"]))
    return batch["points"][..., 0] * 0.1, batch["points"][..., 0].astype(int)

  jobs = [(key, {"points": np.full((k, 4, 1), key, np.float32)})
          for key, k in enumerate([3, 5, 1, 6])]
  out = list(_predict_votes(run, iter(jobs), batch_size=4))
  assert calls == [4, 4, 4, 4]  # 15 samples, the last batch padded
  assert [key for key, _, _ in out] == [0, 1, 2, 3]
  for (key, confidence, prediction), (_, inputs) in zip(out, jobs):
    assert prediction.shape == (len(inputs["points"]), 4) and (prediction == key).all()
