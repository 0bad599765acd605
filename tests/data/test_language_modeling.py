"""WikiText data: tfds builder on local files, fairseq vocabulary order, blocks, eval windows."""

import os

import numpy as np
import pytest

from data import language_modeling as lm
from lite_jax.core.errors import UserError

TRAIN = [" = Title = ", " ", " b a c b <unk> b ", " a c c "]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  text = tmp_path_factory.mktemp("text")
  for split, lines in {"train": TRAIN, "valid": [" a d b "], "test": [" c ", " "]}.items():
    with open(lm.split_file(str(text), split), "w", encoding="utf-8") as f:
      f.writelines(line + "\n" for line in lines)
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  lm.prepare_dataset(str(text), data_dir)
  return str(text), data_dir


def test_builder_keeps_lines_in_order(prepared):
  _, data_dir = prepared
  assert list(lm.split_lines(data_dir, "train")) == TRAIN
  assert list(lm.split_lines(data_dir, "test")) == [" c ", " "]


def test_vocabulary_is_fairseq_ordered(prepared):
  _, data_dir = prepared
  vocab = lm.build_vocabulary(lm.split_lines(data_dir, "train"))
  # Specials first; then by count (b 3, c 3, a 2, = 2, Title 1), ties alphabetical; padded to 8.
  assert vocab.symbols[:9] == ["<s>", "<pad>", "</s>", "<unk>", "b", "c", "=", "a", "Title"]
  assert len(vocab) == 16 and vocab.symbols[-1] == "madeupword0006"
  assert vocab.counts[2] == 4 and vocab.counts[3] == 1  # one </s> per line; the file's <unk>
  ids = lm.encode_lines(lm.split_lines(data_dir, "valid"), vocab)
  np.testing.assert_array_equal(ids, [7, lm.UNK_ID, 4, lm.EOS_ID])  # unseen 'd' -> <unk>
  assert vocab.decode(ids) == "a <unk> b </s>"


def test_vocabulary_round_trips_through_dict_txt(prepared, tmp_path):
  _, data_dir = prepared
  vocab = lm.build_vocabulary(lm.split_lines(data_dir, "train"))
  vocab.save(str(tmp_path / "dict.txt"))
  loaded = lm.Vocabulary.load(str(tmp_path / "dict.txt"))
  assert loaded.symbols == vocab.symbols


def test_blocks_are_contiguous_and_shifted():
  stream = np.arange(10, 21, dtype=np.int32)  # 11 tokens -> 2 blocks of 5, one token dropped
  blocks = lm.TokenBlocks(stream, 5)
  assert len(blocks) == 2
  np.testing.assert_array_equal(blocks[0]["targets"], [10, 11, 12, 13, 14])
  np.testing.assert_array_equal(blocks[0]["inputs"], [lm.EOS_ID, 10, 11, 12, 13])
  np.testing.assert_array_equal(blocks[1]["inputs"], [14, 15, 16, 17, 18])
  batches = lm.train_batches(stream, tokens_per_sample=5, batch_size=2, seed=0)
  first = batches[0]
  assert first["inputs"].shape == (2, 5)
  assert sorted(first["targets"][:, 0].tolist()) == [10, 15]  # one epoch = both blocks
  np.testing.assert_array_equal(batches[3]["targets"], batches[3]["targets"])  # by index


def test_eval_windows_score_each_token_once_with_context():
  stream = np.arange(100, 123, dtype=np.int32)  # 23 tokens
  batches = list(lm.eval_windows(stream, tokens_per_sample=8, context_window=5, batch_size=3))
  assert lm.num_windows(23, 8, 5) == 8 and len(batches) == 3
  scored, contexts = [], []
  for batch in batches:
    for inputs, targets, weights in zip(batch["inputs"], batch["targets"], batch["weights"]):
      real = np.flatnonzero(weights)
      scored += targets[real].tolist()
      # inputs are the stream shifted right by one wherever a target is real
      for j in real:
        np.testing.assert_array_equal(inputs[1:j + 1], targets[:j])
      contexts += real.tolist()
  assert scored == stream.tolist()
  # Once the stream has `context_window` tokens before a window, each target has at least
  # that many (the first two windows start at the stream's start).
  assert contexts[:6] == [0, 1, 2, 3, 4, 5] and min(contexts[6:]) == 5


def test_missing_file_is_one_sentence(tmp_path):
  with pytest.raises(UserError, match="missing .*wiki.train.tokens"):
    lm.check_text_files(str(tmp_path))


def test_synthetic_corpus_is_deterministic_with_long_range_structure(tmp_path):
  lm.write_synthetic_corpus(str(tmp_path / "a"), articles=(30, 2, 2), seed=3)
  lm.write_synthetic_corpus(str(tmp_path / "b"), articles=(30, 2, 2), seed=3)
  texts = []
  for name in ("a", "b"):
    with open(os.path.join(tmp_path, name, "wiki.train.tokens"), encoding="utf-8") as f:
      texts.append(f.read())
  assert texts[0] == texts[1]
  words = texts[0].split()
  # Pronouns follow the article subject's gender; the same word pair is followed by both
  # pronouns across articles, so a bigram model cannot know which.
  after_comma = {words[i + 1] for i in range(len(words) - 1) if words[i] == ","}
  assert {"he", "she"} <= after_comma
