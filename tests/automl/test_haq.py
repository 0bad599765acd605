"""The HAQ pipeline end to end on the tiny preset: fp32, search, fine-tunes, resume, errors; and
the HAQ quickstart notebook, top to bottom on the finished pipeline (it resumes, not retrains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.configs import haq as haq_configs
from lite_jax.automl import haq
from lite_jax.core import UserError
from lite_jax.core.metrics import read_metrics
from lite_jax.nn import quant
from tests.notebooks.notebook_runner import count_images, execute, snapshot

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  """One whole run of the tiny preset: its workdir, config and result line; a copy of the
  finished workdir is kept for the notebook."""
  workdir = str(tmp_path_factory.mktemp("haq"))
  config = haq_configs.get_config("tiny")
  result = haq.run_all(config, workdir)
  finished = snapshot(workdir, str(tmp_path_factory.mktemp("haq_notebook") / "work"))
  return workdir, config, result, finished


def test_the_searched_policy_meets_the_budget_and_is_fine_tuned(pipeline):
  workdir, config, result, _ = pipeline
  s = haq.setup(config, workdir, with_data=False)
  policy = haq.parse_policy(result["policy"], s.paths)
  assert len(policy) == len(s.layers) == 14
  assert result["latency_ms"] == pytest.approx(s.cost(policy))
  assert result["latency_ms"] <= result["budget_ms"] + 1e-12
  assert result["uniform_latency_ms"] <= result["budget_ms"] + 1e-12
  assert all(config.quant.min_bits <= w <= 8 for w, _ in policy)
  assert all(config.quant.min_bits <= a <= 8 or a == quant.FULL_PRECISION for _, a in policy)
  for key in ("acc", "acc_fp32", "acc_uniform"):
    assert 0.0 <= result[key] <= 1.0
  assert os.path.getsize(result["plot"]) > 10_000
  saved = json.load(open(os.path.join(workdir, "search", "policy.json")))
  assert saved["policy"] == result["policy"] and saved["layers"] == s.paths
  # One metrics record per episode, with the agent's losses once past warm-up.
  records = read_metrics(os.path.join(workdir, "search"))
  assert [r["step"] for r in records] == list(range(config.search.episodes))
  assert "critic_loss" in records[-1] and "critic_loss" not in records[0]


def test_the_notebook_runs_on_the_finished_pipeline_and_prints_its_results(pipeline,
                                                                         monkeypatch):
  """The quickstart's cells top to bottom; its `run_all` resumes the copy of the finished
  pipeline, so the lines it prints are the pipeline's own numbers."""
  _, _, result, finished = pipeline
  text, outputs = execute("haq_quickstart.ipynb", finished, monkeypatch)
  assert "53 quantizable layers" in text and "bit_serial_edge_latency" in text
  assert (f"searched policy: acc {result['acc']:.3f} at {result['latency_ms']:.3f} ms "
          f"(budget {result['budget_ms']:.3f} ms)") in text
  assert f"acc_uniform {result['acc_uniform']:.3f}; fp32: acc_fp32 {result['acc_fp32']:.3f}" in text
  assert count_images(outputs) >= 2  # the quantizer grids and the search plot


def test_a_longer_search_resumes_after_the_saved_episodes(pipeline, tmp_path):
  workdir, config, *_ = pipeline
  config = haq_configs.get_config("tiny")
  config.search.episodes = 4
  haq.search(config, workdir)
  records = read_metrics(os.path.join(workdir, "search"))
  assert [r["step"] for r in records] == [0, 1, 2, 3]  # episodes 0-2 were not run again


def test_evaluate_reads_the_fine_tuned_policy(pipeline):
  workdir, config, result, _ = pipeline
  evaluated = haq.evaluate(config, workdir)
  assert evaluated["policy"] == result["policy"]
  assert evaluated["acc"] == pytest.approx(result["acc"])
  assert evaluated["acc_fp32"] == pytest.approx(result["acc_fp32"])


def test_profile_of_mobilenetv2_matches_the_paper_and_counts_53_layers(tmp_path):
  config = haq_configs.get_config("mobilenetv2_latency0p6")
  out = haq.profile(config, str(tmp_path))
  assert out["params"] == pytest.approx(3.50e6, rel=0.01)
  assert out["macs"] == pytest.approx(300e6, rel=0.01)
  assert out["quantizable_layers"] == 53


def test_policies_and_budgets_a_user_gets_wrong(tmp_path):
  config = haq_configs.get_config("tiny")
  s = haq.setup(config, str(tmp_path), with_data=False)
  with pytest.raises(UserError, match="has 2 'w,a' pairs but the model has 14"):
    haq.parse_policy("8,8;8,8", s.paths)
  with pytest.raises(UserError, match="policy entry 1 is '8'"):
    haq.parse_policy(";".join(["8,8", "8"] + ["8,8"] * 12), s.paths)
  with pytest.raises(UserError, match="bits"):
    haq.policy_dict(s, [(9, 8)] + [(8, 8)] * 13)
  path = tmp_path / "policy.json"
  path.write_text(json.dumps({"no/such/layer": [8, 8]}))
  with pytest.raises(UserError, match="no/such/layer"):
    haq.parse_policy(str(path), s.paths)
  with pytest.raises(UserError, match="no searched policy"):
    haq.chosen_policy(config, s, str(tmp_path))
  config.cost.preserve_ratio = 0.01
  with pytest.raises(UserError, match="no policy meets the budget"):
    haq.setup(config, str(tmp_path), with_data=False)
  config = haq_configs.get_config("tiny")
  config.cost.kind, config.cost.table = "table", str(tmp_path / "table.npy")
  np.save(config.cost.table, np.ones((3, 8, 8), np.int64))
  with pytest.raises(UserError, match=r"\[14, 8, 8\]"):
    haq.setup(config, str(tmp_path), with_data=False)


def test_the_launcher_answers_a_bad_policy_with_one_sentence(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.haq", "--config=experiments/configs/haq.py:tiny",
       "--mode=profile", "--policy=" + ";".join(["8,8"] * 13 + ["9,8"]),
       f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "classifier" in lines[0]
