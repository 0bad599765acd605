"""Parallel text for machine translation: tfds builder -> ArrayRecord -> grain batches.

Preparing (once)::

  prepare_dataset('wmt_text/', 'tfds_data/', 'en', 'de')  # reads {train,valid,test}.{en,de}
  source = data_source('tfds_data/', 'en', 'de', 'train')
  source = catalog_source('wmt14_translate/fr-en', 'train', 'en', 'fr')  # tfds catalog

Training batches (checkpointable, fixed shapes from a small bucket set)::

  it = iter(make_batches(source, tokenizer, batch_tokens=4096, max_len=256))
  batch = next(it)          # {'src', 'tgt_in', 'tgt_out', 'weights'}
  state = it.get_state()    # JSON-serializable; it.set_state(state) resumes exactly here

Evaluation batches (every example once, in order, with the raw references for BLEU)::

  for batch, refs in eval_batches(source, tokenizer, batch_size=64, max_len=256): ...

Token layout of one example (ids from `data.tokenizer`)::

  src     = x_1 .. x_n EOS            (fairseq appends EOS to the source)
  tgt_in  = BOS y_1 .. y_m
  tgt_out = y_1 .. y_m EOS
  weights = 1 on the m + 1 positions of tgt_out, 0 on padding (PAD = 0)

Nothing here imports TensorFlow: tfds writes and reads ArrayRecord without it.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import os
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from lite_jax.core.errors import UserError

SPLITS = ("train", "valid", "test")
DATASET_NAME = "parallel_text"

# ----------------------------------------------------------------------------------------
# Local text files -> ArrayRecord (tfds builder)
# ----------------------------------------------------------------------------------------


def _count_lines(path: str) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for _ in f)


def check_parallel_files(text_dir: str | os.PathLike, src_lang: str,
                         tgt_lang: str) -> dict[str, tuple[str, str]]:
  """Checks that `{split}.{src_lang}` / `{split}.{tgt_lang}` exist, are non-empty, parallel.

  Returns:
    `{split: (src_path, tgt_path)}` for split in train/valid/test.

  Raises:
    UserError (a ValueError): one sentence naming the offending file(s).
  """
  paths = {}
  for split in SPLITS:
    src, tgt = (os.path.join(os.fspath(text_dir), f"{split}.{lang}")
                for lang in (src_lang, tgt_lang))
    for path in (src, tgt):
      if not os.path.isfile(path):
        raise UserError(f"Missing parallel text file {path} (expected {{train,valid,test}}"
                        f".{{{src_lang},{tgt_lang}}} in {text_dir}).")
    num_src, num_tgt = _count_lines(src), _count_lines(tgt)
    for path, count in ((src, num_src), (tgt, num_tgt)):
      if count == 0:
        raise UserError(f"Parallel text file {path} is empty.")
    if num_src != num_tgt:
      raise UserError(f"Source and target line counts differ: {src} has {num_src} lines but "
                      f"{tgt} has {num_tgt}.")
    paths[split] = (src, tgt)
  return paths


@dataclasses.dataclass
class ParallelTextConfig(tfds.core.BuilderConfig):
  """One language pair; the config name is `{src_lang}-{tgt_lang}`."""
  src_lang: str = "src"
  tgt_lang: str = "tgt"


def _config(src_lang: str, tgt_lang: str) -> ParallelTextConfig:
  return ParallelTextConfig(
      name=f"{src_lang}-{tgt_lang}", src_lang=src_lang, tgt_lang=tgt_lang,
      description=f"{src_lang} -> {tgt_lang} from local {{train,valid,test}}."
                  f"{{{src_lang},{tgt_lang}}} files.")


class ParallelText(tfds.core.GeneratorBasedBuilder):
  """Sentence-aligned text files in the user's `manual_dir` -> {'src', 'tgt'} examples.

  Examples keep the order of the files (`disable_shuffling`), so evaluation output line i
  belongs to input line i. Any language pair works: pairs not listed in `BUILDER_CONFIGS`
  are passed as `config=ParallelTextConfig(...)` (see `prepare_dataset`).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [_config(*pair.split("-")) for pair in
                     ("src-tgt", "de-en", "en-de", "en-fr", "fr-en")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put tokenized, sentence-aligned text files {train,valid,test}.{SRC,TGT} (one sentence "
      "per line, same line count per split) in the manual dir.")

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls) -> None:
    # Nothing is downloaded, so there are no checksums to look up. Looking them up would make
    # tfds 4.9.10 import `importlib_resources`, which it does not declare on Python >= 3.9.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Parallel sentences from local text files.",
        features=tfds.features.FeaturesDict({"src": tfds.features.Text(),
                                             "tgt": tfds.features.Text()}),
        supervised_keys=("src", "tgt"),
        disable_shuffling=True)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = check_parallel_files(dl_manager.manual_dir, self.builder_config.src_lang,
                                 self.builder_config.tgt_lang)
    return {split: self._generate_examples(*paths) for split, paths in files.items()}

  def _generate_examples(self, src_path: str, tgt_path: str):
    with open(src_path, encoding="utf-8") as src, open(tgt_path, encoding="utf-8") as tgt:
      for i, (x, y) in enumerate(zip(src, tgt)):
        yield i, {"src": x.rstrip("\n"), "tgt": y.rstrip("\n")}


