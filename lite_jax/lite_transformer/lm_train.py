"""Train, evaluate, sample from and profile Lite Transformer language models (WikiText-103).

The launcher `experiments/lm_lite.py` only parses flags and calls `train_and_evaluate`,
`evaluate`, `generate_lines` and `profile`; each returns a dict of metrics (or lines).

Workdir layout::

  <workdir>/data/text/         the generated corpus (synthetic source only)
  <workdir>/data/tfds/         wiki.{train,valid,test}.tokens as ArrayRecord
  <workdir>/data/dict.txt      the word vocabulary (fairseq layout)
  <workdir>/data/{split}.npy   each split as one token stream
  <workdir>/checkpoints/       orbax steps: train state, data position, config
  <workdir>/metrics.jsonl      training curves
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import language_modeling as lm_data
from lite_jax import core
from lite_jax.core import compiler
from lite_jax.core.errors import UserError
from lite_jax.lite_transformer import lm as lm_lib
from lite_jax.lite_transformer.lm import LanguageModel, LanguageModelConfig
from lite_jax.lite_transformer.model import config_branches

# The paper's Mult-Adds setting (as for translation): a 30-token sequence.
PROFILE_LEN = 30


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> LanguageModelConfig:
  """The `LanguageModelConfig` of `config.model` for a vocabulary of `vocab_size` words."""
  m = config.model
  branches = config_branches(m)
  if m.cutoffs and max(m.cutoffs) >= vocab_size:
    raise UserError(f"config.model.cutoffs={tuple(m.cutoffs)} must lie below the vocabulary "
                    f"size {vocab_size}.")
  try:
    return LanguageModelConfig(
        vocab_size=vocab_size, d_model=m.d_model, ffn_dim=m.ffn_dim, num_layers=m.num_layers,
        branches=branches, num_heads=m.num_heads, kernel_sizes=tuple(m.kernel_sizes),
        conv_glu=m.conv_glu, cutoffs=tuple(m.cutoffs), adaptive_factor=m.adaptive_factor,
        tie_adaptive_weights=m.tie_adaptive_weights, tie_adaptive_proj=m.tie_adaptive_proj,
        adaptive_softmax_dropout=m.adaptive_softmax_dropout,
        softmax_chunk_size=m.softmax_chunk_size, dropout=m.dropout,
        attention_dropout=m.attention_dropout, weight_dropout=m.weight_dropout,
        activation_dropout=m.activation_dropout, final_norm=m.final_norm,
        max_len=max(config.data.tokens_per_sample, config.eval.tokens_per_sample),
        pad_id=lm_data.PAD_ID, dtype=m.dtype)
  except ValueError as e:
    raise UserError(f"config.model is invalid: {e}") from None


def _is_adaptive(path) -> bool:
  return str(getattr(path[0], "key", "")) in ("embed", "softmax")


def param_counts(params: Any) -> dict[str, int]:
  """`params`: the layers only, without the adaptive input and softmax (tables, projections,
  cluster weights), which is the paper's 37.2M; `params_total`: everything."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  total = sum(int(np.prod(x.shape)) for _, x in leaves)
  adaptive = sum(int(np.prod(x.shape)) for p, x in leaves if _is_adaptive(p))
  return {"params": total - adaptive, "params_total": total}


