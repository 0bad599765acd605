"""A trained PVCNN segmenter as a portable `jax.export` artifact (runs without lite_jax).

    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_demo.flags \
        --mode=export

writes `<workdir>/export/pvcnn_<task>.jaxexport` (eval mode, parameters inside) with its
signature `.json` and `run_exported.py` (`lite_jax.core.export`). The batch and the point
count are symbolic ("batch", "points": any size; training used `data.num_points`). The voxel ops
are traced on their XLA reference path whatever `model.kernel_backend` says: a Pallas (Triton)
custom call lowers for CUDA only, the reference for cpu, cuda and tpu alike, so one artifact
serves all three.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from lite_jax import core
from lite_jax.core import export as portable
from lite_jax.pvcnn.models import build_model
from lite_jax.pvcnn.train import task_spec, trained_variables

# The voxel ops' path in every artifact (see the module docstring).
EXPORT_KERNEL_BACKEND = "xla"


def export_segmenter(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Restores the workdir's latest checkpoint and exports its segmenter to `<workdir>/export`.

  The artifact maps `points [batch, points, C_in]` f32 (ShapeNet also `category [batch]`
  int32, the shape's category id; the network builds its one-hot) to
  `logits [batch, points, num_classes]` f32, both sizes symbolic. The logits cover every part
  of every category; the signature's metadata lists each category's part labels
  (`part_ranges`), to which the reference protocol restricts the argmax.

  Returns:
    `path` (the `.jaxexport`), `params` (count), `step`, `inputs` (name -> shape, "batch" and
    "points" symbolic), `outputs`, `platforms`, `kernel_path`.
  """
  spec = task_spec(config)
  variables, step = trained_variables(config, workdir)
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  model_config.kernel_backend = EXPORT_KERNEL_BACKEND
  model = build_model(spec.task, model_config, spec.num_classes, spec.num_categories)

  def segment(*inputs: jax.Array) -> jax.Array:
    return model.apply(variables, *inputs, train=False)

  n = config.data.num_points
  inputs = {"points": portable.Spec(("batch", "points", spec.in_channels), "float32")}
  if spec.task == "shapenet":
    inputs["category"] = portable.Spec(("batch",), "int32")
  metadata = {"task": spec.task, "model": config.model.name, "preset": config.preset,
              "step": step, "trained_num_points": n, "class_names": list(spec.class_names),
              "part_ranges": [list(r) for r in spec.part_ranges or ()],
              "kernel_path": EXPORT_KERNEL_BACKEND}
  description = (f"PVCNN {spec.task} segmenter ({config.model.name}, width "
                 f"{config.model.width_multiplier}), eval mode, trained {step} steps: "
                 f"inputs {list(inputs)} -> per-point logits over {spec.num_classes} classes.")
  path = portable.export(segment, inputs, os.path.join(workdir, "export"),
                         f"pvcnn_{spec.task}", description=description, metadata=metadata)
  with open(os.path.splitext(path)[0] + ".json") as f:
    signature = json.load(f)
  return {"path": path, "params": core.count_params(variables["params"]), "step": step,
          "inputs": {name: list(s.shape) for name, s in inputs.items()},
          "outputs": [o["shape"] for o in signature["outputs"]],
          "platforms": signature["platforms"], "kernel_path": EXPORT_KERNEL_BACKEND}
