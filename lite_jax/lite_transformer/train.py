"""Train, evaluate, translate with and profile Lite Transformer sequence-to-sequence models.

The launcher `experiments/wmt_lite.py` only parses flags and calls the four entry points here:
`train_and_evaluate`, `evaluate`, `translate` and `profile`. Each returns a dict of metrics.

Translation and summarization share this trainer, the model and the beam search; a `TaskSpec`
says what differs: how the corpus is prepared, how decoded test outputs are scored (BLEU
here, ROUGE in `summarize.py`) and the lengths Mult-Adds are counted at. `TRANSLATION` is the
default spec of every entry point.

Workdir layout::

  <workdir>/data/text/        the generated corpus (synthetic source only)
  <workdir>/data/tfds/        the corpus as ArrayRecord (local text sources)
  <workdir>/data/spm.model    the SentencePiece vocabulary (unless data.spm_model is given)
  <workdir>/checkpoints/      orbax steps: train state, data-iterator position, config
  <workdir>/metrics.jsonl     training curves; <workdir>/test.hyp the decoded test split
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from data import synthetic_translation, tokenizer as tokenizer_lib, translation
from lite_jax import core
from lite_jax.core import compiler
from lite_jax.core.errors import UserError
from lite_jax.lite_transformer import bleu
from lite_jax.lite_transformer.beam_search import beam_search
from lite_jax.lite_transformer.model import EncoderDecoder, TransformerConfig, config_branches
from lite_jax.nn.losses import smoothed_cross_entropy

# The paper's Mult-Adds setting: one 30-token source and one 30-token target sentence.
PROFILE_SRC_LEN = 30
PROFILE_TGT_LEN = 30


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> TransformerConfig:
  """The `TransformerConfig` of `config.model` for a joint vocabulary of `vocab_size`."""
  m = config.model
  branches = config_branches(m)
  try:
    return TransformerConfig(
        src_vocab_size=vocab_size, tgt_vocab_size=vocab_size,
        share_embeddings=m.share_embeddings, d_model=m.d_model, ffn_dim=m.ffn_dim,
        num_encoder_layers=m.num_layers, num_decoder_layers=m.num_layers,
        encoder_branches=branches, decoder_branches=branches, num_heads=m.num_heads,
        encoder_attention_heads=m.encoder_attention_heads, kernel_sizes=tuple(m.kernel_sizes),
        conv_glu=m.conv_glu, dropout=m.dropout, attention_dropout=m.attention_dropout,
        weight_dropout=m.weight_dropout, activation_dropout=m.activation_dropout,
        max_len=m.max_len, pad_id=tokenizer_lib.PAD_ID, bos_id=tokenizer_lib.BOS_ID,
        eos_id=tokenizer_lib.EOS_ID, dtype=m.dtype)
  except ValueError as e:  # The model's own validation, phrased for a config user.
    raise UserError(f"config.model is invalid: {e}") from None


def _is_embedding(path) -> bool:
  return any("embedding" in str(getattr(k, "key", "")) for k in path)


def param_counts(params: Any) -> dict[str, int]:
  """Total and non-embedding parameter counts (the papers exclude embedding tables only)."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  total = sum(int(np.prod(x.shape)) for _, x in leaves)
  embedding = sum(int(np.prod(x.shape)) for p, x in leaves if _is_embedding(p))
  return {"params": total - embedding, "params_total": total}


