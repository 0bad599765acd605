"""The HAQ quickstart notebook runs on CPU (tiny preset)."""

import pytest

from tests.notebooks.notebook_runner import count_images, execute


@pytest.mark.slow
def test_haq_quickstart_runs(tmp_path, monkeypatch):
  text, outputs = execute("haq_quickstart.ipynb", tmp_path, monkeypatch)
  assert "53 quantizable layers" in text and "bit_serial_edge_latency" in text
  assert "searched policy: acc" in text and "acc_uniform" in text
  assert count_images(outputs) >= 2  # the quantizer grids and the search plot
