"""Runs a Colab quickstart notebook top to bottom on CPU with a tiny preset.

A notebook whose pipeline an end-to-end test already runs is executed by that test's module,
on a copy of the test's finished workdir: every cell still runs, and its pipeline resumes
finished phases (restore + evaluate) instead of training them a second time.
"""

import os
import shutil

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def execute(name: str, workdir: str, monkeypatch) -> tuple[str, list[dict]]:
  """Runs `notebooks/<name>` with the tiny preset in `workdir`; its printed text and outputs."""
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("LITE_JAX_NOTEBOOK_WORKDIR", str(workdir))
  notebook = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.get("outputs", [])]
  return "".join(o.get("text", "") for o in outputs), outputs


def snapshot(workdir: str, destination: str) -> str:
  """A copy of a finished pipeline's workdir (later tests of the module may extend the original,
  e.g. a longer search, which would change what the notebook resumes)."""
  shutil.copytree(workdir, destination)
  return destination


def count_images(outputs: list[dict]) -> int:
  return sum("image/png" in o.get("data", {}) for o in outputs)
