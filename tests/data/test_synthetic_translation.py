"""The synthetic corpus: determinism, split hygiene, and the grammar rules it promises."""

import os

import pytest

from data import synthetic_translation as st


def test_same_seed_same_pairs_other_seed_other_pairs():
  assert st.generate_pairs(50, seed=3) == st.generate_pairs(50, seed=3)
  assert st.generate_pairs(50, seed=3) != st.generate_pairs(50, seed=4)


def test_hand_checked_examples():
  # Checked word by word against `st.lexicon()`: window f, picture n, castle f, train n,
  # letter f, book m, lion m, bear m, road n, dog n, queen n (genders are arbitrary, as in
  # German). See the module docstring for the rules.
  pairs = st.generate_pairs(12, seed=7)
  assert pairs[0] == (
      "the windows sell the small picture that knows the castle rarely",
      # subject (f pl), adverb moved forward, object (n sg: `le`, adjective -um after the
      # noun), relative pronoun n sg `ke`, verb-final relative clause, plural main verb -ent.
      "li mibonis rosono le suler namaum ke la degin vimalet fuponent")
  assert pairs[5] == (
      "the train sells the letter that keeps a book without the short quiet lion",
      # `a book` is a masculine singular object: accusative `unen`; the PP noun `lion` is
      # masculine but not an object, so it keeps nominative `lo`; singular verb -et at the end.
      "le loki la zovi ka unen metin liraet vo lo paba meloro zuriro fuponet")
  assert pairs[9] == (
      "the bears call the roads that help those brave dogs without the queen",
      # Plural relative pronoun `ki`; the relative verb agrees with `roads` (plural -ent).
      "li ruturen li nipuer ki queli pokuser gukolen zepinent vo le bega masoent")


def _source_subject(words):
  """(adjectives, noun lemma, plural) of the source subject noun phrase."""
  lexicon = st.lexicon()
  for i, word in enumerate(words[1:], start=1):
    for lemma, plural in ((word, False), (word[:-1], True)):
      if lemma in lexicon.noun_stem and (word == lemma + "s") == plural:
        return words[1:i], lemma, plural
  raise AssertionError(f"no subject noun in {words}")


def test_agreement_and_reordering_rules_hold_on_every_pair():
  lexicon = st.lexicon()
  verb_forms = {stem + "et": False for stem in lexicon.verb_stem.values()}
  verb_forms |= {stem + "ent": True for stem in lexicon.verb_stem.values()}
  for source, target in st.generate_pairs(300, seed=11):
    src, tgt = source.split(), target.split()
    adjectives, noun, plural = _source_subject(src)
    gender = lexicon.noun_gender[noun]
    # The noun comes right after the determiner, before its adjectives (SVO -> SOV).
    suffix = {"m": "en", "f": "is", "n": "er"}[gender] if plural else ""
    assert tgt[1] == lexicon.noun_stem[noun] + suffix, (source, target)
    adj_suffix = {("m", False): "o", ("f", False): "a", ("n", False): "um",
                  ("m", True): "i", ("f", True): "as", ("n", True): "en"}[gender, plural]
    assert tgt[2:2 + len(adjectives)] == [lexicon.adjective_stem[a] + adj_suffix
                                          for a in adjectives], (source, target)
    if src[0] == "the":
      assert tgt[0] == ("li" if plural else {"m": "lo", "f": "la", "n": "le"}[gender])
    # The main verb is last and agrees in number with the subject.
    assert verb_forms.get(tgt[-1]) == plural, (source, target)


def test_target_is_a_function_of_the_source_and_lengths_are_bounded():
  translations = {}
  for source, target in st.generate_pairs(3000, seed=0):
    assert translations.setdefault(source, target) == target
    assert 5 <= len(source.split()) <= 21 and 5 <= len(target.split()) <= 21
  source_vocab = {w for s in translations for w in s.split()}
  target_vocab = {w for t in translations.values() for w in t.split()}
  assert 150 <= len(source_vocab) <= 300 and 200 <= len(target_vocab) <= 500


def test_write_corpus_line_counts_and_disjoint_splits(tmp_path):
  paths = st.write_corpus(tmp_path, train=400, valid=50, test=60, seed=5)
  sizes = {"train": 400, "valid": 50, "test": 60}
  sources = {}
  for split, size in sizes.items():
    assert os.path.basename(paths[split]["src"]) == f"{split}.src"
    assert os.path.basename(paths[split]["tgt"]) == f"{split}.tgt"
    with open(paths[split]["src"]) as f:
      sources[split] = f.read().splitlines()
    with open(paths[split]["tgt"]) as f:
      assert len(f.read().splitlines()) == size
    assert len(sources[split]) == len(set(sources[split])) == size
  assert not set(sources["train"]) & set(sources["test"])
  assert not set(sources["train"]) & set(sources["valid"])
  assert not set(sources["valid"]) & set(sources["test"])
  # Same seed, same files.
  again = st.write_corpus(tmp_path / "again", train=400, valid=50, test=60, seed=5)
  with open(again["test"]["tgt"]) as f, open(paths["test"]["tgt"]) as g:
    assert f.read() == g.read()


def test_custom_language_codes(tmp_path):
  paths = st.write_corpus(tmp_path, train=3, valid=2, test=2, src_lang="en", tgt_lang="xx")
  assert sorted(os.listdir(tmp_path)) == sorted(f"{s}.{l}" for s in st.SPLITS
                                                for l in ("en", "xx"))
  assert paths["valid"]["tgt"].endswith("valid.xx")


def test_negative_size_is_rejected():
  with pytest.raises(ValueError, match="num_pairs"):
    st.generate_pairs(-1, seed=0)
