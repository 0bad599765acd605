"""End-to-end tests of Lite Transformer training, evaluation, profiling and the launcher."""

import json
import os
import subprocess
import sys

import chex
import jax
import pytest

from experiments.configs import wmt_lite
from lite_jax import core
from lite_jax.lite_transformer import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(**overrides):
  config = wmt_lite.get_config("tiny")
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _params(workdir, config):
  task = train.prepare_task(config, workdir)
  setup = train._setup(config, task.tokenizer.vocab_size)
  ckpt = train._checkpointer(config, workdir)
  params = train._load_params(config, setup, ckpt)
  ckpt.close()
  return params


def _losses(workdir):
  return {r["step"]: r["train_loss"] for r in core.read_metrics(workdir) if "train_loss" in r}


# --- Profile: the paper's Mult-Adds convention -------------------------------------------


@pytest.mark.parametrize("preset,macs,params", [
    ("wmt14_enfr_lite_d200", 90e6, 2.9e6),
    ("wmt14_enfr_lite_d408", 360e6, 11.7e6),
    ("wmt14_enfr_lite_d496", 527e6, 17.3e6),
])
def test_profile_matches_lite_transformer_paper(preset, macs, params):
  result = train.profile(wmt_lite.get_config(preset))
  assert result["macs"] == pytest.approx(macs, rel=0.01)
  assert result["params"] == pytest.approx(params, rel=0.02)


def test_profile_transformer_base():
  result = train.profile(wmt_lite.get_config("wmt14_enfr_transformer_d512"))
  assert result["macs"] == pytest.approx(1.34e9, rel=0.01)
  assert result["params"] == pytest.approx(44.0e6, rel=0.01)


def test_every_flagfile_names_a_valid_preset():
  flags_dir = os.path.join(REPO, "experiments", "flags")
  names = sorted(f[:-len(".flags")] for f in os.listdir(flags_dir) if f.startswith(
      ("wmt14_enfr_", "wmt_ende_", "iwslt14_deen_")))
  assert len(names) == 20
  for name in names:
    config = wmt_lite.get_config(name)
    train.model_config(config, config.data.vocab_size)  # builds without error
  assert wmt_lite.get_config("wmt_ende_lite_d496").eval.compound_split
  iwslt = wmt_lite.get_config("iwslt14_deen_lite_d320")
  assert (iwslt.model.conv_type, iwslt.model.conv_glu, iwslt.eval.average_last_n) == (
      "lightweight", False, 10)


def test_unknown_preset_is_a_user_error():
  with pytest.raises(core.UserError, match="unknown preset"):
    wmt_lite.get_config("wmt14_enfr_lite_d123")


# --- Training end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """An uninterrupted tiny run, and one killed after 4 steps and resumed."""
  full = str(tmp_path_factory.mktemp("full"))
  result = train.train_and_evaluate(_tiny(), full)
  resumed = str(tmp_path_factory.mktemp("resumed"))
  partial = train.train_and_evaluate(_tiny(), resumed, max_steps_this_run=4)
  resumed_result = train.train_and_evaluate(_tiny(), resumed)
  return full, result, resumed, partial, resumed_result


def test_tiny_run_trains_checkpoints_and_evaluates(trained):
  full, result, *_ = trained
  for key in ("bleu", "tok_bleu", "params", "macs", "valid_loss", "steps"):
    assert key in result
  assert result["steps"] == 8
  assert result["test_sentences"] == 16
  assert 0.0 <= result["bleu"] <= 100.0
  losses = _losses(full)
  assert losses[8] < losses[2], losses  # the loss falls
  with open(os.path.join(full, "test.hyp"), encoding="utf-8") as f:
    assert len(f.read().splitlines()) == 16
  assert core.Checkpointer(os.path.join(full, "checkpoints")).latest_step == 8


def test_kill_and_resume_gives_identical_steps(trained):
  full, result, resumed, partial, resumed_result = trained
  assert partial["steps"] == 4 and "bleu" not in partial
  full_losses, resumed_losses = _losses(full), _losses(resumed)
  for step in (6, 8):  # logged after the resume at step 4
    assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-5)
  config = _tiny()
  chex.assert_trees_all_close(_params(full, config), _params(resumed, config), rtol=1e-5,
                              atol=1e-6)
  assert resumed_result["bleu"] == pytest.approx(result["bleu"])


def test_eval_and_translate_from_checkpoint(trained):
  full, result, *_ = trained
  evaluated = train.evaluate(_tiny(), full)
  assert evaluated["step"] == 8
  assert evaluated["bleu"] == pytest.approx(result["bleu"])
  rerun = train.train_and_evaluate(_tiny(), full)  # nothing left to train: evaluates only
  assert rerun["valid_loss"] == pytest.approx(evaluated["valid_loss"])
  assert rerun["bleu"] == pytest.approx(result["bleu"])
  out = train.translate(_tiny(), full, ["the cat sees a dog .", "these birds sing"])
  assert len(out) == 2 and all(isinstance(s, str) for s in out)


def test_checkpoint_of_another_model_shape_is_a_user_error(trained):
  full, *_ = trained
  with pytest.raises(core.UserError, match="does not fit this model"):
    train.evaluate(_tiny(**{"model.d_model": 48, "model.ffn_dim": 48}), full)


