"""The ProxylessNAS pipeline end to end on the tiny preset, in process: table, warm-up, a search
stopped after 6 steps and resumed from its checkpoint (the architecture updated after steps 5
and 10 only), derive, measure, train, evaluate; one launch of the launcher itself (bad input:
exit 2 and its one-sentence error); and the design-automation quickstart notebook, whose
ProxylessNAS part resumes a copy of the finished pipeline (its AMC part runs the tiny preset)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from experiments.configs import proxyless_nas
from lite_jax.automl import proxyless
from lite_jax.core import StoppedEarly
from lite_jax.core.metrics import read_metrics
from tests.notebooks.notebook_runner import count_images, execute, snapshot

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Messages(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  """The launcher's bad-input run (started first: it runs while the pipeline does), then the
  pipeline stopped after 6 search steps, resumed, and evaluated; a copy of the finished
  workdir where the notebook looks for its ProxylessNAS run."""
  root = tmp_path_factory.mktemp("proxyless")
  launcher = subprocess.Popen(
      [sys.executable, "-m", "experiments.proxyless_nas",
       "--config=experiments/configs/proxyless_nas.py:tiny",
       f"--workdir={root / 'profile'}", "--mode=profile", "--arch=3x3_MBConv3"], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, "PYTHONPATH": ROOT})
  workdir = str(root / "run")
  config = proxyless_nas.get_config("tiny")  # one latency target: half the slowest arch's
  s = proxyless.setup(config, workdir)
  config.search.steps_per_run = 6
  with pytest.raises(StoppedEarly) as stopped:
    proxyless.run_all(config, workdir, s)
  table_after_first = os.path.exists(os.path.join(workdir, "latency_table.json"))
  config.search.steps_per_run = 0
  messages, absl_logger = _Messages(), logging.getLogger("absl")
  absl_logger.addHandler(messages)
  try:
    result = proxyless.run_all(config, workdir, s)
  finally:
    absl_logger.removeHandler(messages)
  evaluated = proxyless.evaluate(config, workdir)
  notebook = root / "notebook"
  snapshot(workdir, str(notebook / "proxyless"))
  return dict(workdir=workdir, stopped=str(stopped.value), table_after_first=table_after_first,
              resumed_messages=messages.lines, result=result, evaluated=evaluated,
              launcher=launcher, notebook=str(notebook))


def test_the_search_stops_resumes_and_reports(pipeline):
  workdir = pipeline["workdir"]
  assert "search frac0.5 stopped at step 6 of 12" in pipeline["stopped"]
  assert pipeline["table_after_first"]
  assert any("resuming from step 6" in m for m in pipeline["resumed_messages"])
  target = pipeline["result"]["targets"]["frac0.5"]
  assert len(target["arch"].split(",")) == 2
  assert target["measured_latency_ms"] > 0 and target["expected_latency_ms"] > 0
  assert 0.0 <= target["acc"] <= 1.0
  assert os.path.getsize(target["plot"]) > 10_000
  search_dir = os.path.join(workdir, "search_frac0.5")
  records = read_metrics(search_dir)
  assert [r["step"] for r in records] == [6, 10, 12]  # the resumed run did not redo 1-6
  # One architecture update per 5 weight steps (after steps 5 and 10), none in the warm-up.
  assert [r["arch_updates"] for r in records] == [1, 1, 0]
  assert all(r["arch_updates"] == 0 for r in read_metrics(os.path.join(workdir, "warmup")))
  saved = json.load(open(os.path.join(search_dir, "arch.json")))
  assert saved["arch"] == target["arch"]
  assert os.path.exists(os.path.join(workdir, "derived_frac0.5", "export.msgpack"))


def test_evaluate_restores_the_trained_network(pipeline):
  again = pipeline["evaluated"]["networks"]["frac0.5"]
  assert again["acc"] == pipeline["result"]["targets"]["frac0.5"]["acc"]


def test_the_notebook_runs_and_prints_the_finished_search(pipeline, monkeypatch):
  """The quickstart's cells top to bottom: AMC's tiny pipeline, then ProxylessNAS's, which
  resumes the copied run (table, search, training finished) and prints its architecture and
  accuracy."""
  text, outputs = execute("design_automation_quickstart.ipynb", pipeline["notebook"],
                          monkeypatch)
  assert "AMC MobileNetV1 (0.5x)" in text and "proxyless_mobile" in text
  assert "least-squares refit" in text
  assert "AMC: flops_ratio" in text and "acc_uniform" in text
  target = pipeline["result"]["targets"]["frac0.5"]
  assert f"frac0.5: arch {target['arch']}\n  expected " in text
  assert f"acc {target['acc']:.3f}" in text and "measured" in text
  assert count_images(outputs) >= 2  # AMC's kept ratios and the search plot


def test_the_launcher_rejects_a_wrong_length_arch(pipeline):
  stdout, stderr = pipeline["launcher"].communicate(timeout=600)
  assert pipeline["launcher"].returncode == 2, stderr[-2000:]
  assert stderr.strip().splitlines()[-1] == (
      "error: the architecture lists 1 ops but the search space has 2 searchable blocks; "
      "give one op per block, separated by ','.")
  assert not stdout.strip()
