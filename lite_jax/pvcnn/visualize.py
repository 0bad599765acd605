"""Plots of segmented point clouds (ground truth beside prediction)."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib
import numpy as np
from mpl_toolkits import mplot3d  # noqa: F401  (registers the "3d" projection)

from lite_jax.core import plots


def plot_segmentations(clouds: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                       path: str | os.PathLike, num_classes: int, up_axis: int = 1) -> str:
  """One row per cloud: ground truth and prediction as 3-D scatter plots, colour = label.

  Args:
    clouds: `(title, xyz [M, 3], labels [M], prediction [M])` per row.
    path: the PNG to write.
    num_classes: fixes the colour of each label across rows.
    up_axis: the data's vertical axis (1: y-up ShapeNet, 2: z-up S3DIS).

  Returns:
    The path written.
  """
  figure = plots.Figure(figsize=(8, 4 * len(clouds)))
  colors = matplotlib.colormaps["tab20"](np.arange(num_classes) % 20)
  axes_order = [0, 2, 1] if up_axis == 1 else [0, 1, 2]  # matplotlib's 3-D axes are z-up.
  for row, (title, xyz, labels, prediction) in enumerate(clouds):
    for col, (name, values) in enumerate((("truth", labels), ("prediction", prediction))):
      axis = figure.add_subplot(len(clouds), 2, 2 * row + col + 1, projection="3d")
      axis.scatter(*xyz[:, axes_order].T, c=colors[np.clip(values, 0, None)], s=2,
                   depthshade=False)
      axis.set_title(f"{title}: {name}", fontsize=9)
      axis.set_axis_off()
  return plots.save(figure, path, dpi=80)