def _builder(data_dir: str | os.PathLike, src_lang: str, tgt_lang: str) -> ParallelText:
  config = _config(src_lang, tgt_lang)
  # tfds refuses a config object named like a predefined one; pass those by name.
  return ParallelText(config=config.name if config.name in ParallelText.builder_configs
                      else config, data_dir=os.fspath(data_dir), file_format="array_record")


def prepare_dataset(text_dir: str | os.PathLike, data_dir: str | os.PathLike, src_lang: str,
                    tgt_lang: str) -> None:
  """Writes `{train,valid,test}.{src_lang,tgt_lang}` under `data_dir` as ArrayRecord.

  Idempotent: if the dataset is already prepared under `data_dir`, nothing is rebuilt (delete
  `data_dir/parallel_text/{src_lang}-{tgt_lang}` after changing the text files).

  Raises:
    UserError: a text file is missing or empty, or a split's line counts differ.
  """
  builder = _builder(data_dir, src_lang, tgt_lang)
  if builder.is_prepared():
    return
  check_parallel_files(text_dir, src_lang, tgt_lang)  # Fail before tfds creates anything.
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(text_dir)))


# ----------------------------------------------------------------------------------------
# Reading: random-access sources of {'src': str, 'tgt': str}
# ----------------------------------------------------------------------------------------


class TranslationSource:
  """Random-access view of a tfds data source as `{'src': str, 'tgt': str}` records.

  Works as a grain data source (`len`, `[i]`). `src_key`/`tgt_key` pick the features, e.g.
  'en'/'fr' for `wmt14_translate/fr-en`, which gives the translation direction.
  """

  def __init__(self, source: Sequence[Mapping[str, Any]], src_key: str, tgt_key: str):
    self._source = source
    self._src_key = src_key
    self._tgt_key = tgt_key

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, str]:
    record = self._source[index]
    return {"src": _as_text(record[self._src_key]), "tgt": _as_text(record[self._tgt_key])}

  def __repr__(self) -> str:
    return (f"TranslationSource({self._source!r}, src_key={self._src_key!r}, "
            f"tgt_key={self._tgt_key!r})")


def _as_text(value: str | bytes) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value


