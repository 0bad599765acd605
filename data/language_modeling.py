"""Word-level language modeling data (WikiText-103): tfds builder -> ArrayRecord -> token blocks.

Preparing (once)::

  prepare_dataset('wikitext-103/', 'tfds_data/')   # reads wiki.{train,valid,test}.tokens
  vocab = build_vocabulary(split_lines('tfds_data/', 'train'))
  stream = encode_lines(split_lines('tfds_data/', 'valid'), vocab)   # int32 [n_tokens]

Vocabulary as fairseq's `Dictionary` on the train file: `<s>`, `<pad>`, `</s>`, `<unk>` (ids
0-3), then whitespace tokens by descending count (ties alphabetical), padded with
`madeupwordNNNN` to a multiple of 8; the files' own `<unk>` is the special unk, and every line
(blank ones too) ends in `</s>`. Tokens the train split never saw map to `<unk>`.

Batching as fairseq's `TokenBlockDataset` (`--sample-break-mode none`): the split is one
stream, cut into contiguous blocks of `tokens_per_sample` targets; a block's inputs are the
same tokens shifted right by one (the stream starts with `</s>`). Training uses whole blocks
(`train_batches`, a `grain.MapDataset` indexed by step, so the loop resumes it by position);
evaluation (`eval_windows`) scores every token once with `context_window` tokens of left
context, as fairseq's `eval_lm --context-window`.

`write_synthetic_corpus` writes a deterministic WikiText-style corpus (articles on invented
people) whose grammar has long-range structure: pronouns agree with the article subject's
gender, verbs with the number of a noun several words back across a relative clause, and
surnames come back from the title, which a bigram model cannot predict and attention can.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterable, Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from lite_jax.core.errors import UserError

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPLITS = ("train", "valid", "test")
DATASET_NAME = "wiki_text_tokens"


def split_file(text_dir: str, split: str) -> str:
  return os.path.join(os.fspath(text_dir), f"wiki.{split}.tokens")


def check_text_files(text_dir: str) -> dict[str, str]:
  """`{split: path}` of `wiki.{train,valid,test}.tokens`; a missing or empty one is a
  `UserError`."""
  paths = {}
  for split in SPLITS:
    path = split_file(text_dir, split)
    if not os.path.isfile(path):
      raise UserError(f"missing {path} (expected wiki.{{train,valid,test}}.tokens in "
                      f"{text_dir}, as in the WikiText-103 raw download).")
    if os.path.getsize(path) == 0:
      raise UserError(f"{path} is empty.")
    paths[split] = path
  return paths


# ----------------------------------------------------------------------------------------
# Local text files -> ArrayRecord (tfds builder)
# ----------------------------------------------------------------------------------------


class WikiTextTokens(tfds.core.GeneratorBasedBuilder):
  """`wiki.{train,valid,test}.tokens` in the user's `manual_dir` -> one {'text'} per line.

  Lines keep their order (`disable_shuffling`): the splits are read back as streams.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens (WikiText-103 raw or "
      "tokenized release, one paragraph per line) in the manual dir.")

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls) -> None:
    return None  # nothing is downloaded (see data/translation.py)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description="Lines of local WikiText token files.",
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = check_text_files(dl_manager.manual_dir)
    return {split: self._generate_examples(path) for split, path in files.items()}

  def _generate_examples(self, path: str):
    with open(path, encoding="utf-8") as f:
      for i, line in enumerate(f):
        yield i, {"text": line.rstrip("\n")}


def _builder(data_dir: str) -> WikiTextTokens:
  return WikiTextTokens(data_dir=os.fspath(data_dir), file_format="array_record")


def prepare_dataset(text_dir: str, data_dir: str) -> None:
  """Writes the three splits of `text_dir` under `data_dir` as ArrayRecord (once)."""
  builder = _builder(data_dir)
  if builder.is_prepared():
    return
  check_text_files(text_dir)  # fail before tfds creates anything
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(text_dir)))


def split_lines(data_dir: str, split: str) -> Iterator[str]:
  """The lines of a prepared split, in file order."""
  builder = _builder(data_dir)
  if not builder.is_prepared():
    raise UserError(f"no prepared WikiText dataset under {data_dir}; run prepare_dataset.")
  source = builder.as_data_source(split=split)
  for i in range(len(source)):
    text = source[i]["text"]
    yield text.decode("utf-8") if isinstance(text, bytes) else text