def profile(config: ml_collections.ConfigDict, vocab_size: int | None = None) -> dict[str, Any]:
  """Parameters and Mult-Adds by the paper's convention.

  Mult-Adds (Lite Transformer §3, as for translation): one 30-token sequence through the
  layers (linear layers + attention QK^T and AV; not the depthwise convolutions, nothing
  elementwise), plus the adaptive input's projection of those 30 tokens taken as frequent
  (band-0) words; the adaptive softmax (the output projection) excluded. This gives 1146M
  for the paper's model against its reported 1147M. `params`: see `param_counts`.
  """
  vocab_size = vocab_size or config.data.vocab_size
  model = LanguageModel(model_config(config, vocab_size))
  tokens = jax.ShapeDtypeStruct((1, PROFILE_LEN), jnp.int32)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens,
                                   tokens))["params"]
  d = model.config.d_model

  def layers(params, x):
    return model.apply({"params": params}, x, method=_apply_layers)

  hidden = jax.ShapeDtypeStruct((1, PROFILE_LEN, d), model.config.dtype)
  layer_macs = core.count_macs(layers, params, hidden, convention=core.macs.LITE_TRANSFORMER)
  band0_dim = params["embed"]["projection_0"].shape[0]
  input_macs = PROFILE_LEN * band0_dim * d
  return {"preset": config.preset, **param_counts(params), "macs": layer_macs + input_macs,
          "macs_layers": layer_macs, "macs_adaptive_input": input_macs, "seq_len": PROFILE_LEN,
          "vocab_size": vocab_size}


def _apply_layers(module: LanguageModel, x):
  """The layer stack (and final norm) on embedded inputs: what the Mult-Adds count covers."""
  for layer in module.layers:
    x = layer(x)
  return x if module.final_layer_norm is None else module.final_layer_norm(x)


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
  """The vocabulary and each split as one int32 token stream."""
  vocab: lm_data.Vocabulary
  streams: dict[str, np.ndarray]


DATA_SETTINGS = ("data.source", "data.text_dir", "data.tfds_data_dir", "data.synthetic_articles")


def _data_settings(config) -> dict[str, Any]:
  d = config.data
  settings = {key: d[key.split(".")[1]] for key in DATA_SETTINGS}
  settings["data.text_dir"] = os.path.abspath(d.text_dir) if d.text_dir else ""
  if d.source == "synthetic":
    settings["seed"] = config.seed
  return settings


def _check_source(d) -> None:
  if d.source not in ("synthetic", "text"):
    raise UserError(f"config.data.source must be 'synthetic' or 'text', got {d.source!r}.")
  if d.source == "synthetic" and d.text_dir:
    raise UserError(f"config.data.text_dir={d.text_dir!r} is set but data.source is "
                    f"'synthetic'; pass --config.data.source=text to train on your files.")
  if d.source == "text" and not d.text_dir:
    raise UserError("config.data.text_dir is empty; point it at the folder holding "
                    "wiki.{train,valid,test}.tokens.")
  if d.source == "text" and not os.path.isdir(d.text_dir):
    raise UserError(f"config.data.text_dir={d.text_dir!r} is not a directory.")


def _prepare_files(config, workdir: str) -> None:
  d = config.data
  data_dir = os.path.join(workdir, "data")
  text_dir = d.text_dir
  if d.source == "synthetic":
    text_dir = os.path.join(data_dir, "text")
    if not os.path.exists(os.path.join(text_dir, "COMPLETE")):
      lm_data.write_synthetic_corpus(text_dir, articles=tuple(d.synthetic_articles),
                                     seed=config.seed)
      open(os.path.join(text_dir, "COMPLETE"), "w").close()
  tfds_dir = d.tfds_data_dir or os.path.join(data_dir, "tfds")
  lm_data.prepare_dataset(text_dir, tfds_dir)
  dict_path = os.path.join(data_dir, "dict.txt")
  if not os.path.exists(dict_path):
    lm_data.build_vocabulary(lm_data.split_lines(tfds_dir, "train")).save(dict_path)
  vocab = lm_data.Vocabulary.load(dict_path)
  for split in lm_data.SPLITS:
    path = os.path.join(data_dir, f"{split}.npy")
    if not os.path.exists(path):
      np.save(path + ".tmp.npy", lm_data.encode_lines(lm_data.split_lines(tfds_dir, split),
                                                      vocab))
      os.replace(path + ".tmp.npy", path)


