"""The ProxylessNAS launcher end to end on the tiny preset: table, warm-up, a search stopped
after 6 steps and resumed from its checkpoint (the architecture updated after steps 5 and 10
only), derive, measure, train, evaluate; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lite_jax.core.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _launch(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "experiments.proxyless_nas", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "PYTHONPATH": ROOT})


def test_the_launcher_searches_resumes_and_reports(tmp_path):
  workdir = str(tmp_path / "run")
  flags = ["--config=experiments/configs/proxyless_nas.py:tiny", f"--workdir={workdir}",
           "--config.latency.ref_fractions=0.5"]
  first = _launch(*flags, "--config.search.steps_per_run=6")
  assert first.returncode == 0, first.stderr[-2000:]
  assert "search frac0.5 stopped at step 6 of 12" in first.stderr
  assert os.path.exists(os.path.join(workdir, "latency_table.json"))

  second = _launch(*flags)
  assert second.returncode == 0, second.stderr[-2000:]
  assert "resuming from step 6" in second.stderr
  result = json.loads(second.stdout.strip().splitlines()[-1])
  target = result["targets"]["frac0.5"]
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

  evaluated = _launch(*flags, "--mode=evaluate")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  again = json.loads(evaluated.stdout.strip().splitlines()[-1])["networks"]["frac0.5"]
  assert again["acc"] == target["acc"]

  wrong = _launch(*flags, "--mode=profile", "--arch=3x3_MBConv3")
  assert wrong.returncode == 2
  assert wrong.stderr.strip().splitlines()[-1] == (
      "error: the architecture lists 1 ops but the search space has 2 searchable blocks; "
      "give one op per block, separated by ','.")
