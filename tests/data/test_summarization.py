"""CNN/DailyMail readers (story files, url-list splits, fairseq-prepared text, tfds), article
truncation and the synthetic documents-of-facts generator."""

import os

import numpy as np
import pytest

from data import summarization, translation
from data.tokenizer import Tokenizer, train_sentencepiece
from lite_jax.core.errors import UserError

STORY = """(CNN) -- The first paragraph of the article.

A second paragraph without a final period

@highlight

First highlight

@highlight

Second highlight ends well.
"""


def test_parse_story_splits_article_and_highlights():
  article, highlights = summarization.parse_story(STORY)
  assert article == ("(CNN) -- The first paragraph of the article. "
                     "A second paragraph without a final period .")
  assert highlights == ["First highlight .", "Second highlight ends well."]


def test_url_hash_is_the_sha1_hex_of_the_url():
  # SHA-1("abc") from FIPS 180-1, appendix A.
  assert summarization.url_hash("abc\n") == "a9993e364706816aba3e25717850c26c9cd0d89d"


def _story_tree(root, splits):
  """cnn/ and dailymail/ story folders plus url_lists/ for `splits: {split: [(url, story)]}`."""
  for sub in summarization.STORY_DIRS:
    os.makedirs(root / sub)
  os.makedirs(root / "url_lists")
  names = {"train": "all_train.txt", "valid": "all_val.txt", "test": "all_test.txt"}
  for split, items in splits.items():
    with open(root / "url_lists" / names[split], "w") as f:
      for i, (url, story) in enumerate(items):
        f.write(url + "\n")
        folder = summarization.STORY_DIRS[i % 2]
        (root / folder / f"{summarization.url_hash(url)}.story").write_text(story)


def _story(n):
  return f"Article number {n} says things.\n\n@highlight\n\nSummary {n}\n"


def test_stories_follow_the_url_lists(tmp_path):
  """Each split holds exactly its listed urls' stories, in list order, from either folder;
  a story without highlights is skipped."""
  splits = {"train": [(f"http://cnn.com/{i}", _story(i)) for i in range(3)],
            "valid": [("http://dailymail.co.uk/v", _story(10)),
                      ("http://dailymail.co.uk/empty", "Only an article.\n")],
            "test": [("http://cnn.com/t2", _story(21)), ("http://cnn.com/t1", _story(20))]}
  _story_tree(tmp_path / "stories", splits)
  out = tmp_path / "text"
  summarization.write_stories_as_text(tmp_path / "stories", out)
  summarization.check_text_dir(out)
  assert (out / "train.source").read_text().splitlines() == [
      f"Article number {i} says things." for i in range(3)]
  assert (out / "valid.target").read_text().splitlines() == ["Summary 10 ."]
  assert (out / "test.target").read_text().splitlines() == ["Summary 21 .", "Summary 20 ."]


def test_missing_story_or_url_list_is_one_sentence(tmp_path):
  _story_tree(tmp_path, {"train": [("http://a", _story(0))], "valid": [("http://b", _story(1))],
                         "test": [("http://c", _story(2))]})
  os.remove(tmp_path / "cnn" / "stories" / f"{summarization.url_hash('http://a')}.story")
  with pytest.raises(UserError, match=r"1 urls of .*all_train.txt have no story file"):
    summarization.write_stories_as_text(tmp_path, tmp_path / "out")
  os.remove(tmp_path / "url_lists" / "all_test.txt")
  with pytest.raises(UserError, match="no url lists"):
    summarization.write_stories_as_text(tmp_path, tmp_path / "out")


def test_fairseq_prepared_layout_reads_back_through_array_record(tmp_path):
  text = tmp_path / "cnndm"
  summarization.write_synthetic_corpus(text, train=5, valid=2, test=3, seed=1)
  summarization.check_text_dir(text)
  translation.prepare_dataset(text, tmp_path / "tfds", summarization.SOURCE,
                              summarization.TARGET)
  test = summarization.prepared_source(tmp_path / "tfds", "test")
  sources = (text / "test.source").read_text().splitlines()
  targets = (text / "test.target").read_text().splitlines()
  assert [test[i] for i in range(len(test))] == [
      {"src": s, "tgt": t} for s, t in zip(sources, targets)]
  (text / "valid.target").write_text("one line\n")
  with pytest.raises(UserError, match="line counts differ"):
    summarization.check_text_dir(text)


