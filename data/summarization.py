"""Summarization data: CNN/DailyMail from local files or prepared tfds, and a synthetic task.

Every source ends as random-access `{'src': article, 'tgt': summary}` records, the layout of
`data.translation`, so summarization trains on the translation pipeline (ArrayRecord, grain
batches, SentencePiece) unchanged. The sides are called `source` / `target`, as in fairseq's
prepared `cnndm.{train,valid,test}.{source,target}`.

Sources::

  # 1. fairseq-prepared text: {train,valid,test}.{source,target}, one article / summary a line
  check_text_dir('cnndm/')
  # 2. the original story files (cnn/stories/*.story, dailymail/stories/*.story) with the
  #    url lists all_{train,val,test}.txt that fix the standard split, written as layout 1
  write_stories_as_text('cnn_dm_stories/', 'cnndm/')
  # 3. tfds `cnn_dailymail`, already prepared by the user (never downloaded here)
  catalog_source('cnn_dailymail', 'test', data_dir='~/tensorflow_datasets')
  # 4. the deterministic synthetic task, written as layout 1
  write_synthetic_corpus('synthetic/', train=20000, valid=200, test=200, seed=0)

Articles are truncated to the reference's 1000 tokens when read (`SummarySource`). We count
after BPE, in SentencePiece pieces (the reference binarized BPE-encoded `cnndm.*.1000` files
with fairseq-preprocess, issues #17 / #28), and round down to a whole word so that the
truncated text re-encodes to exactly the kept pieces.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any, Mapping, Sequence

from data import synthetic_translation, translation
from data.tokenizer import Tokenizer
from lite_jax.core.errors import UserError

SOURCE, TARGET = "source", "target"  # file suffixes of the prepared layout (fairseq's cnndm.*)
SPLITS = translation.SPLITS
# The url-list file of each split in the standard CNN/DailyMail split (See et al., 2017).
URL_LISTS = {"train": "all_train.txt", "valid": "all_val.txt", "test": "all_test.txt"}
STORY_DIRS = (os.path.join("cnn", "stories"), os.path.join("dailymail", "stories"))
# Sentence-final tokens; a line ending otherwise gets " ." (as the standard preprocessing).
_END_TOKENS = (".", "!", "?", "...", "'", "`", '"', "\u2019", "\u201d", ")")


# ----------------------------------------------------------------------------------------
# CNN/DailyMail story files
# ----------------------------------------------------------------------------------------


def _fix_missing_period(line: str) -> str:
  if "@highlight" in line or not line or line.endswith(_END_TOKENS):
    return line
  return line + " ."


def parse_story(text: str) -> tuple[str, list[str]]:
  """A `.story` file's (article, highlights).

  The article is its non-empty lines before and between `@highlight` markers joined by
  spaces; each `@highlight` marks the next non-empty line as one summary sentence. Lines
  without a sentence-final token get " .".
  """
  article, highlights = [], []
  next_is_highlight = False
  for line in text.splitlines():
    line = line.strip()
    if not line:
      continue
    if line.startswith("@highlight"):
      next_is_highlight = True
    elif next_is_highlight:
      highlights.append(_fix_missing_period(line))
      next_is_highlight = False
    else:
      article.append(_fix_missing_period(line))
  return " ".join(article), highlights


def url_hash(url: str) -> str:
  """The story file stem of a url: the hex SHA-1 of the url (the datasets' naming)."""
  return hashlib.sha1(url.strip().encode("utf-8")).hexdigest()


def _find_url_lists(story_dir: str) -> dict[str, str]:
  for folder in (story_dir, os.path.join(story_dir, "url_lists")):
    paths = {split: os.path.join(folder, name) for split, name in URL_LISTS.items()}
    if all(os.path.isfile(p) for p in paths.values()):
      return paths
  raise UserError(f"{story_dir} holds no url lists {', '.join(URL_LISTS.values())} (in it or "
                  f"in its url_lists/ folder); they fix the standard train/valid/test split.")


def _story_paths(story_dir: str) -> dict[str, str]:
  """Story file stem -> path, over cnn/stories and dailymail/stories."""
  found = {}
  for sub in STORY_DIRS:
    folder = os.path.join(story_dir, sub)
    if os.path.isdir(folder):
      found.update({name[:-len(".story")]: os.path.join(folder, name)
                    for name in os.listdir(folder) if name.endswith(".story")})
  if not found:
    raise UserError(f"{story_dir} holds no .story files in {' or '.join(STORY_DIRS)}.")
  return found


def write_stories_as_text(story_dir: str | os.PathLike, text_dir: str | os.PathLike) -> None:
  """Writes the url-listed stories as `{train,valid,test}.{source,target}` under `text_dir`.

  One article (target: its highlights, space-joined) per line, in url-list order. Stories
  without highlights are skipped, as in the standard preparation.

  Raises:
    UserError: no url lists or story files, or a listed url has no story file.
  """
  story_dir, text_dir = os.fspath(story_dir), os.fspath(text_dir)
  url_lists, stories = _find_url_lists(story_dir), _story_paths(story_dir)
  os.makedirs(text_dir, exist_ok=True)
  for split in SPLITS:
    with open(url_lists[split], encoding="utf-8") as f:
      urls = [line.strip() for line in f if line.strip()]
    missing = [u for u in urls if url_hash(u) not in stories]
    if missing:
      raise UserError(f"{len(missing)} urls of {url_lists[split]} have no story file, e.g. "
                      f"{missing[0]} ({url_hash(missing[0])}.story).")
    with (open(os.path.join(text_dir, f"{split}.{SOURCE}"), "w", encoding="utf-8") as src,
          open(os.path.join(text_dir, f"{split}.{TARGET}"), "w", encoding="utf-8") as tgt):
      for url in urls:
        with open(stories[url_hash(url)], encoding="utf-8") as f:
          article, highlights = parse_story(f.read())
        if article and highlights:
          src.write(article + "\n")
          tgt.write(" ".join(highlights) + "\n")


def check_text_dir(text_dir: str | os.PathLike) -> None:
  """Checks the prepared layout: `{train,valid,test}.{source,target}`, parallel, non-empty."""
  translation.check_parallel_files(text_dir, SOURCE, TARGET)


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------


def catalog_source(name: str, split: str, *, data_dir: str | os.PathLike | None = None
                   ) -> translation.TranslationSource:
  """A prepared tfds summarization dataset (`cnn_dailymail`: 'article' -> 'highlights')."""
  return translation.catalog_source(name, split, "article", "highlights", data_dir=data_dir)


def prepared_source(data_dir: str | os.PathLike, split: str) -> translation.TranslationSource:
  """A split of the layout above after `data.translation.prepare_dataset(text_dir, data_dir,
  SOURCE, TARGET)`."""
  return translation.data_source(data_dir, SOURCE, TARGET, split)


def truncate_article(tokenizer: Tokenizer, text: str, max_tokens: int) -> str:
  """`text`'s first words that fit in `max_tokens` BPE pieces (white space collapsed).

  SentencePiece segments each white-space-separated word on its own, so a word costs the
  pieces of encoding it alone, and the result re-encodes to exactly the kept pieces.
  """
  if len(tokenizer.encode(text)) <= max_tokens:
    return text
  words = text.split()
  used = 0
  for i, word in enumerate(words):
    used += len(tokenizer.encode(word))
    if used > max_tokens:
      return " ".join(words[:i])
  return " ".join(words)


class SummarySource:
  """Random-access `{'src', 'tgt'}` records with white space collapsed to single spaces and
  articles truncated to `max_source_tokens` pieces (0 = not truncated).

  Works as a grain data source (`len`, `[i]`).
  """

  def __init__(self, source: Sequence[Mapping[str, Any]], tokenizer: Tokenizer | None = None,
               max_source_tokens: int = 0):
    if max_source_tokens and tokenizer is None:
      raise ValueError("truncating articles needs the tokenizer.")
    self._source = source
    self._tokenizer = tokenizer
    self._max_source_tokens = max_source_tokens

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, str]:
    record = self._source[index]
    src, tgt = (" ".join(str(record[key]).split()) for key in ("src", "tgt"))
    if self._max_source_tokens:
      src = truncate_article(self._tokenizer, src, self._max_source_tokens)
    return {"src": src, "tgt": tgt}


