"""The gradient-leakage quickstart notebook runs on CPU (tiny preset) and its attacks succeed.

No leakage test compiles the notebook's programs (the launcher tests run the 4-step `demo`
preset, too short to recover an image; the attack tests use other shapes), so the notebook
runs on its own: about 37 s of CPU, most of it compiling its five programs.
"""

import re

import pytest

from experiments.configs import dlg as dlg_configs
from tests.notebooks.notebook_runner import count_images, execute


def _table(text: str) -> dict[str, list[str]]:
  """The printed defense table: `{defense: [mse, psnr, ssim, label acc, success, task acc]}`."""
  rows = {}
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 7 and line.startswith("| ") and cells[0] != "defense":
      rows[cells[0]] = cells[1:]
  return rows


@pytest.mark.slow
def test_gradient_leakage_quickstart_recovers_the_photo_and_its_label(tmp_path, monkeypatch):
  text, outputs = execute("gradient_leakage_quickstart.ipynb", tmp_path, monkeypatch)
  config = dlg_configs.get_config("tiny")
  assert "preset tiny: lenet victim, 12x12x3 images, 10 classes" in text
  mse = float(re.search(r"DLG: MSE (\S+), PSNR", text).group(1))
  assert mse <= config.success_mse  # measured: ~7e-8
  assert "label 7 (true 7)" in text
  assert "iDLG label: 7 (true 7); column sums: negative only at class [7]" in text

  table = _table(text)
  assert list(table) == ["none", "gaussian 0.01", "fp16", "prune 0.5"]
  success = {name: float(row[4]) for name, row in table.items()}
  assert success == {"none": 1.0, "gaussian 0.01": 0.0, "fp16": 1.0, "prune 0.5": 0.0}
  assert float(table["none"][5]) > 0.8  # the undefended digits classifier learned (chance 0.1)
  assert "stop the attack (no exact recovery): gaussian 0.01, prune 0.5" in text

  # Snapshot strip, loss curve, iDLG's column sums, defended reconstructions, sweep plot.
  assert count_images(outputs) == 5
  for name in ("dlg_snapshots.png", "dlg_loss.png", "idlg_columns.png",
               "defense_reconstructions.png", "defense_sweep.png", "defense_table.md"):
    assert (tmp_path / name).stat().st_size > 0, name