# ----------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Vocabulary:
  """fairseq-ordered word list: ids 0-3 are `<s> <pad> </s> <unk>`."""
  symbols: list[str]
  counts: list[int]

  def __post_init__(self):
    self.index = {s: i for i, s in enumerate(self.symbols)}

  def __len__(self) -> int:
    return len(self.symbols)

  def encode(self, line: str) -> list[int]:
    """Whitespace tokens of `line` plus `</s>`; unseen words are `<unk>`."""
    return [self.index.get(w, UNK_ID) for w in line.split()] + [EOS_ID]

  def decode(self, ids: Iterable[int]) -> str:
    return " ".join(self.symbols[int(i)] for i in ids)

  def save(self, path: str) -> None:
    """fairseq's `dict.txt` layout (`word count` per line, specials omitted)."""
    with open(path, "w", encoding="utf-8") as f:
      for symbol, count in zip(self.symbols[4:], self.counts[4:]):
        f.write(f"{symbol} {count}\n")

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    symbols, counts = [BOS, PAD, EOS, UNK], [1, 1, 1, 1]
    with open(path, encoding="utf-8") as f:
      for line in f:
        symbol, count = line.rstrip("\n").rsplit(" ", 1)
        symbols.append(symbol)
        counts.append(int(count))
    return cls(symbols, counts)


def build_vocabulary(lines: Iterable[str], padding_factor: int = 8) -> Vocabulary:
  """fairseq's `Dictionary` of `lines` (see the module docstring)."""
  counter = collections.Counter()
  eos_count = 0
  for line in lines:
    counter.update(line.split())
    eos_count += 1
  unk_count = counter.pop(UNK, 0)
  for special in (BOS, PAD, EOS):
    counter.pop(special, None)
  words = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
  symbols = [BOS, PAD, EOS, UNK] + [w for w, _ in words]
  counts = [1, 1, eos_count, unk_count] + [c for _, c in words]
  extra = -len(symbols) % padding_factor
  symbols += [f"madeupword{i:04d}" for i in range(extra)]
  counts += [0] * extra
  return Vocabulary(symbols, counts)


def encode_lines(lines: Iterable[str], vocab: Vocabulary) -> np.ndarray:
  """The split as one int32 stream `[n_tokens]` (every line ends in `</s>`)."""
  # Arrays per chunk of lines: a Python list of WikiText-103's 103M ids would take ~4 GB.
  chunks, pending = [], []
  for line in lines:
    pending.extend(vocab.encode(line))
    if len(pending) >= 1 << 20:
      chunks.append(np.asarray(pending, np.int32))
      pending = []
  chunks.append(np.asarray(pending, np.int32))
  return np.concatenate(chunks)


# ----------------------------------------------------------------------------------------
# Blocks and windows
# ----------------------------------------------------------------------------------------


class TokenBlocks:
  """Contiguous blocks of a stream: item i = {'inputs', 'targets'}, int32 `[tokens_per_sample]`.

  Targets are `stream[i*T:(i+1)*T]`, inputs the tokens before each (the first block starts
  with `</s>`, as fairseq's). A last partial block is dropped (fixed training shapes).
  """

  def __init__(self, stream: np.ndarray, tokens_per_sample: int):
    if tokens_per_sample < 1:
      raise UserError(f"tokens_per_sample must be positive, got {tokens_per_sample}.")
    if len(stream) < tokens_per_sample:
      raise UserError(f"the training stream has {len(stream)} tokens, fewer than one block "
                      f"of tokens_per_sample={tokens_per_sample}.")
    self._stream = stream
    self._length = tokens_per_sample

  def __len__(self) -> int:
    return len(self._stream) // self._length

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    start, end = index * self._length, (index + 1) * self._length
    targets = np.asarray(self._stream[start:end], np.int32)
    previous = self._stream[start - 1] if start else EOS_ID
    inputs = np.concatenate([[previous], targets[:-1]]).astype(np.int32)
    return {"inputs": inputs, "targets": targets}


