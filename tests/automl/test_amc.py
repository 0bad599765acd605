"""The AMC pipeline end to end on the tiny preset (launcher, resume, export, fine-tune), the
MobileNetV1 reference policy's published MACs, and the launcher's one-sentence errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import amc as amc_configs
from lite_jax.automl import amc, pruning
from lite_jax.core.errors import UserError
from lite_jax.core.metrics import read_metrics

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _launch(*args):
  return subprocess.run([sys.executable, "-m", "experiments.amc", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": ROOT})


def test_reference_mobilenet_v1_policy_profiles_to_the_published_macs(tmp_path):
  config = amc_configs.get_config("mobilenetv1_0p5flops_reference")
  result = amc.profile(config, str(tmp_path))
  # amc-compressed-models README: MobileNetV1 569M MACs, its 50%-FLOPs pruning 285M. We count
  # 293.9M (every conv and the FC); without the 8.1M of the 3x3 stem it is 285.7M.
  assert result["macs_full"] == pytest.approx(569e6, rel=0.001)
  assert result["macs"] == pytest.approx(285e6, rel=0.035)
  assert result["macs"] - 3 * 24 * 9 * 112 * 112 == pytest.approx(285e6, rel=0.003)
  assert result["channels"] == amc_configs.REFERENCE_MOBILENET_V1_CHANNELS
  assert result["prunable_layers"] == 15


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  """The tiny preset's full model and 3-episode search, through the launcher."""
  workdir = str(tmp_path_factory.mktemp("amc"))
  run = _launch("--config=experiments/configs/amc.py:tiny", f"--workdir={workdir}",
                "--mode=search")
  assert run.returncode == 0, run.stderr[-2000:]
  return workdir, json.loads(run.stdout.strip().splitlines()[-1])


def test_search_meets_the_budget_and_resumes(searched):
  workdir, result = searched
  config = amc_configs.get_config("tiny")
  assert result["flops_ratio"] <= 0.5 + 1e-12
  assert os.path.getsize(result["plot"]) > 10_000
  s = amc.setup(config, workdir, with_data=False)
  widths = amc.parse_channels(result["channels"], s.plan)
  assert s.flops(widths) == pytest.approx(result["macs"], abs=1)
  # A longer search continues after the 3 saved episodes.
  config.search.episodes = 4
  amc.search(config, workdir)
  assert [r["step"] for r in read_metrics(os.path.join(workdir, "search"))] == [0, 1, 2, 3]


def test_finetune_exports_a_smaller_model_and_evaluate_reads_it(searched):
  workdir, _ = searched
  config = amc_configs.get_config("tiny")
  result = amc.finetune(config, workdir)
  s = amc.setup(config, workdir, with_data=False)
  widths = amc.parse_channels(result["channels"], s.plan)
  small = pruning.pruned_model(s.model, s.plan, widths)
  assert small.channels == tuple(widths[1:])
  assert result["macs"] == pytest.approx(result["flops_ratio"] * result["macs_full"], abs=1)
  assert 0 <= result["acc_before_finetune"] <= 1 and 0 <= result["acc_after_finetune"] <= 1
  evaluated = amc.evaluate(config, workdir)
  assert evaluated["acc"] == pytest.approx(result["acc_after_finetune"])
  assert evaluated["channels"] == result["channels"]


def test_bad_input_is_one_sentence_and_exit_2(tmp_path):
  run = _launch("--config=experiments/configs/amc.py:tiny", "--mode=profile",
                f"--workdir={tmp_path}", "--channels=3,8,8")
  assert run.returncode == 2 and "Traceback" not in run.stderr
  assert run.stderr.startswith("error: the channel list has 3 numbers but the model has 6")
  config = amc_configs.get_config("mobilenetv1_0p5flops_reference")
  config.amc.preserve_ratio = 0.02  # below every layer at lbound 0.2
  with pytest.raises(UserError, match="cannot be met"):
    amc.profile(config, str(tmp_path))