def catalog_source(name: str, split: str, src_key: str, tgt_key: str, *,
                   data_dir: str | os.PathLike | None = None) -> TranslationSource:
  """A prepared tfds dataset (`tfds build NAME --file_format=array_record`) as src/tgt records.

  Never downloads: the dataset must already be prepared under `data_dir` (default: tfds's).

  Args:
    name: tfds name with config, e.g. 'wmt14_translate/fr-en'.
    split: tfds split, e.g. 'train', 'validation', 'test[:100]'.
    src_key: feature holding the source sentence, e.g. 'en'.
    tgt_key: feature holding the target sentence, e.g. 'fr'.
  """
  kwargs = {"data_dir": os.fspath(data_dir)} if data_dir is not None else {}
  not_prepared = UserError(
      f"No prepared tfds dataset {name!r} under {data_dir or 'the default tfds data dir'}; "
      f"build it first (`tfds build {name.split('/')[0]} --file_format=array_record`, or "
      "prepare_dataset for local text files).")
  try:
    # Without the builder's code at hand, tfds reads a prepared dataset from its files.
    builder = tfds.builder(name, file_format="array_record", **kwargs)
  except tfds.core.DatasetNotFoundError as e:
    raise not_prepared from e
  if not builder.is_prepared():
    raise not_prepared
  features = set(builder.info.features.keys())
  if not {src_key, tgt_key} <= features:
    raise UserError(f"tfds dataset {name!r} has features {sorted(features)}, not "
                    f"src_key={src_key!r} and tgt_key={tgt_key!r}.")
  return TranslationSource(builder.as_data_source(split=split), src_key, tgt_key)


def data_source(data_dir: str | os.PathLike, src_lang: str, tgt_lang: str,
                split: str) -> TranslationSource:
  """A split of a dataset written by `prepare_dataset`."""
  return catalog_source(f"{DATASET_NAME}/{src_lang}-{tgt_lang}", split, "src", "tgt",
                        data_dir=data_dir)


# ----------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------


def default_bucket_boundaries(max_len: int) -> list[int]:
  """Bucket lengths 8, 16, 24, 32, 48, 64, 96, 128, ... below `max_len`, then `max_len`.

  Multiples of 8 (tile-friendly) growing by ~1.5x, so padding waste stays under ~1/3 while
  the number of shapes (one jit compile each) grows only logarithmically with `max_len`.
  """
  boundaries = [8, 16, 24]
  while boundaries[-1] < max_len:
    boundaries.append(boundaries[-2] * 2)
  return sorted({b for b in boundaries if b < max_len} | {max_len})


def _validated_boundaries(max_len: int, bucket_boundaries: Sequence[int] | None) -> list[int]:
  if max_len < 2:
    raise UserError(f"max_len must be >= 2 (one token plus EOS), got {max_len}.")
  if bucket_boundaries is None:
    return default_bucket_boundaries(max_len)
  boundaries = [int(b) for b in bucket_boundaries]
  if (not boundaries or boundaries[0] < 1 or boundaries[-1] < max_len
      or any(a >= b for a, b in zip(boundaries, boundaries[1:]))):
    raise UserError(f"bucket_boundaries must be strictly increasing positive lengths ending "
                    f"at or above max_len={max_len}, got {list(bucket_boundaries)}.")
  return boundaries


def bucket_shapes(*, batch_tokens: int, max_len: int,
                  bucket_boundaries: Sequence[int] | None = None,
                  batch_multiple: int = 1) -> list[tuple[int, int]]:
  """The `(batch_size, length)` of each bucket: every batch `make_batches` can produce.

  `batch_size = batch_tokens // length`, rounded down to a multiple of `batch_multiple`
  (e.g. the number of data-parallel devices), so that batches shard evenly.
  """
  if batch_multiple < 1:
    raise UserError(f"batch_multiple must be >= 1, got {batch_multiple}.")
  shapes = []
  for length in _validated_boundaries(max_len, bucket_boundaries):
    batch_size = batch_tokens // length // batch_multiple * batch_multiple
    if batch_size == 0:
      raise UserError(f"batch_tokens={batch_tokens} is too small for bucket length {length} "
                      f"with batch_multiple={batch_multiple}; use at least "
                      f"{length * batch_multiple}.")
    shapes.append((batch_size, length))
  return shapes


