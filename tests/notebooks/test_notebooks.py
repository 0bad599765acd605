"""The Colab quickstart notebooks run top to bottom on CPU with a tiny preset."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _execute(name: str, tmp_path, monkeypatch) -> tuple[str, list[dict]]:
  """Runs `notebooks/<name>` with the tiny preset; its printed text and its outputs."""
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
  notebook = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.get("outputs", [])]
  return "".join(o.get("text", "") for o in outputs), outputs


def _images(outputs: list[dict]) -> int:
  return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_lite_transformer_quickstart_runs(tmp_path, monkeypatch):
  text, outputs = _execute("lite_transformer_quickstart.ipynb", tmp_path, monkeypatch)
  assert "wmt14_enfr_lite_d496" in text and "->" in text
  assert _images(outputs) >= 1


@pytest.mark.slow
def test_haq_quickstart_runs(tmp_path, monkeypatch):
  text, outputs = _execute("haq_quickstart.ipynb", tmp_path, monkeypatch)
  assert "53 quantizable layers" in text and "bit_serial_edge_latency" in text
  assert "searched policy: acc" in text and "acc_uniform" in text
  assert _images(outputs) >= 2  # the quantizer grids and the search plot


@pytest.mark.slow
def test_design_automation_quickstart_runs(tmp_path, monkeypatch):
  text, outputs = _execute("design_automation_quickstart.ipynb", tmp_path, monkeypatch)
  assert "AMC MobileNetV1 (0.5x)" in text and "proxyless_mobile" in text
  assert "least-squares refit" in text
  assert "AMC: flops_ratio" in text and "acc_uniform" in text
  assert "measured" in text and "expected" in text
  assert _images(outputs) >= 2  # AMC's kept ratios and at least one search plot
