"""Train, evaluate, summarize with and profile Lite Transformer summarization models.

Summarization is translation's encoder-decoder, trainer and beam search (`train.py`) with
another `TaskSpec`: CNN/DailyMail (or the synthetic documents-of-facts task) from
`data.summarization`, articles truncated to `data.max_source_tokens` BPE pieces, decoding
with the config's min length / no-repeat n-gram settings, and ROUGE-1/2/L F1 (`rouge.py`)
next to a Lead-k baseline (the article's first `eval.lead_sentences` sentences) on the test
split. The launcher `experiments/summarize_lite.py` calls the four entry points here.

Workdir layout: as in `train.py` (`data/text/` holds the generated or converted
`{split}.{source,target}` files).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import ml_collections

from data import summarization, tokenizer as tokenizer_lib, translation
from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.lite_transformer import rouge, train

# Mult-Adds "at the paper's lengths": the spec's §3 convention (source and target of equal
# length, encoder + decoder, linears and attention matmuls) gives the reported CNN/DM 800M
# for Lite d=496 (798.5M) and 2.0G for Transformer-base (2.02G) at 45 + 45 tokens.
PROFILE_SRC_LEN = 45
PROFILE_TGT_LEN = 45

SOURCES = ("synthetic", "text", "stories", "tfds")
# The config fields a workdir's prepared corpus and vocabulary depend on.
DATA_SETTINGS = ("data.source", "data.text_dir", "data.story_dir", "data.tfds_name",
                 "data.tfds_data_dir", "data.valid_split", "data.test_split",
                 "data.synthetic_documents", "data.vocab_size", "data.spm_model",
                 "data.spm_max_sentences")


def _check_data(d: ml_collections.ConfigDict) -> None:
  if d.source not in SOURCES:
    raise UserError(f"config.data.source must be one of {', '.join(SOURCES)}, got "
                    f"{d.source!r}.")
  folder = {"text": "text_dir", "stories": "story_dir"}.get(d.source)
  if folder and not d[folder]:
    holds = {"text_dir": "{train,valid,test}.{source,target}",
             "story_dir": "cnn/stories, dailymail/stories and the url lists"}[folder]
    raise UserError(f"config.data.{folder} is empty; point it at the folder that holds "
                    f"{holds}.")
  if folder and not os.path.isdir(d[folder]):
    raise UserError(f"config.data.{folder}={d[folder]!r} is not a directory.")
  unused = [name for name in ("text_dir", "story_dir") if d[name] and name != folder]
  if unused:
    raise UserError(f"config.data.{unused[0]} is set but data.source is {d.source!r}; pass "
                    f"--config.data.source={'text' if unused[0] == 'text_dir' else 'stories'}.")
  if d.source == "tfds" and not d.tfds_name:
    raise UserError("config.data.tfds_name is empty; name a prepared tfds dataset such as "
                    "'cnn_dailymail'.")
  if not 0 <= d.max_source_tokens < d.max_len:
    raise UserError(f"config.data.max_source_tokens={d.max_source_tokens} must be below "
                    f"data.max_len={d.max_len} (the article plus its end token must fit).")


def _data_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  settings = {key: config.data[key.split(".")[1]] for key in DATA_SETTINGS}
  for key in ("data.text_dir", "data.story_dir"):
    settings[key] = os.path.abspath(settings[key]) if settings[key] else ""
  if config.data.source == "synthetic":
    settings["seed"] = config.seed  # the generated corpus depends on it
  return settings


def _tfds_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  return config.data.tfds_data_dir or os.path.join(workdir, "data", "tfds")


def _text_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The folder of `{split}.{source,target}`: the user's, or written into the workdir."""
  d = config.data
  if d.source == "text":
    return d.text_dir
  text_dir = os.path.join(workdir, "data", "text")
  done = os.path.join(text_dir, "COMPLETE")
  if not os.path.exists(done):
    if d.source == "synthetic":
      train_docs, valid_docs, test_docs = d.synthetic_documents
      summarization.write_synthetic_corpus(text_dir, train=train_docs, valid=valid_docs,
                                           test=test_docs, seed=config.seed)
    else:
      summarization.write_stories_as_text(d.story_dir, text_dir)
    open(done, "w").close()
  return text_dir


