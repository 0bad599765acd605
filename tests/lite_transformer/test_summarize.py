"""Summarization: the ROUGE wrapper against hand-computed scores, the CNN/DM presets and their
Mult-Adds, and the launcher end to end on the tiny synthetic preset (kill-and-resume is the
shared trainer's, covered by test_train.py)."""

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import summarize_lite
from lite_jax import core
from lite_jax.lite_transformer import rouge, summarize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- ROUGE ------------------------------------------------------------------------------


def test_rouge_matches_hand_computed_scores():
  """hyp 'the cat sat on the mat', ref 'the cat lay on the mat': 5 of 6 unigrams, 3 of 5
  bigrams (the cat, on the, the mat) and an LCS of 5 (the cat on the mat) in both."""
  scores = rouge.rouge_scores(["The cat sat on the mat."], ["the cat lay on the mat ."])
  assert scores["rouge1"] == pytest.approx(100 * 5 / 6)
  assert scores["rouge2"] == pytest.approx(100 * 3 / 5)
  assert scores["rougeL"] == pytest.approx(100 * 5 / 6)


def test_rouge_stems_and_averages_over_summaries():
  """Porter stemming matches 'cats running' with 'cat runs'; the result is the mean of the
  per-summary F1 (100 and 0)."""
  scores = rouge.rouge_scores(["cats running", "green apples"], ["cat runs", "blue sky"])
  assert scores["rouge1"] == pytest.approx(50.0)


def test_summary_level_rouge_l_ignores_sentence_order():
  """Sentences swapped: the flat LCS covers one sentence (3 of 6 words, F1 50); the
  summary-level LCS (ROUGE-1.5.5's ROUGE-L) matches every reference sentence (F1 100)."""
  scores = rouge.rouge_scores(["dogs bark loudly. birds sing well."],
                              ["birds sing well. dogs bark loudly."])
  assert scores["rougeL_flat"] == pytest.approx(50.0)
  assert scores["rougeL"] == pytest.approx(100.0)


def test_lead_and_sentence_splitting():
  assert rouge.split_sentences("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]
  assert rouge.lead_summary("a b . c d . e f .", 2) == "a b . c d ."
  with pytest.raises(core.UserError, match="one hypothesis per reference"):
    rouge.rouge_scores(["a"], ["a", "b"])


# --- Presets and profile -------------------------------------------------------------------


def test_cnndm_preset_is_the_reference_recipe():
  c = summarize_lite.get_config("cnndm_lite_d496")
  assert (c.model.kind, c.model.d_model, c.model.ffn_dim, c.model.conv_type,
          c.model.conv_glu) == ("lite", 496, 496, "dynamic", True)
  assert (c.model.dropout, c.model.attention_dropout, c.model.weight_dropout) == (
      0.15, 0.10, 0.10)
  assert (c.data.vocab_size, c.data.max_source_tokens) == (30000, 1000)
  assert (c.optim.warmup_steps, c.optim.total_updates, c.train.keep_checkpoints) == (
      10000, 50000, 10)
  assert (c.eval.beam_size, c.eval.length_penalty, c.eval.min_len, c.eval.max_len_a,
          c.eval.max_len_b, c.eval.no_repeat_ngram_size) == (4, 2.0, 55, 0.0, 140, 3)
  for name in ("cnndm_lite_d496", "cnndm_transformer", "summarize_lite_demo"):
    with open(os.path.join(REPO, "experiments", "flags", f"{name}.flags")) as f:
      preset = [line for line in f if line.startswith("--config=")][0].strip().split(":")[1]
    assert summarize_lite.get_config(preset).preset == preset


@pytest.mark.parametrize("preset,params,macs", [
    ("cnndm_lite_d496", 17.3e6, 800e6),  # README: 17.3M, 800M
    ("cnndm_transformer", 44.1e6, 2.0e9),  # paper's table: 44.1M, 2.0G
])
def test_profile_at_the_paper_lengths(preset, params, macs):
  result = summarize.profile(summarize_lite.get_config(preset))
  assert (result["src_len"], result["tgt_len"]) == (45, 45)
  assert result["params"] == pytest.approx(params, rel=0.01)
  assert result["macs"] == pytest.approx(macs, rel=0.015)


def test_bad_data_settings_are_one_sentence(tmp_path):
  config = summarize_lite.get_config("cnndm_lite_d496")
  with pytest.raises(core.UserError, match="data.story_dir is empty"):
    summarize.prepare_task(config, str(tmp_path))
  config.data.source = "web"
  with pytest.raises(core.UserError, match="must be one of"):
    summarize.prepare_task(config, str(tmp_path))
  config.data.source, config.data.max_source_tokens = "synthetic", 1024
  with pytest.raises(core.UserError, match="max_source_tokens=1024 must be below"):
    summarize.prepare_task(config, str(tmp_path))


# --- The launcher end to end on the tiny preset ------------------------------------------


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
  """`--mode=train` of the tiny preset through the launcher, once: (workdir, JSON line)."""
  workdir = str(tmp_path_factory.mktemp("summarize"))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.summarize_lite",
       "--config=experiments/configs/summarize_lite.py:tiny", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, json.loads(result.stdout.strip().splitlines()[-1])


def test_launcher_trains_and_reports_rouge_beside_the_lead_baseline(launched):
  workdir, metrics = launched
  assert metrics["steps"] == 4 and metrics["test_sentences"] == 8
  for name in ("rouge1", "rouge2", "rougeL", "lead_rouge1", "lead_rouge2", "lead_rougeL"):
    assert 0.0 <= metrics[name] <= 100.0, name
  assert metrics["lead_sentences"] == 1
  assert metrics["lead_rougeL"] > 0  # the lead sentence shares words with the summary
  assert metrics["macs"] > 0 and metrics["params"] > 0
  with open(os.path.join(workdir, "test.hyp"), encoding="utf-8") as f:
    assert len(f.read().splitlines()) == 8
  # The test split was read through the truncating source (tiny: 40 pieces).
  config = summarize_lite.get_config("tiny")
  task = summarize.prepare_task(config, workdir)
  test = task.splits["test"]
  assert all(len(task.tokenizer.encode(test[i]["src"])) <= 40 for i in range(len(test)))
  with open(os.path.join(workdir, "data", "text", "test.source"), encoding="utf-8") as f:
    assert any(len(task.tokenizer.encode(line)) > 40 for line in f)  # some were cut


def test_eval_and_summarize_from_the_checkpoint(launched):
  workdir, metrics = launched
  config = summarize_lite.get_config("tiny")
  evaluated = summarize.evaluate(config, workdir)
  for name in ("rouge1", "rouge2", "rougeL", "lead_rougeL", "valid_loss"):
    assert evaluated[name] == pytest.approx(metrics[name]), name
  out = summarize.summarize(config, workdir, ["notably , the dog sees a cat . also , a bird "
                                              "sings .", "the cat sleeps ."])
  assert len(out) == 2 and all(isinstance(s, str) for s in out)
  with pytest.raises(core.UserError, match="nothing to summarize"):
    summarize.summarize(config, workdir, [])