def prepare_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  """Builds (once, on the first process) and opens the vocabulary and token streams."""
  _check_source(config.data)
  data_dir = os.path.join(workdir, "data")
  core.workdir.check_data_settings(data_dir, _data_settings(config),
                                   rebuild=config.data.rebuild)
  core.workdir.on_first_process("lm corpus prepared", _prepare_files, config, workdir)
  vocab = lm_data.Vocabulary.load(os.path.join(data_dir, "dict.txt"))
  streams = {split: np.load(os.path.join(data_dir, f"{split}.npy"), mmap_mode="r")
             for split in lm_data.SPLITS}
  return Task(vocab, streams)


# ------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------


def token_loss(params, model: LanguageModel, batch, dropout_key=None):
  """Token-mean NLL and the sums {'nll', 'tokens'}; `batch['weights']` (if any) masks."""
  deterministic = dropout_key is None
  nll = model.apply({"params": params}, batch["inputs"], batch["targets"],
                    deterministic=deterministic,
                    rngs=None if deterministic else {"dropout": dropout_key})
  weights = batch.get("weights")
  if weights is None:
    weights = jnp.ones_like(nll)
  nll_sum, tokens = jnp.sum(nll * weights), jnp.sum(weights)
  return nll_sum / jnp.maximum(tokens, 1.0), {"nll": nll_sum, "tokens": tokens}


def train_step(state: core.TrainState, batch: dict[str, jax.Array], *, model: LanguageModel
               ) -> tuple[core.TrainState, dict[str, jax.Array]]:
  """One micro-batch: gradients of the token-mean NLL, then the optimizer."""
  grads, sums = jax.grad(token_loss, has_aux=True)(state.params, model, batch,
                                                   dropout_key=state.step_key())
  return state.apply_gradients(grads), sums


def eval_step(params, batch, *, model: LanguageModel) -> dict[str, jax.Array]:
  return token_loss(params, model, batch)[1]


def summarize_tokens(sums: dict[str, float], steps: int) -> dict[str, float]:
  loss = sums["nll"] / max(sums["tokens"], 1.0)
  return {"train_loss": loss, "train_ppl": float(np.exp(loss))}


@dataclasses.dataclass
class ModelSetup:
  model: LanguageModel
  mesh: jax.sharding.Mesh
  rules: Any
  state: core.TrainState  # abstract, with shardings
  init: Any
  schedule: Any
  eval_step: Any


def setup_model(config: ml_collections.ConfigDict, vocab_size: int) -> ModelSetup:
  model = LanguageModel(model_config(config, vocab_size))
  mesh = core.mesh.from_config(config.mesh)
  rules = core.mesh.rules_from_config(config.mesh)
  tx, schedule = core.make_optimizer(config.optim)
  dummy = jnp.full((1, 8), lm_data.EOS_ID, jnp.int32)
  dropout_key = core.stream_key(config.seed, 1)

  def init_fn(key):
    return core.TrainState.create(model.init(key, dummy, dummy)["params"], tx, dropout_key)

  key = core.init_key(config.seed)
  abstract, shardings = core.abstract_sharded_state(init_fn, key, mesh, rules)
  return ModelSetup(model, mesh, rules, abstract,
                    lambda: core.init_sharded(init_fn, key, shardings), schedule,
                    compiler.jit(functools.partial(eval_step, model=model)))