def _encode(record: Mapping[str, str | bytes], tokenizer: Tokenizer) -> dict[str, np.ndarray]:
  """{'src': [n + 1] ids ending in EOS, 'tgt': [m] ids (BOS/EOS added at batching)}."""
  src = tokenizer.encode(_as_text(record["src"])) + [EOS_ID]
  return {"src": np.asarray(src, np.int32),
          "tgt": np.asarray(tokenizer.encode(_as_text(record["tgt"])), np.int32)}


def _example_length(example: Mapping[str, np.ndarray]) -> int:
  """Padded length the example needs: src with EOS, tgt with BOS (tgt_in) or EOS (tgt_out)."""
  return max(len(example["src"]), len(example["tgt"]) + 1)


def _collate(examples: Sequence[Mapping[str, np.ndarray]], batch_size: int,
             length: int) -> dict[str, np.ndarray]:
  """Pads `examples` (at most `batch_size`, each fitting in `length`) into one batch.

  Rows past `len(examples)` are padding rows: all PAD with zero weights.

  Returns:
    src, tgt_in, tgt_out: int32 [batch_size, length]; weights: float32 [batch_size, length].
  """
  batch = {k: np.full((batch_size, length), PAD_ID, np.int32)
           for k in ("src", "tgt_in", "tgt_out")}
  weights = np.zeros((batch_size, length), np.float32)
  for row, example in enumerate(examples):
    src, tgt = example["src"], example["tgt"]
    batch["src"][row, :len(src)] = src
    batch["tgt_in"][row, 0] = BOS_ID
    batch["tgt_in"][row, 1:len(tgt) + 1] = tgt
    batch["tgt_out"][row, :len(tgt)] = tgt
    batch["tgt_out"][row, len(tgt)] = EOS_ID
    weights[row, :len(tgt) + 1] = 1.0
  batch["weights"] = weights
  return batch


class _BucketBatchIterator(grain.DatasetIterator):
  """Groups examples by length bucket and emits a batch whenever a bucket is full.

  The state holds the parent's position plus the examples waiting in partly filled buckets
  (as lists of ints, JSON-serializable), so a restored iterator emits exactly the batches
  the original would have.
  """

  def __init__(self, parent: grain.DatasetIterator, shapes: Sequence[tuple[int, int]],
               pad_remainder: bool, process_index: int, process_count: int):
    super().__init__(parent)
    self._shapes = shapes
    self._lengths = [length for _, length in shapes]
    self._pad_remainder = pad_remainder
    self._process_index = process_index
    self._process_count = process_count
    self._buckets: list[list[dict[str, np.ndarray]]] = [[] for _ in shapes]
    self._parent_exhausted = False

  def _emit(self, bucket: int) -> dict[str, np.ndarray]:
    batch_size, length = self._shapes[bucket]
    batch = _collate(self._buckets[bucket], batch_size, length)
    self._buckets[bucket] = []
    rows = batch_size // self._process_count
    start = self._process_index * rows
    return {k: v[start:start + rows] for k, v in batch.items()}

  def __next__(self) -> dict[str, np.ndarray]:
    while not self._parent_exhausted:
      try:
        example = next(self._parent)
      except StopIteration:
        self._parent_exhausted = True
        break
      bucket = bisect.bisect_left(self._lengths, _example_length(example))
      self._buckets[bucket].append(example)
      if len(self._buckets[bucket]) == self._shapes[bucket][0]:
        return self._emit(bucket)
    # End of data: the partly filled buckets become padded batches, or are dropped.
    if self._pad_remainder:
      for bucket, examples in enumerate(self._buckets):
        if examples:
          return self._emit(bucket)
    raise StopIteration

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(),
            "parent_exhausted": self._parent_exhausted,
            "buckets": [[[e["src"].tolist(), e["tgt"].tolist()] for e in examples]
                        for examples in self._buckets]}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._parent_exhausted = bool(state["parent_exhausted"])
    self._buckets = [[{"src": np.asarray(src, np.int32), "tgt": np.asarray(tgt, np.int32)}
                      for src, tgt in examples] for examples in state["buckets"]]


