"""SentencePiece training and the Tokenizer wrapper."""

import pickle

import pytest
import sentencepiece as spm

from data import synthetic_translation as st
from data import tokenizer as tk


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  directory = tmp_path_factory.mktemp("corpus")
  paths = st.write_corpus(directory, train=500, valid=20, test=20, seed=1)
  return directory, [paths["train"]["src"], paths["train"]["tgt"]], paths


@pytest.fixture(scope="module")
def model_path(corpus):
  directory, files, _ = corpus
  return tk.train_sentencepiece(files, directory / "spm" / "joint", vocab_size=200)


def test_round_trip_on_both_languages(model_path, corpus):
  tokenizer = tk.Tokenizer(model_path)
  assert tokenizer.vocab_size == 200
  for path in corpus[2]["test"].values():
    with open(path) as f:
      for line in f.read().splitlines():
        ids = tokenizer.encode(line)
        assert ids and not {tk.PAD_ID, tk.BOS_ID, tk.EOS_ID} & set(ids)
        assert tokenizer.decode(ids) == line


def test_special_ids_and_decode_conventions(model_path):
  tokenizer = tk.Tokenizer(model_path)
  assert (tk.PAD_ID, tk.BOS_ID, tk.EOS_ID, tk.UNK_ID) == (0, 1, 2, 3)
  ids = tokenizer.encode("the dog sees a cat")
  other = tokenizer.encode("the cat")
  # BOS and PAD are skipped, decoding stops at the first EOS.
  assert tokenizer.decode([tk.BOS_ID] + ids + [tk.EOS_ID] + other + [tk.PAD_ID] * 3) == (
      "the dog sees a cat")
  assert tokenizer.decode([tk.EOS_ID] + ids) == ""
  assert tk.UNK_ID in tokenizer.encode("ÿ")  # Not in the training alphabet.


def _pieces(path):
  processor = spm.SentencePieceProcessor(model_file=str(path))
  return [(processor.id_to_piece(i), processor.get_score(i))
          for i in range(processor.get_piece_size())]


def test_training_is_deterministic_and_unigram_works(corpus, model_path):
  directory, files, _ = corpus
  again = tk.train_sentencepiece(files, directory / "again", vocab_size=200)
  # Compare pieces and scores (the file also records its own path).
  assert _pieces(again) == _pieces(model_path)
  unigram = tk.Tokenizer(tk.train_sentencepiece(files, directory / "uni", vocab_size=150,
                                                model_type="unigram"))
  assert unigram.decode(unigram.encode("the big dog sees a cat")) == "the big dog sees a cat"


def test_pickle_round_trip(model_path):
  tokenizer = tk.Tokenizer(model_path)
  clone = pickle.loads(pickle.dumps(tokenizer))
  assert clone.encode("the queen helps") == tokenizer.encode("the queen helps")


def test_errors_are_one_clear_sentence(tmp_path, corpus):
  with pytest.raises(ValueError, match="model file not found: .*missing.model"):
    tk.Tokenizer(tmp_path / "missing.model")
  with pytest.raises(ValueError, match="training files not found"):
    tk.train_sentencepiece([tmp_path / "nope.txt"], tmp_path / "m", vocab_size=100)
  with pytest.raises(ValueError, match="Vocabulary size too high"):
    tk.train_sentencepiece(corpus[1], tmp_path / "m", vocab_size=100_000)
  with pytest.raises(ValueError, match="model_type"):
    tk.train_sentencepiece(corpus[1], tmp_path / "m", vocab_size=100, model_type="word")
