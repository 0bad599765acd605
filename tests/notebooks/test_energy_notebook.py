"""The energy quickstart notebook runs on CPU (tiny preset)."""

import pytest

from tests.notebooks.notebook_runner import count_images, execute


@pytest.mark.slow
def test_energy_quickstart_runs(tmp_path, monkeypatch):
  text, outputs = execute("energy_quickstart.ipynb", tmp_path, monkeypatch)
  assert "indoor: 249 samples, 85 buildings, 2016-11" in text
  assert "| ann |" in text and "| svr |" in text and "3-fold grouped by building" in text
  assert "best hidden size" in text
  assert "top design:" in text and "meet the heat-loss ceiling" in text
  assert "heat_collection_std" in text  # the predictions CSV with the ensemble spread
  assert count_images(outputs) >= 5  # data, 2 x predicted-vs-measured, Pareto, responses
