"""End-to-end tests of Lite Transformer training, evaluation, profiling and the launcher; and the
quickstart notebook, top to bottom on a copy of the finished tiny run (it evaluates, not
retrains)."""

import functools
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from typing import NamedTuple

import chex
import numpy as np
import pytest

from data import tokenizer as tokenizer_lib
from experiments.configs import wmt_lite
from lite_jax import core
from lite_jax.lite_transformer import EncoderDecoder, greedy_decode, train
from tests import devices
from tests.notebooks.notebook_runner import count_images, execute, snapshot

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(**overrides):
  config = wmt_lite.get_config("tiny")
  config.update_from_flattened_dict(overrides)
  return config


def _params(workdir, config):
  task = train.prepare_task(config, workdir)
  setup = train.setup_model(config, task.tokenizer.vocab_size)
  return train.load_params(config, setup, workdir)


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


class _Runs(NamedTuple):
  full: str
  result: dict
  resumed: str
  partial: pytest.ExceptionInfo
  resumed_result: dict
  traces: list
  finished: str
  stopped: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """An uninterrupted tiny run (and a copy of its finished workdir for the notebook), and one
  stopped after 4 steps (a copy of it as it stopped, for the two-process resume) and resumed;
  the train step's traces are counted (it must compile once per bucket shape)."""
  traces = []
  train_step = train.train_step

  @functools.wraps(train_step)  # its name keys the compilation cache the launchers share
  def counted_step(state, batch, **kwargs):
    traces.append(batch["src"].shape)  # runs only while tracing
    return train_step(state, batch, **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "train_step", counted_step)
    full = str(tmp_path_factory.mktemp("full"))
    result = train.train_and_evaluate(_tiny(), full)
    full_traces = list(traces)
    finished = snapshot(full, str(tmp_path_factory.mktemp("notebook") / "work"))
    resumed = str(tmp_path_factory.mktemp("resumed"))
    with pytest.raises(core.StoppedEarly) as partial:
      train.train_and_evaluate(_tiny(**{"train.steps_per_run": 4}), resumed)
    stopped = snapshot(resumed, str(tmp_path_factory.mktemp("stopped") / "work"))
    resumed_result = train.train_and_evaluate(_tiny(), resumed)
  return _Runs(full, result, resumed, partial, resumed_result, full_traces, finished, stopped)


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


def test_train_step_compiles_once_per_bucket_shape(trained):
  traces = trained.traces
  assert len(traces) == len(set(traces)) <= 2, traces


def test_kill_and_resume_gives_identical_steps(trained):
  full, result, resumed, partial, resumed_result, *_ = trained
  assert (partial.value.step, partial.value.total_steps) == (4, 8)
  full_losses, resumed_losses = _losses(full), _losses(resumed)
  for step in (6, 8):  # logged after the resume at step 4
    assert resumed_losses[step] == full_losses[step]
  config = _tiny()
  chex.assert_trees_all_equal(_params(full, config), _params(resumed, config))
  assert resumed_result["bleu"] == result["bleu"]


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


def test_one_device_matches_two(trained, tmp_path):
  """The fixture trained data-parallel on 2 devices (tests/conftest.py); 2 steps on one device
  end at the same parameters (to float tolerance) as its step-2 checkpoint."""
  full, *_ = trained
  assert core.mesh.from_config(_tiny().mesh).devices.size == 2
  one = _tiny(**{"mesh.num_devices": 1, "train.steps_per_run": 2})
  with pytest.raises(core.StoppedEarly):
    train.train_and_evaluate(one, str(tmp_path))
  setup = train.setup_model(one, train.prepare_task(one, str(tmp_path)).tokenizer.vocab_size)
  with core.Checkpointer(os.path.join(full, "checkpoints")) as ckpt:
    two = ckpt.restore(2, setup.state)[0].params
  chex.assert_trees_all_close(train.load_params(one, setup, str(tmp_path)), two,
                              rtol=2e-4, atol=2e-5)
  assert _losses(str(tmp_path))[2] == pytest.approx(_losses(full)[2], rel=1e-5)


@pytest.mark.slow
def test_the_notebook_runs_on_the_finished_run(trained, monkeypatch):
  """The quickstart's cells top to bottom; its `train_and_evaluate` finds the copied run
  finished, evaluates it and translates."""
  finished = trained.finished
  text, outputs = execute("lite_transformer_quickstart.ipynb", finished, monkeypatch)
  assert "wmt14_enfr_lite_d496" in text and "->" in text
  assert count_images(outputs) >= 1  # the training curve


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
def test_bad_text_data_is_one_sentence(tmp_path, setup, message):
  text = tmp_path / "text"
  text.mkdir()
  if setup != "missing":
    for split in ("train", "valid", "test"):
      (text / f"{split}.en").write_text("a b c\nd e\n")
      (text / f"{split}.de").write_text("" if setup == "empty" else "x y\nz\nw\n")
  config = _tiny(**{"data.source": "text", "data.text_dir": str(text), "data.src_lang": "en",
                    "data.tgt_lang": "de"})
  with pytest.raises(core.UserError) as raised:
    train.prepare_task(config, str(tmp_path / "work"))
  assert re.search(message, str(raised.value), re.IGNORECASE), raised.value
  assert str(raised.value).endswith(".")


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


