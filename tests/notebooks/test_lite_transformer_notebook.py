"""The Lite Transformer quickstart notebook runs on CPU (tiny preset)."""

import pytest

from tests.notebooks.notebook_runner import count_images, execute


@pytest.mark.slow
def test_lite_transformer_quickstart_runs(tmp_path, monkeypatch):
  text, outputs = execute("lite_transformer_quickstart.ipynb", tmp_path, monkeypatch)
  assert "wmt14_enfr_lite_d496" in text and "->" in text
  assert count_images(outputs) >= 1