def profile(config: ml_collections.ConfigDict, src_len: int = PROFILE_SRC_LEN,
            tgt_len: int = PROFILE_TGT_LEN) -> dict[str, Any]:
  """Parameters and Mult-Adds by the paper's convention.

  Mult-Adds: one `src_len`-token source and `tgt_len`-token target (the paper's 30 and 30 by
  default), encoder plus decoder run over the whole target at once, linear layers and
  attention matmuls; embeddings, the output projection and the depthwise convolutions (0.3%
  more) excluded.
  `params` excludes embedding tables (an untied output projection is counted).
  """
  model = EncoderDecoder(model_config(config, config.data.vocab_size))
  src = jax.ShapeDtypeStruct((1, src_len), jnp.int32)
  tgt = jax.ShapeDtypeStruct((1, tgt_len), jnp.int32)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), src, tgt))["params"]

  def stack(params, src, tgt):
    encoded, mask = model.apply({"params": params}, src, method=EncoderDecoder.encode)
    return model.apply({"params": params}, encoded, mask, tgt, return_hidden=True,
                       method=EncoderDecoder.decode)

  macs = core.count_macs(stack, params, src, tgt, convention=core.macs.LITE_TRANSFORMER)
  return {"preset": config.preset, **param_counts(params), "macs": macs,
          "src_len": src_len, "tgt_len": tgt_len}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
  """A prepared corpus: its tokenizer and random-access splits of {'src', 'tgt'} records."""
  tokenizer: tokenizer_lib.Tokenizer
  splits: dict[str, Sequence[dict[str, str]]]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What a sequence-to-sequence task adds to the shared trainer and beam search.

  Attributes:
    prepare: `(config, workdir) -> Task`, the corpus and vocabulary (built once).
    score: `(hyps, refs, records, config) -> metrics` of the decoded test split; `records`
      are the test records decoded (their 'src' feeds source-side baselines).
    profile_lengths: `(src_len, tgt_len)` of the paper's Mult-Adds count.
  """
  prepare: Callable[[ml_collections.ConfigDict, str], Task]
  score: Callable[[list[str], list[str], Sequence[dict[str, str]], ml_collections.ConfigDict],
                  dict[str, Any]]
  profile_lengths: tuple[int, int] = (PROFILE_SRC_LEN, PROFILE_TGT_LEN)


# The config fields a workdir's prepared corpus and vocabulary depend on.
DATA_SETTINGS = ("data.source", "data.text_dir", "data.src_lang", "data.tgt_lang",
                 "data.tfds_name", "data.tfds_data_dir", "data.valid_split", "data.test_split",
                 "data.synthetic_pairs", "data.vocab_size", "data.spm_model",
                 "data.spm_max_sentences")


def _check_source(d: ml_collections.ConfigDict) -> None:
  if d.source not in ("synthetic", "text", "tfds"):
    raise UserError(f"config.data.source must be 'synthetic', 'text' or 'tfds', got "
                    f"{d.source!r}.")
  if d.source == "synthetic" and d.text_dir:
    raise UserError(f"config.data.text_dir={d.text_dir!r} is set but data.source is "
                    f"'synthetic'; pass --config.data.source=text to train on your files.")
  if d.source == "text" and not d.text_dir:
    raise UserError("config.data.text_dir is empty; point it at a folder holding "
                    f"{{train,valid,test}}.{{{d.src_lang},{d.tgt_lang}}}.")
  if d.source == "text" and not os.path.isdir(d.text_dir):
    raise UserError(f"config.data.text_dir={d.text_dir!r} is not a directory.")
  if d.source == "tfds" and not d.tfds_name:
    raise UserError("config.data.tfds_name is empty; name a prepared catalog dataset such as "
                    "'wmt14_translate/fr-en'.")


def _data_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  settings = {key: config.data[key.split(".")[1]] for key in DATA_SETTINGS}
  settings["data.text_dir"] = os.path.abspath(settings["data.text_dir"]) if (
      settings["data.text_dir"]) else ""
  if config.data.source == "synthetic":
    settings["seed"] = config.seed  # the generated corpus depends on it
  return settings


def _text_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The folder of `{train,valid,test}.{src,tgt}`: the user's, or the generated corpus."""
  d = config.data
  if d.source != "synthetic":
    return d.text_dir
  text_dir = os.path.join(workdir, "data", "text")
  done = os.path.join(text_dir, "COMPLETE")
  if not os.path.exists(done):
    train, valid, test = d.synthetic_pairs
    synthetic_translation.write_corpus(text_dir, train=train, valid=valid, test=test,
                                       seed=config.seed, src_lang=d.src_lang,
                                       tgt_lang=d.tgt_lang)
    open(done, "w").close()
  return text_dir


