"""Runs a Colab quickstart notebook top to bottom on CPU with a tiny preset (one test file per
notebook, so the two test processes can run them side by side)."""

import os

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def execute(name: str, tmp_path, monkeypatch) -> tuple[str, list[dict]]:
  """Runs `notebooks/<name>` with the tiny preset; its printed text and its outputs."""
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
  notebook = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.get("outputs", [])]
  return "".join(o.get("text", "") for o in outputs), outputs


def count_images(outputs: list[dict]) -> int:
  return sum("image/png" in o.get("data", {}) for o in outputs)
