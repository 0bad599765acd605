"""PSD pictures: flow colour coding, latent traversals, part masks, the structure tree and an
HTML page that gathers them with the metrics (as the reference's demo page does).

Pure drawing from numpy arrays through `lite_jax.core.plots` (figures without pyplot, so no
backend is switched). Every writer returns the path it wrote.
"""

from __future__ import annotations

import html
import json
import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colors

from lite_jax.core import plots

# Structure edges at or below 0.5 are not in the learned tree; those above this floor are still
# drawn, faint, so a nearly-learned edge is visible, while the 4.5e-5 of an untrained entry is
# left out to keep a 32-node picture readable.
FAINT_EDGE_FLOOR = 0.05
_ARC = 0.15  # Curvature of the structure tree's arrows.
# Part names of dims: aligned with the dims, or a dim -> name mapping.
Names = Sequence[str] | Mapping[int, str] | None


def flow_to_rgb(flow, max_magnitude: float | None = None) -> np.ndarray:
  """Colour-wheel coding of a flow: hue = direction, saturation = magnitude, value 1.

  Hue is the angle atan2(y, x) of the flow in image coordinates (y points down) as a fraction
  of a turn: right = red (0), down = yellow-green (1/4), left = cyan (1/2), up = purple (3/4).
  Zero flow is white.

  Args:
    flow: `[..., 2]` (x, y), any units.
    max_magnitude: the magnitude drawn fully saturated (larger ones are clipped); None: the
      largest magnitude in `flow`.

  Returns:
    `[..., 3]` float RGB in [0, 1].
  """
  flow = np.asarray(flow, np.float64)
  if flow.shape[-1:] != (2,):
    raise ValueError(f"flow must be [..., 2], got {flow.shape}.")
  magnitude = np.linalg.norm(flow, axis=-1)
  scale = magnitude.max(initial=0.0) if max_magnitude is None else float(max_magnitude)
  saturation = np.clip(magnitude / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(magnitude)
  hue = np.mod(np.arctan2(flow[..., 1], flow[..., 0]) / (2 * np.pi), 1.0)
  return colors.hsv_to_rgb(np.stack([hue, saturation, np.ones_like(hue)], -1))


def _names(names: Names, dims: Sequence[int]) -> list[str]:
  """One name per dim ("" for none): `names` aligned with `dims`, or a dim -> name mapping."""
  if names is None:
    return [""] * len(dims)
  if isinstance(names, Mapping):
    return [str(names.get(int(d), "")) for d in dims]
  if len(names) != len(dims):
    raise ValueError(f"names must name each of the {len(dims)} dims, got {len(names)}.")
  return [str(name) for name in names]


def _label(prefix: str, dim: int, name: str) -> str:
  return f"{prefix}{dim}" + (f"\n{name}" if name else "")


def _blank(axis) -> None:
  axis.set_xticks([])
  axis.set_yticks([])


def save_traversals(path: str | os.PathLike, frames, dims: Sequence[int], *,
                    values: Sequence[float] | None = None,
                    names: Names = None, row_prefix: str = "z") -> str:
  """A grid of latent traversals: row r varies dim `dims[r]`, columns are the steps.

  Args:
    path: the PNG to write.
    frames: `[K, T, H, W, 3]` RGB in [0, 1] (predicted frames or `flow_to_rgb` of flows).
    dims: the K latent dimensions traversed.
    values: optional `[T]` latent values of the steps, written above the columns.
    names: optional part names (e.g. the matched objects) written beside the rows: `[K]`
      aligned with `dims`, or a dim -> name mapping.
    row_prefix: the row label is `row_prefix` + dim (e.g. "scene " when rows are not dims).
  """
  frames = np.asarray(frames, np.float32)
  if frames.ndim != 5 or frames.shape[0] != len(dims) or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [K={len(dims)}, T, H, W, 3], got {frames.shape}.")
  if values is not None and len(values) != frames.shape[1]:
    raise ValueError(f"values must give each of the {frames.shape[1]} steps, got {len(values)}.")
  labels = [_label(row_prefix, d, name) for d, name in zip(dims, _names(names, dims))]
  rows, cols = frames.shape[:2]
  figure, axes = plots.subplots(rows, cols, figsize=(1.3 * cols + 0.6, 1.3 * rows + 0.3),
                                squeeze=False)
  for r in range(rows):
    for t in range(cols):
      axis = axes[r, t]
      axis.imshow(np.clip(frames[r, t], 0, 1), interpolation="nearest")
      _blank(axis)
      if t == 0:
        axis.set_ylabel(labels[r], fontsize=9)
      if r == 0 and values is not None:
        axis.set_title(f"{values[t]:+.2f}", fontsize=8)
  return plots.save(figure, path, dpi=90)


def save_masks(path: str | os.PathLike, images, masks, dims: Sequence[int], *,
               names: Names = None) -> str:
  """Part masks: one row per example, the frame-1 image then each active dim's soft mask.

  Args:
    path: the PNG to write.
    images: `[N, H, W, 3]` RGB in [0, 1].
    masks: `[N, K, H, W]` soft masks in [0, 1] of the K dims in `dims` (black 0, white 1).
    dims: the K active latent dimensions.
    names: optional part names written in the column titles: `[K]` aligned with `dims`, or
      a dim -> name mapping.
  """
  images = np.asarray(images, np.float32)
  masks = np.asarray(masks, np.float32)
  if (images.ndim != 4 or masks.ndim != 4 or masks.shape[1] != len(dims)
      or images.shape[:1] + images.shape[1:3] != masks.shape[:1] + masks.shape[2:]):
    raise ValueError(f"images [N, H, W, 3] {images.shape} and masks [N, K={len(dims)}, H, W] "
                     f"{masks.shape} must agree.")
  labels = [_label("z", d, name) for d, name in zip(dims, _names(names, dims))]
  rows, cols = masks.shape[0], masks.shape[1] + 1
  figure, axes = plots.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows + 0.3),
                                squeeze=False)
  for n in range(rows):
    axes[n, 0].imshow(np.clip(images[n], 0, 1), interpolation="nearest")
    for k in range(cols - 1):
      axes[n, k + 1].imshow(masks[n, k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for axis in axes[n]:
      _blank(axis)
  axes[0, 0].set_title("frame 1", fontsize=9)
  for k, label in enumerate(labels):
    axes[0, k + 1].set_title(label.replace("\n", " "), fontsize=9)
  return plots.save(figure, path, dpi=90)


def _tree_levels(probs: np.ndarray, dims: Sequence[int]) -> list[int]:
  """Depth of each dim below the roots (dims without a parent edge > 0.5); a cycle's depth
  stops growing after len(dims) rounds."""
  levels = [0] * len(dims)
  for _ in range(len(dims)):
    levels = [max([levels[a] + 1 for a, i in enumerate(dims) if i != j and probs[i, j] > 0.5],
                  default=0) for j in dims]
    levels = [min(level, len(dims) - 1) for level in levels]
  return levels


def save_structure_tree(path: str | os.PathLike, structure_probs, dimensions: Sequence[int],
                        names: Names = None) -> str:
  """The learned structure as a tree: nodes = active dims, arrows parent -> child.

  An edge i -> j is drawn solid with its probability sigmoid(S)[i, j] when above 0.5 (i is
  j's parent); edges in (FAINT_EDGE_FLOOR, 0.5] are drawn faint and dashed; smaller ones are
  left out. Parents sit above their children.

  Args:
    path: the PNG to write.
    structure_probs: `[L, L]` sigmoid(S).
    dimensions: the K active latent dimensions (the nodes).
    names: optional part names written under the dims: `[K]` aligned with `dimensions`, or
      a dim -> name mapping.
  """
  probs = np.asarray(structure_probs, np.float64)
  dims = [int(d) for d in dimensions]
  if probs.ndim != 2 or probs.shape[0] != probs.shape[1] or any(
      not 0 <= d < probs.shape[0] for d in dims):
    raise ValueError(f"structure_probs must be [L, L] and dimensions in 0..L-1, got "
                     f"{probs.shape} and {dims}.")
  labels = [_label("z", d, name) for d, name in zip(dims, _names(names, dims))]
  levels = _tree_levels(probs, dims)
  position = {}
  for level in sorted(set(levels)):
    members = [d for d, lv in zip(dims, levels) if lv == level]
    for rank, d in enumerate(members):
      position[d] = ((rank + 1) / (len(members) + 1), -float(level))
  depth = max(levels)
  width = max(levels.count(level) for level in set(levels))
  figure, axis = plots.subplots(figsize=(max(3.0, 1.6 * width + 1), 1.6 * depth + 2.0))
  for i in dims:
    for j in dims:
      p = probs[i, j]
      if i == j or p <= FAINT_EDGE_FLOOR:
        continue
      strong = p > 0.5
      # Curved arrows keep i -> j and j -> i apart when both are drawn; the label sits on its
      # own curve a third of the way from the parent (the arc3 Bezier at t = 1/3), so the
      # labels of i -> j and j -> i never overlap.
      axis.annotate("", xy=position[j], xytext=position[i],
                    arrowprops=dict(arrowstyle="-|>", shrinkA=24, shrinkB=24,
                                    connectionstyle=f"arc3,rad={_ARC}",
                                    linestyle="-" if strong else "--",
                                    alpha=1.0 if strong else 0.3, color="black"))
      (x1, y1), (x2, y2) = position[i], position[j]
      t, bend = 1 / 3, 2 / 9 * _ARC  # bend = 2 t (1 - t) rad.
      label_at = (x1 + t * (x2 - x1) + bend * (y2 - y1), y1 + t * (y2 - y1) - bend * (x2 - x1))
      axis.text(*label_at, f"{p:.3f}", fontsize=8, ha="center", va="center",
                alpha=1.0 if strong else 0.4,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"))
  for d, label in zip(dims, labels):
    axis.text(*position[d], label, ha="center", va="center", fontsize=10,
              zorder=3, bbox=dict(boxstyle="circle,pad=0.4", fc="#dce9f7", ec="#1f4e79"))
  axis.set_xlim(0, 1)
  axis.set_ylim(-depth - 0.5, 0.5)
  axis.set_axis_off()
  axis.set_title("structure: parent -> child, sigmoid(S) > 0.5", fontsize=9)
  return plots.save(figure, path, dpi=100)


def _format(value) -> str:
  if hasattr(value, "tolist"):  # numpy / jax scalars and arrays.
    value = value.tolist()
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, (bool, int, str)):
    return str(value)
  return json.dumps(value, default=str)


def write_html(path: str | os.PathLike, sections: Sequence[tuple[str, str]],
               metrics: Mapping[str, object], *, title: str = "PSD results") -> str:
  """A self-contained results page: title, a metrics table, then each picture under its title.

  Args:
    path: the HTML file to write.
    sections: `(title, png filename)` pairs; filenames are linked relative to the page's
      folder (an absolute path is made relative), so the folder can be moved as a whole.
    metrics: name -> value (numbers, bools, strings, lists, dicts), one table row each.
    title: the page's heading.
  """
  folder = os.path.dirname(os.path.abspath(path))
  rows = "\n".join(f"<tr><td>{html.escape(str(name))}</td><td>{html.escape(_format(value))}"
                   f"</td></tr>" for name, value in metrics.items())
  figures = []
  for caption, png in sections:
    source = os.path.relpath(png, folder) if os.path.isabs(png) else os.fspath(png)
    figures.append(f"<h2>{html.escape(caption)}</h2>\n<img src=\"{html.escape(source)}\" "
                   f"alt=\"{html.escape(caption)}\">")
  page = f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; font-family: monospace; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Metrics</h2>
<table>
{rows}
</table>
{chr(10).join(figures)}
</body>
</html>
"""
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return os.fspath(path)
