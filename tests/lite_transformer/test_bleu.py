"""Tokenized (fairseq / multi-bleu.perl) BLEU against hand counts, and the sacreBLEU wrapper."""

import math

import pytest
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from lite_jax.lite_transformer import bleu

HYPS = ["the cat sat on the mat", "there is a dog in the garden"]
REFS = ["the cat is on the mat", "there is a big dog in the garden today"]


def test_tokenized_bleu_matches_hand_counts():
  # Clipped n-gram matches / hypothesis n-grams, per sentence (1 + 2):
  #   1-grams: the x2, cat, on, mat = 5/6      + all 7/7               = 12/13
  #   2-grams: the cat, on the, the mat = 3/5  + 5/6 (not "a dog")     =  8/11
  #   3-grams: on the mat = 1/4                + there is a, dog in the,
  #                                              in the garden = 3/5   =  4/9
  #   4-grams: none = 0/3                      + dog in the garden 1/4 =  1/7
  # Lengths: hypothesis c = 6 + 7 = 13 < reference r = 6 + 9 = 15.
  precisions = [12 / 13, 8 / 11, 4 / 9, 1 / 7]
  expected = 100 * math.exp(1 - 15 / 13) * math.prod(precisions) ** 0.25
  assert bleu.tokenized_bleu(HYPS, REFS) == pytest.approx(expected, rel=1e-12)
  # An independent implementation with the same conventions agrees.
  reference = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", smooth_method="none")
  assert bleu.tokenized_bleu(HYPS, REFS) == pytest.approx(reference.score, rel=1e-9)


def test_identical_corpora_score_100_and_no_four_gram_scores_0():
  assert bleu.tokenized_bleu(REFS, REFS) == pytest.approx(100.0)
  assert bleu.tokenized_bleu(HYPS[:1], REFS[:1]) == 0.0  # No smoothing.
  assert bleu.tokenized_bleu([""], ["a b c d"]) == 0.0


def test_case_sensitive_and_no_penalty_for_long_hypotheses():
  assert bleu.tokenized_bleu(["The cat sat down"], ["the cat sat down"]) < 100
  # Longer than the reference: no brevity penalty, only precision drops (4/5, 3/4, 2/3, 1/2).
  assert bleu.tokenized_bleu(["a b c d e"], ["a b c d"]) == pytest.approx(
      100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)


def test_reference_unk_never_matches():
  # As fairseq's scorer: precisions 5/6, 4/5, 3/4, 2/3 instead of all 1.
  line = "<unk> a b c d e"
  assert bleu.tokenized_bleu([line], [line]) == pytest.approx(100 * (1 / 3) ** 0.25)


def test_compound_splitting():
  assert bleu.split_compounds("a well-known 2-3 x - y a-b-c") == (
      "a well ##AT##-##AT## known 2 ##AT##-##AT## 3 x - y a ##AT##-##AT## b-c")
  hyp, ref = ["the well-known singer sang"], ["the well-known singers sang"]
  # Split: "the well ##AT##-##AT## known singer(s) sang", 6 tokens each, matches
  # 5/6, 3/5, 2/4, 1/3. Unsplit: 3/4, 1/3, 0/2 -> 0.
  split = bleu.tokenized_bleu(hyp, ref, compound_split=True)
  assert split == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
  assert bleu.tokenized_bleu(hyp, ref) == 0.0


def test_sacrebleu_wrapper_and_where_tokenization_matters():
  hyps = ["The cat sat on the mat.", "Where is it?"]
  refs = ["The cat sat on the mat!", "Where is it now?"]
  expected = sacrebleu.corpus_bleu(hyps, [refs]).score
  assert bleu.sacrebleu_corpus(hyps, refs) == pytest.approx(expected)
  # Whitespace tokens keep punctuation attached ("mat." vs "mat!"), 13a splits it off:
  # the scores differ, and agree once the text is 13a-tokenized (and smoothing is off).
  assert bleu.sacrebleu_corpus(hyps, refs) - bleu.tokenized_bleu(hyps, refs) > 5
  tokenize = Tokenizer13a()
  unsmoothed = sacrebleu.corpus_bleu(hyps, [refs], smooth_method="none").score
  assert bleu.tokenized_bleu([tokenize(h) for h in hyps],
                             [tokenize(r) for r in refs]) == pytest.approx(unsmoothed)


def test_length_mismatch_is_an_error():
  with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
    bleu.tokenized_bleu(HYPS, REFS[:1])
  with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
    bleu.sacrebleu_corpus(HYPS, REFS[:1])
  with pytest.raises(TypeError, match="sequences of sentences"):
    bleu.tokenized_bleu("a b", "a b")
