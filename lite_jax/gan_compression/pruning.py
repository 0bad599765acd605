"""L1-norm channel pruning of a mobile ResNet generator into a narrower one.

The original GAN Compression pipeline (not the Fast one) starts its student as a pruned copy of
the mobile teacher (reference `utils/weight_transfer.py`): every layer keeps the output channels
whose kernels have the largest L1 norm, and the next layer keeps the matching input channels.
Here, per layer of `resnet.ResnetGenerator` with `separable=True`:

  stem, down1, down2        outputs: top-k by sum |kernel| over (kh, kw, in)
  residual trunk            the channels down2 kept, in every block's input and output
  block conv1 (separable)   depthwise on the trunk's channels; pointwise outputs (the block's
                            hidden width): top-k of its 1x1 kernel
  block conv2 (separable)   depthwise on the hidden channels; pointwise outputs: the trunk's
  up1, up2 (transposed)     outputs: top-k by sum |kernel| over (kh, kw, in)
  head                      inputs: up2's channels; all 3 outputs

Norms are taken over a layer's whole teacher kernel, before its inputs are pruned; kept channels
stay in the teacher's order, and biases follow their channels. A channel whose weights are all
zero is never kept while a non-zero one is left, so pruning a generator whose extra channels are
dead keeps its function exactly (the tests check this).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import resnet


def top_channels(kernel: np.ndarray, count: int, out_axis: int) -> np.ndarray:
  """Indices (ascending) of the `count` output channels with the largest L1 norm."""
  kernel = np.abs(np.asarray(kernel, np.float32))
  norms = kernel.sum(axis=tuple(a for a in range(kernel.ndim) if a != out_axis % kernel.ndim))
  # Stable sort: ties keep the lower index, so the result is deterministic.
  return np.sort(np.argsort(-norms, kind="stable")[:count])


def _conv(params: dict, inputs: np.ndarray | None, outputs: np.ndarray, out_axis: int = 3
          ) -> dict:
  """`{"kernel", "bias"}` of a `layers.Conv` / `UpConv` (`{"conv": ...}`) restricted to
  `inputs` (None: all) and `outputs`."""
  kernel = np.asarray(params["kernel"])
  in_axis = 2 if out_axis == 3 else 3
  if inputs is not None:
    kernel = np.take(kernel, inputs, axis=in_axis)
  return {"kernel": np.take(kernel, outputs, axis=out_axis),
          "bias": np.asarray(params["bias"])[outputs]}


def _separable(params: dict, inputs: np.ndarray, outputs: np.ndarray) -> dict:
  depthwise = params["depthwise"]
  return {"depthwise": {"kernel": np.asarray(depthwise["kernel"])[..., inputs],
                        "bias": np.asarray(depthwise["bias"])[inputs]},
          "pointwise": {"conv": _conv(params["pointwise"]["conv"], inputs, outputs)}}


def _check(teacher: resnet.ResnetGenerator, student: resnet.ResnetGenerator) -> None:
  if not (teacher.separable and student.separable):
    raise UserError("L1 pruning transfers a mobile teacher into a mobile student: set "
                    "teacher.kind='mobile_resnet' (the original GAN Compression pipeline).")
  if teacher.n_blocks != student.n_blocks or teacher.output_nc != student.output_nc:
    raise UserError(f"the student must have the teacher's {teacher.n_blocks} residual blocks "
                    f"and {teacher.output_nc} output channels to be pruned from it.")
  wider = [i for i, (s, t) in enumerate(zip(student.widths(), teacher.widths())) if s > t]
  if wider:
    raise UserError(f"the student ({'_'.join(map(str, student.channels))}) is wider than the "
                    f"teacher ({'_'.join(map(str, teacher.channels))}) at config entry "
                    f"{wider[0]}; pruning needs a narrower student.")


def prune_mobile_resnet(teacher_params: Any, teacher: resnet.ResnetGenerator,
                        student: resnet.ResnetGenerator) -> dict[str, Any]:
  """The student's parameters as the L1-pruned teacher's.

  Args:
    teacher_params: the teacher generator's `params` (the dict under "params").
    teacher: the mobile teacher module.
    student: the mobile student module, no wider than the teacher anywhere.

  Returns:
    The student's `params` tree (numpy arrays), shaped as `student.init` makes them.
  """
  _check(teacher, student)
  p = teacher_params
  widths = student.widths()
  out: dict[str, Any] = {}
  stem = top_channels(p["stem"]["conv"]["kernel"], widths[0], 3)
  out["stem"] = {"conv": _conv(p["stem"]["conv"], None, stem)}
  down1 = top_channels(p["down1"]["conv"]["kernel"], widths[1], 3)
  out["down1"] = {"conv": _conv(p["down1"]["conv"], stem, down1)}
  trunk = top_channels(p["down2"]["conv"]["kernel"], widths[2], 3)
  out["down2"] = {"conv": _conv(p["down2"]["conv"], down1, trunk)}
  for i in range(student.n_blocks):
    block = p[f"block{i}"]
    width = widths[3 + resnet.block_group(i, student.n_blocks)]
    hidden = top_channels(block["conv1"]["pointwise"]["conv"]["kernel"], width, 3)
    out[f"block{i}"] = {"conv1": _separable(block["conv1"], trunk, hidden),
                        "conv2": _separable(block["conv2"], hidden, trunk)}
  # Transposed convs keep their kernel as (kh, kw, out, in): outputs on axis 2.
  up1 = top_channels(p["up1"]["conv"]["kernel"], widths[6], 2)
  out["up1"] = {"conv": _conv(p["up1"]["conv"], trunk, up1, out_axis=2)}
  up2 = top_channels(p["up2"]["conv"]["kernel"], widths[7], 2)
  out["up2"] = {"conv": _conv(p["up2"]["conv"], up1, up2, out_axis=2)}
  out["head"] = {"conv": _conv(p["head"]["conv"], up2, np.arange(student.output_nc))}
  return out
