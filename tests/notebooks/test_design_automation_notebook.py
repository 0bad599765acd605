"""The AMC + ProxylessNAS quickstart notebook runs on CPU (tiny presets)."""

import pytest

from tests.notebooks.notebook_runner import count_images, execute


@pytest.mark.slow
def test_design_automation_quickstart_runs(tmp_path, monkeypatch):
  text, outputs = execute("design_automation_quickstart.ipynb", tmp_path, monkeypatch)
  assert "AMC MobileNetV1 (0.5x)" in text and "proxyless_mobile" in text
  assert "least-squares refit" in text
  assert "AMC: flops_ratio" in text and "acc_uniform" in text
  assert "measured" in text and "expected" in text
  assert count_images(outputs) >= 2  # AMC's kept ratios and at least one search plot
