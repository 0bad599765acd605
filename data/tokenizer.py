"""SentencePiece subword tokenizer: deterministic training and a small encode/decode wrapper.

Id conventions (fixed for every model trained here, checked when a model is loaded)::

  PAD_ID = 0   padding; never produced by `encode`, skipped by `decode`
  BOS_ID = 1   prepended to the decoder input (`tgt_in`)
  EOS_ID = 2   appended to source and decoder target (`tgt_out`); `decode` stops here
  UNK_ID = 3   unknown piece

Pad is 0 so that zero-filled arrays are padding and `weights = ids != 0`-style masks work.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import sentencepiece as spm

from lite_jax.core.errors import UserError

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3


def train_sentencepiece(files: Sequence[str | os.PathLike], model_prefix: str | os.PathLike,
                        vocab_size: int, *, model_type: str = "bpe",
                        character_coverage: float = 1.0, max_sentence_length: int = 4192,
                        input_sentence_size: int = 0, seed: int = 0,
                        num_threads: int = 1) -> str:
  """Trains one joint vocabulary over all `files` (e.g. source + target training text).

  The result depends only on the inputs: `num_threads=1` and, with `input_sentence_size=0`,
  every sentence is used (no random subsampling). Logging is silenced.

  Args:
    files: text files, one sentence per line.
    model_prefix: writes `{model_prefix}.model` and `{model_prefix}.vocab`; parent folders
      are created.
    vocab_size: total pieces including the 4 special ids.
    model_type: 'bpe' (fairseq/subword-nmt style) or 'unigram'.
    character_coverage: fraction of characters covered; 1.0 for small alphabets.
    max_sentence_length: longer lines (in bytes) are skipped during training.
    input_sentence_size: if > 0, train on a random sample of this many sentences (for very
      large corpora), drawn with `seed`.
    seed: seed of that sample.
    num_threads: > 1 trains faster on large corpora but may change the result.

  Returns:
    The path of the `.model` file.
  """
  files = [os.fspath(f) for f in files]
  missing = [f for f in files if not os.path.isfile(f)]
  if not files or missing:
    raise UserError(f"SentencePiece training files not found: {missing or 'none given'}.")
  if model_type not in ("bpe", "unigram"):
    raise UserError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}.")
  model_prefix = os.fspath(model_prefix)
  os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
  # Only matters when sentences are subsampled; it makes that sample reproducible.
  spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
        input=files, model_prefix=model_prefix, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
        max_sentence_length=max_sentence_length, input_sentence_size=input_sentence_size,
        shuffle_input_sentence=input_sentence_size > 0, num_threads=num_threads,
        minloglevel=2)
  except RuntimeError as e:  # SentencePiece reports bad settings (e.g. vocab too large) so.
    raise UserError(f"SentencePiece training failed for {files}: {e}") from e
  return model_prefix + ".model"


class Tokenizer:
  """A trained SentencePiece model with the id conventions of this module.

  Picklable (it carries the serialized model, not a file handle), so it can be used inside
  multi-process data loaders.
  """

  def __init__(self, model_path: str | os.PathLike):
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
      raise UserError(f"SentencePiece model file not found: {model_path}.")
    with open(model_path, "rb") as f:
      self._load(f.read(), model_path)

  def _load(self, model_proto: bytes, origin: str) -> None:
    self._model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    ids = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id())
    if ids != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
      raise UserError(f"SentencePiece model {origin} has special ids (pad, bos, eos, unk) = "
                      f"{ids}, expected {(PAD_ID, BOS_ID, EOS_ID, UNK_ID)}; retrain it with "
                      "data.tokenizer.train_sentencepiece.")

  def __getstate__(self) -> dict[str, bytes]:
    return {"model_proto": self._model_proto}

  def __setstate__(self, state: dict[str, bytes]) -> None:
    self._load(state["model_proto"], "<pickled>")

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Piece ids of `text`, without BOS/EOS."""
    return self._sp.encode(text)

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` up to (excluding) the first EOS; PAD and BOS are skipped.

    Accepts a list or a 1-D integer array (e.g. a row of beam-search output).
    """
    pieces = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID):
        pieces.append(i)
    return self._sp.decode(pieces)
