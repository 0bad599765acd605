"""The Colab quickstart notebooks run top to bottom on CPU with a tiny preset."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_lite_transformer_quickstart_runs(tmp_path, monkeypatch):
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
  path = os.path.join(REPO, "notebooks", "lite_transformer_quickstart.ipynb")
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []))
  assert "wmt14_enfr_lite_d496" in outputs and "->" in outputs
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
             for cell in notebook.cells for o in cell.get("outputs", []))


@pytest.mark.slow
def test_haq_quickstart_runs(tmp_path, monkeypatch):
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
  path = os.path.join(REPO, "notebooks", "haq_quickstart.ipynb")
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []))
  assert "53 quantizable layers" in outputs and "bit_serial_edge_latency" in outputs
  assert "searched policy: acc" in outputs and "acc_uniform" in outputs
  images = [o for cell in notebook.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= 2  # the quantizer grids and the search plot