def test_unprepared_tfds_dataset_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="No prepared tfds dataset 'cnn_dailymail'"):
    summarization.catalog_source("cnn_dailymail", "test", data_dir=tmp_path)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  directory = tmp_path_factory.mktemp("spm")
  corpus = directory / "corpus.txt"
  docs = summarization.generate_documents(300, seed=3)
  corpus.write_text("\n".join(d for pair in docs for d in pair) + "\n")
  return Tokenizer(train_sentencepiece([corpus], directory / "bpe", 120))


def test_truncation_keeps_the_longest_whole_word_prefix_within_the_limit(tokenizer):
  """Checked by brute force: the kept words are the longest word prefix whose encoding has
  at most `max_tokens` pieces, and its pieces are the article's first pieces."""
  article = summarization.generate_documents(1, seed=9)[0][0]
  words = article.split()
  full = tokenizer.encode(article)
  for max_tokens in (1, 7, 30, len(full) - 1, len(full), len(full) + 5):
    cut = summarization.truncate_article(tokenizer, article, max_tokens)
    lengths = [len(tokenizer.encode(" ".join(words[:k]))) for k in range(len(words) + 1)]
    k = max(k for k, n in enumerate(lengths) if n <= max_tokens)
    assert cut == " ".join(words[:k])
    ids = tokenizer.encode(cut)
    assert len(ids) <= max_tokens and ids == full[:len(ids)]
  assert summarization.truncate_article(tokenizer, article, len(full)) == article


def test_summary_source_truncates_articles_only(tokenizer):
  long_target = "a   summary\nwith  spaces ."
  records = [{"src": "notably , the dog sees a cat .  also , the   bird sings .",
              "tgt": long_target}]
  whole = summarization.SummarySource(records)[0]
  assert whole == {"src": "notably , the dog sees a cat . also , the bird sings .",
                   "tgt": "a summary with spaces ."}
  cut = summarization.SummarySource(records, tokenizer, 5)[0]
  assert len(tokenizer.encode(cut["src"])) <= 5 and whole["src"].startswith(cut["src"])
  assert cut["tgt"] == whole["tgt"]
  with pytest.raises(ValueError, match="needs the tokenizer"):
    summarization.SummarySource(records, None, 5)


# --- The synthetic task ----------------------------------------------------------------


def test_synthetic_documents_are_deterministic():
  assert summarization.generate_documents(50, seed=4) == summarization.generate_documents(
      50, seed=4)
  assert summarization.generate_documents(50, seed=4) != summarization.generate_documents(
      50, seed=5)


def test_synthetic_documents_have_one_marked_key_fact_at_a_random_position():
  """Every document has 4-6 sentences and exactly one opens with the key marker; the
  summary is that sentence without its marker; distractor markers are common; the key fact
  comes first in about 1 / 5 of the documents, so Lead-1 is usually wrong."""
  docs = summarization.generate_documents(1000, seed=0)
  positions, distractors = [], 0
  for document, summary in docs:
    sentences = [s + " ." for s in document[:-2].split(" . ")]
    assert document.endswith(" .") and 4 <= len(sentences) <= 6
    keys = [i for i, s in enumerate(sentences) if s.startswith("notably , ")]
    assert len(keys) == 1
    assert sentences[keys[0]] == "notably , " + summary
    assert summary.endswith(" .") and 5 <= len(summary.split()) - 1 <= 10
    positions.append(keys[0])
    distractors += sum(s.split(" ")[0] in summarization.DISTRACTOR_MARKERS for s in sentences)
  first = np.mean(np.asarray(positions) == 0)
  assert 0.15 < first < 0.28, first
  assert max(positions) == 5
  assert distractors > 1000


def test_synthetic_corpus_files(tmp_path):
  summarization.write_synthetic_corpus(tmp_path, train=6, valid=2, test=3, seed=2)
  docs = summarization.generate_documents(11, seed=2)
  assert (tmp_path / "valid.source").read_text().splitlines() == [d for d, _ in docs[6:8]]
  assert (tmp_path / "test.target").read_text().splitlines() == [s for _, s in docs[8:]]