def _stack(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def train_batches(stream: np.ndarray, *, tokens_per_sample: int, batch_size: int,
                  seed: int) -> grain.MapDataset:
  """Shuffled blocks, `batch_size` per batch, repeated forever; batch i is item i.

  Each epoch has its own order (the shuffle is reseeded by the repeat); a batch never spans
  two epochs (the remainder of an epoch is dropped). Items: inputs, targets int32
  `[batch_size, tokens_per_sample]`.
  """
  blocks = TokenBlocks(stream, tokens_per_sample)
  if len(blocks) < batch_size:
    raise UserError(f"the training stream holds {len(blocks)} blocks of {tokens_per_sample} "
                    f"tokens, fewer than batch_size={batch_size}.")
  return (grain.MapDataset.source(blocks).shuffle(seed=seed)
          .batch(batch_size, drop_remainder=True, batch_fn=_stack).repeat())


def eval_windows(stream: np.ndarray, *, tokens_per_sample: int, context_window: int,
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Every token of `stream` scored once, after up to `context_window` tokens of context.

  Window k scores the `B = tokens_per_sample - context_window` targets
  `stream[kB:(k+1)B]`; its inputs start `context_window` tokens earlier (at the stream start
  if there are fewer) and it is right-padded to `tokens_per_sample`. So target j of a window
  sees `context_window + j` earlier tokens (fewer at the start), as fairseq's
  `LMContextWindowDataset`.

  Yields:
    inputs, targets int32 `[batch_size, tokens_per_sample]` and weights float32 (1 = a
    target scored here); the last batch is padded with all-zero-weight rows.
  """
  block = tokens_per_sample - context_window
  if context_window < 0 or block < 1:
    raise UserError(f"context_window={context_window} must be in [0, tokens_per_sample="
                    f"{tokens_per_sample}).")
  shifted = np.concatenate([[EOS_ID], stream[:-1]]).astype(np.int32)
  rows = []
  for start in range(0, len(stream), block):
    end = min(start + block, len(stream))
    first = max(0, start - context_window)
    row = {"inputs": np.full(tokens_per_sample, PAD_ID, np.int32),
           "targets": np.full(tokens_per_sample, PAD_ID, np.int32),
           "weights": np.zeros(tokens_per_sample, np.float32)}
    row["inputs"][:end - first] = shifted[first:end]
    row["targets"][:end - first] = stream[first:end]
    row["weights"][start - first:end - first] = 1.0
    rows.append(row)
    if len(rows) == batch_size:
      yield _stack(rows)
      rows = []
  if rows:
    empty = {k: np.zeros_like(v) for k, v in rows[0].items()}
    yield _stack(rows + [empty] * (batch_size - len(rows)))


def num_windows(num_tokens: int, tokens_per_sample: int, context_window: int) -> int:
  return -(-num_tokens // (tokens_per_sample - context_window))


# ----------------------------------------------------------------------------------------
# Deterministic synthetic corpus
# ----------------------------------------------------------------------------------------

_MALE = ("John Robert William James Charles George Thomas Henry Edward Arthur Frederick Albert "
         "Walter Harold Samuel").split()
_FEMALE = ("Mary Elizabeth Anna Margaret Helen Alice Florence Edith Grace Clara Louise Emma "
           "Ruth Julia Dorothy").split()
_SURNAMES = ("Boulter Harris Fenwick Lovell Marsh Carver Whitby Thorne Ashford Pellew Rowan "
             "Sinclair Hale Danvers Kirby Merton Oakley Prescott Quayle Radley Stanton Tolley "
             "Upton Vickers Warwick Yardley Ainslie Blythe Corbett Dunmore").split()
_PLACES = ("London Glasgow Dublin Leeds Bristol Cardiff York Boston Toronto Sydney Melbourne "
           "Chicago Paris Berlin Vienna").split()
_NATIONS = "English Scottish Irish Welsh American Canadian Australian French".split()
_YEARS = [str(y) for y in range(1890, 1990, 3)]
# topic: (roles, nouns (singular, plural), past-tense verbs, subject nouns for section 2)
_TOPICS = {
    "music": (["singer", "composer", "guitarist"],
              [("album", "albums"), ("song", "songs"), ("single", "singles"),
               ("concert", "concerts"), ("record", "records")],
              ["released", "recorded", "wrote", "performed"]),
    "sport": (["footballer", "cricketer", "runner"],
              [("match", "matches"), ("season", "seasons"), ("goal", "goals"),
               ("trophy", "trophies"), ("final", "finals")],
              ["won", "played", "scored", "lost"]),
    "war": (["officer", "soldier", "admiral"],
            [("battle", "battles"), ("ship", "ships"), ("fort", "forts"),
             ("regiment", "regiments"), ("campaign", "campaigns")],
            ["commanded", "defended", "captured", "led"]),
    "film": (["actor", "director", "writer"],
             [("film", "films"), ("play", "plays"), ("role", "roles"),
              ("series", "series"), ("script", "scripts")],
             ["directed", "produced", "filmed", "wrote"]),
    "science": (["chemist", "physicist", "botanist"],
                [("paper", "papers"), ("theory", "theories"), ("experiment", "experiments"),
                 ("discovery", "discoveries"), ("lecture", "lectures")],
                ["published", "proposed", "presented", "tested"]),
}
_ADJECTIVES = ("successful popular famous difficult important early later major notable "
               "remarkable short long").split()
_ADVERBS = "widely rarely often strongly quickly".split()
_OPINION = "critics audiences historians reviewers colleagues".split()


def _article(rng: np.random.Generator) -> list[str]:
  """One article: title, paragraphs and a section, each a line (blank lines between)."""
  female = bool(rng.integers(2))
  first = str(rng.choice(_FEMALE if female else _MALE))
  surname = str(rng.choice(_SURNAMES))
  he, his = ("she", "her") if female else ("he", "his")
  roles, nouns, verbs = _TOPICS[str(rng.choice(list(_TOPICS)))]
  pick = lambda xs: str(xs[rng.integers(len(xs))])  # noqa: E731

  def noun_phrase():
    singular, plural = nouns[rng.integers(len(nouns))]
    many = bool(rng.integers(2))
    return (plural if many else singular), many

  def sentence():
    kind = rng.integers(5)
    year = pick(_YEARS)
    if kind == 0:
      noun, many = noun_phrase()
      return ["In", year, ",", he, pick(verbs), "the", pick(_ADJECTIVES), noun, "."]
    if kind == 1:  # agreement across a relative clause
      noun, many = noun_phrase()
      return ["The", noun, "that", surname, pick(verbs), "in", year,
              "were" if many else "was", pick(_ADVERBS), "praised", "."]
    if kind == 2:  # agreement with the first noun, not the nearest
      noun, many = noun_phrase()
      other, _ = noun_phrase()
      return ["The", noun, "of", his, pick(_ADJECTIVES), other, "are" if many else "is",
              "remembered", "by", pick(_OPINION), "."]
    if kind == 3:
      return [surname, "moved", "to", pick(_PLACES), "in", year, "and", he, "stayed",
              "there", "."]
    return [pick(_OPINION), "described", his, "work", "as", pick(_ADJECTIVES), "and", first,
            surname, "as", "a", pick(_ADJECTIVES), pick(roles), "."]

  def paragraph(n):
    return " " + " ".join(w for _ in range(n) for w in sentence()) + " "

  nation = pick(_NATIONS)
  intro = [first, surname, "(", "born", pick(_YEARS), ")", "was",
           "an" if nation[0] in "AEIOU" else "a", nation, pick(roles), "from", pick(_PLACES),
           "."]
  return [f" = {first} {surname} = ", " ",
           " " + " ".join(intro) + paragraph(int(rng.integers(2, 5))), " ",
           " = = Career = = ", " ", paragraph(int(rng.integers(3, 7))), " "]


def write_synthetic_corpus(directory: str, *, articles: Sequence[int], seed: int) -> None:
  """Writes `wiki.{train,valid,test}.tokens` of `articles` = (train, valid, test) articles."""
  os.makedirs(directory, exist_ok=True)
  for index, (split, count) in enumerate(zip(SPLITS, articles)):
    rng = np.random.default_rng([seed, index])
    with open(split_file(directory, split), "w", encoding="utf-8") as f:
      f.write(" \n")
      for _ in range(count):
        f.writelines(line + "\n" for line in _article(rng))