def test_eight_devices_match_one(tmp_path):
  assert jax.device_count() == 8
  # Attention key biases have identically zero gradients; Adam's default eps would turn the
  # rounding noise in them into lr-sized steps, so compare with an eps above that noise.
  one = _tiny(**{"mesh.num_devices": 1, "optim.eps": 1e-4})
  eight = _tiny(**{"optim.eps": 1e-4})
  train.train_and_evaluate(one, str(tmp_path / "one"), max_steps_this_run=3)
  train.train_and_evaluate(eight, str(tmp_path / "eight"), max_steps_this_run=3)
  chex.assert_trees_all_close(_params(str(tmp_path / "one"), one),
                              _params(str(tmp_path / "eight"), eight), rtol=2e-4, atol=2e-5)
  assert _losses(str(tmp_path / "one"))[2] == pytest.approx(_losses(str(tmp_path / "eight"))[2],
                                                            rel=1e-5)


def test_non_finite_loss_stops_and_keeps_earlier_checkpoints(tmp_path):
  config = _tiny(**{"optim.learning_rate": 1e30, "optim.warmup_steps": 1,
                    "train.log_every": 1, "train.checkpoint_every": 1})
  with pytest.raises(core.NonFiniteLossError, match="became"):
    train.train_and_evaluate(config, str(tmp_path))
  steps = core.Checkpointer(os.path.join(tmp_path, "checkpoints")).all_steps()
  assert steps and steps[-1] < 8


def test_train_step_compiles_once_per_bucket_shape(tmp_path):
  config = _tiny()
  task = train.prepare_task(config, str(tmp_path))
  setup = train._setup(config, task.tokenizer.vocab_size)
  state = core.init_sharded(setup.init_fn, jax.random.PRNGKey(0), setup.shardings)
  shapes = set()
  step = jax.jit(chex.assert_max_traces(
      lambda s, b: train.train_step(s, b, model=setup.model, label_smoothing=0.1), n=2))
  iterator = iter(train.translation.make_batches(
      task.splits["train"], task.tokenizer, batch_tokens=config.data.batch_tokens,
      max_len=config.data.max_len, bucket_boundaries=config.data.bucket_boundaries))
  for _ in range(12):
    batch = next(iterator)
    shapes.add(batch["src"].shape)
    state, _ = step(state, batch)
  assert len(shapes) <= 2


# --- The launcher: one JSON line, one-sentence errors ------------------------------------


def _launch(*args, stdin=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.wmt_lite", *args], cwd=REPO,
                        capture_output=True, text=True, input=stdin, env=env, timeout=600)


def test_launcher_profile_prints_one_json_line():
  result = _launch("--config=experiments/configs/wmt_lite.py:wmt14_enfr_lite_d200",
                   "--mode=profile")
  assert result.returncode == 0, result.stderr
  metrics = json.loads(result.stdout.strip().splitlines()[-1])
  assert metrics["macs"] == pytest.approx(90e6, rel=0.01)


@pytest.mark.parametrize("setup,message", [
    ("missing", "does not exist|missing|not found|No such"),
    ("empty", "empty"),
    ("mismatch", "line"),
])
def test_launcher_bad_data_exits_with_one_sentence(tmp_path, setup, message):
  text = tmp_path / "text"
  text.mkdir()
  if setup != "missing":
    for split in ("train", "valid", "test"):
      (text / f"{split}.en").write_text("a b c\nd e\n")
      (text / f"{split}.de").write_text("" if setup == "empty" else "x y\nz\nw\n")
  result = _launch("--config=experiments/configs/wmt_lite.py:tiny",
                   "--config.data.source=text", f"--config.data.text_dir={text}",
                   "--config.data.src_lang=en", "--config.data.tgt_lang=de",
                   f"--workdir={tmp_path / 'work'}")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: "), result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  import re
  assert re.search(message, lines[-1], re.IGNORECASE), lines[-1]


def test_launcher_unknown_preset_fails_cleanly():
  result = _launch("--config=experiments/configs/wmt_lite.py:nope", "--mode=profile")
  assert result.returncode != 0
  assert "unknown preset" in result.stderr
  assert "Traceback" not in result.stderr


def test_launcher_translate_reads_stdin(trained):
  full, *_ = trained
  result = _launch("--config=experiments/configs/wmt_lite.py:tiny", f"--workdir={full}",
                   "--mode=translate", stdin="the cat sees a dog\nthese birds sing\n")
  assert result.returncode == 0, result.stderr[-2000:]
  *translations, last = result.stdout.strip().splitlines()
  assert len(translations) == 2
  assert json.loads(last) == {"sentences": 2}


def test_tokenized_bleu_moses_splits_punctuation():
  config = _tiny()
  hyps, refs = ["the dog , which barks , runs ."], ["the dog, which barks, runs."]
  config.eval.tokenized_bleu = "none"
  assert train.bleu_scores(hyps, refs, config)["tok_bleu"] < 50
  config.eval.tokenized_bleu = "moses"
  scores = train.bleu_scores(hyps, refs, config)
  assert scores["tok_bleu"] == pytest.approx(100.0)
  assert scores["bleu"] == pytest.approx(100.0)  # sacreBLEU's 13a tokenizer agrees