def _eval_batch_size(config, mesh) -> int:
  data = mesh.shape["data"]
  return -(-config.eval.batch_size // data) * data


def perplexity(params, setup: ModelSetup, stream: np.ndarray, config, *,
               max_tokens: int = 0, desc: str = "eval") -> dict[str, float]:
  """Perplexity of `stream` (its first `max_tokens`, 0 = all), every token scored once with
  `eval.context_window` tokens of left context (`data.language_modeling.eval_windows`)."""
  e = config.eval
  if max_tokens:
    stream = stream[:max_tokens]
  batch_size = _eval_batch_size(config, setup.mesh)
  windows = lm_data.eval_windows(np.asarray(stream), tokens_per_sample=e.tokens_per_sample,
                                 context_window=e.context_window, batch_size=batch_size)
  total = -(-lm_data.num_windows(len(stream), e.tokens_per_sample, e.context_window)
            // batch_size)
  nll, tokens = 0.0, 0.0
  with core.mesh.activate(setup.mesh, setup.rules):
    for batch in core.progress(windows, total=total, desc=desc, leave=False):
      sums = setup.eval_step(params, core.shard_batch(core.mesh.process_rows(batch),
                                                      setup.mesh))
      nll, tokens = nll + float(sums["nll"]), tokens + float(sums["tokens"])
  return {"loss": nll / max(tokens, 1.0), "ppl": float(np.exp(nll / max(tokens, 1.0))),
          "tokens": int(tokens)}


def _validation(params, setup, task, config) -> dict[str, float]:
  result = perplexity(params, setup, task.streams["valid"], config,
                      max_tokens=config.train.eval_max_tokens, desc="valid")
  return {"valid_loss": result["loss"], "valid_ppl": result["ppl"]}


# ------------------------------------------------------------------------------------------
# N-gram baselines
# ------------------------------------------------------------------------------------------


def ngram_baselines(train: np.ndarray, splits: dict[str, np.ndarray],
                    vocab_size: int) -> dict[str, float]:
  """Perplexities of two count models estimated on the training stream.

  unigram: add-one smoothed word frequencies. bigram: Witten-Bell interpolation of the
  bigram estimate with that unigram, `p(w|v) = (c(v,w) + T(v) p1(w)) / (c(v) + T(v))` with
  T(v) the number of distinct words seen after v. Each split's every token is scored after
  its predecessor (the stream starts after `</s>`), the tokens the LM is scored on.

  Returns `{'<split>_unigram_ppl', '<split>_bigram_ppl'}`.
  """
  train = np.asarray(train, np.int64)
  unigram = (np.bincount(train, minlength=vocab_size) + 1.0) / (len(train) + vocab_size)
  previous = np.concatenate([[lm_data.EOS_ID], train[:-1]])
  pairs, pair_counts = np.unique(previous * vocab_size + train, return_counts=True)
  history_counts = np.bincount(previous, minlength=vocab_size).astype(np.float64)
  followers = np.bincount(pairs // vocab_size, minlength=vocab_size).astype(np.float64)
  out = {}
  for split, stream in splits.items():
    stream = np.asarray(stream, np.int64)
    prev = np.concatenate([[lm_data.EOS_ID], stream[:-1]])
    codes = prev * vocab_size + stream
    found = np.searchsorted(pairs, codes)
    found = np.minimum(found, len(pairs) - 1)
    count = np.where(pairs[found] == codes, pair_counts[found], 0).astype(np.float64)
    t, c = followers[prev], history_counts[prev]
    p_uni = unigram[stream]
    p_bi = np.where(c > 0, (count + t * p_uni) / np.maximum(c + t, 1.0), p_uni)
    out[f"{split}_unigram_ppl"] = float(np.exp(-np.mean(np.log(p_uni))))
    out[f"{split}_bigram_ppl"] = float(np.exp(-np.mean(np.log(p_bi))))
  return out


# ------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from the workdir's latest checkpoint), then evaluates valid and test.

  Returns:
    `valid_ppl`, `test_ppl` (context-window evaluation), the n-gram baselines on the same
    tokens, `params`, `macs`, `steps` and training throughput. A run stopped by
    `train.steps_per_run` raises `core.StoppedEarly`.
  """
  os.makedirs(workdir, exist_ok=True)
  task = prepare_task(config, workdir)
  setup = setup_model(config, len(task.vocab))
  batches = train_batches(config, task, setup)
  accum = config.optim.grad_accum_steps
  total_steps = config.optim.total_updates * accum
  loop = core.TrainLoop(
      directory=workdir, step_fn=functools.partial(train_step, model=setup.model),
      batches=batches, total_steps=total_steps, intervals=config.train, mesh=setup.mesh,
      rules=setup.rules, config=config, summarize=summarize_tokens,
      learning_rate=lambda step: setup.schedule(step // accum),
      evaluate=lambda state: _validation(state.params, setup, task, config))
  run = core.loop.run(loop, setup.state, setup.init)
  result = {"steps": run.step, "train_time_s": round(run.elapsed_s, 1),
            "train_tokens_per_s": round(run.totals.get("tokens", 0.0)
                                        / max(run.elapsed_s, 1e-9), 1)}
  if run.step < total_steps:
    raise core.StoppedEarly("training", run.step, total_steps)
  result.update(_final_metrics(config, task, setup, run.state.params))
  return result


def train_batches(config, task: Task, setup: ModelSetup):
  d = config.data
  if d.batch_size % setup.mesh.shape["data"]:
    raise UserError(f"config.data.batch_size={d.batch_size} must be a multiple of the "
                    f"{setup.mesh.shape['data']} data-parallel devices.")
  return lm_data.train_batches(np.asarray(task.streams["train"]),
                               tokens_per_sample=d.tokens_per_sample, batch_size=d.batch_size,
                               seed=config.seed)


def _final_metrics(config, task: Task, setup: ModelSetup, params) -> dict[str, Any]:
  valid = perplexity(params, setup, task.streams["valid"], config, desc="valid")
  test = perplexity(params, setup, task.streams["test"], config, desc="test")
  baselines = ngram_baselines(task.streams["train"], {"valid": task.streams["valid"],
                                                      "test": task.streams["test"]},
                              len(task.vocab))
  counts = profile(config, len(task.vocab))
  return {"valid_ppl": valid["ppl"], "test_ppl": test["ppl"], **baselines,
          "valid_tokens": valid["tokens"], "test_tokens": test["tokens"],
          "context_window": config.eval.context_window, "vocab_size": len(task.vocab),
          "params": counts["params"], "params_total": counts["params_total"],
          "macs": counts["macs"]}


def load_params(config, setup: ModelSetup, workdir: str):
  return core.restore_finished(os.path.join(workdir, "checkpoints"), setup.state,
                               "train (--mode=train) with this workdir").params


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Valid and test perplexity (and the baselines) of the workdir's latest checkpoint."""
  task = prepare_task(config, workdir)
  setup = setup_model(config, len(task.vocab))
  params = load_params(config, setup, workdir)
  with core.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    step = ckpt.latest_step
  return {"step": step, **_final_metrics(config, task, setup, params)}


def generate_lines(config: ml_collections.ConfigDict, workdir: str,
                   prompts: Iterable[str]) -> list[str]:
  """Continues each prompt (words; unknown ones become `<unk>`) by `generate.num_tokens`
  tokens, sampled at `generate.temperature` or greedy; returns prompt + continuation."""
  prompts = list(prompts)
  if not prompts:
    raise UserError("nothing to generate from: the input has no lines.")
  dict_path = os.path.join(workdir, "data", "dict.txt")
  if not os.path.exists(dict_path):
    raise UserError(f"{workdir} holds no vocabulary; train first (--mode=train) with this "
                    f"workdir and config.")
  vocab = lm_data.Vocabulary.load(dict_path)
  setup = setup_model(config, len(vocab))
  params = jax.device_get(load_params(config, setup, workdir))
  g = config.generate
  if g.num_tokens < 1 or (not g.greedy and g.temperature <= 0):
    raise UserError("config.generate needs num_tokens >= 1 and, unless greedy, a positive "
                    "temperature.")
  sample = jax.jit(functools.partial(lm_lib.generate, setup.model, num_tokens=g.num_tokens,
                                     temperature=g.temperature, greedy=g.greedy))
  outputs = []
  for i, prompt in enumerate(prompts):
    # A prompt starts like a line of the stream: right after the previous line's `</s>`.
    ids = np.asarray([[lm_data.EOS_ID] + vocab.encode(prompt)[:-1]], np.int32)
    tokens = sample(params, ids, key=jax.random.PRNGKey(config.seed + i))
    outputs.append(vocab.decode(np.asarray(tokens)[0, 1:]))
  return outputs