class _BucketBatchIterDataset(grain.IterDataset):
  """`_BucketBatchIterator` over a parent `IterDataset` of encoded examples."""

  def __init__(self, parent: grain.IterDataset, shapes: Sequence[tuple[int, int]],
               pad_remainder: bool, process_index: int, process_count: int):
    super().__init__(parent)
    self._shapes = list(shapes)
    self._pad_remainder = pad_remainder
    self._process_index = process_index
    self._process_count = process_count

  def __iter__(self) -> _BucketBatchIterator:
    return _BucketBatchIterator(self._parent.__iter__(), self._shapes, self._pad_remainder,
                                self._process_index, self._process_count)

  def __str__(self) -> str:
    return f"BucketBatchIterDataset(shapes={self._shapes})"


def _fits(example: Mapping[str, np.ndarray], max_len: int) -> bool:
  return _example_length(example) <= max_len


def make_batches(source: Sequence[Mapping[str, str | bytes]], tokenizer: Tokenizer, *,
                 batch_tokens: int, max_len: int,
                 bucket_boundaries: Sequence[int] | None = None, batch_multiple: int = 1,
                 shuffle: bool = True, seed: int = 0, num_epochs: int | None = None,
                 drop_remainder: bool = True, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 0) -> grain.IterDataset:
  """Training batches, length-bucketed into a fixed set of shapes.

  Examples whose padded length (`max(len(src) + 1, len(tgt) + 1)` tokens) exceeds `max_len`
  are dropped, as fairseq does with `--skip-invalid-size-inputs-valid-test`. Each remaining
  example goes to the smallest bucket length that fits it; a bucket's batch is emitted when it
  holds `batch_size` examples, so every batch has one of the `bucket_shapes(...)` shapes and
  a jitted step compiles at most `len(bucket_shapes(...))` times.

  Args:
    source: random-access records {'src': str|bytes, 'tgt': str|bytes} (e.g. `data_source`).
    tokenizer: encodes both sides (a joint vocabulary).
    batch_tokens: token budget per global batch (padded `batch_size * length`).
    max_len: longest padded length kept; also the largest bucket by default.
    bucket_boundaries: increasing bucket lengths, the last >= max_len (default:
      `default_bucket_boundaries(max_len)`).
    batch_multiple: every batch size is a multiple of this (number of data-parallel devices).
    shuffle: shuffle globally, differently in each epoch (seeded).
    seed: shuffle seed in [0, 2**32).
    num_epochs: passes over the data; None repeats forever. Epochs flow into each other
      (a bucket may mix the end of one epoch with the start of the next).
    drop_remainder: at the end of the last epoch, drop the partly filled buckets; if False,
      emit them padded with zero-weight rows (same shapes).
    process_index, process_count: multi-host input. Every process runs the same pipeline
      (so all processes agree on each step's bucket shape) and keeps its contiguous
      `batch_size // process_count` rows of each global batch.
    num_threads: reader threads that prefetch and tokenize examples. 0 reads inline, which
      was fastest on a 2-core host (the work is GIL-bound); more threads help when records
      come from remote storage.

  Returns:
    A grain `IterDataset`; `iter(...)` gives a checkpointable iterator (`get_state()` /
    `set_state()`, JSON-serializable) of dicts, with B = batch_size // process_count and
    L the bucket length::

      src: int32 [B, L], tgt_in: int32 [B, L], tgt_out: int32 [B, L], weights: float32 [B, L]
  """
  shapes = bucket_shapes(batch_tokens=batch_tokens, max_len=max_len,
                         bucket_boundaries=bucket_boundaries, batch_multiple=batch_multiple)
  if not 0 <= process_index < process_count:
    raise UserError(f"process_index must be in [0, {process_count}), got {process_index}.")
  uneven = [b for b, _ in shapes if b % process_count]
  if uneven:
    raise UserError(f"Batch sizes {uneven} do not split over {process_count} processes; make "
                    "batch_multiple a multiple of the process count.")
  if len(source) == 0:
    raise UserError("The translation source is empty.")
  dataset = grain.MapDataset.source(source)
  if shuffle:
    dataset = dataset.shuffle(seed=seed)
  if num_epochs != 1:
    # Repeating after the shuffle reseeds it with the epoch: each epoch has its own order.
    dataset = dataset.repeat(num_epochs)
  dataset = (dataset.map(functools.partial(_encode, tokenizer=tokenizer))
             .filter(functools.partial(_fits, max_len=max_len)))
  examples = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                       prefetch_buffer_size=256))
  return _BucketBatchIterDataset(examples, shapes, not drop_remainder, process_index,
                                 process_count)