def test_launcher_export_then_readme_decodes_as_the_library(trained, monkeypatch, capsys):
  """`--mode=export` on the trained run, then the README's plain-JAX greedy loop, run as
  written in the export folder, translates as `greedy_decode` does with the restored model."""
  full, *_ = trained
  result = _launch("--config=experiments/configs/wmt_lite.py:tiny", f"--workdir={full}",
                   "--mode=export")
  assert result.returncode == 0, result.stderr[-2000:]
  metrics = json.loads(result.stdout.strip().splitlines()[-1])
  # Tiny: data.max_len 48; eval allows min(1.5 * 48 + 8, model.max_len 64 - 1) tokens + bos.
  assert (metrics["step"], metrics["src_len"], metrics["decode_length"]) == (8, 48, 64)
  directory = os.path.join(full, "export")
  assert {"encoder.jaxexport", "init_cache.jaxexport", "decoder_step.jaxexport",
          "run_exported.py", "spm.model", "README.txt"} <= set(os.listdir(directory))
  with open(os.path.join(directory, "README.txt"), encoding="utf-8") as f:
    readme = f.read()
  snippet = textwrap.dedent(readme[readme.index("  import numpy"):])
  monkeypatch.chdir(directory)
  monkeypatch.syspath_prepend(directory)
  capsys.readouterr()
  exec(snippet, {})  # pylint: disable=exec-used
  translation = capsys.readouterr().out.strip()

  config = _tiny()
  tokenizer = tokenizer_lib.Tokenizer(os.path.join(directory, "spm.model"))
  src_len = metrics["src_len"]
  ids = tokenizer.encode("a source sentence")[:src_len - 1] + [tokenizer_lib.EOS_ID]
  src = np.zeros((1, src_len), np.int32)  # pad_id 0
  src[0, :len(ids)] = ids
  model = EncoderDecoder(train.model_config(config, tokenizer.vocab_size))
  tokens, _ = greedy_decode(model, _params(full, config), src, max_len_a=1.5, max_len_b=8)
  assert translation == tokenizer.decode(np.asarray(tokens)[0])
  assert translation  # a real decode: the trained model says something


def test_tokenized_bleu_moses_splits_punctuation():
  config = _tiny()
  hyps, refs = ["the dog , which barks , runs ."], ["the dog, which barks, runs."]
  config.eval.tokenized_bleu = "none"
  assert train.bleu_scores(hyps, refs, config)["tok_bleu"] < 50
  config.eval.tokenized_bleu = "moses"
  scores = train.bleu_scores(hyps, refs, config)
  assert scores["tok_bleu"] == pytest.approx(100.0)
  assert scores["bleu"] == pytest.approx(100.0)  # sacreBLEU's 13a tokenizer agrees


# --- Multi-host: two CPU processes on localhost --------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(workdir, *flags) -> tuple[dict, str]:
  """The tiny run as processes 0 and 1 of one job (`jax.distributed`, gloo collectives), one
  CPU device each (the fixture's 2 devices); returns process 0's result line (None: it
  printed none) and both processes' stderr."""
  port = _free_port()
  env = devices.environment(1, JAX_PLATFORMS="cpu")
  processes = [subprocess.Popen(
      [sys.executable, "-m", "experiments.wmt_lite",
       "--config=experiments/configs/wmt_lite.py:tiny", f"--workdir={workdir}", *flags,
       "--config.mesh.distributed=true", "--config.mesh.cpu_collectives=gloo",
       f"--config.mesh.coordinator_address=localhost:{port}",
       "--config.mesh.num_processes=2", f"--config.mesh.process_id={i}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=900) for p in processes]
  errors = "\n".join(err[-3000:] for _, err in outputs)
  for p in processes:
    assert p.returncode == 0, errors
  # Only process 0 prints the result (gloo itself logs its connections on stdout).
  assert not [line for line in outputs[1][0].splitlines() if line.startswith("{")]
  results = [line for line in outputs[0][0].splitlines() if line.startswith("{")]
  return (json.loads(results[-1]) if results else None), errors


@pytest.mark.slow
def test_two_processes_resume_a_stopped_run_and_match_one(trained, tmp_path):
  """Data-parallel over two processes: the fixture's run stopped after 4 steps (a preempted
  job, checkpointed by one process on 2 devices) resumes as two processes of one device each,
  which restore it, train, checkpoint and evaluate together, and ends at the losses,
  validation and BLEU of the fixture's uninterrupted run. (One launch: the stop itself is the
  fixture's; starting a job of two processes costs ~30 s of CPU each time.)"""
  full, result, *_ = trained
  workdir = snapshot(trained.stopped, str(tmp_path / "work"))
  resumed, errors = _two_processes(workdir)
  assert "resuming from step 4" in errors
  assert resumed["steps"] == 8
  assert {"6", "8"} <= set(os.listdir(os.path.join(workdir, "checkpoints")))
  np.testing.assert_allclose([resumed["valid_loss"], resumed["valid_ppl"], resumed["bleu"]],
                             [result["valid_loss"], result["valid_ppl"], result["bleu"]],
                             rtol=1e-4)
  losses, full_losses = _losses(workdir), _losses(full)
  assert sorted(losses) == sorted(full_losses)
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [full_losses[s] for s in sorted(full_losses)], rtol=1e-4)
