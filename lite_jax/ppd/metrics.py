"""PPD's test metrics (the paper's three, with the choices it leaves open made here).

* Shape: `geometry.shape_f1` (a true positive is a predicted primitive with IoU > 0.5 with a
  ground-truth one, one-to-one), counts summed over scenes: a dataset F1. The predicted
  primitives are the steps before the stop signal (`model.num_primitives`).
* Density, per ground-truth block t of every scene (count of them), against the generator's
  step t (the target order), whether or not the stop signal kept that step: top-1 and top-k
  accuracy of the 100-way classification, and the RMSE of the argmax bin in **bins** (the
  paper's real-tower 18.7 reads as bins, as the spec notes; a bin is 4.7 % in density) and in
  kg/m^3 (bin centres against the true densities).
* Trajectory: the predicted scene (`refine.physical_primitives` of the predicted primitives,
  argmax densities) re-simulated with the scene's own pendulum (`physics.simulate`, the
  dataset's 2 s), against the observed block trajectories, over the blocks both have in the
  bottom-to-top order: `traj_mae` is the mean absolute error of positions (m, includes the
  geometry's error at frame 0), `traj_mae_displacement` that of displacements from frame 0 (m,
  the motion alone). A scene with no predicted primitive has no trajectory error (skipped,
  counted in `num_empty_predictions`).
* With `refine=True` the same metrics after `refine.refine_densities` over each predicted
  primitive's top-`refine_k` bins, prefixed `refined_`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from data import block_towers
from lite_jax.ppd import geometry, refine
from lite_jax.ppd.model import num_primitives


def predicted_primitives(outputs: dict[str, np.ndarray], count: int,
                         bins: np.ndarray | None = None) -> geometry.Primitives:
  """The first `count` primitives of one scene's outputs (`[P, ...]` each; metres), with the
  densities at the centres of `bins` `[count]` (default: the argmax bins). Sizes are floored
  at 1 mm (a primitive must have a volume)."""
  if bins is None:
    bins = outputs["density_logits"][:count].argmax(-1)
  return geometry.Primitives(
      outputs["shape_logits"][:count].argmax(-1).astype(np.int32),
      np.maximum(outputs["size"][:count], 1e-3).astype(np.float64),
      outputs["position"][:count].astype(np.float64),
      outputs["quaternion"][:count].astype(np.float64),
      block_towers.bin_density(np.asarray(bins)))


def top_k_bins(logits: np.ndarray, k: int) -> np.ndarray:
  """int `[..., k]`: the k most likely bins, best first."""
  return np.argsort(-logits, -1, kind="stable")[..., :k]


def _density_metrics(pred_bins: np.ndarray, true_bins: np.ndarray, true_density: np.ndarray,
                     prefix: str) -> dict[str, float]:
  error = pred_bins.astype(np.float64) - true_bins
  kg = block_towers.bin_density(pred_bins) - true_density
  return {f"{prefix}density_top1": float(np.mean(pred_bins == true_bins)),
          f"{prefix}density_rmse": float(np.sqrt(np.mean(error ** 2))),
          f"{prefix}density_rmse_kg_m3": float(np.sqrt(np.mean(kg ** 2)))}


def evaluate_scenes(outputs: dict[str, np.ndarray], examples: Sequence[dict[str, Any]], *,
                    top_k: int = 5, refine_densities: bool = False, refine_k: int = 3,
                    steps: int = block_towers.STEPS) -> dict[str, float]:
  """The metrics of the module docstring over N scenes.

  Args:
    outputs: the model's outputs as numpy, `[N, P, ...]` each.
    examples: the N scenes (dataset example dicts: ground truth, trajectory, pendulum).
    top_k: k of the density top-k accuracy; refine_k: candidates per primitive when refining.
    steps: physics steps re-simulated (the dataset's STEPS, so frames line up).
  """
  counts = num_primitives(outputs["stop"])
  tp = num_pred = num_gt = empty = failures = simulations = 0
  true_bins, true_density, pred_bins, pred_topk, refined_bins = [], [], [], [], []
  errors = {"plain": ([], []), "refined": ([], [])}
  for i, example in enumerate(examples):
    row = {k: np.asarray(v[i]) for k, v in outputs.items()}
    truth = geometry.Primitives.from_example(example)
    n, m = int(counts[i]), len(truth)
    predicted = predicted_primitives(row, n)
    f1 = geometry.shape_f1(predicted, truth)
    tp, num_pred, num_gt = tp + f1["tp"], num_pred + n, num_gt + m
    argmax = row["density_logits"].argmax(-1)
    true_bins.append(example["density_bin"][:m])
    true_density.append(example["density"][:m])
    pred_bins.append(argmax[:m])
    pred_topk.append((top_k_bins(row["density_logits"][:m], top_k)
                      == example["density_bin"][:m, None]).any(-1))
    observed = np.asarray(example["trajectory"])[:, :m]
    if n == 0:
      empty += 1
      refined_bins.append(argmax[:m])
      continue
    simulator = refine.Simulator(refine.physical_primitives(predicted),
                                 block_towers.pendulum_from_example(example), steps)
    chosen = argmax[:n]
    runs = [("plain", chosen)]
    if refine_densities:
      chosen, _ = refine.refine_densities(
          simulator, top_k_bins(row["density_logits"][:n], refine_k), observed)
      runs.append(("refined", chosen))
    for name, bins in runs:
      simulated = simulator(bins)
      errors[name][0].append(refine.position_error(simulated, observed))
      errors[name][1].append(refine.displacement_error(simulated, observed))
    refined_bins.append(np.concatenate([chosen, argmax[n:]])[:m])
    failures += simulator.failures
    simulations += simulator.simulations
  true_bins, true_density = np.concatenate(true_bins), np.concatenate(true_density)
  shape = geometry.f1_from_counts(tp, num_pred, num_gt)
  result = {"shape_f1": shape["f1"], "shape_precision": shape["precision"],
            "shape_recall": shape["recall"],
            "count_accuracy": float(np.mean(counts == [int(e["count"]) for e in examples])),
            **_density_metrics(np.concatenate(pred_bins), true_bins, true_density, ""),
            f"density_top{top_k}": float(np.mean(np.concatenate(pred_topk))),
            "traj_mae": _mean(errors["plain"][0]),
            "traj_mae_displacement": _mean(errors["plain"][1]),
            "num_test": len(examples), "num_blocks": int(len(true_bins)),
            "num_empty_predictions": empty, "simulation_failures": failures}
  if refine_densities:
    result.update(_density_metrics(np.concatenate(refined_bins), true_bins, true_density,
                                   "refined_"))
    result.update({"refined_traj_mae": _mean(errors["refined"][0]),
                   "refined_traj_mae_displacement": _mean(errors["refined"][1]),
                   "refine_k": refine_k, "simulations": simulations})
  return result


def _mean(values: list[float]) -> float | None:
  values = [v for v in values if np.isfinite(v)]
  return float(np.mean(values)) if values else None