# ----------------------------------------------------------------------------------------
# Synthetic task: a document of facts -> its key fact
# ----------------------------------------------------------------------------------------

# The key fact is introduced by this marker; the others by a distractor marker or none.
KEY_MARKER = "notably"
DISTRACTOR_MARKERS = ("meanwhile", "also", "earlier", "separately", "later", "reportedly")


def generate_documents(num_documents: int, seed: int, *, min_facts: int = 4,
                       max_facts: int = 6, max_fact_words: int = 10
                       ) -> list[tuple[str, str]]:
  """`num_documents` (document, summary) pairs; the same seed gives the same list.

  A document is `min_facts` to `max_facts` fact sentences from the synthetic English grammar
  of `data.synthetic_translation` (5 to `max_fact_words` words each), each ending in " .".
  Exactly one, at a uniformly random position, is the key fact: it opens with "notably ,";
  about two thirds of the others open with a distractor marker ("meanwhile ,", "also ,",
  ...). The summary is the key fact without its marker. A model must find the marked
  sentence and copy it; the lead sentence is the summary only when the key fact comes first
  (1 / 5 of documents on average).
  """
  if num_documents < 0:
    raise ValueError(f"num_documents must be >= 0, got {num_documents}.")
  if not 1 <= min_facts <= max_facts:
    raise ValueError(f"need 1 <= min_facts <= max_facts, got {min_facts}, {max_facts}.")
  rng = random.Random(seed)
  # About 70% of the grammar's sentences have at most 10 words; 2x covers any draw.
  pool = (s for s, _ in synthetic_translation.generate_pairs(
      2 * num_documents * max_facts + 100, seed))
  facts = (s for s in pool if len(s.split()) <= max_fact_words)
  documents = []
  for _ in range(num_documents):
    count = rng.randint(min_facts, max_facts)
    key = rng.randrange(count)
    sentences, summary = [], ""
    for i in range(count):
      fact = next(facts, None)
      if fact is None:
        raise ValueError(f"too few sentences of at most {max_fact_words} words; raise "
                         "max_fact_words.")
      if i == key:
        summary = fact + " ."
        sentences.append(f"{KEY_MARKER} , {fact} .")
      elif rng.random() < 2 / 3:
        sentences.append(f"{rng.choice(DISTRACTOR_MARKERS)} , {fact} .")
      else:
        sentences.append(fact + " .")
    documents.append((" ".join(sentences), summary))
  return documents


def write_synthetic_corpus(directory: str | os.PathLike, *, train: int, valid: int, test: int,
                           seed: int = 0) -> None:
  """Writes `generate_documents` as `{train,valid,test}.{source,target}` (disjoint draws)."""
  documents = generate_documents(train + valid + test, seed)
  os.makedirs(directory, exist_ok=True)
  start = 0
  for split, size in zip(SPLITS, (train, valid, test)):
    chunk = documents[start:start + size]
    start += size
    for suffix, column in ((SOURCE, 0), (TARGET, 1)):
      with open(os.path.join(directory, f"{split}.{suffix}"), "w", encoding="utf-8") as f:
        f.writelines(pair[column] + "\n" for pair in chunk)