# SentencePiece skips training lines over `max_sentence_length` (4192) bytes; longer texts
# (news articles) are written in pieces cut at spaces. Pieces never span a space, so where a
# line is cut does not change the vocabulary.
_SPM_LINE_CHARS = 1000


def _spm_lines(text: str) -> list[str]:
  """`text` (newlines removed) in chunks of at most ~`_SPM_LINE_CHARS` characters."""
  text = " ".join(text.split("\n"))
  if len(text) <= _SPM_LINE_CHARS:
    return [text]
  lines, line = [], []
  size = 0
  for word in text.split(" "):
    if line and size + len(word) > _SPM_LINE_CHARS:
      lines.append(" ".join(line))
      line, size = [], 0
    line.append(word)
    size += len(word) + 1
  return lines + [" ".join(line)]


def _spm_corpus(source: Sequence[dict[str, str]], path: str, limit: int) -> str:
  """Writes up to `limit` evenly spaced source and target texts for SentencePiece."""
  stride = max(1, len(source) // max(1, limit))
  with open(path, "w", encoding="utf-8") as f:
    for i in range(0, len(source), stride):
      record = source[i]
      for text in (record["src"], record["tgt"]):
        f.writelines(line + "\n" for line in _spm_lines(text))
  return path


def _open_splits(config: ml_collections.ConfigDict, workdir: str
                 ) -> dict[str, Sequence[dict[str, str]]]:
  d = config.data
  if d.source == "tfds":
    names = {"train": "train", "valid": d.valid_split, "test": d.test_split}
    return {split: translation.catalog_source(d.tfds_name, name, d.src_lang, d.tgt_lang,
                                              data_dir=d.tfds_data_dir or None)
            for split, name in names.items()}
  tfds_dir = d.tfds_data_dir or os.path.join(workdir, "data", "tfds")
  return {split: translation.data_source(tfds_dir, d.src_lang, d.tgt_lang, split)
          for split in ("train", "valid", "test")}


def _prepare_files(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes what the workdir's data needs once: the generated corpus, its ArrayRecord copy
  and the SentencePiece vocabulary."""
  d = config.data
  if d.source != "tfds":
    translation.prepare_dataset(_text_dir(config, workdir),
                                d.tfds_data_dir or os.path.join(workdir, "data", "tfds"),
                                d.src_lang, d.tgt_lang)
  train_tokenizer(config, workdir, _open_splits(config, workdir)["train"])


def prepare_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  """Builds (once, on the first process) and opens the corpus and its vocabulary.

  The data settings are recorded in the workdir: a later run with other settings (another
  `data.text_dir`, ...) is a `UserError` unless `data.rebuild` asks to prepare it again.
  """
  _check_source(config.data)
  core.workdir.check_data_settings(os.path.join(workdir, "data"), _data_settings(config),
                                   rebuild=config.data.rebuild)
  core.workdir.on_first_process("corpus prepared", _prepare_files, config, workdir)
  return Task(tokenizer=tokenizer_lib.Tokenizer(tokenizer_path(config, workdir)),
              splits=_open_splits(config, workdir))


def tokenizer_path(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The SentencePiece model: `data.spm_model`, else the one training wrote to the workdir."""
  return config.data.spm_model or os.path.join(workdir, "data", "spm.model")


def train_tokenizer(config: ml_collections.ConfigDict, workdir: str,
                    train_split: Sequence[dict[str, str]]) -> None:
  """Trains the workdir's SentencePiece model on the train split, unless it exists or
  `data.spm_model` names one."""
  spm_model = tokenizer_path(config, workdir)
  if not config.data.spm_model and not os.path.exists(spm_model):
    corpus = _spm_corpus(train_split, os.path.join(workdir, "data", "spm_corpus.txt"),
                         config.data.spm_max_sentences)
    tokenizer_lib.train_sentencepiece([corpus], spm_model[:-len(".model")],
                                      config.data.vocab_size)


# ------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------


def token_loss(params, model, batch, *, label_smoothing, dropout_key=None):
  deterministic = dropout_key is None
  logits = model.apply({"params": params}, batch["src"], batch["tgt_in"],
                       deterministic=deterministic,
                       rngs=None if deterministic else {"dropout": dropout_key})
  loss_sum, nll_sum = smoothed_cross_entropy(logits, batch["tgt_out"], batch["weights"],
                                             label_smoothing)
  tokens = jnp.sum(batch["weights"])
  return loss_sum / jnp.maximum(tokens, 1.0), {"loss": loss_sum, "nll": nll_sum,
                                               "tokens": tokens}


def train_step(state: core.TrainState, batch: dict[str, jax.Array], *, model: EncoderDecoder,
               label_smoothing: float) -> tuple[core.TrainState, dict[str, jax.Array]]:
  """One micro-batch: gradients of the token-mean smoothed loss, then the optimizer."""
  grad_fn = jax.grad(token_loss, has_aux=True)
  grads, sums = grad_fn(state.params, model, batch, label_smoothing=label_smoothing,
                        dropout_key=state.step_key())
  return state.apply_gradients(grads), sums


def eval_step(params, batch, *, model: EncoderDecoder) -> dict[str, jax.Array]:
  """Summed validation loss and NLL (no smoothing, no dropout)."""
  return token_loss(params, model, batch, label_smoothing=0.0)[1]


@dataclasses.dataclass
class ModelSetup:
  model: EncoderDecoder
  mesh: jax.sharding.Mesh
  rules: Any
  state: core.TrainState  # abstract: ShapeDtypeStructs that carry their shardings
  init: Any  # () -> the initial state, in its shardings
  schedule: Any
  eval_step: Any  # jitted once per setup: validation runs many times in one training run


def setup_model(config: ml_collections.ConfigDict, vocab_size: int) -> ModelSetup:
  model = EncoderDecoder(model_config(config, vocab_size))
  mesh = core.mesh.from_config(config.mesh)
  rules = core.mesh.rules_from_config(config.mesh)
  tx, schedule = core.make_optimizer(config.optim)
  dummy = jnp.ones((1, 8), jnp.int32)
  dropout_key = core.stream_key(config.seed, 1)

  def init_fn(key):
    params = model.init(key, dummy, dummy)["params"]
    return core.TrainState.create(params, tx, dropout_key)

  key = core.init_key(config.seed)
  abstract, shardings = core.abstract_sharded_state(init_fn, key, mesh, rules)
  return ModelSetup(model, mesh, rules, abstract,
                lambda: core.init_sharded(init_fn, key, shardings), schedule,
                compiler.jit(functools.partial(eval_step, model=model)))


def validation_loss(params, setup: ModelSetup, task: Task, config) -> dict[str, float]:
  totals = {"loss": 0.0, "nll": 0.0, "tokens": 0.0}
  batches = translation.eval_batches(task.splits["valid"], task.tokenizer,
                                     config.eval.batch_size, config.data.max_len,
                                     bucket_boundaries=config.data.bucket_boundaries)
  for i, (batch, _) in enumerate(batches):
    if config.train.eval_batches and i >= config.train.eval_batches:
      break
    batch.pop("mask")
    sums = setup.eval_step(params, core.shard_batch(core.mesh.process_rows(batch), setup.mesh))
    totals = {k: totals[k] + float(sums[k]) for k in totals}
  tokens = max(totals["tokens"], 1.0)
  return {"valid_loss": totals["loss"] / tokens, "valid_ppl": float(np.exp(totals["nll"] / tokens))}


def summarize_tokens(sums: dict[str, float], steps: int) -> dict[str, float]:
  """A log window's token-mean training loss and perplexity."""
  tokens = max(sums["tokens"], 1.0)
  return {"train_loss": sums["loss"] / tokens, "train_ppl": float(np.exp(sums["nll"] / tokens))}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       spec: TaskSpec | None = None) -> dict[str, Any]:
  """Trains (resuming from the workdir's latest checkpoint), then decodes the test split.

  Args:
    config: a `experiments/configs/wmt_lite.py` config (or another task's, with `spec`).
    workdir: outputs; rerunning with the same workdir resumes exactly. A run that stops
      early (`train.steps_per_run`, as a preempted job would) raises `core.StoppedEarly`.
    spec: the task (default `TRANSLATION`).

  Returns:
    Final metrics: the spec's test scores (translation: `bleu` (sacreBLEU), `tok_bleu`),
    validation loss, `params`, `macs`, `steps`, and training throughput.
  """
  spec = spec or TRANSLATION
  if config.eval.average_last_n > config.train.keep_checkpoints:
    raise UserError(f"eval.average_last_n={config.eval.average_last_n} averages more "
                    f"checkpoints than train.keep_checkpoints={config.train.keep_checkpoints} "
                    f"keeps; raise train.keep_checkpoints.")
  os.makedirs(workdir, exist_ok=True)
  task = spec.prepare(config, workdir)
  setup = setup_model(config, task.tokenizer.vocab_size)
  batches = translation.make_batches(
      task.splits["train"], task.tokenizer, batch_tokens=config.data.batch_tokens,
      max_len=config.data.max_len, bucket_boundaries=config.data.bucket_boundaries,
      batch_multiple=setup.mesh.shape["data"], seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  accum = config.optim.grad_accum_steps
  total_steps = config.optim.total_updates * accum
  loop = core.TrainLoop(
      directory=workdir,
      step_fn=functools.partial(train_step, model=setup.model,
                                label_smoothing=config.optim.label_smoothing),
      batches=batches, total_steps=total_steps, intervals=config.train, mesh=setup.mesh,
      rules=setup.rules, config=config, summarize=summarize_tokens,
      learning_rate=lambda step: setup.schedule(step // accum),
      evaluate=lambda state: validation_loss(state.params, setup, task, config),
      per_process_batches=True)
  run = core.loop.run(loop, setup.state, setup.init)
  result = {"steps": run.step, "train_time_s": round(run.elapsed_s, 1),
            "train_target_tokens_per_s": round(run.totals.get("tokens", 0.0)
                                               / max(run.elapsed_s, 1e-9), 1)}
  if run.step < total_steps:  # `train.steps_per_run`: test metrics need the finished model
    raise core.StoppedEarly("training", run.step, total_steps)
  params, validation = run.state.params, run.validation
  if config.eval.average_last_n > 1:
    params = load_params(config, setup, workdir)
  if config.eval.average_last_n > 1 or not validation:  # averaged, or nothing left to train
    validation = validation_loss(params, setup, task, config)
  result.update(validation)
  result.update(_test_metrics(config, workdir, task, setup, params, spec))
  return result


# ------------------------------------------------------------------------------------------
# Decoding and evaluation
# ------------------------------------------------------------------------------------------


def load_params(config, setup: ModelSetup, workdir: str):
  """The latest checkpoint's parameters, or the average of the last `eval.average_last_n`."""
  directory = os.path.join(workdir, "checkpoints")
  if config.eval.average_last_n > 1:
    with core.Checkpointer(directory) as ckpt:
      return ckpt.average_params(setup.state, config.eval.average_last_n)
  return core.restore_finished(directory, setup.state,
                               "train (--mode=train) with this workdir").params


def decode_records(config, task: Task, setup: ModelSetup, params, records: Sequence[dict[str, str]]
            ) -> tuple[list[str], list[str]]:
  """Beam-searches every record's source; returns (hypotheses, raw references)."""
  search = compiler.jit(functools.partial(
      beam_search, setup.model, beam_size=config.eval.beam_size,
      length_penalty=config.eval.length_penalty, max_len_a=config.eval.max_len_a,
      max_len_b=config.eval.max_len_b, min_len=config.eval.min_len,
      no_repeat_ngram_size=config.eval.no_repeat_ngram_size))
  batch_size = -(-config.eval.batch_size // setup.mesh.shape["data"]) * setup.mesh.shape["data"]
  batches = translation.eval_batches(records, task.tokenizer, batch_size, config.data.max_len,
                                     bucket_boundaries=config.data.bucket_boundaries)
  hyps, refs = [], []
  total = -(-len(records) // batch_size)
  for batch, batch_refs in core.progress(batches, total=total, desc="decode"):
    src = core.shard_batch(core.mesh.process_rows({"src": batch["src"]}), setup.mesh)["src"]
    tokens, _ = search(params, src)
    tokens = multihost_utils.process_allgather(tokens, tiled=True)
    hyps += [task.tokenizer.decode(row) for row, real in zip(tokens, batch["mask"]) if real]
    refs += batch_refs
  return hyps, refs


def _tokenize_for_bleu(lines: Sequence[str], lang: str, mode: str) -> list[str]:
  if mode == "none":
    return list(lines)
  if mode == "moses":
    from sacremoses import MosesTokenizer  # Only the tokenized-BLEU path needs it.
    tok = MosesTokenizer(lang=lang)
    return [tok.tokenize(line, aggressive_dash_splits=True, escape=False, return_str=True)
            for line in lines]
  raise UserError(f"config.eval.tokenized_bleu must be 'moses' or 'none', got {mode!r}.")


def bleu_scores(hyps: Sequence[str], refs: Sequence[str], config) -> dict[str, float]:
  """Detokenized sacreBLEU and the paper's tokenized, case-sensitive BLEU."""
  mode, lang = config.eval.tokenized_bleu, config.data.tgt_lang
  return {"bleu": bleu.sacrebleu_corpus(hyps, refs),
          "tok_bleu": bleu.tokenized_bleu(_tokenize_for_bleu(hyps, lang, mode),
                                          _tokenize_for_bleu(refs, lang, mode),
                                          compound_split=config.eval.compound_split)}


def _test_metrics(config, workdir, task, setup, params, spec: TaskSpec) -> dict[str, Any]:
  records = task.splits["test"]
  if config.eval.max_examples:
    records = [records[i] for i in range(min(config.eval.max_examples, len(records)))]
  start = time.time()
  hyps, refs = decode_records(config, task, setup, params, records)
  elapsed = time.time() - start
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "test.hyp"), "w", encoding="utf-8") as f:
      f.writelines(h + "\n" for h in hyps)
  counts = param_counts(params)
  return {**spec.score(hyps, refs, records, config), "test_sentences": len(hyps),
          "decode_sentences_per_s": round(len(hyps) / max(elapsed, 1e-9), 1),
          **counts, "macs": profile(config, *spec.profile_lengths)["macs"]}


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             spec: TaskSpec | None = None) -> dict[str, Any]:
  """Test-split scores (translation: BLEU) of the workdir's latest checkpoint (or average of
  the last N); `spec` defaults to `TRANSLATION`."""
  spec = spec or TRANSLATION
  task = spec.prepare(config, workdir)
  setup = setup_model(config, task.tokenizer.vocab_size)
  params = load_params(config, setup, workdir)
  with core.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    step = ckpt.latest_step
  return {"step": step, **validation_loss(params, setup, task, config),
          **_test_metrics(config, workdir, task, setup, params, spec)}


def require_trained(workdir: str) -> None:
  """Raises a one-sentence `UserError` unless `workdir` holds a checkpoint."""
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
    raise UserError(f"{workdir} holds no trained model; train first (--mode=train) with this "
                    f"workdir and config.")


def translate(config: ml_collections.ConfigDict, workdir: str,
              lines: Iterable[str]) -> list[str]:
  """Translates source sentences with the workdir's checkpoint and vocabulary."""
  lines = list(lines)
  if not lines:
    raise UserError("nothing to translate: the input has no lines.")
  require_trained(workdir)
  # Only the vocabulary is needed, not the corpus (Tokenizer says clearly if it is missing).
  task = Task(tokenizer=tokenizer_lib.Tokenizer(tokenizer_path(config, workdir)), splits={})
  setup = setup_model(config, task.tokenizer.vocab_size)
  params = load_params(config, setup, workdir)
  return decode_records(config, task, setup, params, [{"src": s, "tgt": ""} for s in lines])[0]


TRANSLATION = TaskSpec(
    prepare=prepare_task,
    score=lambda hyps, refs, records, config: bleu_scores(hyps, refs, config))
