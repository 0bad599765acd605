"""PSD pictures: the flow colour wheel's hues, and each writer's file is readable and complete."""

import re

import numpy as np
import pytest
from matplotlib import colors, image

from lite_jax.psd import visualize


def test_flow_to_rgb_hue_follows_direction_and_saturation_magnitude():
  flow = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.5, 0.0], [0.0, 0.0]])
  hsv = colors.rgb_to_hsv(visualize.flow_to_rgb(flow))
  # Right, down (image y), left, up: a quarter turn apart.
  np.testing.assert_allclose(hsv[:4, 0], [0.0, 0.25, 0.5, 0.75], atol=1e-6)
  np.testing.assert_allclose(hsv[:, 1], [1, 1, 1, 1, 0.5, 0], atol=1e-6)
  np.testing.assert_allclose(hsv[:, 2], 1.0)
  np.testing.assert_allclose(visualize.flow_to_rgb(flow, max_magnitude=2.0)[4],
                             colors.hsv_to_rgb([0.0, 0.25, 1.0]), atol=1e-6)
  assert visualize.flow_to_rgb(np.zeros((3, 3, 2))).min() == 1.0  # No flow: white.


def _assert_png(path, min_size=(50, 50)):
  pixels = image.imread(path)
  assert pixels.shape[0] >= min_size[0] and pixels.shape[1] >= min_size[1]
  assert pixels[..., :3].std() > 0.01  # Something was drawn.


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
  folder = tmp_path_factory.mktemp("psd_pictures")
  rng = np.random.default_rng(0)
  dims = (18, 9, 0)
  flows = rng.uniform(-1, 1, size=(3, 5, 16, 16, 2))
  paths = {
      "traversals": visualize.save_traversals(
          folder / "traversals.png", visualize.flow_to_rgb(flows), dims,
          values=np.linspace(-2, 2, 5), names=["circle", "square", "triangle"]),
      "masks": visualize.save_masks(folder / "masks.png", rng.uniform(size=(2, 16, 16, 3)),
                                    rng.uniform(size=(2, 3, 16, 16)), dims),
  }
  probs = np.full((32, 32), 4.5e-5)
  probs[18, 9], probs[18, 0], probs[9, 0] = 0.998, 0.997, 0.3
  paths["structure"] = visualize.save_structure_tree(  # Names as a dim -> name mapping.
      folder / "structure.png", probs, dims, names={18: "circle", 9: "square"})
  paths["samples"] = visualize.save_traversals(
      folder / "samples.png", visualize.flow_to_rgb(flows[:2]), (0, 1), row_prefix="scene ")
  return folder, paths


@pytest.mark.parametrize("name", ["traversals", "masks", "structure", "samples"])
def test_picture_writers_produce_readable_pngs(pictures, name):
  _assert_png(pictures[1][name])


def test_names_align_with_dims_or_map_them():
  assert visualize._names({18: "circle", 0: "triangle"}, (18, 9, 0)) == ["circle", "", "triangle"]
  assert visualize._names(None, (18, 9)) == ["", ""]
  with pytest.raises(ValueError, match="names"):
    visualize._names(["circle"], (18, 9))


def test_structure_tree_puts_parents_above_children():
  probs = np.zeros((32, 32))
  probs[18, 9] = probs[18, 0] = 0.99
  assert visualize._tree_levels(probs, (18, 9, 0, 5)) == [0, 1, 1, 0]
  probs[9, 18] = 0.99  # A cycle still ends with finite levels.
  assert max(visualize._tree_levels(probs, (18, 9, 0))) <= 2


def test_html_names_every_png_and_metric(pictures):
  folder, paths = pictures
  metrics = {"part_iou": 0.71234, "hierarchy_correct": True, "active_dims": (18, 9, 0),
             "flow_epe": np.float32(0.5), "note": "a < b"}
  sections = [("Latent traversals", "traversals.png"), ("Part masks", paths["masks"]),
              ("Structure", "structure.png")]
  page = open(visualize.write_html(folder / "index.html", sections, metrics)).read()
  sources = re.findall(r'<img src="([^"]+)"', page)
  assert sources == ["traversals.png", "masks.png", "structure.png"]  # Relative to the page.
  for name in metrics:
    assert f"<td>{name}</td>" in page
  for title, _ in sections:
    assert f"<h2>{title}</h2>" in page
  assert "0.7123" in page and "[18, 9, 0]" in page and "a &lt; b" in page