def _encode_for_eval(record: Mapping[str, str | bytes], tokenizer: Tokenizer,
                     max_len: int) -> dict[str, Any]:
  """`_encode`, truncated to fit `max_len` (keeping the source EOS), plus the raw reference."""
  example = _encode(record, tokenizer)
  src = example["src"]
  if len(src) > max_len:
    src = np.concatenate([src[:max_len - 1], [EOS_ID]]).astype(np.int32)
  return {"src": src, "tgt": example["tgt"][:max_len - 1], "ref": _as_text(record["tgt"])}


def _collate_eval(examples: Sequence[Mapping[str, Any]], batch_size: int,
                  boundaries: Sequence[int]) -> tuple[dict[str, np.ndarray], list[str]]:
  longest = max(_example_length(e) for e in examples)
  length = boundaries[bisect.bisect_left(boundaries, longest)]
  batch = _collate(examples, batch_size, length)
  batch["mask"] = np.arange(batch_size) < len(examples)
  return batch, [e["ref"] for e in examples]


def eval_batches(source: Sequence[Mapping[str, str | bytes]], tokenizer: Tokenizer,
                 batch_size: int, max_len: int, *,
                 bucket_boundaries: Sequence[int] | None = None,
                 num_threads: int = 0) -> Iterator[tuple[dict[str, np.ndarray], list[str]]]:
  """Every example exactly once, in source order, for loss and BLEU evaluation.

  Nothing is dropped: an example longer than `max_len` is truncated (its source keeps the
  final EOS), while its raw reference string stays whole for BLEU. The last batch is padded
  with dummy rows (`mask` False, weights 0).

  Args:
    source: random-access records {'src', 'tgt'}, e.g. `data_source(..., 'test')`.
    tokenizer: the training tokenizer.
    batch_size: rows per batch (a multiple of the data-parallel device count).
    max_len: padded length cap.
    bucket_boundaries: None pads every batch to `max_len` (one compiled shape); a list (e.g.
      `default_bucket_boundaries(max_len)`) pads each batch to the smallest boundary that
      fits its longest example (fewer padded tokens, a few more shapes).
    num_threads: reader threads (see `make_batches`).

  Yields:
    `(batch, refs)`: batch has src, tgt_in, tgt_out int32 [batch_size, L], weights float32
    [batch_size, L] and mask bool [batch_size] (True for real rows); refs are the raw target
    strings of the real rows, in order.
  """
  if batch_size < 1:
    raise UserError(f"batch_size must be >= 1, got {batch_size}.")
  boundaries = _validated_boundaries(max_len, bucket_boundaries or [max_len])
  dataset = (grain.MapDataset.source(source)
             .map(functools.partial(_encode_for_eval, tokenizer=tokenizer, max_len=max_len))
             .batch(batch_size, batch_fn=functools.partial(
                 _collate_eval, batch_size=batch_size, boundaries=boundaries)))
  yield from dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                       prefetch_buffer_size=16))