def _raw_splits(config: ml_collections.ConfigDict, workdir: str
                ) -> dict[str, Sequence[dict[str, str]]]:
  d = config.data
  if d.source == "tfds":
    names = {"train": "train", "valid": d.valid_split, "test": d.test_split}
    return {split: summarization.catalog_source(d.tfds_name, name,
                                                data_dir=d.tfds_data_dir or None)
            for split, name in names.items()}
  return {split: summarization.prepared_source(_tfds_dir(config, workdir), split)
          for split in summarization.SPLITS}


def _prepare_files(config: ml_collections.ConfigDict, workdir: str) -> None:
  if config.data.source != "tfds":
    text_dir = _text_dir(config, workdir)
    summarization.check_text_dir(text_dir)
    translation.prepare_dataset(text_dir, _tfds_dir(config, workdir), summarization.SOURCE,
                                summarization.TARGET)
  train.train_tokenizer(config, workdir,
                        summarization.SummarySource(_raw_splits(config, workdir)["train"]))


def prepare_task(config: ml_collections.ConfigDict, workdir: str) -> train.Task:
  """Builds (once, on the first process) and opens the corpus and its vocabulary; the
  splits' articles are truncated to `data.max_source_tokens` pieces."""
  _check_data(config.data)
  core.workdir.check_data_settings(os.path.join(workdir, "data"), _data_settings(config),
                                   rebuild=config.data.rebuild)
  core.workdir.on_first_process("corpus prepared", _prepare_files, config, workdir)
  tokenizer = tokenizer_lib.Tokenizer(train.tokenizer_path(config, workdir))
  splits = {split: summarization.SummarySource(source, tokenizer,
                                               config.data.max_source_tokens)
            for split, source in _raw_splits(config, workdir).items()}
  return train.Task(tokenizer=tokenizer, splits=splits)


def rouge_metrics(hyps: list[str], refs: list[str], records: Sequence[dict[str, str]],
                  config: ml_collections.ConfigDict) -> dict[str, Any]:
  """ROUGE-1/2/L of the decoded summaries and, as `lead_*`, of the Lead-k baseline."""
  k = config.eval.lead_sentences
  leads = [rouge.lead_summary(records[i]["src"], k) for i in range(len(refs))]
  lead = rouge.rouge_scores(leads, refs)
  return {**rouge.rouge_scores(hyps, refs), "lead_sentences": k,
          **{f"lead_{name}": value for name, value in lead.items()}}


SUMMARIZATION = train.TaskSpec(prepare=prepare_task, score=rouge_metrics,
                               profile_lengths=(PROFILE_SRC_LEN, PROFILE_TGT_LEN))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from the workdir), then summarizes the test split: `rouge1`, `rouge2`,
  `rougeL` (F1 x 100), the Lead-k baseline's `lead_rouge*`, validation loss, `params`,
  `macs` (at 45 + 45 tokens), `steps`."""
  return train.train_and_evaluate(config, workdir, SUMMARIZATION)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Test-split ROUGE (and the Lead-k baseline's) of the workdir's latest checkpoint."""
  return train.evaluate(config, workdir, SUMMARIZATION)


def summarize(config: ml_collections.ConfigDict, workdir: str,
              lines: Iterable[str]) -> list[str]:
  """Summarizes articles (one a line) with the workdir's checkpoint and vocabulary."""
  lines = list(lines)
  if not lines:
    raise UserError("nothing to summarize: the input has no lines.")
  train.require_trained(workdir)
  tokenizer = tokenizer_lib.Tokenizer(train.tokenizer_path(config, workdir))
  source = summarization.SummarySource([{"src": line, "tgt": ""} for line in lines], tokenizer,
                                       config.data.max_source_tokens)
  return train.translate(config, workdir, [source[i]["src"] for i in range(len(source))])


def profile(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Parameters and Mult-Adds (§3 convention) at the paper's CNN/DM lengths, 45 + 45."""
  return train.profile(config, PROFILE_SRC_LEN, PROFILE_TGT_LEN)
