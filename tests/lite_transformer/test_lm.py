"""Lite Transformer language model: causality, the decode cache, the paper's profile numbers,
and the tiny preset end to end (train, kill-and-resume, the launcher's eval JSON)."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import lm_lite
from lite_jax import core
from lite_jax.lite_transformer import lm_train
from lite_jax.lite_transformer.lm import (LanguageModel, LanguageModelConfig, generate,
                                          init_cache)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB, LENGTH = 40, 12


@pytest.fixture(scope="module")
def model():
  config = LanguageModelConfig(vocab_size=VOCAB, d_model=16, ffn_dim=16, num_layers=2,
                               branches="attn:1:8:2,dynamic:default:8:2", num_heads=2,
                               kernel_sizes=(3, 5), cutoffs=(10, 20), max_len=32)
  lm = LanguageModel(config)
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, VOCAB, (2, LENGTH)), jnp.int32)
  params = nn.unbox(jax.jit(lm.init)(jax.random.PRNGKey(0), tokens, tokens))["params"]
  full = jax.jit(lambda p, x: lm.apply({"params": p}, x, method=LanguageModel.log_probs))
  return lm, params, tokens, full


def test_outputs_at_t_ignore_inputs_after_t(model):
  lm, params, tokens, full = model
  base = np.asarray(full(params, tokens))
  for t in (0, 5, LENGTH - 2):
    changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 7) % VOCAB)
    out = np.asarray(full(params, changed))
    np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-5)
    assert np.abs(out[:, t + 1:] - base[:, t + 1:]).max() > 1e-3  # later ones do change


def test_decode_cache_equals_full_forward(model):
  lm, params, tokens, full = model
  cache = jax.jit(lambda p: init_cache(lm, p, 2, LENGTH))(params)

  @jax.jit
  def step(cache, token):
    out, variables = lm.apply({"params": params, "cache": cache}, token, decode=True,
                              mutable=["cache"], method=LanguageModel.log_probs)
    return out, variables["cache"]

  outputs = []
  for t in range(LENGTH):
    out, cache = step(cache, tokens[:, t:t + 1])
    outputs.append(out)
  np.testing.assert_allclose(np.concatenate(outputs, 1), full(params, tokens), atol=1e-4)


def test_greedy_generation_follows_the_full_model(model):
  lm, params, tokens, full = model
  sample = jax.jit(lambda p, prompt: generate(lm, p, prompt, 5, jax.random.PRNGKey(0),
                                              greedy=True))
  out = np.asarray(sample(params, tokens[:, :3]))
  assert out.shape == (2, 8)
  np.testing.assert_array_equal(out[:, :3], tokens[:, :3])
  expected = np.argmax(np.asarray(full(params, jnp.asarray(out))), -1)
  np.testing.assert_array_equal(out[:, 3:], expected[:, 2:-1])


@pytest.mark.parametrize("preset,params,macs", [
    ("wikitext103_lite", 37.2e6, 1147e6),  # paper / README
    ("wikitext103_transformer", 37.8e6, 1147e6),  # Adaptive-Inputs size, same Mult-Adds
])
def test_profile_matches_paper(preset, params, macs):
  result = lm_train.profile(lm_lite.get_config(preset))
  assert result["params"] == pytest.approx(params, rel=0.01)
  assert result["macs"] == pytest.approx(macs, rel=0.01)


def test_paper_preset_has_reference_architecture():
  config = lm_lite.get_config("wikitext103_lite")
  model = lm_train.model_config(config, config.data.vocab_size)
  assert [b.kernel_size for layer in range(12) for b in model.layer_branches("decoder", layer)
          if b.kind == "dynamic"] == [15, 15, 31, 31, 31, 31] + [63] * 6
  assert (model.d_model, model.ffn_dim, model.cutoffs, model.final_norm) == (
      896, 896, (20000, 60000), False)
  assert (model.dropout, model.attention_dropout, model.weight_dropout,
          model.activation_dropout, model.adaptive_softmax_dropout) == (
              0.21, 0.14, 0.14, 0.1, 0.2)


# --- The tiny preset end to end --------------------------------------------------------------


def _tiny(**overrides):
  config = lm_lite.get_config("tiny")
  config.update_from_flattened_dict(overrides)
  return config


def _losses(workdir):
  return {r["step"]: r["train_loss"] for r in core.read_metrics(workdir) if "train_loss" in r}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  full = str(tmp_path_factory.mktemp("full"))
  result = lm_train.train_and_evaluate(_tiny(), full)
  resumed = str(tmp_path_factory.mktemp("resumed"))
  with pytest.raises(core.StoppedEarly):
    lm_train.train_and_evaluate(_tiny(**{"train.steps_per_run": 4}), resumed)
  resumed_result = lm_train.train_and_evaluate(_tiny(), resumed)
  return full, result, resumed, resumed_result


def test_tiny_run_trains_and_reports(trained):
  full, result, *_ = trained
  assert result["steps"] == 8
  for key in ("valid_ppl", "test_ppl", "valid_bigram_ppl", "test_unigram_ppl", "params",
              "macs"):
    assert np.isfinite(result[key]), key
  losses = _losses(full)
  assert losses[8] < losses[2], losses
  # Every valid/test token is scored once.
  streams = lm_train.prepare_task(_tiny(), full).streams
  assert (result["valid_tokens"], result["test_tokens"]) == (len(streams["valid"]),
                                                              len(streams["test"]))


def test_kill_and_resume_matches_uninterrupted(trained):
  full, result, resumed, resumed_result = trained
  assert _losses(resumed) == pytest.approx(_losses(full), rel=1e-5)
  assert resumed_result["test_ppl"] == pytest.approx(result["test_ppl"], rel=1e-5)


def test_launcher_eval_and_generate_print_json(trained):
  full, result, *_ = trained
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = subprocess.run(
      [sys.executable, "-m", "experiments.lm_lite",
       "--config=experiments/configs/lm_lite.py:tiny", f"--workdir={full}", "--mode=eval"],
      cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  lines = run.stdout.strip().splitlines()
  metrics = json.loads(lines[-1])
  assert metrics["step"] == 8
  assert metrics["test_ppl"] == pytest.approx(result["test_ppl"], rel=1e-4)
  assert {"valid_ppl", "valid_bigram_ppl", "valid_unigram_ppl", "params", "macs"} <= set(
      metrics)
  text = lm_train.generate_lines(_tiny(), full, ["Mary Harris ( born"])
  assert len(text) == 1 and text[0].startswith("Mary Harris ( born")
  assert len(text[0].split()) == 4 + _tiny().generate.num_tokens


def test_bad_source_is_one_sentence(tmp_path):
  config = _tiny(**{"data.source": "text", "data.text_dir": str(tmp_path)})
  with pytest.raises(core.UserError, match=r"^missing .*wiki\.train\.tokens"):
    lm_train.prepare_task(config, str(tmp_path / "work"))
  with pytest.raises(core.UserError, match="data.text_dir is empty"):
    lm_train.prepare_task(_tiny(**{"data.source": "text"}), str(tmp_path / "work2"))
